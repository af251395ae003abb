"""The seed's OpenAI 3-file join is ready for Dataflow: translated offline, mlbatch staged, and
every function of the graph loads where only apache-beam and the staged package are installed.

`mlbatch ingest` runs with `--runner=DataflowRunner … --dry_run=True` and no `--setup_file`:
mlbatch adds its checkout's `pyproject.toml` (`pipelines.worker_packaging`), Beam builds the
sdist and translates the job, submits nothing and makes no GCP call, and the task ends
COUNTS_UNKNOWN (exit 4). The translated graph is taken from the dry run's result as the
runner would submit it. A fresh virtual environment then gets `apache-beam==2.77.0` and the
staged sdist from the package index (about 90 s on this project's machine) and unpickles
every payload of the graph there (`tests/graph_loader.py`).
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

from pipelines.cli import main
from pipelines.cli_common import EXIT_COUNTS_UNKNOWN, UsageError
from pipelines.worker_packaging import CHECKOUT, staged_beam_args
from tests.batch_services import BatchServices
from tests.conftest import OPENAI_TEST_KEY
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body, openai_batch_files
from tests.ingest_helpers import write_request

DATAFLOW_DRY_RUN = (
    "--runner=DataflowRunner",
    "--project=mlbatch-dry-run",
    "--region=us-central1",
    "--temp_location=gs://mlbatch-dry-run/tmp",
    "--dry_run=True",
)
DLQ = "s3://mlbatch-dry-run/dlq"
SHIPPED_PACKAGES = ("pipelines", "transforms", "connectors")
CLEAN_ENV_TIMEOUT = 420
DIM = 384


@dataclass(frozen=True)
class DryRun:
    code: int
    record: dict
    pipeline: beam_runner_api_pb2.Pipeline
    pipeline_file: Path
    sdist: Path
    home: Path


def staged_files(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """{staged name: local path} of every file the pipeline's environments stage for the workers."""
    staged = {}
    for environment in pipeline.components.environments.values():
        for artifact in environment.dependencies:
            if artifact.role_urn != common_urns.artifact_roles.STAGING_TO.urn:
                continue
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
            staged[name.staged_name] = path
    return staged


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory, osmem_server) -> Iterator[DryRun]:
    """The seed request through `mlbatch ingest` on the DataflowRunner, dry run, sources from the
    local OpenAI files service; the graph is kept as the runner would submit it."""
    directory = tmp_path_factory.mktemp("dataflow")
    services, cluster = BatchServices(OPENAI_TEST_KEY), osmem_server.clone()
    outputs, inputs, metadata = openai_batch_files(10, DIM)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    services.files.update({output_id: jsonl(outputs), input_id: jsonl(inputs), other_id: jsonl(metadata)})
    request = copy.deepcopy(OPENAI_REQUEST)
    request["credential"]["openAI_key"] = OPENAI_TEST_KEY
    request_path, mapping = write_request(
        directory, request, knn_index_body(["question_embedding", "answer_embedding"], DIM)
    )
    results = []
    submit = DataflowRunner.run_pipeline

    def run_pipeline(runner, pipeline, options, pipeline_proto=None):
        results.append(submit(runner, pipeline, options, pipeline_proto))
        return results[-1]

    out = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as patch, redirect_stdout(out):
            patch.setenv("MLBATCH_HOME", str(directory / "home"))
            patch.setenv("OPENAI_BASE_URL", services.openai_url)
            for name in ("OPENSEARCH_URL", "OPENAI_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"):
                patch.delenv(name, raising=False)
            patch.setattr(DataflowRunner, "run_pipeline", run_pipeline)
            args = ["ingest", str(request_path), "--opensearch", cluster.url, "--create-index", str(mapping)]
            code = main([*args, "--dlq", DLQ, "--worker-secrets", "env", "--quiet", *DATAFLOW_DRY_RUN])
    finally:
        services.close()
        cluster.close()
    (result,) = results
    pipeline = result.job.proto_pipeline
    pipeline_file = directory / "pipeline.pb"
    pipeline_file.write_bytes(pipeline.SerializeToString())
    sdist = Path(staged_files(pipeline)["workflow.tar.gz"])
    yield DryRun(code, json.loads(out.getvalue()), pipeline, pipeline_file, sdist, directory / "home")


@pytest.mark.integration
def test_a_dataflow_dry_run_ends_counts_unknown_with_exit_4(dry_run: DryRun):
    assert dry_run.code == EXIT_COUNTS_UNKNOWN == 4
    assert dry_run.record["state"] == "COUNTS_UNKNOWN"
    assert dry_run.record["error"] == (
        "--dry_run: DataflowRunner translated the job and did not run it, so nothing was read or written"
    )
    assert "dlq" not in dry_run.record


@pytest.mark.integration
def test_the_seed_join_is_translated_for_dataflow(dry_run: DryRun):
    names = {transform.unique_name for transform in dry_run.pipeline.components.transforms.values()}
    # one step reads the small sources and streams the batch output against them (a broadcast join)
    for step in ("Join on source[0]", "Join on source[0]/ReadProjectMergeEncode", "Write"):
        assert step in names
    assert not any(name.startswith("Read source[") for name in names)
    assert any(name.startswith("DeadLetterQueue[") for name in names)
    images = [
        beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
        for environment in dry_run.pipeline.components.environments.values()
    ]
    assert images and all("beam_python3.11_sdk:2.77.0" in image for image in images)


@pytest.mark.integration
def test_the_graph_holds_no_path_of_the_launching_machine(dry_run: DryRun):
    transforms = b"".join(
        transform.SerializeToString() for transform in dry_run.pipeline.components.transforms.values()
    )
    assert str(dry_run.home).encode() not in transforms
    assert str(CHECKOUT).encode() not in transforms


@pytest.mark.integration
def test_the_checkout_is_staged_as_an_sdist_holding_every_module_and_the_blueprints(dry_run: DryRun):
    assert dry_run.sdist.name == "mlbatch-0.1.0.tar.gz"
    with tarfile.open(dry_run.sdist) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {
        str(path.relative_to(CHECKOUT))
        for package in SHIPPED_PACKAGES
        for path in (CHECKOUT / package).rglob("*")
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts
    }
    assert expected - members == set()
    assert "connectors/batch_predict/blueprints/openai_batch.json" in expected


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory: pytest.TempPathFactory, dry_run: DryRun) -> Path:
    """A fresh virtual environment with only apache-beam and the staged sdist (from the package
    index, as a Dataflow worker installs it); its python."""
    venv = tmp_path_factory.mktemp("clean-venv")
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "apache-beam==2.77.0", str(dry_run.sdist)],
        capture_output=True,
        text=True,
        timeout=CLEAN_ENV_TIMEOUT,
        env=env,
        cwd=venv,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return python


def in_clean_env(python: Path, *args: str) -> str:
    """Run `python ARGS` from the environment's own directory (nothing of the checkout on its path)."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=120, env=env, cwd=python.parents[1]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.integration
def test_every_function_of_the_graph_loads_with_only_beam_and_the_staged_package(
    dry_run: DryRun, clean_env: Path
):
    loader = clean_env.parents[1] / "graph_loader.py"
    loader.write_text((Path(__file__).parent / "graph_loader.py").read_text())

    summary = json.loads(in_clean_env(clean_env, str(loader), str(dry_run.pipeline_file)))

    assert summary["loaded"]["dofn"] >= 5 and summary["loaded"]["coder"] >= 1, summary["loaded"]
    ours = [name for name in summary["classes"] if name.split(".")[0] in SHIPPED_PACKAGES]
    assert any(name.startswith("transforms.join.") for name in ours), summary["classes"]
    assert "transforms.block_coder.EncodedBlockCoder" in ours, summary["classes"]
    assert any(name.startswith("transforms.bulk.") for name in ours), summary["classes"]
    site_packages = str(clean_env.parents[1])
    assert summary["modules"] and all(file.startswith(site_packages) for file in summary["modules"].values())


@pytest.mark.integration
def test_the_installed_package_carries_the_blueprints(clean_env: Path):
    listing = in_clean_env(
        clean_env,
        "-c",
        "from importlib.resources import files; "
        "print(sorted(p.name for p in files('connectors.batch_predict').joinpath('blueprints').iterdir()))",
    )
    blueprints = sorted(
        path.name for path in (CHECKOUT / "connectors/batch_predict/blueprints").glob("*.json")
    )
    assert listing.strip() == str(blueprints)


DATAFLOW = ("--runner=DataflowRunner", "--project=p-1234", "--region=r", "--temp_location=gs://bkt/t")


def test_a_dataflow_run_from_a_checkout_stages_the_checkout():
    assert staged_beam_args(DATAFLOW) == (*DATAFLOW, f"--setup_file={CHECKOUT / 'pyproject.toml'}")


@pytest.mark.parametrize(
    "given",
    [
        "--setup_file=" + str(CHECKOUT / "pyproject.toml"),
        "--extra_package=dist/mlbatch-0.1.0.tar.gz",
        "--sdk_container_image=europe-docker.pkg.dev/p/r/mlbatch:0.1.0",
    ],
)
def test_a_user_s_way_of_shipping_mlbatch_is_kept(given: str):
    assert staged_beam_args((*DATAFLOW, given)) == (*DATAFLOW, given)


@pytest.mark.parametrize(
    "args", [(), ("--runner=DirectRunner",), ("--direct_running_mode=multi_processing",)]
)
def test_local_runners_ship_nothing(args: tuple[str, ...]):
    assert staged_beam_args(args) == args


def test_an_installed_mlbatch_on_dataflow_must_be_shipped_by_the_user(tmp_path: Path):
    with pytest.raises(
        UsageError, match=r"workers need mlbatch installed: pass --setup_file=.*--extra_package"
    ):
        staged_beam_args(DATAFLOW, checkout=tmp_path)


def test_a_missing_setup_file_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="no such file"):
        staged_beam_args((*DATAFLOW, f"--setup_file={tmp_path / 'pyproject.toml'}"))


def test_a_build_requirement_missing_here_is_named(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[build-system]\nrequires = ["setuptools>=999", "no-such-build-backend"]\n')
    with pytest.raises(UsageError, match=r"needs setuptools>=999 \(found [0-9.]+\), no-such-build-backend"):
        staged_beam_args(("--runner=PortableRunner", f"--setup_file={pyproject}"))

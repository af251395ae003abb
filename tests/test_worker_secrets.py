"""No secret in the job graph: workers outside this process resolve the run's secrets from a reference.

Each run reads an S3 source on the moto server with the request's credential and writes to a
cluster that requires basic auth, with secret-looking `$OPENAI_API_KEY`, `$AWS_SECRET_ACCESS_KEY`
and `$AWS_SESSION_TOKEN` set. The graph Beam would ship to remote workers is taken apart (the
runner API proto, every Beam-pickled payload in it decoded, and Beam's pickle of each DoFn) and
searched for every secret; the DirectRunner in multi_processing mode (workers in other processes)
then runs it, so the workers must resolve the secrets to read, write and mask the dead letters.
"""

from __future__ import annotations

import base64
import bz2
import json
import re
import zlib
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.data import jsonl
from tests.ingest_helpers import REPO, dead_letters, run_ingest

pytestmark = pytest.mark.integration

SECRETS = {
    "access_key": "AKIAWORKERSECRET0001",
    "secret_key": "request-secret-key-8f3a1c",
    "session_token": "request-session-token-5d2e",
    "password": "cluster-password-77b9e0",
    "openai": "sk-env-openai-key-4c41aa",
    "aws_secret": "env-aws-secret-access-9a7f",
    "aws_token": "env-aws-session-token-2b6c",
}
MAPPING = {
    "settings": {"index.knn": True},
    "mappings": {
        "properties": {"embedding": {"type": "knn_vector", "dimension": 2}, "note": {"type": "text"}}
    },
}
MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, repr(secret).encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]


def _unpickled_blobs(data: bytes) -> list[bytes]:
    """Every Beam-pickled payload inside `data` (base64 of bz2- or zlib-compressed pickles), decoded."""
    found = []
    for run in re.findall(rb"[A-Za-z0-9+/]{24,}={0,2}", data):
        try:
            packed = base64.b64decode(run, validate=True)
        except ValueError:
            continue
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                found.append(decompress(packed))
            except (OSError, ValueError, zlib.error):
                continue
    return found


def graph_bytes(pipeline) -> list[bytes]:
    """What a remote runner receives of `pipeline`, decoded: the runner API proto, each transform's
    payload and the Beam-pickled objects inside them, and Beam's own pickle of every DoFn."""
    from apache_beam.internal import pickler
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.transforms.core import ParDo

    class DoFns(PipelineVisitor):
        def __init__(self) -> None:
            self.found = []

        def visit_transform(self, node) -> None:
            if isinstance(node.transform, ParDo):
                self.found.append(node.transform.fn)

    proto = pipeline.to_runner_api()
    texts = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        texts += [transform.spec.payload, *_unpickled_blobs(transform.spec.payload)]
    fns = DoFns()
    pipeline.visit(fns)
    assert len(fns.found) > 2, "the graph has its DoFns"
    for fn in fns.found:
        texts += _unpickled_blobs(pickler.dumps(fn))
    return texts


@pytest.fixture
def captured_graphs(monkeypatch):
    """The graphs of the runs in this test, built by `build_pipeline` from the job the run made for
    its runner, then run; with `settings["run"] = False`, built but not run (Dataflow: the graph is
    the same on every runner, and Beam's Dataflow pipeline looks for GCP credentials and a bucket
    over the network when it is created)."""
    import apache_beam as beam

    from pipelines import ingest_graph

    graphs: list[list[bytes]] = []
    real_run = ingest_graph.run_pipeline
    settings = {"run": True}

    def inspect_then_run(job, beam_args):
        pipeline = beam.Pipeline(runner="DirectRunner")
        ingest_graph.build_pipeline(pipeline, job)
        graphs.append(graph_bytes(pipeline))
        return real_run(job, beam_args) if settings["run"] else {}

    monkeypatch.setattr(ingest_graph, "run_pipeline", inspect_then_run)
    return graphs, settings


@pytest.fixture
def secret_run(s3, fault_servers, monkeypatch, tmp_path):
    """An S3 request with credentials (one record, holding a secret, is rejected), a basic-auth sink,
    secret environment variables; returns (request, sink)."""
    s3.create_bucket(Bucket="batch")
    records = [{"id": f"d{i}", "vec": [i / 10, 1.0], "note": f"doc {i}"} for i in range(30)]
    records[5] = {"id": "d5", "vec": [1.0, 2.0, 3.0], "note": f"leak {SECRETS['secret_key']}"}
    s3.put_object(Bucket="batch", Key="out/records.jsonl", Body=jsonl(records))
    sink = fault_servers(basic_auth=("admin", SECRETS["password"]))
    monkeypatch.setenv("OPENSEARCH_PASSWORD", SECRETS["password"])
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS["openai"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["aws_secret"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS["aws_token"])
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the workers import this checkout
    request = {
        "index_name": "vectors",
        "field_map": {"embedding": "$.vec", "note": "$.note", "_id": "$.id"},
        "credential": {
            "region": "us-east-1",
            "access_key": SECRETS["access_key"],
            "secret_key": SECRETS["secret_key"],
            "session_token": SECRETS["session_token"],
        },
        "data_source": {"type": "s3", "source": ["s3://batch/out/records.jsonl"]},
    }
    return request, sink


def _assert_no_secret(texts: list[bytes], where: str) -> None:
    for name, secret in SECRETS.items():
        for form in _forms(secret):
            assert all(form not in text for text in texts), f"{name} ({form!r}) in {where}"


def _assert_outputs_masked(record: dict, captured: str, home: Path) -> None:
    texts = [json.dumps(record).encode(), captured.encode(), (home / "tasks.db").read_bytes()]
    texts += [path.read_bytes() for path in Path(record["dlq"]).glob("*.jsonl")]
    _assert_no_secret(texts, "the outputs")


@pytest.mark.parametrize("reference", [None, "env", "aws-secretsmanager:mlbatch/test-run"])
def test_workers_in_other_processes_resolve_secrets_that_the_graph_does_not_hold(
    reference, secret_run, captured_graphs, capsys, tmp_path, mlbatch_home, monkeypatch
):
    request, sink = secret_run
    graphs, _ = captured_graphs
    if reference == "env":
        for name, value in [
            ("CREDENTIAL_ACCESS_KEY", SECRETS["access_key"]),
            ("CREDENTIAL_SECRET_KEY", SECRETS["secret_key"]),
            ("CREDENTIAL_SESSION_TOKEN", SECRETS["session_token"]),
            ("OPENSEARCH_PASSWORD", SECRETS["password"]),
        ]:
            monkeypatch.setenv(f"MLBATCH_SECRET_{name}", value)
    extra = ("--worker-secrets", reference) if reference else ()
    code, record = run_ingest(
        capsys, tmp_path, request, sink.url, "--user=admin", *extra, *MULTI_PROCESSING, index_body=MAPPING
    )
    captured = capsys.readouterr()
    assert code == 3, record
    assert len(sink.docs("vectors")) == 29 and sink.docs("vectors")["d7"]["note"] == "doc 7"
    (entry,) = dead_letters(record)
    assert entry["stage"] == "validate" and "leak ***" in entry["raw"]
    (graph,) = graphs
    _assert_no_secret(graph, "the pipeline graph")
    _assert_outputs_masked(record, captured.err + captured.out, mlbatch_home)
    kind = (reference or "file").partition(":")[0]
    assert record["worker_secrets"]["kind"] == kind
    if kind == "file":
        assert not Path(record["worker_secrets"]["name"]).exists(), "the secrets file outlives the run"
    if kind == "env":
        assert "MLBATCH_SECRET_OPENSEARCH_PASSWORD" in record["worker_secrets"]["variables"]
    if kind == "aws-secretsmanager":
        import boto3

        stored = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
            SecretId="mlbatch/test-run"
        )
        assert json.loads(stored["SecretString"])["opensearch.password"] == SECRETS["password"]


def test_in_process_run_keeps_its_secrets_in_process(secret_run, capsys, tmp_path, mlbatch_home):
    request, sink = secret_run
    code, record = run_ingest(capsys, tmp_path, request, sink.url, "--user=admin", index_body=MAPPING)
    captured = capsys.readouterr()
    assert code == 3, record
    assert len(sink.docs("vectors")) == 29 and "worker_secrets" not in record
    assert not (mlbatch_home / "secrets").exists() or not any((mlbatch_home / "secrets").iterdir())
    _assert_outputs_masked(record, captured.err + captured.out, mlbatch_home)


def test_dataflow_graph_holds_no_secret_and_needs_a_reference(
    secret_run, captured_graphs, capsys, tmp_path, mlbatch_home
):
    request, sink = secret_run
    graphs, settings = captured_graphs
    settings["run"] = False  # Dataflow cannot run offline: the graph is built, inspected, not submitted
    dataflow = (
        "--runner=DataflowRunner",
        "--project=offline-test",
        "--region=us-central1",
        "--dlq=s3://batch/dlq",
    )
    (tmp_path / "request.json").write_text(json.dumps(request))
    cluster = ("--opensearch", sink.url, "--user=admin")
    code = main(["ingest", str(tmp_path / "request.json"), *cluster, *dataflow])
    message = capsys.readouterr().err
    assert code == 2 and not graphs and not (mlbatch_home / "tasks.db").exists()
    assert "--worker-secrets env" in message and "MLBATCH_SECRET_OPENSEARCH_PASSWORD" in message
    _assert_no_secret([message.encode()], "the refusal")

    code, record = run_ingest(
        capsys,
        tmp_path,
        request,
        sink.url,
        "--user=admin",
        "--worker-secrets=env",
        *dataflow,
        index_body=MAPPING,
    )
    assert graphs, record["error"]
    (graph,) = graphs
    _assert_no_secret(graph, "the Dataflow graph")

"""The Airflow provider on real Airflow, offline: `dag.test()` of the example DAG against
`mlbatch serve-embeddings` and `mlbatch serve-index`, a failing job failing its task, and the
provider registered with Airflow (`pytest -m airflow`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.demo_corpus import batch_line, module_sources, passages
from tests.data import jsonl
from tests.servers import serve_command

pytest.importorskip("airflow")
pytestmark = [pytest.mark.airflow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAG = REPO / "pipelines" / "airflow_provider" / "example_dags" / "mlbatch_predict_and_ingest.py"
DRIVER = REPO / "tests" / "airflow_dag_run.py"
API_KEY = "sk-airflow-test-key"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An AIRFLOW_HOME with a migrated SQLite database and a dags folder of its own."""
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE_DAG, dags / EXAMPLE_DAG.name)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "MLBATCH_HOME": str(home / "mlbatch"),
        "PYTHONPATH": str(REPO),
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=120)
    return env


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`mlbatch serve-index` and `mlbatch serve-embeddings` (the real MiniLM model)."""
    data = tmp_path_factory.mktemp("index-data")
    index, index_url = serve_command("serve-index", ["--data-dir", str(data)], {})
    embeddings, embed_url = serve_command("serve-embeddings", [], {"MLBATCH_EMBEDDINGS_API_KEY": API_KEY})
    try:
        yield {"index": index_url, "embeddings": embed_url}
    finally:
        for process in (index, embeddings):
            process.terminate()
            process.wait(timeout=30)


def upload(embed_url: str, lines: list[dict[str, Any]]) -> str:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=embed_url)
    return client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch").id


def connections(services: dict[str, str]) -> dict[str, str]:
    host, port = services["index"].removeprefix("http://").split(":")
    openai_conn = {"conn_type": "http", "password": API_KEY, "extra": {"base_url": services["embeddings"]}}
    opensearch_conn = {"conn_type": "opensearch", "host": host, "port": int(port), "schema": "http"}
    return {
        "AIRFLOW_CONN_MLBATCH_OPENAI": json.dumps(openai_conn),
        "AIRFLOW_CONN_MLBATCH_OPENSEARCH": json.dumps(opensearch_conn),
        "OPENAI_BASE_URL": services["embeddings"],
        "MLBATCH_POLL_INTERVAL": "0.5",
    }


def run_dag(env: dict[str, str], dag_file: Path, dag_id: str, conf: dict[str, Any]) -> tuple[dict, str]:
    """`dag.test()` in a fresh process: the run's task states and XComs, and its log."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(dag_file), dag_id, json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), log


def test_provider_is_registered(airflow_env):
    listed = subprocess.run(
        [AIRFLOW, "providers", "list"], env=airflow_env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert any(line.split("|")[0].strip() == "mlbatch" for line in listed.stdout.splitlines())


def test_example_dag_predicts_defers_ingests_and_searches(airflow_env, services, tmp_path):
    lines = [batch_line(name, text) for name, text in passages(module_sources(["json", "csv"]))][:40]
    input_file_id = upload(services["embeddings"], lines)
    env = {**airflow_env, **connections(services)}
    conf = {
        "input_file_id": input_file_id,
        "index_name": "airflow-example",
        "index_mapping": str(REPO / "samples" / "stdlib-index.json"),
    }
    result, log = run_dag(env, EXAMPLE_DAG, "mlbatch_predict_and_ingest", conf)
    tasks = result["tasks"]
    assert result["run_state"] == "success", log[-4000:]
    assert {name: task["state"] for name, task in tasks.items()} == {
        "predict": "success",
        "ingest": "success",
        "knn_check": "success",
    }
    assert "[DAG TEST] running trigger in line" in log  # the wait was deferred to the trigger
    assert "mlbatch task" in log and "RUNNING" in log  # the trigger polled while the job ran
    predict = tasks["predict"]["xcom"]
    assert predict["return_value"]["state"] == "COMPLETED"
    assert predict["remote_job"]["output_file_id"]
    ingest = tasks["ingest"]["xcom"]["return_value"]
    assert ingest["state"] == "COMPLETED"
    assert ingest["counts"]["indexed"] == len(lines)
    assert ingest["airflow"]["dag_id"] == "mlbatch_predict_and_ingest"
    check = tasks["knn_check"]["xcom"]["return_value"]
    assert check["count"] == len(lines)
    assert API_KEY not in log

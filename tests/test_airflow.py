"""The Airflow provider on real Airflow, offline: `dag.test()` of the example DAG against
`mlbatch serve-embeddings` and `mlbatch serve-index`, and the provider registered with Airflow
(`pytest -m airflow`; the unhappy paths are tests/test_airflow_failures.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from scripts.demo_corpus import batch_line, module_sources, passages
from tests.airflow_env import (
    AIRFLOW,
    API_KEY,
    EXAMPLE_DAG,
    REPO,
    airflow_home,
    openai_connection,
    opensearch_connection,
    run_dag,
    serving,
    task_states,
    upload,
)

pytest.importorskip("airflow")
pytestmark = [pytest.mark.airflow, pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An AIRFLOW_HOME with a migrated SQLite database; the example DAG in its dags folder."""
    return airflow_home(tmp_path_factory.mktemp("airflow-home"), [EXAMPLE_DAG])


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`mlbatch serve-index` and `mlbatch serve-embeddings` (the real MiniLM model)."""
    data = tmp_path_factory.mktemp("index-data")
    with (
        serving("serve-index", ["--data-dir", str(data)]) as index,
        serving("serve-embeddings", [], {"MLBATCH_EMBEDDINGS_API_KEY": API_KEY}) as embeddings,
    ):
        yield {"index": index, "embeddings": embeddings}


def test_provider_is_registered(airflow_env):
    listed = subprocess.run(
        [AIRFLOW, "providers", "list"], env=airflow_env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    assert any(line.split("|")[0].strip() == "mlbatch" for line in listed.stdout.splitlines())


def test_example_dag_predicts_defers_ingests_and_searches(airflow_env, services, tmp_path):
    lines = [batch_line(name, text) for name, text in passages(module_sources(["json", "csv"]))][:40]
    input_file_id = upload(services["embeddings"], lines)
    env = {
        **airflow_env,
        **openai_connection(services["embeddings"]),
        **opensearch_connection(services["index"]),
        "MLBATCH_POLL_INTERVAL": "0.5",
    }
    conf = {
        "input_file_id": input_file_id,
        "index_name": "airflow-example",
        "index_mapping": str(REPO / "samples" / "stdlib-index.json"),
    }
    result, log = run_dag(env, EXAMPLE_DAG, "mlbatch_predict_and_ingest", conf)
    tasks = result["tasks"]
    assert result["run_state"] == "success", log[-4000:]
    assert task_states(result) == {
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

"""What the real-Airflow tests share: an AIRFLOW_HOME with its own database and dags folder, the
`mlbatch serve-…` services, connections as `AIRFLOW_CONN_*`, and a `dag.test()` run in a fresh
process (`tests/airflow_dag_run.py`) read back as task states and XComs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.data import jsonl
from tests.servers import serve_command

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAG = REPO / "pipelines" / "airflow_provider" / "example_dags" / "mlbatch_predict_and_ingest.py"
DRIVER = REPO / "tests" / "airflow_dag_run.py"
API_KEY = "sk-airflow-test-key"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
OPENAI_CONN = "mlbatch_openai"
OPENSEARCH_CONN = "mlbatch_opensearch"


def airflow_home(home: Path, dag_files: Sequence[Path]) -> dict[str, str]:
    """The environment of an AIRFLOW_HOME at `home` with a migrated SQLite database and a dags
    folder holding copies of `dag_files`."""
    dags = home / "dags"
    dags.mkdir()
    for dag_file in dag_files:
        shutil.copy(dag_file, dags / dag_file.name)
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


@contextmanager
def serving(command: str, args: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlbatch COMMAND ARGS` running for the block; yields its URL."""
    process, url = serve_command(command, args, env or {})
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def upload(embed_url: str, lines: list[dict[str, Any]]) -> str:
    import openai

    client = openai.OpenAI(api_key=API_KEY, base_url=embed_url)
    return client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch").id


def openai_connection(base_url: str) -> dict[str, str]:
    """Connection `mlbatch_openai` (the API key, the service's URL) and the openai SDK's base URL."""
    conn = {"conn_type": "http", "password": API_KEY, "extra": {"base_url": base_url}}
    return {f"AIRFLOW_CONN_{OPENAI_CONN.upper()}": json.dumps(conn), "OPENAI_BASE_URL": base_url}


def opensearch_connection(index_url: str) -> dict[str, str]:
    """Connection `mlbatch_opensearch` to the cluster at `index_url`."""
    host, port = index_url.removeprefix("http://").split(":")
    conn = {"conn_type": "opensearch", "host": host, "port": int(port), "schema": "http"}
    return {f"AIRFLOW_CONN_{OPENSEARCH_CONN.upper()}": json.dumps(conn)}


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


def task_states(result: dict[str, Any]) -> dict[str, str]:
    return {name: task["state"] for name, task in result["tasks"].items()}

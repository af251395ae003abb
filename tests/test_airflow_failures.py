"""The mlbatch provider's unhappy paths on real Airflow, offline: a remote job that ends FAILED or
CANCELLED fails its task (and not the tasks after it); SIGTERM to `airflow dags test` while the
task polls in the worker, or while it submits, cancels the remote job through Airflow's own
`on_kill` call; a user marking a deferred task failed makes a real `airflow triggerer` cancel
it through the trigger's `on_kill`; an ingestion request that cannot run fails without retry,
a run with dead letters ends its task as `fail_on_errors` says, and SIGTERM to an ingest task
ends its run FAILED "interrupted" with the counts reached.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from connectors.local.http_server import Reply
from connectors.task_store import TaskStore
from scripts.demo_corpus import batch_line
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
from tests.batch_services import BatchServices
from tests.data import jsonl, knn_index_body, sagemaker_lines

pytest.importorskip("airflow")
pytestmark = [pytest.mark.airflow, pytest.mark.integration]

FAILURE_DAGS = REPO / "tests" / "airflow_dags" / "mlbatch_failures.py"
DEFERRED = REPO / "tests" / "airflow_deferred.py"
BATCH_LINES = [batch_line(f"doc-{i}", f"passage number {i}") for i in range(3)]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return airflow_home(tmp_path_factory.mktemp("airflow-home"), [EXAMPLE_DAG, FAILURE_DAGS])


@pytest.fixture
def batch_services() -> Iterator[BatchServices]:
    services = BatchServices(API_KEY)
    yield services
    services.close()


def job_env(airflow_env: dict[str, str], services: BatchServices) -> tuple[dict[str, str], dict[str, str]]:
    """The environment and run conf of a predict task against `services`, its input file uploaded."""
    services.files["file-airflowinput"] = jsonl(BATCH_LINES)
    return {**airflow_env, **openai_connection(services.openai_url)}, {"input_file_id": "file-airflowinput"}


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[Popen]:
    """`command` running for the block, its output in `log`; stopped after it (SIGTERM, then SIGKILL)."""
    with log.open("w") as out:
        process = Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def dags_test(dag_id: str, conf: dict[str, Any]) -> list[str]:
    return [AIRFLOW, "dags", "test", dag_id, "--conf", json.dumps(conf)]


def exit_code(process: Popen, timeout: float, log: Path) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {timeout} s on:\n{log.read_text()[-4000:]}") from None


def cancel_paths(services: BatchServices) -> list[str]:
    return [path for method, path, _ in services.requests if method == "POST" and path.endswith("/cancel")]


def deferral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`tests/airflow_deferred.py ARGS` in the AIRFLOW_HOME of `env`."""
    command = [sys.executable, str(DEFERRED), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def assert_cancelled_once(services: BatchServices, code: int, log: Path) -> None:
    """One cancel request for the one job, which ended cancelled, and so did its task."""
    text = log.read_text()
    [job] = services.jobs.values()
    assert cancel_paths(services) == [f"/v1/batches/{job['id']}/cancel"], text[-4000:]
    assert job["status"] == "cancelled"
    assert code == 1 and re.search(r"batch job task \S+ ended CANCELLED", text), text[-4000:]
    assert API_KEY not in text


def trigger_log(env: dict[str, str], dag_id: str) -> str:
    """What the triggerer logged for the triggers of `dag_id`'s tasks."""
    logs = Path(env["AIRFLOW_HOME"], "logs", f"dag_id={dag_id}").rglob("*.trigger.*.log")
    return "".join(path.read_text() for path in logs)


def wait_for(predicate: Callable[[], bool], what: str, log: Path) -> None:
    """Until `predicate()` holds, at most 60 s."""
    deadline = time.monotonic() + 60
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within 60 s:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


def test_failed_job_fails_its_task_and_the_ingestion_never_runs(airflow_env, tmp_path):
    not_embeddings = [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}]
    with serving("serve-embeddings", [], {"MLBATCH_EMBEDDINGS_API_KEY": API_KEY}) as embeddings:
        env = {**airflow_env, **openai_connection(embeddings), "MLBATCH_POLL_INTERVAL": "0.2"}
        conf = {"input_file_id": upload(embeddings, not_embeddings)}
        result, log = run_dag(env, EXAMPLE_DAG, "mlbatch_predict_and_ingest", conf)

    assert result["run_state"] == "failed", log[-4000:]
    assert task_states(result) == {
        "predict": "failed",
        "ingest": "upstream_failed",
        "knn_check": "upstream_failed",
    }
    assert "[DAG TEST] running trigger in line" in log
    assert re.search(r"batch job task \S+ ended FAILED \(service status: failed\)", log), log[-4000:]
    assert result["tasks"]["predict"]["xcom"]["remote_job"]["status"] == "failed"
    assert API_KEY not in log


def test_cancelled_job_fails_its_task(airflow_env, batch_services):
    batch_services.progress["batch"] = ("validating", "in_progress", "cancelling", "cancelled")
    env, conf = job_env(airflow_env, batch_services)
    result, log = run_dag(env, FAILURE_DAGS, "mlbatch_job_waits", conf)

    assert task_states(result) == {"predict": "failed"}, log[-4000:]
    assert "[DAG TEST] running trigger in line" in log
    assert re.search(r"batch job task \S+ ended CANCELLED \(service status: cancelled\)", log), log[-4000:]
    assert [job["status"] for job in batch_services.jobs.values()] == ["cancelled"]
    assert API_KEY not in log


def test_sigterm_to_a_task_polling_in_the_worker_cancels_the_job(airflow_env, batch_services, tmp_path):
    batch_services.progress["batch"] = ("validating", "in_progress")  # in progress until cancelled
    env, conf = job_env(airflow_env, batch_services)
    log = tmp_path / "airflow.log"
    with running(dags_test("mlbatch_job_polls_in_worker", conf), env, log) as process:
        wait_for(lambda: any(job["polls"] for job in list(batch_services.jobs.values())), "poll", log)
        process.send_signal(signal.SIGTERM)  # Airflow's handler calls the operator's on_kill
        code = exit_code(process, 60, log)

    assert_cancelled_once(batch_services, code, log)
    assert re.search(r"mlbatch task \S+: cancel sent, now CANCELLING", log.read_text())


def test_sigterm_during_the_submit_call_cancels_the_job_once_submitted(airflow_env, batch_services, tmp_path):
    batch_services.progress["batch"] = ("validating", "in_progress")
    env, conf = job_env(airflow_env, batch_services)
    log = tmp_path / "airflow.log"
    with running(dags_test("mlbatch_job_polls_in_worker", conf), env, log) as process:
        answer = batch_services.handle

        def terminate_on_submit(method: str, path: str, headers: Message, body: bytes) -> Reply:
            if (method, path) == ("POST", "/v1/batches"):
                os.kill(process.pid, signal.SIGTERM)  # lands while the task waits for this answer
            return answer(method, path, headers, body)

        batch_services.handle = terminate_on_submit
        code = exit_code(process, 120, log)

    assert_cancelled_once(batch_services, code, log)


def test_ingestion_errors_fail_as_requested(airflow_env, tmp_path):
    good = sagemaker_lines(3, 4)
    wrong_dimension = {"SageMakerOutput": [[1.0, 2.0]], "content": ["short vector"], "id": 50}
    (tmp_path / "records.jsonl").write_bytes(jsonl([*good, wrong_dimension]))
    (tmp_path / "mapping.json").write_text(json.dumps(knn_index_body(["embedding"], 4)))
    conf = {"source": str(tmp_path / "records.jsonl"), "mapping": str(tmp_path / "mapping.json")}
    with serving("serve-index", ["--data-dir", str(tmp_path / "index")]) as index:
        env = {**airflow_env, **opensearch_connection(index)}
        result, log = run_dag(env, FAILURE_DAGS, "mlbatch_ingest_errors", conf)

    tasks = result["tasks"]
    assert task_states(result) == {"bad_field": "failed", "strict": "failed", "lenient": "success"}, log[
        -4000:
    ]
    assert tasks["bad_field"]["try_number"] == 1  # AirflowFailException: no retry
    assert tasks["strict"]["try_number"] == 1  # the same records would be rejected again
    assert re.search(
        r"AirflowFailException: mlbatch ingest: field_map\.chapter: source\[5\] is out of range", log
    )
    for name in ("strict", "lenient"):
        record = tasks[name]["xcom"]["task_record"]
        assert record["state"] == "COMPLETED_WITH_ERROR"
        assert record["counts"]["indexed"] == 3 and record["counts"]["dlq"] == 1
    assert re.search(r"ingestion task \S+ ended COMPLETED_WITH_ERROR", log)
    assert tasks["lenient"]["xcom"]["return_value"]["counts"]["dlq"] == 1


def test_sigterm_interrupts_an_ingestion_keeping_its_counts(airflow_env, fault_servers, tmp_path):
    """Killing the ingest task ends its run as Ctrl-C ends `mlbatch ingest`: FAILED "interrupted"."""
    sink = fault_servers(bulk_delay=0.2)  # one document per bulk request: the run takes 40 s or more
    (tmp_path / "records.jsonl").write_bytes(jsonl(sagemaker_lines(200, 4)))
    (tmp_path / "mapping.json").write_text(json.dumps(knn_index_body(["embedding"], 4)))
    conf = {"source": str(tmp_path / "records.jsonl"), "mapping": str(tmp_path / "mapping.json")}
    env = {**airflow_env, **opensearch_connection(sink.url)}
    log = tmp_path / "airflow.log"
    with running(dags_test("mlbatch_ingest_slow", conf), env, log) as process:
        wait_for(lambda: sink.bulk_calls >= 3, "bulk request", log)
        process.send_signal(signal.SIGTERM)
        code = exit_code(process, 60, log)

    text = log.read_text()
    assert code == 1 and "ingestion interrupted" in text, text[-4000:]
    records = TaskStore(Path(env["MLBATCH_HOME"]) / "tasks.db").list()
    [record] = [r for r in records if r["task_type"] == "BATCH_INGEST" and r["index_name"] == "slow"]
    assert record["state"] == "FAILED" and record["error"] == "interrupted", record
    assert 3 <= record["counts"]["indexed"] < 200 and "owner" not in record


def test_marking_a_deferred_task_failed_cancels_the_job_from_the_triggerer(
    airflow_env, batch_services, tmp_path
):
    batch_services.progress["batch"] = ("validating", "in_progress")
    env, conf = job_env(airflow_env, batch_services)
    log = tmp_path / "triggerer.log"
    with running([AIRFLOW, "triggerer", "--skip-serve-logs"], env, log):
        deferred = deferral(env, "defer", str(FAILURE_DAGS), "mlbatch_job_waits", json.dumps(conf))
        assert deferred.stdout.splitlines()[-1:] == ["deferred predict"], deferred.stderr[-4000:]
        wait_for(lambda: any(method == "GET" for method, _, _ in batch_services.requests), "poll", log)
        marked = deferral(env, "mark-failed", "mlbatch_job_waits", "predict")
        assert marked.returncode == 0, marked.stderr[-4000:]
        wait_for(lambda: "cancel sent" in trigger_log(env, "mlbatch_job_waits"), "cancel", log)

    [job] = batch_services.jobs.values()
    assert cancel_paths(batch_services) == [f"/v1/batches/{job['id']}/cancel"]
    text = trigger_log(env, "mlbatch_job_waits")
    assert "Trigger cancelled by user action, invoking on_kill" in text
    assert re.search(r"mlbatch task \S+: cancel sent, now CANCELLING", text), text[-4000:]
    assert API_KEY not in text + log.read_text()

"""How `mlbatch serve-api`'s ingestions end: cancelled while running or waiting, refused when the queue
is full, stopped with the service (SIGTERM), and found FAILED after the service was killed (-9)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import TransportError

from connectors.task_store import SERVICE_DIED, process_start_time
from tests.api_helpers import serve_api, wait_for_task
from tests.data import jsonl, knn_index_body

pytestmark = pytest.mark.integration

DOCS = 300
SLOW = ("--bulk-size", "5", "--bulk-concurrency", "1")


def slow_request(tmp_path: Path, name: str = "slow") -> dict:
    """A local file of DOCS documents; five per _bulk, one at a time, on a slowed cluster: 18 s."""
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(jsonl([{"id": f"{name}-{n}", "v": [n, 1.0]} for n in range(DOCS)]))
    return {
        "index_name": name,
        "field_map": {"_id": "$.id", "v": "$.v"},
        "data_source": {"type": "local", "source": [str(path)]},
    }


def submit(api, body: dict) -> str:
    answer = api.client().transport.perform_request("POST", "/_plugins/_ml/_batch_ingestion", body=body)
    return answer["task_id"]


def wait_until_indexing(api, task_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = api.client().plugins.ml.get_task(task_id=task_id)
        if record["state"] == "RUNNING" and record.get("counts", {}).get("indexed", 0) > 0:
            return record
        assert record["state"] in ("CREATED", "RUNNING"), record.get("error")
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not start indexing in {timeout} s")


def owner_pid(home: Path, task_id: str) -> int:
    with sqlite3.connect(home / "tasks.db") as db:
        (stored,) = db.execute("SELECT record FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
    return json.loads(stored)["owner"]["pid"]


@pytest.fixture
def slow_cluster(fault_servers):
    cluster = fault_servers(bulk_delay=0.3)
    for name in ("first", "second", "third"):
        OpenSearch(hosts=[cluster.url]).indices.create(index=name, body=knn_index_body(["v"], 2))
    return cluster


def test_cancel_a_running_and_a_waiting_ingestion_and_a_full_queue(slow_cluster, tmp_path):
    args = ("--opensearch", slow_cluster.url, *SLOW, "--max-queued", "1", "--local-root", str(tmp_path))
    with serve_api(*args) as api:
        running = submit(api, slow_request(tmp_path, "first"))
        waiting = submit(api, slow_request(tmp_path, "second"))
        with pytest.raises(TransportError) as full:
            submit(api, slow_request(tmp_path, "third"))
        assert full.value.status_code == 429
        listed = api.client().plugins.ml.search_tasks(body={"query": {"match_all": {}}})
        assert listed["hits"]["total"]["value"] == 2

        wait_until_indexing(api, running)
        with pytest.raises(TransportError) as busy:
            api.client().plugins.ml.delete_task(task_id=running)
        assert busy.value.status_code == 500  # as ML Commons refuses it
        cancelled = api.client().transport.perform_request("POST", f"/_plugins/_ml/tasks/{running}/_cancel")
        assert cancelled == {"status": "OK"}
        record = api.client().plugins.ml.get_task(task_id=running)
        assert record["state"] == "CANCELLED" and 0 < record["counts"]["indexed"] < DOCS
        assert "error" not in record

        api.client().transport.perform_request("POST", f"/_plugins/_ml/tasks/{waiting}/_cancel")
        assert api.client().plugins.ml.get_task(task_id=waiting)["state"] == "CANCELLED"
        assert not [doc_id for doc_id in slow_cluster.applied if doc_id.startswith("second-")]
        assert api.client().plugins.ml.delete_task(task_id=running)["result"] == "deleted"


def test_sigterm_stops_the_running_ingestion_and_fails_the_waiting_one(slow_cluster, tmp_path):
    with serve_api("--opensearch", slow_cluster.url, *SLOW, "--local-root", str(tmp_path)) as api:
        running = submit(api, slow_request(tmp_path, "first"))
        waiting = submit(api, slow_request(tmp_path, "second"))
        wait_until_indexing(api, running)
        api.process.send_signal(signal.SIGTERM)
        assert api.process.wait(timeout=60) == 0
    with serve_api("--opensearch", slow_cluster.url) as again:
        stopped = again.client().plugins.ml.get_task(task_id=running)
        assert (stopped["state"], stopped["error"]) == ("FAILED", "interrupted"), stopped
        assert 0 < stopped["counts"]["indexed"] < DOCS
        never = again.client().plugins.ml.get_task(task_id=waiting)
        assert never["state"] == "FAILED" and "stopped before the task ran" in never["error"]


def test_a_killed_service_leaves_no_worker_and_its_tasks_failed_on_restart(
    slow_cluster, tmp_path, mlbatch_home
):
    with serve_api("--opensearch", slow_cluster.url, *SLOW, "--local-root", str(tmp_path)) as api:
        running = submit(api, slow_request(tmp_path, "first"))
        waiting = submit(api, slow_request(tmp_path, "second"))
        wait_until_indexing(api, running)
        worker = owner_pid(mlbatch_home, running)
        assert worker != api.process.pid
        os.kill(api.process.pid, signal.SIGKILL)
        api.process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while process_start_time(worker) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_start_time(worker) is None, "the ingestion worker outlived the killed service"
    with serve_api("--opensearch", slow_cluster.url) as again:
        for task_id in (running, waiting):
            record = wait_for_task(again.client(), task_id, timeout=5)
            assert (record["state"], record["error"]) == ("FAILED", SERVICE_DIED), record
        indexed = again.client().plugins.ml.get_task(task_id=running)["counts"]["indexed"]
        assert 0 < indexed < DOCS
    assert f"task {waiting}: FAILED, the process running it is gone" in again.log

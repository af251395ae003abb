"""How runs end when they do not finish: kill -9, Ctrl-C, SIGTERM, a failing cluster, an interrupted wait.

Each end-to-end test runs `mlbatch` as a user does, in a subprocess with its own $MLBATCH_HOME,
and reads the result back through `mlbatch task get` / `task list`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.batch_predict.launcher import SUBMIT_INTERRUPTED
from connectors.task_store import (
    OWNER_DIED,
    TaskStore,
    as_died,
    orphaned,
    owner_is_gone,
    process_start_time,
    this_process,
)
from pipelines.cli import main
from pipelines.report import counts_so_far
from pipelines.runner_choice import runner_choice
from pipelines.task_lifecycle import CountsCheckpoint, caused_by_interrupt
from tests.conftest import OPENAI_TEST_KEY
from tests.data import jsonl
from tests.fault_server import FaultServer
from tests.ingest_helpers import REPO, mlbatch_command, run_mlbatch, write_request
from transforms import progress

MAPPING = {
    "settings": {"index.knn": True},
    "mappings": {"properties": {"embedding": {"type": "knn_vector", "dimension": 4}}},
}
SLOW = ("--bulk-size=10", "--bulk-concurrency=1")
HOST = socket.gethostname()
SUBMIT_PARAMETERS = '{"input_file_id": "file-input"}'


# -- pure parts --------------------------------------------------------------------------------


def test_an_owner_is_gone_only_when_its_pid_is_free_or_started_at_another_time():
    owner = {"host": HOST, "pid": 4242, "start_time": 1000}
    assert owner_is_gone(owner, HOST, lambda pid: None)
    assert owner_is_gone(owner, HOST, lambda pid: 2000)  # the pid was reused
    assert not owner_is_gone(owner, HOST, lambda pid: 1000)
    assert not owner_is_gone(owner, "another-host", lambda pid: None)  # cannot be checked from here
    assert not owner_is_gone({"host": HOST}, HOST, lambda pid: None)


def test_only_created_or_running_tasks_with_a_dead_owner_are_orphaned():
    dead = {"host": HOST, "pid": 1, "start_time": 5}
    gone = lambda pid: None  # noqa: E731
    assert orphaned({"state": "RUNNING", "owner": dead}, HOST, gone)
    assert orphaned({"state": "CREATED", "owner": dead}, HOST, gone)
    assert not orphaned({"state": "COMPLETED", "owner": dead}, HOST, gone)
    assert not orphaned({"state": "RUNNING"}, HOST, gone)  # a batch prediction waiting on its job


def test_a_task_whose_process_died_is_failed_and_keeps_its_counts():
    record = {"task_id": "t", "state": "RUNNING", "owner": {"pid": 1}, "counts": {"indexed": 7000}}
    died = as_died(record, 123)
    assert died == {
        "task_id": "t",
        "state": "FAILED",
        "counts": {"indexed": 7000},
        "error": OWNER_DIED,
        "last_update_time": 123,
    }


@pytest.mark.integration
def test_process_start_time_tells_a_live_process_from_a_finished_one():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert process_start_time(child.pid) is None
    assert isinstance(process_start_time(os.getpid()), int)


def test_interrupts_are_recognised_through_beams_wrapping():
    assert caused_by_interrupt(KeyboardInterrupt())
    assert caused_by_interrupt(RuntimeError("KeyboardInterrupt [while running 'Write/BulkWrite/ParDo(X)']"))
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("step failed") from interrupt
    except RuntimeError as wrapped:
        assert caused_by_interrupt(wrapped)
    assert not caused_by_interrupt(RuntimeError("_bulk to 'v' failed: HTTP 404"))


def test_progress_line_shows_retries_and_dead_letters_once_there_are_some():
    assert progress.progress_line(
        "indexed", 12000, "documents", 4100.4, [(37, "retries"), (3, "dead letters")]
    ) == ("indexed 12000 documents (4100/s), 37 retries, 3 dead letters")
    assert (
        progress.progress_line("indexed", 5, "documents", 2.0, [(0, "retries")])
        == "indexed 5 documents (2/s)"
    )
    assert progress.INDEXED.extras == (progress.RETRIES, progress.DEAD_LETTERS)
    progress.RETRIES.restart()
    progress.RETRIES.add(2)
    progress.RETRIES.add()
    assert progress.snapshot()["bulk_retries"] == 3
    progress.restart_all()
    assert set(progress.snapshot().values()) == {0}


def test_counts_of_an_unfinished_run_come_from_this_process_and_say_when_they_are_partial():
    progress.restart_all()
    progress.INDEXED.add(501)
    progress.DEAD_LETTERS.add(2)
    counts = counts_so_far(runner_choice([]).in_process)
    assert (counts["indexed"], counts["dlq"]) == (501, 2) and "partial" not in counts
    multi_processing = runner_choice(["--direct_running_mode=multi_processing"])
    assert counts_so_far(multi_processing.in_process)["partial"] is True
    progress.restart_all()


def test_a_checkpoint_saves_while_the_block_runs_and_never_after():
    saved: list[dict] = []
    with CountsCheckpoint(saved.append, lambda: {"indexed": len(saved)}, interval=0.01):
        deadline = time.monotonic() + 10
        while len(saved) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(saved)
    time.sleep(0.05)
    assert count >= 3 and len(saved) == count and saved[:2] == [{"indexed": 0}, {"indexed": 1}]


@pytest.mark.integration
def test_the_store_fails_dead_owners_on_get_and_list_and_lets_go_of_finished_tasks(mlbatch_home):
    store = TaskStore()
    mine = store.create("BATCH_INGEST")
    assert mine["owner"] == this_process()
    assert "owner" not in store.update(mine["task_id"], state="COMPLETED")

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    stale = store.create("BATCH_INGEST")
    store.update(
        stale["task_id"], state="RUNNING", counts={"indexed": 501}, owner={**this_process(), "pid": child.pid}
    )
    listed = {record["task_id"]: record for record in store.list()}
    assert listed[stale["task_id"]]["state"] == "FAILED"
    again = store.get(stale["task_id"])
    assert (again["state"], again["error"], again["counts"]) == ("FAILED", OWNER_DIED, {"indexed": 501})
    assert "owner" not in again

    waiting = store.create("BATCH_PREDICTION")
    store.update(waiting["task_id"], drop=("owner",), remote_job={"id": "batch_1"})
    assert store.get(waiting["task_id"])["state"] == "CREATED"


# -- through the command line ------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[Callable[..., FaultServer]]:
    started: list[FaultServer] = []

    def start(**options) -> FaultServer:
        started.append(FaultServer(**options).start())
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen]]:
    """`mlbatch ARGS` in the background, killed if a test leaves it running."""
    started: list[subprocess.Popen] = []

    def start(*args: str, home: Path) -> subprocess.Popen:
        env = {**os.environ, "MLBATCH_HOME": str(home)}
        started.append(
            subprocess.Popen(
                mlbatch_command(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=REPO,
            )
        )
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def write_job(tmp_path: Path, count: int, bad_lines: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """`count` records (the 0-based `bad_lines` not JSON), and the request and mapping files for them."""
    records = [jsonl([{"id": f"d{i}", "vec": [i / 10, 0.5, -0.5, 1.0]}]) for i in range(count)]
    for position in bad_lines:
        records[position] = b"{not json\n"
    data = tmp_path / "records.jsonl"
    data.write_bytes(b"".join(records))
    request = {
        "index_name": "vectors",
        "field_map": {"embedding": "$.vec", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(data)]},
    }
    request_path, mapping_path = write_request(tmp_path, request, MAPPING)
    assert mapping_path is not None
    return request_path, mapping_path


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def task_get(task_id: str, home: Path) -> dict:
    result = run_mlbatch("task", "get", task_id, home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def only_task(home: Path) -> dict:
    (record,) = TaskStore(home / "tasks.db").list()
    return record


def dead_letter_lines(record: dict) -> list[int]:
    return sorted(
        json.loads(line)["line"]
        for path in Path(record["dlq"]).glob("*.jsonl")
        for line in path.read_text().splitlines()
    )


@pytest.mark.integration
def test_a_killed_run_becomes_failed_with_the_counts_it_saved_and_stays_so_after_a_rerun(
    servers, processes, tmp_path, mlbatch_home
):
    sink = servers(bulk_delay=0.3)
    request, mapping = write_job(tmp_path, 600)
    options = ("--opensearch", sink.url, "--create-index", str(mapping), *SLOW)
    process = processes("ingest", str(request), *options, home=mlbatch_home)
    wait_for(
        lambda: (mlbatch_home / "tasks.db").exists() and TaskStore(mlbatch_home / "tasks.db").list(), "task"
    )
    task_id = only_task(mlbatch_home)["task_id"]
    wait_for(lambda: only_task(mlbatch_home).get("counts", {}).get("indexed", 0) > 0, "a counts checkpoint")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)

    record = task_get(task_id, mlbatch_home)
    assert (record["state"], record["error"]) == ("FAILED", OWNER_DIED)
    assert record["counts"]["indexed"] > 0 and record["counts"]["read"] > 0
    assert "owner" not in record

    sink.bulk_delay = 0.0
    rerun = run_mlbatch("ingest", str(request), *options, home=mlbatch_home)
    assert rerun.returncode == 0, rerun.stderr
    listed = json.loads(run_mlbatch("task", "list", home=mlbatch_home).stdout)
    assert [(task["state"], task.get("error")) for task in listed] == [
        ("COMPLETED", None),
        ("FAILED", OWNER_DIED),
    ]


def slow_ingest(request: Path, url: str, mapping: Path) -> tuple[str, ...]:
    """`ingest` arguments for the job `write_job` wrote, against `url`, with slow small bulks."""
    return ("ingest", str(request), "--opensearch", url, "--create-index", str(mapping), *SLOW)


@pytest.mark.integration
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_exits_130_and_records_what_it_did_and_its_dead_letters(
    servers, processes, tmp_path, mlbatch_home, signal_number
):
    sink = servers(bulk_delay=0.3)
    request, mapping = write_job(tmp_path, 300, bad_lines=(2,))
    process = processes(
        *slow_ingest(request, sink.url, mapping),
        home=mlbatch_home,
    )
    wait_for(lambda: sink.bulk_calls >= 3, "some _bulk calls")
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "Traceback" not in err and "mlbatch: ingestion interrupted" in err
    printed = json.loads(out)
    record = task_get(printed["task_id"], mlbatch_home)
    assert (record["state"], record["error"]) == ("FAILED", "interrupted")
    assert record["counts"]["indexed"] >= 20 and record["counts"]["read"] >= 20
    assert record["counts"]["dlq"] >= 1
    assert 3 in dead_letter_lines(record)


class SilentCluster:
    """A port that accepts connections and never answers: the cluster check waits."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


@pytest.mark.integration
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_while_the_cluster_check_waits_is_recorded_cleanly(
    processes, tmp_path, mlbatch_home, signal_number
):
    cluster = SilentCluster()
    try:
        request, mapping = write_job(tmp_path, 5)
        process = processes("ingest", str(request), "--opensearch", cluster.url, home=mlbatch_home)
        wait_for(
            lambda: (mlbatch_home / "tasks.db").exists() and TaskStore(mlbatch_home / "tasks.db").list(),
            "task",
        )
        time.sleep(0.5)
        process.send_signal(signal_number)
        out, err = process.communicate(timeout=60)
    finally:
        cluster.close()

    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "mlbatch: ingestion interrupted"
    record = task_get(json.loads(out)["task_id"], mlbatch_home)
    assert (record["state"], record["error"]) == ("FAILED", "interrupted")


@pytest.mark.integration
def test_a_failed_run_records_the_documents_it_wrote_and_the_dead_letters_it_read(
    servers, tmp_path, mlbatch_home
):
    sink = servers(request_faults={404: 6})
    request, mapping = write_job(tmp_path, 200, bad_lines=(2, 30))
    result = run_mlbatch(
        *slow_ingest(request, sink.url, mapping),
        home=mlbatch_home,
    )

    assert result.returncode == 1, result.stderr
    record = task_get(json.loads(result.stdout)["task_id"], mlbatch_home)
    assert record["state"] == "FAILED" and "404" in record["error"]
    assert record["counts"]["indexed"] == len(sink.docs("vectors")) == 50
    assert record["counts"]["dlq"] == 2 and "partial" not in record["counts"]
    assert dead_letter_lines(record) == [3, 31]


def openai_connector(tmp_path: Path, services) -> Path:
    blueprint = REPO / "connectors" / "batch_predict" / "blueprints" / "openai_batch.json"
    connector = json.loads(blueprint.read_text())
    connector["parameters"]["base_url"] = services.openai_url
    connector["credential"] = {"openAI_key": OPENAI_TEST_KEY}
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(connector))
    return path


@pytest.mark.integration
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_wait_exits_130_in_one_line_and_leaves_the_job_running(
    openai_files, processes, tmp_path, mlbatch_home, signal_number
):
    openai_files.progress["batch"] = ["validating", "in_progress"]
    openai_files.files["file-input"] = b""
    connector = openai_connector(tmp_path, openai_files)
    submitted = run_mlbatch(
        "predict",
        "submit",
        "--connector",
        str(connector),
        "--parameters",
        SUBMIT_PARAMETERS,
        home=mlbatch_home,
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = json.loads(submitted.stdout)["task_id"]
    record = task_get(task_id, mlbatch_home)
    assert record["state"] == "CREATED" and "owner" not in record  # waits on the remote job, owned by no one

    process = processes("predict", "wait", task_id, "--interval", "0.2", home=mlbatch_home)
    wait_for(lambda: sum(method == "GET" for method, _, _ in openai_files.requests) >= 2, "a few polls")
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1] == (
        f"mlbatch: interrupted waiting for task {task_id}; the batch job keeps running; "
        f"`mlbatch predict cancel {task_id}` stops it"
    )
    assert not any(path.endswith("/cancel") for _, path, _ in openai_files.requests)
    assert task_get(task_id, mlbatch_home)["state"] == "RUNNING"


@pytest.mark.integration
def test_an_interrupted_submit_is_recorded_as_such(openai_files, processes, tmp_path, mlbatch_home):
    openai_files.files["file-input"] = b""
    answer_submit = openai_files.handle

    def slow_submit(method: str, path: str, headers, body: bytes):
        if method == "POST" and path.rstrip("/").endswith("/batches"):
            time.sleep(30)
        return answer_submit(method, path, headers, body)

    openai_files.handle = slow_submit
    connector = openai_connector(tmp_path, openai_files)
    process = processes(
        "predict",
        "submit",
        "--connector",
        str(connector),
        "--parameters",
        SUBMIT_PARAMETERS,
        home=mlbatch_home,
    )
    wait_for(
        lambda: (mlbatch_home / "tasks.db").exists() and TaskStore(mlbatch_home / "tasks.db").list(), "task"
    )
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "mlbatch: interrupted"
    record = only_task(mlbatch_home)
    assert (record["state"], record["error"]) == ("FAILED", SUBMIT_INTERRUPTED)


@pytest.mark.integration
def test_dead_letters_of_a_failed_run_reach_an_s3_dlq(servers, capsys, tmp_path, s3, monkeypatch):
    s3.create_bucket(Bucket="batch")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    request, mapping = write_job(tmp_path, 60, bad_lines=(2,))
    sink = servers(request_faults={404: 2})
    capsys.readouterr()
    code = main(
        ["ingest", str(request), "--opensearch", sink.url, "--create-index", str(mapping), *SLOW]
        + ["--dlq", "s3://batch/dlq/run-1/"]
    )
    record = json.loads(capsys.readouterr().out)

    assert code == 1 and record["dlq"] == "s3://batch/dlq/run-1/" and record["counts"]["indexed"] == 10
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="batch", Prefix="dlq/run-1/")["Contents"]]
    lines = [
        json.loads(line)
        for key in keys
        for line in s3.get_object(Bucket="batch", Key=key)["Body"].read().splitlines()
    ]
    assert [(entry["stage"], entry["line"]) for entry in lines] == [("parse", 3)]


def test_a_run_stopped_by_its_host_is_recorded_then_the_stop_goes_on(tmp_path, mlbatch_home, monkeypatch):
    """A BaseException that is no interrupt (Airflow's task timeout) ends the task FAILED, named,
    and is raised again for the host to handle."""
    from pipelines import ingest_run
    from pipelines.ingest_options import IngestOptions

    class HostTimeout(BaseException):
        pass

    def stopped(*args, **kwargs):
        raise HostTimeout

    monkeypatch.setattr(ingest_run, "_run_task", stopped)
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"id": "a", "text": "one"}]))
    body = {
        "index_name": "stopped",
        "field_map": {"text": "$.text", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(tmp_path / "a.jsonl")]},
    }
    with pytest.raises(HostTimeout):
        ingest_run.run_ingest(IngestOptions(opensearch="http://127.0.0.1:9"), body)
    [record] = TaskStore(mlbatch_home / "tasks.db").list()
    assert (record["state"], record["error"]) == ("FAILED", "stopped by HostTimeout")
    assert "owner" not in record and ingest_run.log.filters == []

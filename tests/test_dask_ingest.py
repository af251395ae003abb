"""`mlbatch ingest --runner=DaskRunner` on a real `dask scheduler` + two `dask worker` processes on 127.0.0.1.

Each run is compared with the DirectRunner's on the same input: the same index, the same dead
letters (ignoring file names, order and task ids) and the same reconciled counts. Then a worker
is killed with SIGKILL mid-run: Dask recomputes its tasks, and the index still holds every
document once, the counts reconcile and no dead letter is written twice.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.batch_services import BatchServices
from tests.conftest import OPENAI_TEST_KEY
from tests.dask_cluster import DaskCluster
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body
from tests.ingest_helpers import (
    REPO,
    dead_letters,
    indexed_documents,
    mlbatch_command,
    run_ingest,
    write_request,
)
from tests.test_ingest_openai import DIM, seed_request_with_test_key
from tests.test_join_strategies import awkward_join
from tests.test_multifile_join import multi_file_request
from tests.test_reliable_sink import FAST_RETRIES, MAPPING, request_for, write_records

pytestmark = pytest.mark.integration

RUN_SECONDS = 120
# Counts that depend on how documents were cut into bulk requests, not on what was written.
BATCHING_COUNTS = ("bulk_requests", "bulk_retries", "bulk_splits")


@pytest.fixture(scope="module")
def openai_service() -> Iterator[BatchServices]:
    server = BatchServices(OPENAI_TEST_KEY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, openai_service: BatchServices) -> Iterator[DaskCluster]:
    running = DaskCluster(
        tmp_path_factory.mktemp("dask-cluster"), env={"OPENAI_BASE_URL": openai_service.openai_url}
    )
    yield running
    running.close()


def dask_ingest(
    cluster: DaskCluster,
    directory: Path,
    request: dict,
    url: str,
    *extra: str,
    index_body: dict | None = None,
) -> subprocess.Popen:
    """`mlbatch ingest REQUEST --opensearch URL --runner=DaskRunner --dask_client_address=…`, started."""
    request_path, mapping_path = write_request(directory, request, index_body)
    args = ["ingest", str(request_path), "--opensearch", url, *extra]
    args += ["--create-index", str(mapping_path)] if mapping_path else []
    args += ["--runner=DaskRunner", f"--dask_client_address={cluster.address}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        mlbatch_command(*args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen) -> tuple[int, dict]:
    out, err = process.communicate(timeout=RUN_SECONDS)
    assert out.strip(), err
    return process.returncode, json.loads(out)


def outcome(record: dict, documents: dict[str, dict]) -> dict[str, Any]:
    """What a run left, runner-independent: its state, counts, index, and dead letters."""
    entries = dead_letters(record) if "dlq" in record else []
    return {
        "state": record["state"],
        "counts": {name: value for name, value in record["counts"].items() if name not in BATCHING_COUNTS},
        "documents": documents,
        "dead_letters": sorted(json.dumps({**entry, "task_id": None}, sort_keys=True) for entry in entries),
    }


def same_as_direct_runner(
    cluster: DaskCluster, capsys: Any, tmp_path: Path, request: dict, url: str, *extra: str, index_body: dict
) -> dict[str, Any]:
    """Run `request` on the DirectRunner and on Dask (each into its own index); assert both left
    the same, and return it."""
    outcomes = {}
    for runner in ("direct", "dask"):
        directory = tmp_path / runner
        directory.mkdir()
        index = f"{request['index_name']}-{runner}"
        body = {**request, "index_name": index}
        if runner == "direct":
            code, record = run_ingest(capsys, directory, body, url, *extra, index_body=index_body)
        else:
            code, record = finished(dask_ingest(cluster, directory, body, url, *extra, index_body=index_body))
        assert record["counts"]["accounted_by_source"] == record["counts"]["read_by_source"], record
        outcomes[runner] = (code, outcome(record, indexed_documents(url, index)))
    assert outcomes["dask"] == outcomes["direct"]
    return outcomes["dask"][1]


def test_seed_openai_three_file_join(cluster, openai_service, capsys, tmp_path, osmem_url, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", openai_service.openai_url)
    from tests.data import openai_batch_files

    outputs, inputs, metadata = openai_batch_files(30, DIM)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    openai_service.files.update(
        {output_id: jsonl(outputs), input_id: jsonl(inputs), other_id: jsonl(metadata)}
    )
    index = knn_index_body(["question_embedding", "answer_embedding"], DIM)
    request = copy.deepcopy(seed_request_with_test_key())
    result = same_as_direct_runner(cluster, capsys, tmp_path, request, osmem_url, index_body=index)
    assert result["state"] == "COMPLETED" and len(result["documents"]) == 30
    assert result["counts"]["read"] == 75 and result["counts"]["merged_records"] == 75


@pytest.mark.parametrize(
    "strategy, split_bytes", [("broadcast", "0"), ("broadcast", "150"), ("shuffle", "0"), ("shuffle", "150")]
)
def test_joins_index_and_dead_letter_what_the_direct_runner_does(
    cluster, capsys, tmp_path, osmem_url, strategy, split_bytes
):
    """Each join, its large file read whole or in byte ranges spread over the workers."""
    data = tmp_path / "data"
    data.mkdir()
    request = awkward_join(data)
    index = knn_index_body(["question_embedding"], 4)
    result = same_as_direct_runner(
        cluster,
        capsys,
        tmp_path,
        request,
        osmem_url,
        "--join-strategy",
        strategy,
        "--split-bytes",
        split_bytes,
        "--bulk-size",
        "5",
        index_body=index,
    )
    assert result["state"] == "COMPLETED_WITH_ERROR" and len(result["documents"]) == 13
    assert result["counts"]["duplicates"] == 2 and len(result["dead_letters"]) == 3
    by_offset = [entry for entry in result["dead_letters"] if '"byte_offset"' in entry]
    assert bool(by_offset) == (split_bytes != "0")


def test_a_multi_file_streamed_source_joins_as_on_the_direct_runner(cluster, capsys, tmp_path, osmem_url):
    """The broadcast join's units are 3 files, one gzip, one split in byte ranges, with
    duplicates across them: settled, read back and rewritten on the workers."""
    data = tmp_path / "data"
    data.mkdir()
    index = knn_index_body(["question_embedding"], 4)
    request = multi_file_request(data)
    result = same_as_direct_runner(
        cluster, capsys, tmp_path, request, osmem_url, "--split-bytes", "600", index_body=index
    )
    assert result["state"] == "COMPLETED_WITH_ERROR" and result["counts"]["duplicates"] == 7
    assert len(result["documents"]) == 21 and len(result["dead_letters"]) == 10


BAD_RECORDS = {
    4: {"vec": [1.0, 2.0]},
    9: {"vec": [1.0, "x", 1.0, 1.0]},
    13: {"rank": "many"},
    17: {"id": None},
}


def test_bulk_429s_and_bad_lines(cluster, capsys, tmp_path, fault_servers):
    data = tmp_path / "data"
    data.mkdir()
    paths = [data / f"part-{number}.jsonl" for number in range(3)]
    for number, path in enumerate(paths):
        write_records(path, 40, BAD_RECORDS if number == 1 else None)
        path.write_bytes(
            path.read_bytes().replace(b'"id": "d', f'"id": "p{number}-d'.encode()) + b"{not json\n"
        )
    request = {**request_for(data), "index_name": "faults"}
    outcomes = {}
    for runner in ("direct", "dask"):
        sink = fault_servers(request_faults={429: 3}, item_429_every=7)
        directory = tmp_path / runner
        directory.mkdir()
        extra = ("--bulk-size=8", *FAST_RETRIES)
        if runner == "direct":
            code, record = run_ingest(capsys, directory, request, sink.url, *extra, index_body=MAPPING)
        else:
            code, record = finished(
                dask_ingest(cluster, directory, request, sink.url, *extra, index_body=MAPPING)
            )
        assert record["counts"]["bulk_retries"] > 0 and set(sink.applied.values()) == {1}
        outcomes[runner] = (code, outcome(record, sink.docs("faults")))
    assert outcomes["dask"] == outcomes["direct"]
    code, result = outcomes["dask"]
    assert code == 3 and result["counts"]["read"] == 123 and result["counts"]["indexed"] == 116
    assert result["counts"]["rejected_by_stage"] == {"map": 1, "validate": 2, "bulk": 1, "parse": 3}


def test_a_worker_killed_mid_run_leaves_every_document_once_and_the_counts_reconciled(
    cluster, tmp_path, fault_servers
):
    sink = fault_servers(bulk_delay=0.1)
    data = tmp_path / "data"
    data.mkdir()
    expected: set[str] = set()
    for number in range(4):
        path = data / f"part-{number}.jsonl"
        records = write_records(path, 100, {5: {"vec": [1.0]}})
        path.write_bytes(path.read_bytes().replace(b'"id": "d', f'"id": "p{number}-d'.encode()))
        expected |= {f"p{number}-{doc_id}" for doc_id in records} - {f"p{number}-d5"}
    request = {**request_for(data), "index_name": "killed"}
    process = dask_ingest(
        cluster, tmp_path, request, sink.url, "--bulk-size=10", "--bulk-concurrency=1", index_body=MAPPING
    )
    try:
        victim = writing_worker(cluster, sink.url)
        cluster.kill_worker(victim)
        code, record = finished(process)
    finally:
        process.kill()
        cluster.replace_killed_workers()

    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    counts = record["counts"]
    assert counts["read"] == 400 and counts["indexed"] == 396 and counts["dlq"] == 4
    assert counts["accounted_by_source"] == counts["read_by_source"] == {"source[0]": 400}
    assert set(sink.docs("killed")) == expected
    assert sum(sink.applied.values()) > len(expected)  # the killed worker's bundle was written again
    entries = [(entry["source"], entry["line"]) for entry in dead_letters(record)]
    assert sorted(entries) == sorted((str(data / f"part-{number}.jsonl"), 6) for number in range(4))


def writing_worker(cluster: DaskCluster, url: str) -> int:
    """The pid of a worker with a connection open to the sink at `url`, once the first bulk requests came."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pid in cluster.worker_pids():
            connections = psutil.Process(pid).net_connections(kind="tcp")
            if any(
                connection.status == psutil.CONN_ESTABLISHED
                and connection.raddr
                and connection.raddr.port == port
                for connection in connections
            ):
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker wrote to the sink within 60 s")

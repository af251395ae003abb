"""The sink under faults found by trying to break it: lost answers, long ids, 413, whole-request 400s,
outages longer than a retry count, all through `mlbatch ingest` against a fault-injecting fault_servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.data import jsonl
from tests.fault_server import FaultServer
from tests.ingest_helpers import REPO, dead_letters, mlbatch_command, run_ingest, write_request

pytestmark = pytest.mark.integration

FAST_RETRIES = ("--initial-backoff=0.01", "--max-backoff=0.05")
MAPPING = {
    "settings": {"index.knn": True},
    "mappings": {
        "properties": {"embedding": {"type": "knn_vector", "dimension": 4}, "text": {"type": "text"}}
    },
}


def write_records(path: Path, count: int, changes: dict[int, dict] | None = None) -> list[dict]:
    records = [{"id": f"d{i}", "vec": [i / 10, 0.5, -0.5, 1.0], "text": f"doc {i}"} for i in range(count)]
    for position, change in (changes or {}).items():
        records[position].update(change)
    path.write_bytes(jsonl(records))
    return records


def request_for(path: Path, with_id: bool = True) -> dict:
    field_map = {"embedding": "$.vec", "text": "$.text"}
    if with_id:
        field_map["_id"] = "$.id"
    return {
        "index_name": "vectors",
        "field_map": field_map,
        "data_source": {"type": "local", "source": [str(path)]},
    }


def ingest_logging(
    capsys, tmp_path: Path, request: dict, url: str, *extra: str, **options
) -> tuple[dict, str]:
    """Like `run_ingest`, also returning what mlbatch logged on stderr."""
    capsys.readouterr()
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    args = ["ingest", str(request_path), "--opensearch", url, *extra]
    if options.get("index_body"):
        (tmp_path / "mapping.json").write_text(json.dumps(options["index_body"]))
        args += ["--create-index", str(tmp_path / "mapping.json")]
    main(args)
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def texts(sink: FaultServer) -> list[str]:
    return sorted(doc["text"] for doc in sink.docs("vectors").values())


def test_without_id_a_retried_request_and_a_rerun_write_no_duplicates(fault_servers, capsys, tmp_path):
    sink = fault_servers(lost_answer_every=3)
    path = tmp_path / "records.jsonl"
    records = write_records(path, 100)
    request = request_for(path, with_id=False)
    code, record = run_ingest(
        capsys, tmp_path, request, sink.url, "--bulk-size=10", *FAST_RETRIES, index_body=MAPPING
    )
    assert code == 0 and record["counts"]["indexed"] == 100 and record["counts"]["bulk_retries"] > 0
    assert texts(sink) == sorted(r["text"] for r in records)

    code, again = run_ingest(capsys, tmp_path, request, sink.url, "--bulk-size=10", *FAST_RETRIES)
    assert code == 0 and again["counts"]["updated"] == 100
    assert len(sink.docs("vectors")) == 100


def test_derived_ids_do_not_depend_on_the_working_directory(fault_servers, capsys, tmp_path, monkeypatch):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 5)
    monkeypatch.chdir(tmp_path)
    relative = request_for(Path("records.jsonl"), with_id=False)
    run_ingest(capsys, tmp_path, relative, sink.url, index_body=MAPPING)
    first = set(sink.docs("vectors"))
    run_ingest(capsys, tmp_path, request_for(path, with_id=False), sink.url)
    assert set(sink.docs("vectors")) == first and len(first) == 5


def test_cluster_ids_keep_ml_commons_behaviour_with_a_warning(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 10)
    request = request_for(path, with_id=False)
    ingest_logging(capsys, tmp_path, request, sink.url, "--cluster-ids", index_body=MAPPING)
    _, err = ingest_logging(capsys, tmp_path, request, sink.url, "--cluster-ids")
    assert len(sink.docs("vectors")) == 20
    assert "writes the same records again as duplicates" in err


def test_an_id_over_512_bytes_is_a_dead_letter_and_everything_else_is_written(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 1000, {400: {"id": "é" * 300}})
    code, record = run_ingest(capsys, tmp_path, request_for(path), sink.url, index_body=MAPPING)
    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    assert record["counts"]["indexed"] == 999 and len(sink.docs("vectors")) == 999
    (entry,) = dead_letters(record)
    assert entry["stage"] == "map" and entry["line"] == 401
    assert "600 bytes long; OpenSearch allows at most 512" in entry["reason"]


def test_a_whole_request_400_is_split_to_dead_letter_only_the_offender(fault_servers, capsys, tmp_path):
    sink = fault_servers(poison="POISON")
    path = tmp_path / "records.jsonl"
    write_records(path, 200, {37: {"text": "POISON"}, 150: {"text": "POISON too"}})
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--bulk-size=50", index_body=MAPPING
    )
    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    assert record["counts"]["indexed"] == 198 and record["counts"]["bulk_splits"] > 0
    assert len(sink.docs("vectors")) == 198 and sum(sink.applied.values()) == 198
    entries = sorted(dead_letters(record), key=lambda entry: entry["line"])
    assert [(e["stage"], e["line"]) for e in entries] == [("bulk", 38), ("bulk", 151)]
    assert "a poisoned document" in entries[0]["reason"]


def test_a_size_limited_cluster_gets_smaller_bodies_and_a_too_large_document_is_a_dead_letter(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers(max_body_bytes=4096)
    path = tmp_path / "records.jsonl"
    write_records(path, 300, {123: {"text": "x" * 5000}})
    record, err = ingest_logging(capsys, tmp_path, request_for(path), sink.url, index_body=MAPPING)
    assert record["state"] == "COMPLETED_WITH_ERROR", record
    assert record["counts"]["indexed"] == 299 and len(sink.docs("vectors")) == 299
    assert max(sink.applied.values()) == 1
    (entry,) = dead_letters(record)
    assert entry["line"] == 124 and entry["reason"].startswith("HTTP 413")
    assert "bodies are now cut at" in err


def test_an_outage_longer_than_any_retry_count_slows_the_run_instead_of_failing_it(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers(outage=range(3, 30))
    path = tmp_path / "records.jsonl"
    write_records(path, 100)
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--bulk-size=10", *FAST_RETRIES, index_body=MAPPING
    )
    assert code == 0 and record["state"] == "COMPLETED", record
    assert len(sink.docs("vectors")) == 100 and record["counts"]["bulk_retries"] >= 27


def test_a_retry_budget_in_time_fails_a_cluster_that_stays_down(fault_servers, capsys, tmp_path):
    sink = fault_servers(outage=range(1, 10**6))
    path = tmp_path / "records.jsonl"
    write_records(path, 20)
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--max-retry-time=1", *FAST_RETRIES, index_body=MAPPING
    )
    assert code == 1 and record["state"] == "FAILED"
    assert "the cluster is restarting" in record["error"] and "gave up after" in record["error"]


def test_without_id_requests_that_time_out_and_are_applied_later_write_no_duplicates(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers(hang_every=4, hang_seconds=1.5)
    path = tmp_path / "records.jsonl"
    write_records(path, 60)
    code, record = run_ingest(
        capsys,
        tmp_path,
        request_for(path, with_id=False),
        sink.url,
        "--bulk-size=10",
        "--request-timeout=0.5",
        *FAST_RETRIES,
        index_body=MAPPING,
    )
    assert code == 0 and record["counts"]["bulk_retries"] > 0, record
    assert len(sink.docs("vectors")) == 60 and record["counts"]["indexed"] == 60


def test_every_fault_together_loses_nothing_and_duplicates_nothing(fault_servers, capsys, tmp_path):
    sink = fault_servers(
        hang_every=13,
        hang_seconds=1.0,
        request_faults={429: 5, 500: 7},
        item_429_every=11,
        lost_answer_every=6,
        outage=range(9, 21),
        max_body_bytes=2048,
        poison="POISON",
    )
    path = tmp_path / "records.jsonl"
    records = write_records(
        path,
        400,
        {10: {"id": "x" * 600}, 77: {"text": "POISON"}, 200: {"vec": [1.0]}, 333: {"text": "y" * 3000}},
    )
    code, record = run_ingest(
        capsys,
        tmp_path,
        request_for(path),
        sink.url,
        "--bulk-size=25",
        "--request-timeout=0.4",
        *FAST_RETRIES,
        index_body=MAPPING,
    )
    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    good = {r["id"] for position, r in enumerate(records) if position not in (10, 77, 200, 333)}
    assert set(sink.docs("vectors")) == good
    assert record["counts"]["indexed"] == len(good) == 396
    assert record["counts"]["read"] == 400 and record["counts"]["rejected_records"] == 4
    lines = sorted((entry["line"], entry["stage"]) for entry in dead_letters(record))
    assert lines == [(11, "map"), (78, "bulk"), (201, "validate"), (334, "bulk")]


def test_bulk_tuning_against_an_unexpected_settings_answer_fails_in_one_line(fault_servers, capsys, tmp_path):
    sink = fault_servers(settings_answer={"vectors": {"index": {"refresh_interval": "1s"}}})
    path = tmp_path / "records.jsonl"
    write_records(path, 3)
    record, err = ingest_logging(
        capsys, tmp_path, request_for(path), sink.url, "--bulk-tuning", index_body=MAPPING
    )
    assert record["state"] == "FAILED" and "Traceback" not in err and "KeyError" not in err
    assert (
        "cannot apply --bulk-tuning: the cluster answered GET _settings with an unexpected shape"
        in (record["error"])
    )


def test_binary_vectors_have_one_int8_per_8_bits_of_dimension(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    mapping = {
        "settings": {"index.knn": True},
        "mappings": {
            "properties": {
                "bits": {
                    "type": "knn_vector",
                    "dimension": 32,
                    "data_type": "binary",
                    "method": {"name": "hnsw", "engine": "faiss", "space_type": "hamming"},
                },
                "text": {"type": "text"},
            }
        },
    }
    records = [{"id": f"b{i}", "bits": [i, -1, 0, 127], "text": f"doc {i}"} for i in range(10)]
    records[3]["bits"] = [0] * 32
    records[6]["bits"] = [1, 2, 300, 4]
    path = tmp_path / "records.jsonl"
    path.write_bytes(jsonl(records))
    request = request_for(path)
    request["field_map"] = {"_id": "$.id", "bits": "$.bits", "text": "$.text"}
    code, record = run_ingest(capsys, tmp_path, request, sink.url, index_body=mapping)
    assert code == 3 and record["counts"]["indexed"] == 8, record
    assert sink.docs("vectors")["b0"]["bits"] == [0, -1, 0, 127]
    reasons = {entry["line"]: entry["reason"] for entry in dead_letters(record)}
    assert reasons == {
        4: "vector field 'bits' has 32 elements; a binary vector of dimension 32 has 4 (one int8 per 8 bits)",
        7: "vector field 'bits' element 2 is 300; a binary vector holds integers in [-128, 127]",
    }


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_while_senders_back_off_ends_the_run_at_once(
    fault_servers, tmp_path, mlbatch_home, signum
):
    sink = fault_servers(outage=range(3, 10**6))
    path = tmp_path / "records.jsonl"
    write_records(path, 1000)
    request_path, mapping_path = write_request(tmp_path, request_for(path), MAPPING)
    command = mlbatch_command(
        "ingest",
        str(request_path),
        "--opensearch",
        sink.url,
        "--create-index",
        str(mapping_path),
        "--bulk-size=50",
    )
    env = {**os.environ, "MLBATCH_HOME": str(mlbatch_home)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while sink.bulk_calls < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130 and time.monotonic() - sent < 10, err
    assert b"Traceback" not in err and json.loads(out)["error"] == "interrupted"


@pytest.mark.parametrize("option", ["--max-retry-time=nan", "--request-timeout=inf", "--max-backoff=nan"])
def test_retry_and_timeout_options_must_be_finite(capsys, tmp_path, option):
    path = tmp_path / "records.jsonl"
    write_records(path, 1)
    (tmp_path / "request.json").write_text(json.dumps(request_for(path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", str(tmp_path / "request.json"), option])
    assert exit_info.value.code == 2 and "must be finite numbers" in capsys.readouterr().err

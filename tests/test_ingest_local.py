"""Local sources through the real DirectRunner into osmem-server: formats, dead letters, runner modes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from tests.data import jsonl, knn_index_body, openai_batch_files, sagemaker_lines
from tests.ingest_helpers import REPO, dead_letters, indexed_documents, run_ingest, run_mlbatch, write_request

SINGLE = {
    "index_name": "local-index",
    "field_map": {"chapter": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
    "ingest_fields": ["$.id"],
    "data_source": {"type": "local", "source": []},
}


def single(source: str, **changes) -> dict:
    return {**SINGLE, **changes, "data_source": {"type": "local", "source": [source]}}


def write_join_files(tmp_path: Path, count: int, dimension: int) -> dict:
    outputs, inputs, metadata = openai_batch_files(count, dimension)
    for name, records in (("output", outputs), ("input", inputs), ("meta", metadata)):
        (tmp_path / f"{name}.jsonl").write_bytes(jsonl(records))
    return {
        "index_name": "joined",
        "field_map": {
            "question": "source[1].$.body.input[0]",
            "question_embedding": "source[0].$.response.body.data[0].embedding",
            "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
        },
        "ingest_fields": ["source[2].$.custom_field1"],
        "data_source": {
            "type": "local",
            "source": [str(tmp_path / f"{n}.jsonl") for n in ("output", "input", "meta")],
        },
    }


@pytest.mark.integration
def test_glob_gzip_and_parquet_sources(osmem_url, capsys, tmp_path):
    lines = sagemaker_lines(9, 4)
    (tmp_path / "part-0.jsonl").write_bytes(jsonl(lines[:3]))
    (tmp_path / "part-1.jsonl.gz").write_bytes(gzip.compress(jsonl(lines[3:6])))
    pq.write_table(pa.Table.from_pylist(lines[6:]), tmp_path / "part-2.parquet")

    code, record = run_ingest(
        capsys,
        tmp_path,
        single(str(tmp_path / "part-*")),
        osmem_url,
        index_body=knn_index_body(["embedding"], 4),
    )

    assert code == 0, record
    docs = indexed_documents(osmem_url, "local-index")
    assert set(docs) == {str(i) for i in range(1, 10)}
    assert docs["8"] == {"chapter": "this is chapter 8", "embedding": lines[7]["SageMakerOutput"][0], "id": 8}


@pytest.mark.integration
def test_bad_records_go_to_the_dead_letter_queue_with_file_and_line(osmem_url, capsys, tmp_path):
    good = sagemaker_lines(4, 4)
    wrong_dimension = {"SageMakerOutput": [[1.0, 2.0]], "content": ["short vector"], "id": 50}
    body = (
        jsonl(good[:2])
        + b"{not json\n"
        + jsonl([{"content": ["no id"]}, wrong_dimension])
        + b"\n"
        + jsonl(good[2:])
    )
    (tmp_path / "mixed.jsonl").write_bytes(body)

    code, record = run_ingest(
        capsys,
        tmp_path,
        single(str(tmp_path / "mixed.jsonl")),
        osmem_url,
        index_body=knn_index_body(["embedding"], 4),
    )

    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR"
    assert record["counts"]["read"] == 7 and record["counts"]["indexed"] == 4
    assert record["counts"]["rejected_by_stage"] == {"validate": 1, "map": 1, "parse": 1}
    entries = sorted(dead_letters(record), key=lambda entry: entry["line"])
    assert [(e["stage"], e["line"]) for e in entries] == [("parse", 3), ("map", 4), ("validate", 5)]
    assert all(
        e["source"] == str(tmp_path / "mixed.jsonl") and e["task_id"] == record["task_id"] for e in entries
    )
    assert entries[0]["raw"] == "{not json" and entries[0]["reason"].startswith("malformed JSON")
    assert entries[1]["reason"] == "missing _id: $.id matched nothing"
    assert entries[2]["reason"] == "vector field 'embedding' has 2 dimensions; the index mapping expects 4"
    assert json.loads(entries[2]["raw"])["id"] == 50
    assert set(indexed_documents(osmem_url, "local-index")) == {"1", "2", "3", "4"}


@pytest.mark.integration
def test_unmatched_paths_are_counted_not_fatal(osmem_url, capsys, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"id": 1, "content": ["x"]}, {"id": 2}]))
    code, record = run_ingest(
        capsys,
        tmp_path,
        single(str(tmp_path / "a.jsonl")),
        osmem_url,
        index_body=knn_index_body(["embedding"], 4),
    )
    assert code == 0, record
    assert record["counts"]["unmatched_paths"] == {"chapter": 1, "embedding": 2}
    assert indexed_documents(osmem_url, "local-index")["2"] == {"id": 2}


@pytest.mark.integration
def test_single_source_without_id_gets_auto_ids(osmem_url, capsys, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"text": "one"}, {"text": "two"}]))
    request = {
        "index_name": "auto",
        "field_map": {"text": "$.text"},
        "data_source": {"type": "local", "source": [str(tmp_path / "a.jsonl")]},
    }
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body={})
    assert code == 0, record
    assert sorted(doc["text"] for doc in indexed_documents(osmem_url, "auto").values()) == ["one", "two"]


@pytest.mark.integration
def test_three_source_join_is_correct_in_multi_processing_mode(osmem_url, capsys, tmp_path):
    request = write_join_files(tmp_path, 40, 8)
    code, record = run_ingest(
        capsys,
        tmp_path,
        request,
        osmem_url,
        "--bulk-size",
        "7",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        index_body=knn_index_body(["question_embedding"], 8),
    )
    assert code == 0, record
    docs = indexed_documents(osmem_url, "joined")
    assert len(docs) == 40
    assert docs["request-40"]["custom_field1"] == "value 40" and "custom_field1" not in docs["request-39"]
    assert docs["request-7"]["question"] == "question 7?"


@pytest.mark.integration
def test_duplicate_keys_keep_the_first_record_and_dead_letter_the_rest(osmem_url, capsys, tmp_path):
    request = write_join_files(tmp_path, 3, 4)
    with (tmp_path / "input.jsonl").open("ab") as extra:
        extra.write(jsonl([{"custom_id": "request-1", "body": {"input": ["late duplicate"]}}]))
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body([], 4))
    assert code == 3
    assert record["counts"]["duplicates"] == 1
    (entry,) = dead_letters(record)
    assert entry["stage"] == "map" and entry["line"] == 4 and "duplicate _id 'request-1'" in entry["reason"]
    assert indexed_documents(osmem_url, "joined")["request-1"]["question"] == "question 1?"


@pytest.mark.integration
def test_rerun_is_idempotent(osmem_url, capsys, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(5, 4)))
    request = single(str(tmp_path / "a.jsonl"))
    run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body(["embedding"], 4))
    code, record = run_ingest(capsys, tmp_path, request, osmem_url)
    assert code == 0 and record["counts"]["updated"] == 5
    assert len(indexed_documents(osmem_url, "local-index")) == 5


@pytest.mark.integration
def test_missing_index_without_create_index_fails_fast(osmem_url, capsys, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(1, 4)))
    code, record = run_ingest(capsys, tmp_path, single(str(tmp_path / "a.jsonl")), osmem_url)
    assert code == 1 and record["state"] == "FAILED"
    assert record["error"].startswith("index 'local-index' does not exist")


def test_unreachable_cluster_fails_with_one_line(capsys, tmp_path):
    from tests.servers import free_port

    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(1, 4)))
    url = f"http://127.0.0.1:{free_port()}"
    code, record = run_ingest(capsys, tmp_path, single(str(tmp_path / "a.jsonl")), url)
    assert code == 1 and record["error"].startswith(f"cannot reach OpenSearch at {url}")


@pytest.mark.integration
def test_task_get_and_list_show_the_stored_record(osmem_url, capsys, tmp_path):
    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(2, 4)))
    _, record = run_ingest(
        capsys,
        tmp_path,
        single(str(tmp_path / "a.jsonl")),
        osmem_url,
        index_body=knn_index_body(["embedding"], 4),
    )
    assert main(["task", "get", record["task_id"]]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored == record
    assert main(["task", "list"]) == 0
    assert [task["task_id"] for task in json.loads(capsys.readouterr().out)] == [record["task_id"]]
    assert main(["task", "get", "nope"]) == 2


@pytest.mark.integration
def test_validation_errors_are_one_line_exit_2_no_traceback(tmp_path, mlbatch_home):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                **SINGLE,
                "field_map": {"a": "source[3].$.a"},
                "data_source": {"type": "local", "source": ["x.jsonl"]},
            }
        )
    )
    result = run_mlbatch("ingest", str(bad), home=mlbatch_home)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mlbatch: error: field_map.a: source[3] is out of range: data_source.source has 1 entry"
    ]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.integration
def test_module_entry_point_runs_the_same_job(osmem_url, tmp_path, mlbatch_home):
    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(3, 4)))
    request_path, mapping_path = write_request(
        tmp_path, single(str(tmp_path / "a.jsonl")), knn_index_body(["embedding"], 4)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.batch_ingest",
            "--request",
            str(request_path),
            "--opensearch",
            osmem_url,
            "--create-index",
            str(mapping_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MLBATCH_HOME": str(mlbatch_home)},
        cwd=REPO,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["indexed"] == 3
    assert "indexed 3 document(s)" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("debug", [False, True])
def test_bulk_refused_mid_run_fails_the_task_with_one_line(tmp_path, mlbatch_home, debug):
    from benchmarks.null_sink import NullSink

    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(3, 4)))
    request_path, _ = write_request(tmp_path, single(str(tmp_path / "a.jsonl")))
    sink = NullSink(bulk_status=500).start()
    try:
        options = ["--max-retries=1", "--initial-backoff=0.01", *(["--debug"] if debug else [])]
        result = run_mlbatch(
            "ingest", str(request_path), "--opensearch", sink.url, *options, home=mlbatch_home
        )
    finally:
        sink.close()
    record = json.loads(result.stdout)
    assert result.returncode == 1 and record["state"] == "FAILED"
    assert record["error"] == (
        "_bulk to 'local-index' failed: HTTP 500 configured to refuse _bulk (gave up after 1 retries in 0 s)"
    )
    if debug:
        assert "Traceback" in result.stderr
    else:
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"mlbatch: ingestion failed: {record['error']}"


def test_password_in_the_cluster_url_is_never_printed(capsys, tmp_path):
    from tests.servers import free_port

    (tmp_path / "a.jsonl").write_bytes(jsonl(sagemaker_lines(1, 4)))
    url = f"http://admin:hunter2-secret@127.0.0.1:{free_port()}"
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(single(str(tmp_path / "a.jsonl"))))
    assert main(["ingest", str(request_path), "--opensearch", url]) == 1
    captured = capsys.readouterr()
    assert "hunter2-secret" not in captured.out + captured.err
    assert "cannot reach OpenSearch at http://admin:***@127.0.0.1" in captured.out


@pytest.mark.integration
def test_unreadable_files_fail_the_task_naming_the_file(osmem_url, capsys, tmp_path):
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(jsonl(sagemaker_lines(20, 4)))[:200])
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    for name in ("cut.jsonl.gz", "fake.parquet"):
        code, record = run_ingest(capsys, tmp_path, single(str(tmp_path / name)), osmem_url, index_body={})
        assert code == 1 and record["state"] == "FAILED"
        assert record["error"].startswith(f"{tmp_path / name}: cannot read (")
        assert "while running" not in record["error"]


@pytest.mark.integration
def test_parquet_decimals_are_numbers_and_binary_columns_are_dead_lettered(osmem_url, capsys, tmp_path):
    from decimal import Decimal

    rows = [
        {"id": 1, "price": Decimal("1.50"), "blob": None},
        {"id": 2, "price": Decimal("2.25"), "blob": b"\x00"},
    ]
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([("id", pa.int64()), ("price", pa.decimal128(5, 2)), ("blob", pa.binary())])
    )
    pq.write_table(table, tmp_path / "rows.parquet")
    request = {
        "index_name": "rows",
        "field_map": {"price": "$.price", "blob": "$.blob", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(tmp_path / "rows.parquet")]},
    }

    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body={})

    assert code == 3 and record["counts"]["rejected_by_stage"] == {"validate": 1}
    (entry,) = dead_letters(record)
    assert entry["line"] == 2 and entry["reason"].startswith("not JSON:") and "bytes" in entry["reason"]
    assert indexed_documents(osmem_url, "rows") == {"1": {"price": 1.5, "blob": None}}


@pytest.mark.integration
def test_command_line_mistakes_exit_2_without_running(tmp_path, mlbatch_home):
    (tmp_path / "r.json").write_text(json.dumps(single(str(tmp_path / "a.jsonl"))))
    cases = {
        ("ingest", str(tmp_path)): "mlbatch: error: request "
        + str(tmp_path)
        + ": cannot read (Is a directory)",
        ("ingest", str(tmp_path / "r.json"), "--bulk_size", "1"): "unrecognized arguments: --bulk_size 1",
        ("ingest", str(tmp_path / "r.json"), "stray"): "unrecognized arguments: stray",
    }
    for args, expected in cases.items():
        result = run_mlbatch(*args, home=mlbatch_home)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (mlbatch_home / "tasks.db").exists()


@pytest.mark.integration
def test_the_direct_runner_never_tries_prism(osmem_url, capsys, tmp_path, monkeypatch):
    """Beam 2.77's DirectRunner runs a pipeline Prism supports on Prism first, downloading its
    binary at run time; ours must run on the FnApiRunner without that attempt."""
    from apache_beam.runners.portability import prism_runner

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args)  # an exception here would only make Beam fall back, so record it
        raise RuntimeError("no Prism here")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]))
    request = {
        "index_name": "no-prism",
        "field_map": {"text": "$.text", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(tmp_path / "a.jsonl")]},
    }
    for extra in ([], ["--direct_running_mode=multi_threading"]):
        code, record = run_ingest(capsys, tmp_path, request, osmem_url, *extra, index_body={})
        assert code == 0, record
        assert record["counts"]["indexed"] == 2
    assert tried == []

"""The bulk sink against a fault-injecting server: retries, dead letters, outcome, auth, tuning, re-runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.data import jsonl
from tests.ingest_helpers import REPO, dead_letters, mlbatch_command, run_ingest, run_mlbatch, write_request

pytestmark = pytest.mark.integration

FAST_RETRIES = ("--initial-backoff=0.01", "--max-backoff=0.05")
MAPPING = {
    "settings": {"index.knn": True},
    "mappings": {
        "properties": {
            "embedding": {"type": "knn_vector", "dimension": 4},
            "rank": {"type": "integer"},
            "text": {"type": "text"},
        }
    },
}


def request_for(path: Path, index: str = "vectors") -> dict:
    return {
        "index_name": index,
        "field_map": {"embedding": "$.vec", "rank": "$.rank", "text": "$.text", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(path)]},
    }


def write_records(path: Path, count: int, bad: dict[int, dict] | None = None) -> dict[str, dict]:
    records = [
        {"id": f"d{i}", "vec": [i / 10, 0.5, -0.5, 1.0], "rank": i, "text": f"doc {i}"} for i in range(count)
    ]
    for position, change in (bad or {}).items():
        records[position].update(change)
    path.write_bytes(jsonl(records))
    return {record["id"]: record for record in records}


def test_faults_retried_bad_records_dead_lettered_every_good_document_exactly_once(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers(request_faults={429: 3, 500: 5}, item_429_every=7)
    bad = {
        4: {"vec": [1.0, 2.0]},
        9: {"vec": [1.0, "x", 1.0, 1.0]},
        13: {"rank": "many"},
        17: {"id": None},
        21: {"vec": [1.0, float("nan"), 1.0, 1.0]},
    }
    path = tmp_path / "records.jsonl"
    records = write_records(path, 60, bad)
    (path.read_bytes())
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--bulk-size=8", *FAST_RETRIES, index_body=MAPPING
    )

    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    counts = record["counts"]
    assert counts["read"] == 60 and counts["indexed"] == 55 and counts["bulk_retries"] > 0
    assert counts["rejected_by_stage"] == {"map": 1, "validate": 2, "bulk": 1, "parse": 1}
    good = set(records) - {"d4", "d9", "d13", None, "d21"}
    assert set(sink.docs("vectors")) == good
    assert all(sink.applied[doc_id] == 1 for doc_id in good)
    entries = {entry["line"]: entry for entry in dead_letters(record)}
    assert entries[5]["reason"] == "vector field 'embedding' has 2 dimensions; the index mapping expects 4"
    assert entries[10]["reason"] == "vector field 'embedding' element 1 is not a number: 'x'"
    assert entries[14]["stage"] == "bulk" and entries[14]["reason"].startswith(
        "HTTP 400 mapper_parsing_exception"
    )
    assert entries[18]["reason"] == "missing _id: $.id matched nothing"
    assert entries[22]["stage"] == "parse" and entries[22]["reason"].startswith("malformed JSON")
    assert all(entry["source"] == str(path) for entry in entries.values())

    code, again = run_ingest(capsys, tmp_path, request_for(path), sink.url, "--bulk-size=8", *FAST_RETRIES)
    assert code == 3 and again["counts"]["updated"] == 55
    assert set(sink.docs("vectors")) == good


def test_max_error_ratio_turns_rejections_into_failure(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 10, {1: {"vec": [1.0]}, 2: {"vec": [1.0]}})
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--max-error-ratio=0.1", index_body=MAPPING
    )
    assert code == 1 and record["state"] == "FAILED"
    assert record["error"].startswith("2 of 10 records rejected (20.00%)")


def test_create_action_skips_existing_ids(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 5)
    run_ingest(capsys, tmp_path, request_for(path), sink.url, index_body=MAPPING)
    sink.docs("vectors")["d0"] = {"text": "kept"}
    code, record = run_ingest(capsys, tmp_path, request_for(path), sink.url, "--action=create")
    assert code == 0 and record["counts"]["skipped_existing"] == 5
    assert sink.docs("vectors")["d0"] == {"text": "kept"}


def test_auth_refused_fails_fast_and_basic_auth_works(fault_servers, capsys, tmp_path, monkeypatch):
    sink = fault_servers(basic_auth=("admin", "correct-horse-battery"))
    path = tmp_path / "records.jsonl"
    write_records(path, 3)
    code, record = run_ingest(capsys, tmp_path, request_for(path), sink.url, index_body=MAPPING)
    assert code == 1 and "refused the credentials: HTTP 401" in record["error"]
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "correct-horse-battery")
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--user=admin", index_body=MAPPING
    )
    assert code == 0 and len(sink.docs("vectors")) == 3


def test_sigv4_signs_every_request(fault_servers, capsys, tmp_path, monkeypatch):
    sink = fault_servers()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-access-key")
    path = tmp_path / "records.jsonl"
    write_records(path, 3)
    code, record = run_ingest(
        capsys,
        tmp_path,
        request_for(path),
        sink.url,
        "--aws-sigv4=aoss",
        "--aws-region=eu-west-1",
        index_body=MAPPING,
    )
    assert code == 0, record
    assert sink.authorizations and all(
        auth.startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY/")
        and "/eu-west-1/aoss/aws4_request" in auth
        for auth in sink.authorizations
    )
    assert "example-secret-access-key" not in json.dumps(record)


def test_gzip_bodies_with_compress(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 4)
    code, _ = run_ingest(capsys, tmp_path, request_for(path), sink.url, "--compress", index_body=MAPPING)
    assert code == 0 and sink.content_encodings == ["gzip"] and len(sink.docs("vectors")) == 4


def test_bulk_tuning_is_restored_after_success_and_failure(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 4)
    code, _ = run_ingest(capsys, tmp_path, request_for(path), sink.url, "--bulk-tuning", index_body=MAPPING)
    assert code == 0
    assert sink.settings_history == [
        {"refresh_interval": "-1", "number_of_replicas": 0},
        {"refresh_interval": None, "number_of_replicas": "1"},
    ]
    assert sink.indices["vectors"]["settings"]["number_of_replicas"] == "1"
    sink.request_faults = {503: 1}
    code, record = run_ingest(
        capsys, tmp_path, request_for(path), sink.url, "--bulk-tuning", "--max-retries=1", *FAST_RETRIES
    )
    assert code == 1 and "gave up after 1 retries" in record["error"]
    assert sink.settings_history[-1] == {"refresh_interval": None, "number_of_replicas": "1"}
    assert "refresh_interval" not in sink.indices["vectors"]["settings"]


def test_credentials_never_appear_in_any_output(fault_servers, tmp_path, mlbatch_home, s3):
    secrets = {
        "access_key": "AKIASECRETACCESSKEY1",
        "secret_key": "s3cr3t-key-value-123",
        "session_token": "session-token-value-456",
        "password": "cluster-password-789",
    }
    s3.create_bucket(Bucket="bucket")
    s3.put_object(
        Bucket="bucket",
        Key="out/records.jsonl",
        Body=jsonl([{"id": "x", "vec": [1.0, 1.0], "rank": 1, "note": secrets["secret_key"]}]),
    )
    sink = fault_servers(basic_auth=("admin", secrets["password"]))
    request = {
        **request_for(tmp_path),
        "credential": {
            "region": "us-east-1",
            "access_key": secrets["access_key"],
            "secret_key": secrets["secret_key"],
            "session_token": secrets["session_token"],
        },
        "data_source": {"type": "s3", "source": ["s3://bucket/out/records.jsonl"]},
    }
    request["field_map"]["note"] = "$.note"
    request_path, mapping_path = write_request(tmp_path, request, MAPPING)
    result = run_mlbatch(
        "ingest",
        str(request_path),
        "--opensearch",
        sink.url,
        "--user=admin",
        "--create-index",
        str(mapping_path),
        "--dlq",
        str(tmp_path / "dlq"),
        home=mlbatch_home,
        env={"OPENSEARCH_PASSWORD": secrets["password"]},
    )
    assert result.returncode == 3, result.stderr
    written = [result.stdout, result.stderr, (mlbatch_home / "tasks.db").read_bytes().decode("latin-1")]
    written += [path.read_text() for path in (tmp_path / "dlq").glob("*.jsonl")]
    assert "vector field 'embedding' has 2 dimensions" in written[-1]
    for secret in secrets.values():
        assert all(secret not in text for text in written), secret


def test_killed_mid_run_then_rerun_completes_the_index(fault_servers, tmp_path, mlbatch_home):
    sink = fault_servers(bulk_delay=0.3)
    path = tmp_path / "records.jsonl"
    records = write_records(path, 120)
    request_path, mapping_path = write_request(tmp_path, request_for(path), MAPPING)
    options = [
        "--opensearch",
        sink.url,
        "--bulk-size=10",
        "--bulk-concurrency=1",
        "--create-index",
        str(mapping_path),
    ]
    command = mlbatch_command("ingest", str(request_path), *options)
    env = {**os.environ, "MLBATCH_HOME": str(mlbatch_home)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while sink.bulk_calls < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    partial = len(sink.docs("vectors"))
    assert 0 < partial < 120

    sink.bulk_delay = 0.0
    result = run_mlbatch("ingest", str(request_path), *options, home=mlbatch_home)
    assert result.returncode == 0, result.stderr
    assert sink.docs("vectors").keys() == records.keys()
    assert sink.docs("vectors")["d7"] == {"embedding": records["d7"]["vec"], "rank": 7, "text": "doc 7"}


def test_dead_letters_can_go_to_s3(fault_servers, capsys, tmp_path, s3):
    s3.create_bucket(Bucket="batch")
    s3.put_object(Bucket="batch", Key="in/records.jsonl", Body=b'{"id": "a", "vec": [1.0]}\n{not json\n')
    request = {
        **request_for(tmp_path),
        "credential": {"access_key": "AKIAEXAMPLE", "secret_key": "example-secret"},
        "data_source": {"type": "s3", "source": ["s3://batch/in/records.jsonl"]},
    }
    sink = fault_servers()
    code, record = run_ingest(
        capsys, tmp_path, request, sink.url, "--dlq", "s3://batch/dlq/run-1/", index_body=MAPPING
    )
    assert code == 3 and record["dlq"] == "s3://batch/dlq/run-1/"
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="batch", Prefix="dlq/run-1/")["Contents"]]
    lines = [
        json.loads(line)
        for key in keys
        for line in s3.get_object(Bucket="batch", Key=key)["Body"].read().splitlines()
    ]
    assert sorted((entry["stage"], entry["line"]) for entry in lines) == [("parse", 2), ("validate", 1)]


def test_vectors_in_a_field_not_mapped_as_knn_vector_are_warned_about(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 2)
    mapping = {"mappings": {"properties": {"embedding": {"type": "float"}}}}
    request_path = tmp_path / "r.json"
    request_path.write_text(json.dumps(request_for(path)))
    (tmp_path / "m.json").write_text(json.dumps(mapping))
    from pipelines.cli import main

    assert (
        main(
            [
                "ingest",
                str(request_path),
                "--opensearch",
                sink.url,
                "--create-index",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "field 'embedding' is mapped as float, not knn_vector" in err
    assert "field 'embedding' holds vectors but is not a knn_vector field" in err


def join_request(tmp_path, outputs: list[dict], inputs: list[dict]) -> dict:
    (tmp_path / "out.jsonl").write_bytes(jsonl(outputs))
    (tmp_path / "in.jsonl").write_bytes(jsonl(inputs))
    return {
        "index_name": "vectors",
        "field_map": {
            "embedding": "source[0].$.vec",
            "text": "source[1].$.text",
            "rank": "source[1].$.rank",
            "_id": ["source[0].$.k", "source[1].$.k"],
        },
        "data_source": {"type": "local", "source": [str(tmp_path / "out.jsonl"), str(tmp_path / "in.jsonl")]},
    }


def test_a_rejected_joined_document_lists_every_record_and_counts_them(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    request = join_request(
        tmp_path,
        [{"k": "a", "vec": [1.0, 2.0, 3.0, 4.0]}, {"k": "b", "vec": [1.0, 2.0, 3.0, 4.0]}],
        [{"k": "b", "text": "bee", "rank": "many"}, {"k": "a", "text": "ay", "rank": 1}],
    )
    code, record = run_ingest(
        capsys, tmp_path, request, sink.url, "--max-error-ratio=0.4", index_body=MAPPING
    )
    assert code == 1 and record["counts"]["dlq"] == 1 and record["counts"]["rejected_records"] == 2
    assert record["error"].startswith("2 of 4 records rejected (50.00%)")
    (entry,) = dead_letters(record)
    assert entry["stage"] == "bulk"
    assert entry["origins"] == [
        {"source": str(tmp_path / "out.jsonl"), "line": 2},
        {"source": str(tmp_path / "in.jsonl"), "line": 1},
    ]


def test_a_bad_vector_in_a_join_rejects_its_record_and_the_rest_of_the_key_is_indexed(
    fault_servers, capsys, tmp_path
):
    sink = fault_servers()
    request = join_request(
        tmp_path,
        [{"k": "a", "vec": [1.0, 2.0, 3.0, 4.0]}, {"k": "b", "vec": [1.0]}],
        [{"k": "b", "text": "bee"}, {"k": "a", "text": "ay"}],
    )
    code, record = run_ingest(capsys, tmp_path, request, sink.url, index_body=MAPPING)
    assert code == 3 and record["counts"]["invalid_vectors"] == 1
    (entry,) = dead_letters(record)
    assert (entry["stage"], entry["source"], entry["line"]) == ("validate", str(tmp_path / "out.jsonl"), 2)
    assert entry["reason"] == "vector field 'embedding' has 1 dimensions; the index mapping expects 4"
    assert sink.docs("vectors")["b"] == {"text": "bee"}


def test_bulk_tuning_left_over_by_a_killed_run_is_reset_not_kept(fault_servers, capsys, tmp_path):
    sink = fault_servers()
    path = tmp_path / "records.jsonl"
    write_records(path, 2)
    run_ingest(capsys, tmp_path, request_for(path), sink.url, index_body=MAPPING)
    sink.indices["vectors"]["settings"].update(refresh_interval="-1", number_of_replicas="0")
    code, _ = run_ingest(capsys, tmp_path, request_for(path), sink.url, "--bulk-tuning")
    assert code == 0
    assert sink.settings_history[-1] == {"refresh_interval": None, "number_of_replicas": None}
    assert "refresh_interval" not in sink.indices["vectors"]["settings"]

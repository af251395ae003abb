"""The seed's three-file OpenAI request, verbatim, read through the openai SDK from a local files server."""

from __future__ import annotations

import copy

import orjson
import pytest

from tests.conftest import OPENAI_TEST_KEY
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body, openai_batch_files
from tests.ingest_helpers import indexed_documents, run_ingest

pytestmark = pytest.mark.integration

DIM = 384


def seed_request_with_test_key() -> dict:
    request = copy.deepcopy(OPENAI_REQUEST)
    request["credential"]["openAI_key"] = OPENAI_TEST_KEY
    return request


def serve_seed_files(server, count: int) -> tuple[list, list, list]:
    outputs, inputs, metadata = openai_batch_files(count, DIM)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    server.files.update({output_id: jsonl(outputs), input_id: jsonl(inputs), other_id: jsonl(metadata)})
    return outputs, inputs, metadata


def test_openai_seed_request_joins_three_files_by_custom_id(openai_files, osmem_url, capsys, tmp_path):
    outputs, inputs, metadata = serve_seed_files(openai_files, 10)
    index = knn_index_body(["question_embedding", "answer_embedding"], DIM)

    code, record = run_ingest(capsys, tmp_path, seed_request_with_test_key(), osmem_url, index_body=index)

    assert code == 0, record
    counts = record["counts"]
    assert counts["read"] == len(outputs) + len(inputs) + len(metadata) == 25
    assert counts["keys"] == 10 and counts["indexed"] == 10 and counts["bulk_requests"] == 1
    assert counts["incomplete"] == 5 and counts["merged_records"] == 25
    docs = indexed_documents(osmem_url, "my-nlp-index-openai")
    assert set(docs) == {f"request-{i}" for i in range(1, 11)}
    by_id = {output["custom_id"]: output for output in outputs}
    ten = docs["request-10"]
    assert ten["question"] == "question 10?" and ten["answer"] == "answer 10."
    assert ten["question_embedding"] == by_id["request-10"]["response"]["body"]["data"][0]["embedding"]
    assert ten["answer_embedding"] == by_id["request-10"]["response"]["body"]["data"][1]["embedding"]
    assert ten["custom_field1"] == "value 10" and ten["custom_field2"] == 10
    assert "custom_field1" not in docs["request-9"]
    assert OPENAI_TEST_KEY not in str(record)


def test_inner_join_keeps_only_keys_in_every_source(openai_files, osmem_url, capsys, tmp_path):
    serve_seed_files(openai_files, 6)
    index = knn_index_body(["question_embedding", "answer_embedding"], DIM)

    code, record = run_ingest(
        capsys, tmp_path, seed_request_with_test_key(), osmem_url, "--join", "inner", index_body=index
    )

    assert code == 0, record
    assert record["counts"]["join_dropped"] == 3
    assert set(indexed_documents(osmem_url, "my-nlp-index-openai")) == {"request-6", "request-4", "request-2"}


def test_wrong_openai_key_fails_with_one_line_and_no_secret(openai_files, osmem_url, capsys, tmp_path):
    serve_seed_files(openai_files, 2)
    request = seed_request_with_test_key()
    request["credential"]["openAI_key"] = "sk-wrong-key-123456"

    code, record = run_ingest(
        capsys, tmp_path, request, osmem_url, index_body=knn_index_body(["question_embedding"], DIM)
    )

    assert code == 1, record
    assert record["state"] == "FAILED"
    assert record["error"].startswith("file-<your output file id>: the OpenAI files API answered 401")
    assert "\n" not in record["error"]
    assert "sk-wrong-key-123456" not in str(record)


def test_missing_openai_file_fails_before_the_run(openai_files, osmem_url, capsys, tmp_path):
    outputs, inputs, _ = openai_batch_files(2, DIM)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    openai_files.files.update({output_id: jsonl(outputs), input_id: jsonl(inputs)})

    code, record = run_ingest(capsys, tmp_path, seed_request_with_test_key(), osmem_url)

    assert code == 1 and record["counts"]["read"] == 0
    assert record["error"].startswith(f"{other_id}: the OpenAI files API answered 404")


def test_json_line_separators_inside_strings_do_not_split_records(openai_files, osmem_url, capsys, tmp_path):
    outputs, inputs, metadata = openai_batch_files(2, DIM)
    inputs[0]["body"]["input"][0] = "line\u2028separator\u2029and\x85more"
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    raw_inputs = b"".join(orjson.dumps(record) + b"\n" for record in inputs)
    openai_files.files.update({output_id: jsonl(outputs), input_id: raw_inputs, other_id: jsonl(metadata)})
    index = knn_index_body(["question_embedding", "answer_embedding"], DIM)

    code, record = run_ingest(capsys, tmp_path, seed_request_with_test_key(), osmem_url, index_body=index)

    assert code == 0, record
    assert record["counts"]["read"] == 5
    assert (
        indexed_documents(osmem_url, "my-nlp-index-openai")["request-1"]["question"]
        == inputs[0]["body"]["input"][0]
    )

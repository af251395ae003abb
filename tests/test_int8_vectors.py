"""Byte and binary `knn_vector` fields through the real pipeline: `mlbatch ingest` (the DirectRunner)
into the local index server, then a k-NN search of what it indexed; bad int8 vectors are dead letters."""

from __future__ import annotations

import pytest
from opensearchpy import OpenSearch

from connectors.local.index_server import LocalIndexServer
from tests.data import jsonl
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def index_server(tmp_path):
    server = LocalIndexServer(directory=tmp_path / "indexes").start()
    yield server
    server.close()


def int8_mapping(data_type: str, dimension: int, space_type: str) -> dict:
    engine = "faiss" if data_type == "binary" else "lucene"
    method = {"name": "hnsw", "space_type": space_type, "engine": engine}
    vector = {"type": "knn_vector", "dimension": dimension, "data_type": data_type, "method": method}
    return {
        "settings": {"index.knn": True},
        "mappings": {"properties": {"v": vector, "text": {"type": "keyword"}}},
    }


def ingest(capsys, tmp_path, url: str, records: list[dict], mapping: dict) -> dict:
    path = tmp_path / "records.jsonl"
    path.write_bytes(jsonl(records))
    request = {
        "index_name": "int8",
        "field_map": {"_id": "$.id", "v": "$.v", "text": "$.text"},
        "data_source": {"type": "local", "source": [str(path)]},
    }
    _, record = run_ingest(capsys, tmp_path, request, url, index_body=mapping)
    return record


def nearest(url: str, vector: list[int], k: int) -> list[str]:
    client = OpenSearch(hosts=[url])
    body = {"size": k, "query": {"knn": {"v": {"vector": vector, "k": k}}}}
    return [hit["_id"] for hit in client.search(index="int8", body=body)["hits"]["hits"]]


def test_a_byte_index_is_filled_and_searched_and_bad_byte_vectors_are_dead_letters(
    index_server, capsys, tmp_path
):
    good = {f"b{i}": [i * 10 - 60, 0, 127 - i * 20, -128 + i] for i in range(8)}
    records = [{"id": key, "v": vector, "text": key} for key, vector in good.items()]
    records += [
        {"id": "half", "v": [1, 2.5, 3, 4], "text": "float"},
        {"id": "wide", "v": [1, 2, 128, 4], "text": "out of range"},
        {"id": "low", "v": [-129, 2, 3, 4], "text": "out of range"},
        {"id": "short", "v": [1, 2, 3], "text": "short"},
    ]
    record = ingest(capsys, tmp_path, index_server.url, records, int8_mapping("byte", 4, "l2"))
    assert record["state"] == "COMPLETED_WITH_ERROR" and record["counts"]["indexed"] == 8, record
    assert record["counts"]["invalid_vectors"] == 4
    assert {key: doc["v"] for key, doc in indexed_documents(index_server.url, "int8").items()} == good
    reasons = {entry["raw"].split('"')[3]: entry["reason"] for entry in dead_letters(record)}
    assert reasons == {
        "half": "vector field 'v' element 1 is 2.5; a byte vector holds integers in [-128, 127]",
        "wide": "vector field 'v' element 2 is 128; a byte vector holds integers in [-128, 127]",
        "low": "vector field 'v' element 0 is -129; a byte vector holds integers in [-128, 127]",
        "short": "vector field 'v' has 3 dimensions; the index mapping expects 4",
    }
    assert nearest(index_server.url, [-29, 0, 67, -125], 3) == ["b3", "b4", "b2"]


def test_a_binary_index_is_filled_with_dimension_over_eight_elements_and_searched_by_hamming(
    index_server, capsys, tmp_path
):
    bits = {
        "same": [7, -1, 0, 127],
        "one_bit": [6, -1, 0, 127],
        "two_bits": [7, -1, 3, 127],
        "far": [-8, 0, -1, -128],
    }
    records = [{"id": key, "v": vector, "text": key} for key, vector in bits.items()]
    record = ingest(capsys, tmp_path, index_server.url, records, int8_mapping("binary", 32, "hamming"))
    assert record["state"] == "COMPLETED" and record["counts"]["indexed"] == 4, record
    assert record["counts"]["dlq"] == 0 and "dlq" not in record
    assert {key: doc["v"] for key, doc in indexed_documents(index_server.url, "int8").items()} == bits
    assert nearest(index_server.url, [7, -1, 0, 127], 4) == ["same", "one_bit", "two_bits", "far"]

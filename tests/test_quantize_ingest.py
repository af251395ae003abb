"""`--quantize byte` through the real pipeline: a float embedding job fills a byte index on the local
index server with the stated, reported and reproducible scale, and searches it as the float index."""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest
from opensearchpy import OpenSearch

from connectors.local.index_server import LocalIndexServer
from pipelines.cli import main
from tests.data import jsonl
from tests.ingest_helpers import dead_letters, indexed_documents
from transforms.quantize import parse_quantize, quantize_vector

pytestmark = pytest.mark.integration

DIMENSION = 16


@pytest.fixture
def index_server(tmp_path):
    server = LocalIndexServer(directory=tmp_path / "indexes").start()
    yield server
    server.close()


def mapping(data_type: str) -> dict:
    engine = "lucene" if data_type == "byte" else "faiss"
    method = {"name": "hnsw", "space_type": "l2", "engine": engine}
    vector = {"type": "knn_vector", "dimension": DIMENSION, "data_type": data_type, "method": method}
    return {"settings": {"index.knn": True}, "mappings": {"properties": {"v": vector}}}


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def corpus(count: int, seed: int = 5) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {f"d{i:02d}": unit([rng.gauss(0, 1) for _ in range(DIMENSION)]) for i in range(count)}


def embedding_line(custom_id: str, vector: object) -> dict:
    """A line of an OpenAI batch output, whose vector the raw-vector path would take as written."""
    return {"custom_id": custom_id, "response": {"body": {"data": [{"embedding": vector}]}}}


def ingest(capsys, tmp_path, url: str, index: str, lines: list[dict], *extra: str) -> tuple[int, dict, str]:
    """Run `mlbatch ingest` into `index` (a byte index with --quantize, else float); (exit code,
    task record, what it logged)."""
    data = tmp_path / f"{index}.jsonl"
    data.write_bytes(jsonl(lines))
    request = {
        "index_name": index,
        "field_map": {"_id": "$.custom_id", "v": "$.response.body.data[0].embedding"},
        "data_source": {"type": "local", "source": [str(data)]},
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "mapping.json").write_text(json.dumps(mapping("byte" if "--quantize" in extra else "float")))
    capsys.readouterr()
    args = ["ingest", str(tmp_path / "request.json"), "--opensearch", url]
    code = main([*args, "--create-index", str(tmp_path / "mapping.json"), *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def stored(url: str, index: str) -> dict[str, list[int]]:
    return {key: doc["v"] for key, doc in indexed_documents(url, index).items()}


def test_a_float_job_fills_a_byte_index_with_the_stated_scale_the_same_bytes_every_run(
    index_server, capsys, tmp_path
):
    vectors = corpus(30)
    vectors["d07"][3] = 1.5  # beyond MAX_ABS 1.0: clamped to 127
    lines = [embedding_line(key, vector) for key, vector in vectors.items()]
    lines.append(embedding_line("short", [0.1] * (DIMENSION - 1)))
    scale = parse_quantize("byte").scale
    expected = {key: orjson.loads(quantize_vector(vector, scale).wire) for key, vector in vectors.items()}
    assert expected["d07"][3] == 127

    runs = {}
    for index, helper in (("first", "off"), ("again", "on")):
        code, record, logged = ingest(
            capsys, tmp_path, index_server.url, index, lines, "--quantize", "byte", "--read-helper", helper
        )
        assert code == 3 and record["counts"]["indexed"] == 30, record
        assert record["quantize"] == {"data_type": "byte", "max_abs": 1.0, "scale": 127.0, "clamped": 1}
        assert "--quantize: float vectors of 'v' to byte: q = round(clamp(x * 127.0, -128, 127))" in logged
        assert "--quantize: 1 value(s) clamped to [-128, 127]" in logged
        (letter,) = dead_letters(record)
        assert (
            letter["reason"]
            == f"vector field 'v' has {DIMENSION - 1} dimensions; the index mapping expects 16"
        )
        runs[index] = stored(index_server.url, index)
    assert runs["first"] == runs["again"] == expected


def nearest(url: str, index: str, vector: list, k: int) -> list[str]:
    body = {"size": k, "query": {"knn": {"v": {"vector": vector, "k": k}}}}
    hits = OpenSearch(hosts=[url]).search(index=index, body=body)["hits"]["hits"]
    return [hit["_id"] for hit in hits]


def test_the_quantised_byte_index_returns_the_float_indexs_top_hits(index_server, capsys, tmp_path):
    vectors = corpus(60)
    lines = [embedding_line(key, vector) for key, vector in vectors.items()]
    for index, extra in (("floats", ()), ("bytes", ("--quantize", "byte"))):
        code, record, _ = ingest(capsys, tmp_path, index_server.url, index, lines, *extra)
        assert code == 0 and record["counts"]["indexed"] == 60, record
    rng = random.Random(11)
    scale = parse_quantize("byte").scale
    for key in ("d03", "d17", "d29", "d42", "d58"):
        query = unit([x + rng.gauss(0, 0.15) for x in vectors[key]])
        float_hits = nearest(index_server.url, "floats", query, 3)
        byte_query = orjson.loads(quantize_vector(query, scale).wire)
        assert float_hits[0] == key
        assert nearest(index_server.url, "bytes", byte_query, 3) == float_hits


@pytest.mark.parametrize("data_type", ["float", "binary"])
def test_quantising_into_a_float_or_binary_field_fails_naming_the_field(
    index_server, capsys, tmp_path, data_type
):
    body = mapping(data_type)
    body["mappings"]["properties"]["v"]["dimension"] = DIMENSION * (8 if data_type == "binary" else 1)
    OpenSearch(hosts=[index_server.url]).indices.create(index="target", body=body)
    lines = [embedding_line("a", [0.1] * DIMENSION)]
    code, record, logged = ingest(capsys, tmp_path, index_server.url, "target", lines, "--quantize", "byte")
    message = (
        "--quantize byte: index 'target' has no byte knn_vector field to quantise into "
        f'(\'v\' is {data_type}); map the field with "data_type": "byte" or leave --quantize out'
    )
    assert code == 1 and record["state"] == "FAILED" and record["error"] == message
    assert message in logged and record["counts"]["read"] == 0

"""The embedded default: the local index server, the batch embedding service (a real model), the flow."""

from __future__ import annotations

import json
import math
import random
import time

import pytest
from opensearchpy import OpenSearch

from connectors.local.embedding_server import EmbeddingService
from connectors.local.index_query import knn_score
from connectors.local.index_server import LocalIndexServer
from pipelines.cli import main
from scripts.demo_corpus import batch_line, module_sources, passages
from tests.data import jsonl

pytestmark = pytest.mark.integration

BLUEPRINT = "connectors/batch_predict/blueprints/openai_batch.json"


@pytest.fixture
def index_server(tmp_path):
    server = LocalIndexServer(directory=tmp_path / "indexes").start()
    yield server
    server.close()


def knn_mapping(space_type: str, dimension: int = 3) -> dict:
    return {
        "settings": {"index.knn": True},
        "mappings": {
            "properties": {
                "v": {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {"name": "hnsw", "space_type": space_type},
                },
                "tag": {"type": "keyword"},
                "text": {"type": "text"},
            }
        },
    }


@pytest.mark.parametrize("space_type", ["l2", "cosinesimil", "innerproduct"])
def test_knn_scores_as_opensearch_scores_each_space_type(index_server, space_type):
    client = OpenSearch(hosts=[index_server.url])
    client.indices.create(index="vectors", body=knn_mapping(space_type))
    rng = random.Random(3)
    docs = {str(i): [rng.uniform(-1, 1) for _ in range(3)] for i in range(20)}
    body = "".join(
        json.dumps({"index": {"_id": i}}) + "\n" + json.dumps({"v": v}) + "\n" for i, v in docs.items()
    )
    assert not client.bulk(body=body, index="vectors")["errors"]
    query = [0.3, -0.2, 0.9]
    hits = client.search(
        index="vectors", body={"size": 5, "query": {"knn": {"v": {"vector": query, "k": 5}}}}
    )

    def expected(vector: list[float]) -> float:
        if space_type == "l2":
            return knn_score("l2", sum((a - b) ** 2 for a, b in zip(vector, query, strict=True)))
        dot = sum(a * b for a, b in zip(vector, query, strict=True))
        if space_type == "cosinesimil":
            return knn_score("cosinesimil", dot / math.hypot(*vector) / math.hypot(*query))
        return knn_score("innerproduct", dot)

    ranked = sorted(docs, key=lambda i: -expected(docs[i]))[:5]
    assert [hit["_id"] for hit in hits["hits"]["hits"]] == ranked
    for hit in hits["hits"]["hits"]:
        assert hit["_score"] == pytest.approx(expected(docs[hit["_id"]]), rel=1e-4)


def test_knn_filter_term_match_count_doc_and_persistence(index_server, tmp_path):
    client = OpenSearch(hosts=[index_server.url])
    client.indices.create(index="docs", body=knn_mapping("l2"))
    rows = [
        ("a", [0, 0, 0], "red", "the quick fox"),
        ("b", [0, 0, 1], "blue", "lazy dog"),
        ("c", [0, 0, 2], "red", "quick dog"),
    ]
    body = "".join(
        json.dumps({"index": {"_id": i}}) + "\n" + json.dumps({"v": v, "tag": t, "text": x}) + "\n"
        for i, v, t, x in rows
    )
    client.bulk(body=body, index="docs")
    knn = {"v": {"vector": [0, 0, 2], "k": 3, "filter": {"term": {"tag": "red"}}}}
    assert [h["_id"] for h in client.search(index="docs", body={"query": {"knn": knn}})["hits"]["hits"]] == [
        "c",
        "a",
    ]
    assert {
        h["_id"]
        for h in client.search(index="docs", body={"query": {"match": {"text": "dog"}}})["hits"]["hits"]
    } == {"b", "c"}
    assert client.count(index="docs", body={"query": {"term": {"tag": "red"}}})["count"] == 2
    assert client.get(index="docs", id="b")["_source"]["text"] == "lazy dog"
    bad = client.bulk(body=json.dumps({"index": {"_id": "d"}}) + '\n{"v": [1, 2]}\n', index="docs")["items"][
        0
    ]["index"]
    assert bad["status"] == 400 and "Vector dimension mismatch" in bad["error"]["reason"]
    client.bulk(body=json.dumps({"delete": {"_id": "a"}}) + "\n", index="docs")

    reopened = LocalIndexServer(directory=tmp_path / "indexes").start()
    try:
        again = OpenSearch(hosts=[reopened.url])
        assert again.count(index="docs")["count"] == 2
        assert (
            again.indices.get_mapping(index="docs")["docs"]["mappings"]["properties"]["v"]["dimension"] == 3
        )
    finally:
        reopened.close()


def test_whole_local_flow_on_a_small_corpus(index_server, tmp_path, capsys, monkeypatch):
    """Real model, real services: submit -> wait -> ingest -> search finds the command-line parsers."""
    service = EmbeddingService(api_key="local").start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", service.url)
        modules = [
            "argparse",
            "optparse",
            "getopt",
            "json",
            "csv",
            "datetime",
            "sqlite3",
            "zipfile",
            "shutil",
            "random",
            "statistics",
            "hashlib",
            "textwrap",
            "unittest",
            "logging",
            "socket",
        ]
        lines = [batch_line(name, text) for name, text in passages(module_sources(modules))][:150]
        (tmp_path / "input.jsonl").write_bytes(jsonl(lines))
        import openai

        input_file = openai.OpenAI(api_key="local", base_url=service.url).files.create(
            file=(tmp_path / "input.jsonl").open("rb"), purpose="batch"
        )
        with open(BLUEPRINT) as blueprint:
            connector = json.load(blueprint)
        connector["parameters"]["base_url"] = service.url
        connector["credential"] = {"openAI_key": "local"}
        (tmp_path / "connector.json").write_text(json.dumps(connector))

        assert (
            main(
                [
                    "predict",
                    "submit",
                    "--connector",
                    str(tmp_path / "connector.json"),
                    "--parameters",
                    json.dumps({"input_file_id": input_file.id}),
                ]
            )
            == 0
        )
        task_id = json.loads(capsys.readouterr().out)["task_id"]
        code = main(
            [
                "predict",
                "wait",
                task_id,
                "--interval",
                "0.2",
                "--max-interval",
                "1",
                "--then-ingest",
                "samples/stdlib-request.json",
                "--opensearch",
                index_server.url,
                "--create-index",
                "samples/stdlib-index.json",
            ]
        )
        record = json.loads(capsys.readouterr().out)
        assert code == 0 and record["state"] == "COMPLETED", record
        assert record["counts"]["indexed"] == len(lines)

        assert (
            main(
                [
                    "search",
                    "how do I parse command line options",
                    "--index",
                    "mlbatch-stdlib",
                    "--opensearch",
                    index_server.url,
                    "-k",
                    "3",
                    "--json",
                ]
            )
            == 0
        )
        hits = json.loads(capsys.readouterr().out)
        assert {hit["_id"] for hit in hits} & {"argparse", "optparse", "getopt"}
        assert len(hits[0]["_source"]["text_embedding"]) == 384
    finally:
        service.close()


def test_embedding_service_checks_the_key_and_cancels_a_batch():
    import openai

    calls: list[int] = []

    def slow_embed(texts):
        calls.append(len(texts))
        time.sleep(0.2)
        return [[0.0] * 384 for _ in texts]

    service = EmbeddingService(api_key="right", embed=slow_embed).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="wrong", base_url=service.url).files.list()
        client = openai.OpenAI(api_key="right", base_url=service.url)
        lines = [batch_line(f"id-{i}", f"text {i}") for i in range(300)]
        uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert client.batches.cancel(batch.id).status == "cancelling"
        for _ in range(50):
            if client.batches.retrieve(batch.id).status == "cancelled":
                break
            time.sleep(0.1)
        assert client.batches.retrieve(batch.id).status == "cancelled"
        assert sum(calls) < 300
    finally:
        service.close()

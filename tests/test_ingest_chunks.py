"""Chunked passages through the real pipeline into the local index server, found by nested k-NN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from connectors.local.index_server import LocalIndexServer
from pipelines.cli import main
from tests.data import jsonl
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest

pytestmark = pytest.mark.integration

PASSAGES = {
    "cats": (["Cats purr when content.", "Dogs bark at strangers."], [[1, 0, 0], [0, 1, 0]]),
    "sea": (["Fish swim in schools.", "Birds fly south.", "Frogs jump."], [[0, 0, 1], [1, 1, 0], [1, 0, 1]]),
    "torn": (["One chunk here.", "Another chunk."], [[1, 1, 1]]),  # one embedding for two chunks
    "short": (["A chunk with a short vector."], [[1, 0]]),
}
MAPPING = {
    "settings": {"index.knn": True},
    "mappings": {
        "properties": {
            "custom_id": {"type": "keyword"},
            "chunks": {
                "type": "nested",
                "properties": {
                    "text": {"type": "text"},
                    "embedding": {"type": "knn_vector", "dimension": 3, "space_type": "cosinesimil"},
                },
            },
        }
    },
}


@pytest.fixture
def index_server(tmp_path):
    server = LocalIndexServer(directory=tmp_path / "indexes").start()
    yield server
    server.close()


def batch_files(tmp_path) -> dict:
    inputs = [
        {"custom_id": key, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": texts}}
        for key, (texts, _) in PASSAGES.items()
    ]
    outputs = [
        {
            "custom_id": key,
            "response": {"status_code": 200, "body": {"data": [{"embedding": v} for v in vectors]}},
        }
        for key, (_, vectors) in reversed(PASSAGES.items())
    ]
    (tmp_path / "output.jsonl").write_bytes(jsonl(outputs))
    (tmp_path / "input.jsonl").write_bytes(jsonl(inputs))
    return {
        "index_name": "passages",
        "field_map": {
            "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
            "chunks[].text": "source[1].$.body.input[*]",
            "chunks[].embedding": "source[0].$.response.body.data[*].embedding",
        },
        "ingest_fields": ["source[1].$.custom_id"],
        "data_source": {
            "type": "local",
            "source": [str(tmp_path / "output.jsonl"), str(tmp_path / "input.jsonl")],
        },
    }


@pytest.mark.parametrize("strategy", ["broadcast", "shuffle"])
def test_chunked_passages_are_nested_documents_found_by_their_best_chunk(
    index_server, capsys, tmp_path, strategy
):
    request = batch_files(tmp_path)
    code, record = run_ingest(
        capsys,
        tmp_path,
        request,
        index_server.url,
        "--chunk-lists",
        "--join-strategy",
        strategy,
        index_body=MAPPING,
    )

    assert code == 3 and record["state"] == "COMPLETED_WITH_ERROR", record
    assert record["counts"]["rejected_by_stage"] == {"map": 1, "validate": 1}
    reasons = {entry["stage"]: entry["reason"] for entry in dead_letters(record)}
    assert reasons["map"] == (
        "chunk list 'chunks': its fields differ in length (chunks[].text has 2, chunks[].embedding has 1)"
    )
    assert "chunk 0: has 2 dimensions; the index mapping expects 3" in reasons["validate"]
    docs = indexed_documents(index_server.url, "passages")
    assert docs["cats"] == {
        "chunks": [
            {"text": "Cats purr when content.", "embedding": [1, 0, 0]},
            {"text": "Dogs bark at strangers.", "embedding": [0, 1, 0]},
        ],
        "custom_id": "cats",
    }
    assert "torn" not in docs
    assert docs["short"] == {"chunks": [{"text": "A chunk with a short vector."}], "custom_id": "short"}

    nested = {
        "path": "chunks",
        "query": {"knn": {"chunks.embedding": {"vector": [0.1, 1, 0], "k": 1}}},
        "inner_hits": {},
    }
    (hit,) = OpenSearch(hosts=[index_server.url]).search(
        index="passages", body={"query": {"nested": nested}}
    )["hits"]["hits"]
    assert hit["_id"] == "cats"
    assert hit["inner_hits"]["chunks"]["hits"]["hits"][0]["_source"]["text"] == "Dogs bark at strangers."


def test_mlbatch_search_shows_the_matching_chunk(index_server, capsys, tmp_path):
    code, record = run_ingest(
        capsys, tmp_path, batch_files(tmp_path), index_server.url, "--chunk-lists", index_body=MAPPING
    )
    assert record["counts"]["indexed"] == 3, record

    args = ["search", "--vector", "[0, 0.2, 1]", "--index", "passages", "--opensearch", index_server.url]
    assert main([*args, "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[1:] == ["sea", "[chunk", "0]", "Fish", "swim", "in", "schools."]
    assert len(lines) == 4
    assert main([*args, "-k", "1", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["inner_hits"]["chunks"]["hits"]["hits"][0]["_nested"] == {"field": "chunks", "offset": 0}


def test_a_single_source_zips_its_own_parallel_lists(index_server, capsys, tmp_path):
    lines = [{"id": 1, "content": ["alpha", "beta"], "SageMakerOutput": [[1, 0, 0], [0, 0, 1]]}]
    (tmp_path / "out.jsonl").write_bytes(jsonl(lines))
    request = {
        "index_name": "passages",
        "field_map": {"_id": "$.id", "chunks[].text": "$.content", "chunks[].embedding": "$.SageMakerOutput"},
        "data_source": {"type": "local", "source": [str(tmp_path / "out.jsonl")]},
    }
    code, record = run_ingest(
        capsys, tmp_path, request, index_server.url, "--chunk-lists", index_body=MAPPING
    )
    assert code == 0, record
    assert indexed_documents(index_server.url, "passages")["1"]["chunks"][1] == {
        "text": "beta",
        "embedding": [0, 0, 1],
    }


def test_the_chunked_sample_request_finds_the_command_line_parsers_by_their_best_chunk(
    index_server, capsys, tmp_path, monkeypatch
):
    """Real model, real services, the samples `./run_local.sh --chunks` uses: passages split into
    chunks of two sentences, one batch line each, ingested as nested chunks and searched."""
    import openai

    from connectors.local.embedding_server import EmbeddingService
    from scripts.demo_corpus import batch_line, chunks_of, module_sources, passages

    service = EmbeddingService(api_key="local").start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", service.url)
        modules = ["argparse", "optparse", "getopt", "json", "csv", "zipfile", "shutil", "textwrap"]
        lines = [batch_line(name, chunks_of(text, 2)) for name, text in passages(module_sources(modules), 3)]
        assert max(len(line["body"]["input"]) for line in lines) > 1
        uploaded = openai.OpenAI(api_key="local", base_url=service.url).files.create(
            file=("input.jsonl", jsonl(lines[:120])), purpose="batch"
        )
        connector = json.loads(Path("connectors/batch_predict/blueprints/openai_batch.json").read_text())
        connector["parameters"]["base_url"] = service.url
        connector["credential"] = {"openAI_key": "local"}
        (tmp_path / "connector.json").write_text(json.dumps(connector))
        submit = ["predict", "submit", "--connector", str(tmp_path / "connector.json")]
        assert main([*submit, "--parameters", json.dumps({"input_file_id": uploaded.id})]) == 0
        task_id = json.loads(capsys.readouterr().out)["task_id"]
        wait = ["predict", "wait", task_id, "--interval", "0.2", "--max-interval", "1"]
        ingest = [
            "--then-ingest",
            "samples/stdlib-chunks-request.json",
            "--opensearch",
            index_server.url,
            "--chunk-lists",
        ]
        assert main([*wait, *ingest, "--create-index", "samples/stdlib-chunks-index.json"]) == 0
        assert json.loads(capsys.readouterr().out)["counts"]["indexed"] == len(lines[:120])

        search = ["search", "how do I parse command line options", "--index", "mlbatch-stdlib-chunks"]
        assert main([*search, "--opensearch", index_server.url, "-k", "3", "--json"]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert {hit["_id"] for hit in hits} & {"argparse", "optparse", "getopt"}
        best = hits[0]["inner_hits"]["chunks"]["hits"]["hits"][0]
        assert best["_source"]["text"] in hits[0]["_source"]["chunks"][best["_nested"]["offset"]]["text"]
    finally:
        service.close()

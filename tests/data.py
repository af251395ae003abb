"""Test data in the shapes of real batch outputs (SageMaker, OpenAI Batch API), small and deterministic."""

from __future__ import annotations

import json
import random
from typing import Any

SAGEMAKER_REQUEST = {
    "index_name": "my-nlp-index",
    "field_map": {
        "chapter": "$.content[0]",
        "title": "$.content[1]",
        "chapter_embedding": "$.SageMakerOutput[0]",
        "title_embedding": "$.SageMakerOutput[1]",
        "_id": "$.id",
    },
    "ingest_fields": ["$.id"],
    "credential": {
        "region": "us-east-1",
        "access_key": "<your access key>",
        "secret_key": "<your secret key>",
        "session_token": "<your session token>",
    },
    "data_source": {"type": "s3", "source": ["s3://offlinebatch/output/sagemaker_batch.json.out"]},
}

OPENAI_REQUEST = {
    "index_name": "my-nlp-index-openai",
    "field_map": {
        "question": "source[1].$.body.input[0]",
        "answer": "source[1].$.body.input[1]",
        "question_embedding": "source[0].$.response.body.data[0].embedding",
        "answer_embedding": "source[0].$.response.body.data[1].embedding",
        "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
    },
    "ingest_fields": ["source[2].$.custom_field1", "source[2].$.custom_field2"],
    "credential": {"openAI_key": "<you openAI key>"},
    "data_source": {
        "type": "openAI",
        "source": ["file-<your output file id>", "file-<your input file id>", "file-<your other file>"],
    },
}


def knn_index_body(fields: list[str], dimension: int) -> dict[str, Any]:
    """The seed's k-NN index mapping shape for the given vector fields."""
    method = {
        "engine": "nmslib",
        "space_type": "cosinesimil",
        "name": "hnsw",
        "parameters": {"ef_construction": 512, "m": 16},
    }
    return {
        "settings": {"index.knn": True},
        "mappings": {
            "properties": {
                name: {"type": "knn_vector", "dimension": dimension, "method": method} for name in fields
            }
        },
    }


def vector(rng: random.Random, dimension: int) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(dimension)]


def sagemaker_lines(count: int, dimension: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "SageMakerOutput": [vector(rng, dimension), vector(rng, dimension)],
            "content": [f"this is chapter {i}", f"title {i}"],
            "id": i,
        }
        for i in range(1, count + 1)
    ]


def openai_batch_files(
    count: int, dimension: int, seed: int = 2
) -> tuple[list[dict], list[dict], list[dict]]:
    """(batch output, batch input, metadata) records: output shuffled, metadata for every other key."""
    rng = random.Random(seed)
    inputs = [
        {
            "custom_id": f"request-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-ada-002", "input": [f"question {i}?", f"answer {i}."]},
        }
        for i in range(1, count + 1)
    ]
    outputs = [
        {
            "id": f"batch_req_{i}",
            "custom_id": f"request-{i}",
            "response": {
                "status_code": 200,
                "request_id": f"r{i}",
                "body": {
                    "object": "list",
                    "model": "text-embedding-ada-002",
                    "data": [
                        {"object": "embedding", "index": 0, "embedding": vector(rng, dimension)},
                        {"object": "embedding", "index": 1, "embedding": vector(rng, dimension)},
                    ],
                },
            },
            "error": None,
        }
        for i in range(1, count + 1)
    ]
    rng.shuffle(outputs)
    metadata = [
        {"custom_id": f"request-{i}", "custom_field1": f"value {i}", "custom_field2": i}
        for i in range(count, 0, -2)
    ]
    return outputs, inputs, metadata


def jsonl(records: list[Any]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)

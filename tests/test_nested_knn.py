"""The local index server's k-NN over `nested` fields: best chunk per document, `inner_hits` (pure)."""

from __future__ import annotations

import pytest

from connectors.local.index_query import knn_score, search_answer
from connectors.local.index_store import field_error

MAPPINGS = {
    "properties": {
        "title": {"type": "text"},
        "chunks": {
            "type": "nested",
            "properties": {
                "text": {"type": "text"},
                "embedding": {"type": "knn_vector", "dimension": 3, "space_type": "l2"},
            },
        },
    }
}
DOCS = {
    "A": {
        "title": "a",
        "chunks": [{"text": "a1", "embedding": [1, 1, 1]}, {"text": "a2", "embedding": [2, 2, 2]}],
    },
    "B": {
        "title": "b",
        "chunks": [{"text": "b1", "embedding": [10, 10, 10]}, {"text": "b2", "embedding": [0, 1, 1]}],
    },
    "C": {"title": "c", "chunks": [{"text": "c1", "embedding": [30, 30, 30]}]},
    "D": {"title": "no chunks"},
}


def nested_knn(vector: list[float], k: int, inner_hits: dict | None = None) -> dict:
    query = {"path": "chunks", "query": {"knn": {"chunks.embedding": {"vector": vector, "k": k}}}}
    if inner_hits is not None:
        query["inner_hits"] = inner_hits
    return {"query": {"nested": query}}


def test_each_document_is_scored_by_its_nearest_chunk_and_k_counts_documents():
    answer = search_answer("i", MAPPINGS, DOCS, nested_knn([1, 1, 1], 2))
    hits = answer["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["A", "B"]  # A's two chunks come first, yet B is returned
    assert hits[0]["_score"] == pytest.approx(knn_score("l2", 0.0))
    assert hits[1]["_score"] == pytest.approx(knn_score("l2", 1.0))  # b2 = [0, 1, 1], not b1
    assert "inner_hits" not in hits[0]


def test_inner_hits_name_the_matching_chunk_as_opensearch_shapes_them():
    hits = search_answer("i", MAPPINGS, DOCS, nested_knn([0, 1, 1], 3, {}))["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["B", "A", "C"]
    inner = hits[0]["inner_hits"]["chunks"]["hits"]
    assert inner["total"] == {"value": 1, "relation": "eq"}
    (chunk,) = inner["hits"]
    assert chunk["_nested"] == {"field": "chunks", "offset": 1}
    assert chunk["_source"] == {"text": "b2", "embedding": [0, 1, 1]}
    assert chunk["_score"] == hits[0]["_score"] == inner["max_score"]
    named = search_answer(
        "i", MAPPINGS, DOCS, nested_knn([0, 1, 1], 1, {"name": "best", "_source": ["text"]})
    )
    assert named["hits"]["hits"][0]["inner_hits"]["best"]["hits"]["hits"][0]["_source"] == {"text": "b2"}


@pytest.mark.parametrize(
    ("nested", "message"),
    [
        ({"path": "title", "query": {}}, "failed to find nested object under path"),
        ({"path": "chunks", "query": {"match": {"chunks.text": "a"}}}, "one \\[knn\\] query"),
        ({"path": "chunks", "query": {"knn": {"chunks.text": {"vector": [1, 1, 1]}}}}, "not a knn_vector"),
        (
            {"path": "chunks", "query": {"knn": {"chunks.embedding": {"vector": [1, 1]}}}},
            "dimension mismatch",
        ),
        (
            {"path": "chunks", "query": {"knn": {"chunks.embedding": {"vector": [1, 1, 1], "k": 0}}}},
            "at least 1",
        ),
    ],
)
def test_malformed_nested_queries_are_refused(nested, message):
    with pytest.raises(ValueError, match=message):
        search_answer("i", MAPPINGS, DOCS, {"query": {"nested": nested}})


def test_chunk_vectors_are_checked_against_the_nested_mapping_when_written():
    assert field_error(MAPPINGS, DOCS["A"]) is None
    wrong = {"chunks": [{"text": "x", "embedding": [1, 1, 1]}, {"embedding": [1, 1]}]}
    assert field_error(MAPPINGS, wrong) == "Vector dimension mismatch. Expected: 3, Given: 2"
    assert "found a concrete value" in field_error(MAPPINGS, {"chunks": [3]})

"""The local index server's pure parts, without HTTP: reading `_bulk` bodies, scoring queries,
the exact k-NN search, the store's per-item bulk results, and the fault server's injected 429s."""

from __future__ import annotations

import json

import pytest

from connectors.local.index_query import count_matching, knn_hits, matches, search_answer, vector_problem
from connectors.local.index_requests import BulkFormatError, bulk_actions, path_parts
from connectors.local.index_store import LocalIndexes, field_error
from tests.fault_server import FaultServer

MAPPINGS = {"properties": {"v": {"type": "knn_vector", "dimension": 2}, "n": {"type": "integer"}}}
DOCS = {
    "a": {"v": [0.0, 0.0], "tag": "red", "text": "the quick fox"},
    "b": {"v": [1.0, 0.0], "tag": "blue", "text": "a lazy dog"},
    "c": {"v": [3.0, 4.0], "tag": "red", "text": "quick quick dog"},
}


def ndjson(*lines: object) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_bulk_actions_pair_each_action_with_its_document_and_delete_with_none():
    body = ndjson(
        {"index": {"_id": "1"}}, {"v": [1, 2]}, {"delete": {"_id": "2"}}, {"update": {}}, {"doc": {}}
    )
    assert bulk_actions(body) == [
        ("index", {"_id": "1"}, {"v": [1, 2]}),
        ("delete", {"_id": "2"}, None),
        ("update", {}, {"doc": {}}),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ndjson({"index": {}}), "has no document line"),
        (ndjson({"upsert": {}}, {}), "Malformed action/metadata line [1]"),
        (b'{"index": {}}\n{not json\n', "line [2] of the _bulk body is not valid JSON"),
    ],
)
def test_bulk_actions_refuse_malformed_bodies(body, reason):
    with pytest.raises(BulkFormatError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        bulk_actions(body)


def test_path_parts_are_percent_decoded_and_bad_utf8_is_refused():
    assert path_parts("/my%20index/_doc/a%2Fb") == ["my index", "_doc", "a/b"]
    with pytest.raises(ValueError, match="not valid percent-encoded UTF-8"):
        path_parts("/%ff")


def test_bool_queries_require_must_and_filter_and_exclude_must_not():
    query = {"bool": {"filter": {"term": {"tag": "red"}}, "must_not": [{"match": {"text": "fox"}}]}}
    assert [doc_id for doc_id, doc in DOCS.items() if matches(doc, query)] == ["c"]
    assert count_matching(DOCS, {"term": {"tag": "red"}}) == 2
    assert matches(DOCS["c"], {"match": {"text": "quick dog"}}) == 2.0


def test_knn_hits_are_the_k_nearest_scored_as_l2_scores_them():
    hits = knn_hits(MAPPINGS, DOCS, {"v": {"vector": [1.0, 0.0], "k": 2}})
    assert hits == [("b", 1.0), ("a", 0.5)]


def test_knn_hits_refuse_a_query_vector_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="Vector dimension mismatch"):
        knn_hits(MAPPINGS, DOCS, {"v": {"vector": [1.0], "k": 2}})


def test_search_answer_keeps_only_the_wanted_source_fields():
    answer = search_answer("docs", MAPPINGS, DOCS, {"query": {"term": {"tag": "blue"}}, "_source": ["tag"]})
    assert answer["hits"]["total"] == {"value": 1, "relation": "eq"}
    assert answer["hits"]["hits"] == [
        {"_index": "docs", "_id": "b", "_score": 1.0, "_source": {"tag": "blue"}}
    ]


def test_vector_and_field_problems_are_worded_as_opensearch_words_them():
    assert vector_problem("v", {"dimension": 2}, [1.0, float("nan")]) == "KNN vector values cannot be NaN"
    assert field_error(MAPPINGS, {"n": "x"}).startswith("failed to parse field [n] of type [integer]")
    assert (
        field_error(MAPPINGS, ["not", "an", "object"]) == "failed to parse: the document is not a JSON object"
    )


def test_bulk_results_are_per_item_and_in_order():
    store = LocalIndexes()
    store.create("docs", {"mappings": MAPPINGS})
    body = ndjson(
        {"index": {"_id": "a"}},
        {"v": [0, 1]},
        {"create": {"_id": "a"}},
        {"v": [0, 1]},
        {"index": {"_id": "b"}},
        {"v": [0]},
        {"update": {"_id": "a"}},
        {"doc": {"n": 3}},
        {"delete": {"_id": "zz"}},
    )
    status, answer = store.bulk("docs", body)
    results = [(action, result["status"]) for item in answer["items"] for action, result in item.items()]
    assert (status, answer["errors"]) == (200, True)
    assert results == [("index", 201), ("create", 409), ("index", 400), ("update", 200), ("delete", 404)]
    assert store.indices["docs"]["docs"] == {"a": {"v": [0, 1], "n": 3}}


@pytest.mark.integration
def test_the_fault_server_rejects_every_kth_item_unapplied_and_keeps_request_order():
    server = FaultServer(item_429_every=2)
    try:
        server.handle("PUT", "/docs", {}, json.dumps({"mappings": MAPPINGS}).encode())
        body = ndjson(*(line for i in range(3) for line in ({"index": {"_id": f"d{i}"}}, {"v": [i, 0]})))
        status, first = server.handle("POST", "/docs/_bulk", {}, body)
        _, second = server.handle("POST", "/docs/_bulk", {}, body)
    finally:
        server.close()
    statuses = [
        [(item["index"]["_id"], item["index"]["status"]) for item in answer["items"]]
        for answer in (first, second)
    ]
    assert status == 200 and first["errors"] and second["errors"]
    assert statuses == [[("d0", 201), ("d1", 429), ("d2", 201)], [("d0", 429), ("d1", 201), ("d2", 429)]]
    assert sorted(server.docs("docs")) == ["d0", "d1", "d2"]
    assert server.applied == {"d0": 1, "d1": 1, "d2": 1}


@pytest.mark.integration
def test_the_fault_server_answers_a_request_whose_items_are_all_rejected():
    server = FaultServer(item_429_every=1)
    try:
        server.handle("PUT", "/docs", {}, json.dumps({"mappings": MAPPINGS}).encode())
        status, answer = server.handle("POST", "/docs/_bulk", {}, ndjson({"delete": {"_id": "a"}}))
    finally:
        server.close()
    assert (status, answer["errors"]) == (200, True)
    assert answer["items"][0]["delete"]["_id"] == "a" and answer["items"][0]["delete"]["status"] == 429

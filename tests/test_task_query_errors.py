"""`tasks/_search` refuses what it does not read with the OpenSearch error a client expects, before
it looks at any task; `minimum_should_match` is read as OpenSearch reads it."""

from __future__ import annotations

import pytest

from pipelines.rest_api.query_dsl import minimum_should_match
from pipelines.rest_api.task_query import QueryError, search_tasks

P, A = "parsing_exception", "illegal_argument_exception"


@pytest.mark.parametrize(
    ("spec", "optional", "expected"),
    [
        (2, 3, 2),
        ("-1", 3, 2),
        ("75%", 4, 3),
        ("-25%", 4, 3),
        ("67%", 3, 2),
        ("100%", 3, 3),
        (5, 3, 5),
        ("-5", 3, 0),
    ],
)
def test_minimum_should_match_reads_counts_and_percentages_as_opensearch(spec, optional, expected):
    assert minimum_should_match(spec, optional) == expected


@pytest.mark.parametrize(
    ("query", "kind", "message"),
    [
        ({"fuzzy": {"state": "RUNING"}}, P, "unknown query [fuzzy]"),
        ({}, P, "query malformed, empty clause found"),
        ("state:RUNNING", P, "must start with start_object"),
        ({"term": {"state": "x"}, "match_all": {}}, P, "[term] malformed query"),
        ({"term": {"state": ["x"]}}, P, "needs a string, number or boolean"),
        ({"term": {"state": "x", "model_id": "y"}}, P, "exactly one field"),
        ({"term": {"state": {"value": "x", "boots": 2}}}, P, "does not support [boots]"),
        ({"term": {"state": {"boost": 2}}}, P, "has no [value]"),
        ({"terms": {"state": "RUNNING"}}, P, "needs a list of values"),
        ({"match": {"error": {"query": "x", "operator": "xor"}}}, P, "[operator]"),
        ({"match_all": []}, P, "no start_object"),
        ({"bool": {"must": [], "shoud": []}}, P, "[bool] query does not support [shoud]"),
        ({"bool": {"must": [{"fuzzy": {}}]}}, P, "unknown query [fuzzy]"),
        ({"bool": {"should": [], "minimum_should_match": "2<75%"}}, A, "[minimum_should_match]"),
        ({"range": {"create_time": {"from": 1}}}, P, "does not support [from]"),
        ({"range": {"create_time": 5}}, P, "no start_object"),
        ({"exists": {}}, P, "[exists] must be provided with a [field]"),
        ({"ids": {"values": "t1"}}, P, "[ids] query needs [values]"),
    ],
)
def test_a_query_it_cannot_read_is_refused_even_with_no_tasks(query, kind, message):
    with pytest.raises(QueryError) as raised:
        search_tasks([], {"query": query})
    assert (raised.value.kind, raised.value.message) == (kind, str(raised.value))
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("body", "params", "kind", "message"),
    [
        ({"size": -1}, None, A, "[size] parameter cannot be negative, found [-1]"),
        ({"from": -5}, None, A, "[from] parameter cannot be negative, found [-5]"),
        ({"size": 10_001}, None, A, "Result window is too large"),
        ({"size": 10, "from": 9_995}, None, A, "but was [10005]"),
        ({"size": "ten"}, None, P, "[size] must be an integer, found [ten]"),
        ({"size": True}, None, P, "[size] must be an integer"),
        ({"size": 1.5}, None, P, "[size] must be an integer"),
        (None, {"size": "abc"}, A, "Failed to parse int parameter [size] with value [abc]"),
        (None, {"from": "-1"}, A, "[from] parameter cannot be negative"),
        ({"aggs": {"states": {}}}, None, A, "unknown key [aggs]"),
        ({"track_scores": "yes"}, None, P, "[track_scores]"),
        ({"sort": {"create_time": "sideways"}}, None, A, "Unknown SortOrder [sideways]"),
        ({"sort": {"create_time": {"order": "asc", "mode": "avg"}}}, None, P, "does not support [mode]"),
        ({"sort": {"create_time": {"missing": 0}}}, None, A, "[missing] is _first or _last"),
        ({"sort": [["create_time"]]}, None, P, "[sort] entries"),
        ({"_source": 5}, None, P, "[_source] patterns"),
        ({"_source": {"includes": ["state"], "fields": []}}, None, P, "does not support [fields]"),
        (["query"], None, P, "must be a JSON object"),
    ],
)
def test_a_body_or_parameter_it_cannot_read_is_a_query_error_of_opensearchs_kind(body, params, kind, message):
    with pytest.raises(QueryError) as raised:
        search_tasks([], body, params)
    assert raised.value.kind == kind and message in raised.value.message
    assert isinstance(raised.value, ValueError)

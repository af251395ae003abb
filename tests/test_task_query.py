"""`tasks/_search` over task records in memory: the query DSL subset, sort, paging, `_source`
filtering and the OpenSearch errors for what it does not read."""

from __future__ import annotations

import copy

import pytest

from pipelines.rest_api.task_query import QueryError, search_tasks

RECORDS = [
    {
        "task_id": "t1",
        "task_type": "BATCH_INGEST",
        "state": "COMPLETED",
        "create_time": 1000,
        "last_update_time": 1500,
        "index_name": "docs",
        "counts": {"indexed": 10},
        "owner": {"host": "h", "pid": 1},
    },
    {
        "task_id": "t2",
        "task_type": "BATCH_PREDICTION",
        "state": "RUNNING",
        "create_time": 3000,
        "last_update_time": 3000,
        "model_id": "m1",
        "function_name": "REMOTE",
        "error": None,
        "remote_job": {"status": "InProgress", "job_name": "sagemaker-42"},
        "counts": {},
    },
    {
        "task_id": "t3",
        "task_type": "BATCH_INGEST",
        "state": "FAILED",
        "create_time": 2000,
        "last_update_time": 2100,
        "index_name": "docs-2",
        "error": "Connection refused by the cluster",
        "counts": {"indexed": 3, "failed": 2},
    },
    {
        "task_id": "t4",
        "task_type": "BATCH_PREDICTION",
        "state": "COMPLETED_WITH_ERROR",
        "create_time": 4000,
        "last_update_time": 4200,
        "model_id": "m2",
        "remote_job": {"status": "Completed", "output": ["s3://b/o1", "s3://b/o2"]},
        "counts": {},
    },
]
INGEST_BOTH_WAYS = [{"term": {"task_type": "BATCH_INGEST"}}, {"term": {"state": "COMPLETED"}}]


def hit_ids(body: dict | None, params: dict | None = None) -> list[str]:
    return [hit["_id"] for hit in search_tasks(RECORDS, body, params)["hits"]["hits"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"match_all": {}}, ["t4", "t2", "t3", "t1"]),
        ({"match_none": {}}, []),
        ({"term": {"state": "COMPLETED"}}, ["t1"]),
        ({"term": {"state.keyword": {"value": "RUNNING"}}}, ["t2"]),
        ({"term": {"state": "completed"}}, []),
        ({"term": {"state": {"value": "completed", "case_insensitive": True}}}, ["t1"]),
        ({"term": {"create_time": "2000"}}, ["t3"]),
        ({"term": {"counts.indexed": 3}}, ["t3"]),
        ({"term": {"remote_job.output": "s3://b/o2"}}, ["t4"]),
        ({"term": {"_id": "t2"}}, ["t2"]),
        ({"term": {"task_id": "t2"}}, []),
        ({"term": {"owner.pid": 1}}, []),
        ({"terms": {"state": ["RUNNING", "FAILED"], "boost": 2}}, ["t2", "t3"]),
        ({"match": {"error": "REFUSED"}}, ["t3"]),
        ({"match": {"state": "completed"}}, ["t1"]),
        ({"match": {"error": {"query": "connection timeout"}}}, ["t3"]),
        ({"match": {"error": {"query": "connection timeout", "operator": "and"}}}, []),
        ({"match": {"counts.indexed": 10}}, ["t1"]),
        ({"match": {"remote_job": "Completed"}}, []),
        ({"match_phrase": {"error": "refused by THE"}}, ["t3"]),
        ({"match_phrase": {"error": "by refused"}}, []),
        ({"prefix": {"index_name": "docs"}}, ["t3", "t1"]),
        ({"prefix": {"remote_job.job_name": {"value": "SAGE", "case_insensitive": True}}}, ["t2"]),
        ({"exists": {"field": "model_id"}}, ["t4", "t2"]),
        ({"exists": {"field": "counts"}}, ["t3", "t1"]),
        ({"exists": {"field": "counts.failed"}}, ["t3"]),
        ({"exists": {"field": "error"}}, ["t3"]),
        ({"ids": {"values": ["t1", "t3", "nope"]}}, ["t3", "t1"]),
        ({"range": {"create_time": {"gte": 2000, "lt": 4000}}}, ["t2", "t3"]),
        ({"range": {"create_time": {"gt": "1970-01-01T00:00:02Z"}}}, ["t4", "t2"]),
        ({"range": {"create_time": {"lte": "1970-01-01T00:00:01"}}}, ["t1"]),
        ({"range": {"state": {"gte": "R"}}}, ["t2"]),
        ({"range": {"counts.indexed": {"gt": 1}}}, ["t3", "t1"]),
    ],
)
def test_each_query_type_finds_the_tasks_opensearch_would(query, expected):
    assert hit_ids({"query": query}) == expected


@pytest.mark.parametrize(
    ("clauses", "expected"),
    [
        (
            {"must": {"term": {"task_type": "BATCH_INGEST"}}, "must_not": {"term": {"state": "FAILED"}}},
            ["t1"],
        ),
        ({"must_not": [{"term": {"state": "FAILED"}}]}, ["t4", "t2", "t1"]),
        ({"should": [{"term": {"state": "RUNNING"}}, {"term": {"state": "FAILED"}}]}, ["t2", "t3"]),
        (
            {"filter": {"term": {"task_type": "BATCH_PREDICTION"}}, "should": {"term": {"state": "RUNNING"}}},
            ["t4", "t2"],
        ),
        (
            {
                "filter": {"term": {"task_type": "BATCH_PREDICTION"}},
                "should": {"term": {"state": "RUNNING"}},
                "minimum_should_match": 1,
            },
            ["t2"],
        ),
        (
            {"should": [*INGEST_BOTH_WAYS, {"exists": {"field": "error"}}], "minimum_should_match": 2},
            ["t3", "t1"],
        ),
        (
            {"should": [*INGEST_BOTH_WAYS, {"exists": {"field": "error"}}], "minimum_should_match": "-1"},
            ["t3", "t1"],
        ),
        ({"should": [*INGEST_BOTH_WAYS, {"exists": {"field": "error"}}], "minimum_should_match": "100%"}, []),
        (
            {
                "must": [{"bool": {"should": INGEST_BOTH_WAYS}}],
                "filter": [{"range": {"create_time": {"lt": 2000}}}],
            },
            ["t1"],
        ),
        ({}, ["t4", "t2", "t3", "t1"]),
    ],
)
def test_bool_combines_clauses_with_opensearchs_should_rules(clauses, expected):
    assert hit_ids({"query": {"bool": clauses}}) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("create_time", ["t1", "t3", "t2", "t4"]),
        ({"create_time": "desc"}, ["t4", "t2", "t3", "t1"]),
        ([{"task_type.keyword": {"order": "asc"}}, {"create_time": "DESC"}], ["t3", "t1", "t4", "t2"]),
        ({"model_id": "asc"}, ["t2", "t4", "t1", "t3"]),
        ({"model_id": "desc"}, ["t4", "t2", "t1", "t3"]),
        ({"model_id": {"order": "asc", "missing": "_first"}}, ["t1", "t3", "t2", "t4"]),
        ({"counts.indexed": {"order": "desc"}}, ["t1", "t3", "t2", "t4"]),
        ({"remote_job.output": "desc"}, ["t4", "t1", "t2", "t3"]),
        ("_doc", ["t1", "t2", "t3", "t4"]),
        ([], ["t4", "t2", "t3", "t1"]),
    ],
)
def test_sort_orders_hits_with_missing_values_last(sort, expected):
    assert hit_ids({"sort": sort}) == expected


def test_a_field_sort_shows_sort_values_and_no_scores_unless_tracked():
    answer = search_tasks(RECORDS, {"sort": [{"create_time": "asc"}, "model_id"], "size": 2})
    assert answer["hits"]["max_score"] is None
    assert [(hit["_score"], hit["sort"]) for hit in answer["hits"]["hits"]] == [
        (None, [1000, None]),
        (None, [2000, None]),
    ]
    tracked = search_tasks(RECORDS, {"sort": "create_time", "track_scores": True})
    assert tracked["hits"]["max_score"] == 1.0 and tracked["hits"]["hits"][0]["_score"] == 1.0
    by_score = search_tasks(RECORDS, {"sort": ["_score", {"create_time": "asc"}]})
    assert by_score["hits"]["hits"][0]["sort"] == [1.0, 1000]


@pytest.mark.parametrize(
    ("body", "params", "expected"),
    [
        ({"size": 2}, None, ["t4", "t2"]),
        ({"size": 2, "from": 2}, None, ["t3", "t1"]),
        ({"from": 3}, None, ["t1"]),
        ({"from": 9}, None, []),
        ({"size": "1"}, None, ["t4"]),
        (None, {"size": "1", "from": "1"}, ["t2"]),
        ({"size": 3, "from": 0}, {"size": "1"}, ["t4"]),
        ({"size": 0}, None, []),
    ],
)
def test_size_and_from_page_through_the_hits_the_query_string_winning(body, params, expected):
    answer = search_tasks(RECORDS, body, params)
    assert [hit["_id"] for hit in answer["hits"]["hits"]] == expected
    assert answer["hits"]["total"] == {"value": 4, "relation": "eq"}


def test_size_defaults_to_ten():
    many = [{**RECORDS[0], "task_id": f"t{n}", "create_time": n} for n in range(15)]
    assert len(search_tasks(many, {})["hits"]["hits"]) == 10


def test_the_answer_has_opensearchs_search_shape_and_hides_task_id_and_owner():
    answer = search_tasks(RECORDS, {"query": {"term": {"state": "COMPLETED"}}})
    source = {key: value for key, value in RECORDS[0].items() if key not in ("task_id", "owner")}
    assert answer == {
        "took": 0,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": 1, "relation": "eq"},
            "max_score": 1.0,
            "hits": [
                {
                    "_index": ".plugins-ml-task",
                    "_id": "t1",
                    "_version": 1,
                    "_seq_no": 0,
                    "_primary_term": 1,
                    "_score": 1.0,
                    "_source": source,
                }
            ],
        },
    }
    assert search_tasks([], None)["hits"] == {
        "total": {"value": 0, "relation": "eq"},
        "max_score": None,
        "hits": [],
    }


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (["state", "counts"], {"state": "COMPLETED_WITH_ERROR", "counts": {}}),
        ("remote_job.status", {"remote_job": {"status": "Completed"}}),
        ("remote_job", {"remote_job": RECORDS[3]["remote_job"]}),
        ({"includes": ["*_time"]}, {"create_time": 4000, "last_update_time": 4200}),
        ({"includes": "*status"}, {"remote_job": {"status": "Completed"}}),
        (
            {"includes": ["remote_job", "state"], "excludes": ["remote_job.output"]},
            {"state": "COMPLETED_WITH_ERROR", "remote_job": {"status": "Completed"}},
        ),
        (
            {"excludes": ["counts", "*_time", "remote_job.*", "task_type", "model_id"]},
            {"state": "COMPLETED_WITH_ERROR"},
        ),
        ({"includes": ["owner", "task_id", "nothing"]}, {}),
    ],
)
def test_source_filtering_keeps_included_paths_and_drops_excluded_ones(wanted, expected):
    [hit] = search_tasks(RECORDS, {"query": {"ids": {"values": ["t4"]}}, "_source": wanted})["hits"]["hits"]
    assert hit["_source"] == expected


def test_source_false_leaves_the_source_out_and_hits_never_alias_the_records():
    [hit] = search_tasks(RECORDS, {"query": {"ids": {"values": ["t4"]}}, "_source": False})["hits"]["hits"]
    assert "_source" not in hit
    before = copy.deepcopy(RECORDS)
    for hit in search_tasks(RECORDS, {"_source": True})["hits"]["hits"]:
        hit["_source"]["counts"]["changed"] = 1
        hit["_source"].get("remote_job", {}).get("output", []).append("x")
    assert before == RECORDS


def test_a_range_bound_a_number_field_cannot_read_is_a_parse_exception():
    with pytest.raises(
        QueryError, match=r"failed to parse \[now-1d\] for the range on \[create_time\]"
    ) as raised:
        search_tasks(RECORDS, {"query": {"range": {"create_time": {"gte": "now-1d"}}}})
    assert raised.value.kind == "parse_exception"
    assert hit_ids({"query": {"range": {"no_such_field": {"gte": "now-1d"}}}}) == []

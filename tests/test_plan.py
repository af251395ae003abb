from __future__ import annotations

import copy

import pytest

from pipelines.plan import compile_plan
from pipelines.request import RequestError, parse_request
from tests.data import OPENAI_REQUEST, SAGEMAKER_REQUEST


def plan_of(body: dict, **kwargs):
    return compile_plan(parse_request(body), **kwargs)


def plan_error(body: dict) -> str:
    with pytest.raises(RequestError) as caught:
        plan_of(body)
    return str(caught.value)


def local(field_map: dict, sources: int, ingest_fields=()) -> dict:
    return {
        "index_name": "i",
        "field_map": field_map,
        "ingest_fields": list(ingest_fields),
        "data_source": {"type": "local", "source": [f"/data/{n}.jsonl" for n in range(sources)]},
    }


def test_single_source_seed_plan():
    plan = plan_of(SAGEMAKER_REQUEST)
    (source,) = plan.sources
    assert source.id_path.expression == "$.id"
    assert [f.name for f in source.fields] == [
        "chapter",
        "title",
        "chapter_embedding",
        "title_embedding",
        "id",
    ]
    assert not plan.needs_join


def test_three_file_seed_plan_shares_the_id_path_with_the_unnamed_source():
    plan = plan_of(OPENAI_REQUEST)
    assert [s.id_path.expression for s in plan.sources] == ["$.custom_id"] * 3
    assert [f.name for f in plan.sources[0].fields] == ["question_embedding", "answer_embedding"]
    assert [f.name for f in plan.sources[1].fields] == ["question", "answer"]
    assert [f.name for f in plan.sources[2].fields] == ["custom_field1", "custom_field2"]
    assert plan.needs_join


def test_source_1_does_not_match_source_10():
    field_map = {"_id": "$.k", "a": "source[1].$.a", "b": "source[10].$.b"}
    plan = plan_of(local(field_map, 11))
    assert [f.name for f in plan.sources[1].fields] == ["a"]
    assert [f.name for f in plan.sources[10].fields] == ["b"]


def test_source_index_out_of_range():
    message = plan_error(local({"_id": "$.k", "a": "source[2].$.a"}, 2))
    assert message.startswith("field_map.a: source[2] is out of range")


def test_several_sources_without_id():
    assert plan_error(local({"a": "source[0].$.a", "b": "source[1].$.b"}, 2)).startswith(
        "field_map._id: source[0] has no _id path"
    )


def test_different_per_source_ids_leave_unnamed_sources_without_id():
    field_map = {"_id": ["source[0].$.x", "source[1].$.y"], "a": "source[0].$.a"}
    assert plan_error(local(field_map, 3)).startswith("field_map._id: source[2] has no _id path")


def test_per_source_ids_may_differ_when_every_source_is_named():
    plan = plan_of(local({"_id": ["source[0].$.x", "source[1].$.y"], "a": "source[0].$.a"}, 2))
    assert [s.id_path.expression for s in plan.sources] == ["$.x", "$.y"]


def test_unprefixed_field_with_several_sources_is_ambiguous():
    assert plan_error(local({"_id": "$.k", "a": "$.a"}, 2)).startswith(
        "field_map.a: with 2 sources, name the source"
    )


def test_bad_jsonpath_names_the_field():
    assert plan_error(local({"a": "$.a["}, 1)).startswith("field_map.a: invalid JSONPath '$.a['")
    assert plan_error(local({"a": "content"}, 1)).startswith("field_map.a: 'content' is not a JSONPath")


def test_ingest_field_clashing_with_field_map_target():
    assert plan_error(local({"id": "$.x"}, 1, ["$.id"])).startswith(
        "ingest_fields[0]: field 'id' is already produced by field_map.id"
    )


def test_single_source_without_id_uses_auto_ids():
    plan = plan_of(local({"a": "$.a"}, 1))
    assert plan.sources[0].id_path is None


def test_join_policy_is_carried():
    body = copy.deepcopy(OPENAI_REQUEST)
    assert plan_of(body, join="inner").join == "inner"


def test_two_different_unprefixed_id_paths_are_refused():
    assert plan_error(local({"_id": ["$.a", "$.b"], "x": "$.x"}, 1)).startswith(
        "field_map._id[1]: a second unprefixed _id path"
    )


def test_metadata_fields_cannot_be_stored():
    assert plan_error(local({"_id": "$.id", "x": "$.x"}, 1, ["$._id"])).startswith(
        "ingest_fields[0]: '_id' is an OpenSearch metadata field"
    )

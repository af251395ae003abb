from __future__ import annotations

import re

import orjson
import pytest

from connectors.opensearch.mapping import KnnField, knn_vector_fields
from pipelines.outcome import decide_outcome
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from transforms.jsonpath import compile_path
from transforms.projection import VectorError, check_vector, project, to_wire
from transforms.types import FieldSpec
from transforms.vectors import numbers_only, unmapped_vector_fields, vector_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([0.1, 2, -3.5], None),
        ([0.1, float("nan"), 1.0], "element 1 is not finite: nan"),
        ([1.0, float("inf"), 1.0], "element 1 is not finite: inf"),
        ([1.0, "2", 3.0], "element 1 is not a number: '2'"),
        ([True, 1.0, 1.0], "element 0 is not a number: True"),
        ("1,2,3", "is not a list of numbers but str"),
        ([1.0, 2.0], "has 2 dimensions; the index mapping expects 3"),
    ],
)
def test_vector_problems(value, problem):
    assert vector_problem(value, 3) == problem


@pytest.mark.parametrize(
    "value",
    [[0.1, 2, -3.5], [0.1, 2.0], [1.0, "2", 3.0], [True, 1.0, 1.0], [1.0, None, 2.0], [], "1,2,3", [[1.0]]],
)
@pytest.mark.parametrize("dimension", [3, None])
def test_projection_checks_knn_vectors_as_the_slow_check_does(value, dimension):
    spec = FieldSpec("v", compile_path("$.v"), knn_vector=True, dimension=dimension)
    problem = vector_problem(value, dimension)
    if problem is None:
        check_vector(spec, value, to_wire(value, "v"))
    else:
        with pytest.raises(VectorError, match=re.escape(f"vector field 'v' {problem}")):
            check_vector(spec, value, to_wire(value, "v"))


def test_numbers_only_is_true_for_flat_arrays_of_numbers():
    assert numbers_only(orjson.dumps([0.1, -2, 3.5e-7, 1e300]))
    for value in ([1.0, None], [1.0, float("nan")], [True], ["2"], [[1.0]], {"a": 1}):
        assert not numbers_only(orjson.dumps(value))


def test_vectors_in_fields_not_mapped_as_knn_vector_are_found():
    assert unmapped_vector_fields({"a": [0.1, 0.2], "b": [0.1, 0.2], "tags": ["x", "y"]}, {"a": 2}) == ["b"]


def test_knn_vector_fields_of_a_mapping_including_nested_objects():
    properties = {
        "v": {"type": "knn_vector", "dimension": 384},
        "t": {"type": "text"},
        "o": {"properties": {"w": {"type": "knn_vector", "dimension": 2}}},
    }
    assert knn_vector_fields(properties) == {"v": (384, "float"), "o.w": (2, "float")}


BASE = {
    "read": 10,
    "read.source[0]": 6,
    "read.source[1]": 4,
    "accounted.source[0]": 6,
    "accounted.source[1]": 4,
    "bucket_groups": 6,
    "distinct_buckets": 6,
}


def test_everything_accounted_is_completed():
    assert decide_outcome(BASE, 2, shuffled=True).state == "COMPLETED"


def test_rejected_records_make_completed_with_error_or_failed_over_the_ratio():
    counters = {**BASE, "dlq": 2, "rejected_records": 2}
    assert decide_outcome(counters, 2, shuffled=True).state == "COMPLETED_WITH_ERROR"
    assert decide_outcome(counters, 2, shuffled=True, max_error_ratio=0.5).state == "COMPLETED_WITH_ERROR"
    over = decide_outcome(counters, 2, shuffled=True, max_error_ratio=0.1)
    assert over.state == "FAILED" and over.error.startswith("2 of 10 records rejected (20.00%)")


def test_lost_records_fail_the_task():
    outcome = decide_outcome({**BASE, "accounted.source[1]": 1}, 2, shuffled=True)
    assert outcome.state == "FAILED"
    assert outcome.error.startswith("3 records unaccounted for (source[1]: 3)")


def test_a_key_split_over_two_groups_fails_the_task():
    outcome = decide_outcome({**BASE, "bucket_groups": 7}, 2, shuffled=True)
    assert outcome.state == "FAILED" and outcome.error.startswith("6 _id buckets were joined in 7 groups")
    assert decide_outcome({**BASE, "bucket_groups": 7}, 2, shuffled=False).state == "COMPLETED"


def test_a_null_knn_vector_is_left_to_the_index_as_before():
    plan = compile_plan(
        parse_request(
            {
                "index_name": "i",
                "field_map": {"v": "$.v", "_id": "$.id"},
                "data_source": {"type": "local", "source": ["x.jsonl"]},
            }
        )
    )
    source = with_vector_checks(plan, {"v": KnnField(3)}).sources[0]
    assert project(source, {"id": 1, "v": None}) == ("1", {"v": None}, [])
    with pytest.raises(VectorError):
        project(source, {"id": 1, "v": [1.0]})


@pytest.mark.parametrize(
    ("value", "data_type", "dimension", "problem"),
    [
        ([1, -128, 127], "byte", 3, None),
        ([1.0, 2.0, 3.0], "byte", 3, None),
        ([1, 2.5, 3], "byte", 3, "element 1 is 2.5; a byte vector holds integers in [-128, 127]"),
        ([1, 128, 3], "byte", 3, "element 1 is 128; a byte vector holds integers in [-128, 127]"),
        ([1, 2], "byte", 3, "has 2 dimensions; the index mapping expects 3"),
        ([7, -1, 0, 127], "binary", 32, None),
        ([7, -1, 0, 127], "binary", None, None),
        (
            [0] * 32,
            "binary",
            32,
            "has 32 elements; a binary vector of dimension 32 has 4 (one int8 per 8 bits)",
        ),
        ([7, -200, 0, 1], "binary", 32, "element 1 is -200; a binary vector holds integers in [-128, 127]"),
    ],
)
def test_byte_and_binary_vectors_hold_int8_binary_dimension_in_bits(value, data_type, dimension, problem):
    assert vector_problem(value, dimension, data_type) == problem
    spec = FieldSpec("v", compile_path("$.v"), knn_vector=True, dimension=dimension, data_type=data_type)
    if problem is None:
        check_vector(spec, value, to_wire(value, "v"))
    else:
        with pytest.raises(VectorError, match=re.escape(problem)):
            check_vector(spec, value, to_wire(value, "v"))


def test_knn_vector_fields_read_the_data_type():
    properties = {
        "b": {"type": "knn_vector", "dimension": 64, "data_type": "binary"},
        "y": {"type": "knn_vector", "dimension": 8, "data_type": "byte"},
    }
    assert knn_vector_fields(properties) == {"b": (64, "binary"), "y": (8, "byte")}

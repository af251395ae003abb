from __future__ import annotations

import orjson
import pytest

from connectors.opensearch import knn_vector_fields
from pipelines.outcome import decide_outcome
from transforms.vectors import (
    document_vector_problem,
    plain_number_count,
    unmapped_vector_fields,
    vector_problem,
)


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


def test_document_checks_every_knn_field_and_ignores_absent_ones():
    knn = {"a": 2, "b": 3}
    assert document_vector_problem({"a": [1.0, 2.0]}, knn) is None
    assert document_vector_problem({"a": [1.0, 2.0], "b": [1.0]}, knn) == (
        "vector field 'b' has 1 dimensions; the index mapping expects 3"
    )


@pytest.mark.parametrize(
    ("value", "count"),
    [
        ([0.1, -2, 3.5e-7, 1e300], 4),
        ([5], 1),
        ([], None),
        ([1.0, None], None),
        ([1.0, float("nan")], None),
        ([True, 1.0], None),
        ([1.0, "2"], None),
        ([[1.0], [2.0]], None),
        ({"a": 1}, None),
    ],
)
def test_plain_number_count_of_serialized_vectors(value, count):
    assert plain_number_count(orjson.dumps(value)) == count


def test_serialized_vectors_get_the_same_verdict_as_parsed_ones():
    knn = {"v": 3}
    for value in ([0.1, 2, -3.5], [1.0, 2.0], [1.0, "2", 3.0], [True, 1.0, 1.0], [1.0, None, 2.0], []):
        assert document_vector_problem({"v": orjson.dumps(value)}, knn) == document_vector_problem(
            {"v": value}, knn
        )


def test_vectors_in_fields_not_mapped_as_knn_vector_are_found():
    assert unmapped_vector_fields({"a": [0.1, 0.2], "b": [0.1, 0.2], "tags": ["x", "y"]}, {"a": 2}) == ["b"]


def test_knn_vector_fields_of_a_mapping_including_nested_objects():
    properties = {
        "v": {"type": "knn_vector", "dimension": 384},
        "t": {"type": "text"},
        "o": {"properties": {"w": {"type": "knn_vector", "dimension": 2}}},
    }
    assert knn_vector_fields(properties) == {"v": 384, "o.w": 2}


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
    assert decide_outcome(BASE, 2, joined=True).state == "COMPLETED"


def test_rejected_records_make_completed_with_error_or_failed_over_the_ratio():
    counters = {**BASE, "dlq": 2, "rejected_records": 2}
    assert decide_outcome(counters, 2, joined=True).state == "COMPLETED_WITH_ERROR"
    assert decide_outcome(counters, 2, joined=True, max_error_ratio=0.5).state == "COMPLETED_WITH_ERROR"
    over = decide_outcome(counters, 2, joined=True, max_error_ratio=0.1)
    assert over.state == "FAILED" and over.error.startswith("2 of 10 records rejected (20.00%)")


def test_lost_records_fail_the_task():
    outcome = decide_outcome({**BASE, "accounted.source[1]": 1}, 2, joined=True)
    assert outcome.state == "FAILED"
    assert outcome.error.startswith("3 records unaccounted for (source[1]: 3)")


def test_a_key_split_over_two_groups_fails_the_task():
    outcome = decide_outcome({**BASE, "bucket_groups": 7}, 2, joined=True)
    assert outcome.state == "FAILED" and outcome.error.startswith("6 _id buckets were joined in 7 groups")
    assert decide_outcome({**BASE, "bucket_groups": 7}, 2, joined=False).state == "COMPLETED"

from __future__ import annotations

import pickle
import random

import pytest

from transforms.jsonpath import MISSING, JsonPathError, compile_path, field_name_of, simple_steps

RECORD = {
    "id": 7,
    "content": ["chapter", "title"],
    "SageMakerOutput": [[0.1, 0.2], [0.3, 0.4]],
    "response": {"body": {"data": [{"embedding": [1.0, 2.0]}, {"embedding": [3.0]}]}},
    "nothing": None,
    "dotted.key": "yes",
    "text": "abc",
}

PATHS = [
    "$",
    "$.id",
    "$.content[0]",
    "$.content[1]",
    "$.content[2]",
    "$.SageMakerOutput[1]",
    "$.response.body.data[0].embedding",
    "$.response.body.data[1].embedding[0]",
    "$.nothing",
    "$.nothing.deeper",
    "$.missing",
    "$['dotted.key']",
    '$["content"][0]',
    "$.text[0]",
    "$.id[0]",
    "$.content.length",
    "$.response.body.data[5].embedding",
]


def test_simple_paths_compile_to_direct_access():
    assert simple_steps("$.response.body.data[0].embedding") == ("response", "body", "data", 0, "embedding")
    assert simple_steps("$['dotted.key']") == ("dotted.key",)
    assert simple_steps("$.a[*]") is None
    assert simple_steps("$..a") is None


@pytest.mark.parametrize("expression", PATHS)
def test_fast_path_and_jsonpath_ng_agree(expression):
    path = compile_path(expression)
    assert path.steps is not None
    assert path.evaluate(RECORD) == path.evaluate_with_jsonpath_ng(RECORD)


def test_fast_path_and_jsonpath_ng_agree_on_random_records():
    rng = random.Random(5)

    def value(depth: int):
        kind = rng.choice(["dict", "list", "scalar"] if depth < 3 else ["scalar"])
        if kind == "dict":
            return {rng.choice("abc"): value(depth + 1) for _ in range(rng.randint(0, 3))}
        if kind == "list":
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return rng.choice([None, 1, 2.5, "s", True])

    paths = [
        "$." + ".".join(rng.choice(["a", "b", "c", "a[0]", "b[1]"]) for _ in range(rng.randint(1, 3)))
        for _ in range(40)
    ]
    compiled = [compile_path(expression) for expression in paths]
    for _ in range(200):
        record = {"a": value(0), "b": value(0), "c": value(0)}
        for path in compiled:
            assert path.evaluate(record) == path.evaluate_with_jsonpath_ng(record), (path.expression, record)


def test_indefinite_paths_return_lists_of_matches():
    assert compile_path("$.content[*]").evaluate(RECORD) == ["chapter", "title"]
    assert compile_path("$.response.body.data[*].embedding").evaluate(RECORD) == [[1.0, 2.0], [3.0]]
    assert compile_path("$.missing[*]").evaluate(RECORD) is MISSING


def test_unmatched_path_is_missing_not_an_error():
    assert compile_path("$.a.b.c").evaluate(RECORD) is MISSING
    assert compile_path("$.nothing").evaluate(RECORD) is None


@pytest.mark.parametrize("expression", ["id", "$.[", "$.a[", "$$"])
def test_bad_jsonpath_raises(expression):
    with pytest.raises(JsonPathError):
        compile_path(expression)


def test_compiled_paths_and_missing_pickle():
    path = compile_path("$.content[*]")
    again = pickle.loads(pickle.dumps(path))
    assert again.evaluate(RECORD) == ["chapter", "title"]
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_ingest_field_name_is_last_segment_as_ml_commons():
    assert field_name_of("$.id") == "id"
    assert field_name_of("$.meta.custom_field1") == "custom_field1"

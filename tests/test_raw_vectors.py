"""Vectors taken as written from the raw line: only when unambiguous, and always equal to the parsed value."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from pipelines.plan import compile_plan
from pipelines.request import parse_request
from transforms.projection import project
from transforms.vectors import key_needle, raw_vector

NEEDLE = key_needle("embedding")


def line(record: dict, **dumps) -> bytes:
    return json.dumps(record, **dumps).encode()


def test_an_openai_output_line_gives_its_vector_as_written():
    record = {"response": {"body": {"data": [{"object": "embedding", "embedding": [0.5, -1e-07, 3]}]}}}
    assert raw_vector(line(record), NEEDLE) == b"[0.5, -1e-07, 3]"
    assert raw_vector(line(record, separators=(",", ":")), NEEDLE) == b"[0.5,-1e-07,3]"


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": {"embedding": [1.0]}, "b": {"embedding": [2.0]}}',  # the key twice
        b'{"embedding" : [1.0], "x": 1}',  # whitespace before the colon
        b'{"embedding": [1.0], "t": "say \\"hi\\""}',  # an escape somewhere in the line
        b'{"embedding": [[1.0], [2.0]]}',  # not flat
        b'{"embedding": [1.0, null]}',  # not only numbers
        b'{"embedding": [1.0, "2"]}',
        b'{"other": [1.0]}',  # no such key
        b'{"embedding": {"v": [1.0]}}',  # not an array
    ],
)
def test_ambiguous_or_odd_lines_are_left_to_the_parser(text):
    assert raw_vector(text, NEEDLE) is None


def test_projecting_with_the_raw_line_gives_the_parsed_values_on_random_records():
    rng = random.Random(7)
    plan = compile_plan(
        parse_request(
            {
                "index_name": "i",
                "field_map": {"embedding": "$.out.embedding", "text": "$.text", "_id": "$.id"},
                "data_source": {"type": "local", "source": ["x.jsonl"]},
            }
        )
    )
    source = plan.sources[0]
    taken = 0
    for i in range(300):
        vector = [rng.choice([rng.uniform(-1, 1), rng.randint(-5, 5), 1e-9, -0.0]) for _ in range(8)]
        vector[0] = float(vector[0])
        record = {
            "id": i,
            "out": {"embedding": vector, "object": "embedding"},
            "text": rng.choice(["a", 'q"b']),
        }
        if rng.random() < 0.3:
            record["meta"] = {"embedding": [1.0, 2.0]}
        raw = line(record, separators=rng.choice([(",", ":"), (", ", ": ")]))
        doc_id, fields, _ = project(source, orjson.loads(raw), raw)
        expected_id, expected, _ = project(source, orjson.loads(raw))
        assert doc_id == expected_id
        assert orjson.loads(fields["embedding"]) == orjson.loads(expected["embedding"]) == vector
        assert fields["text"] == expected["text"]
        taken += fields["embedding"] != expected["embedding"]
    assert taken > 50  # the raw text was used for many of them (its spacing differs from orjson's)


@pytest.mark.parametrize(
    ("text", "nested", "taken"),
    [
        (b'{"v": [[1.5, 2], [3.0]], "id": 1}', True, b"[1.5, 2]"),
        (b'{"v":[ \t[1.5,2]]}', True, b"[1.5,2]"),
        (b'{"v": [1.5, [2.0]]}', True, None),  # the first element is not an array
        (b'{"v": [[1.5, [2.0]]]}', True, None),  # not flat
        (b'{"v": [[1.5]], "w": {"v": [[2.5]]}}', True, None),  # the key twice
        (b'{"v": [[1.5]], "v" : 1}', True, None),  # an ambiguous occurrence after the vector
        (b'{"v": [1.5], "w": "v", "x": {"v": 2}}', False, None),  # the key again after the vector
        (b'{"w": "v", "v": [1.5], "x": ["v"]}', False, b"[1.5]"),  # other occurrences are not keys
    ],
)
def test_a_vector_is_taken_only_when_the_key_is_a_key_once(text, nested, taken):
    assert raw_vector(text, key_needle("v"), nested) == taken

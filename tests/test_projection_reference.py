"""The read helper's parse + project step against a plain reference, on thousands of random lines.

The reference is the projection as it was before its fast paths (orjson.loads, the key/index walk,
every `_id` check, vectors taken from the raw line only by a path's last key), kept here only. Both
must give the same (doc_id, fields, unmatched) or the same RecordError (class, stage, reason);
a vector the fast path takes as written must parse to the same JSON as the reference's bytes.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from connectors.opensearch.mapping import KnnField
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from transforms.document_ids import MAX_ID_BYTES, DocumentIdError
from transforms.jsonpath import MISSING
from transforms.projection import RecordError, check_vector, parse_record, project, to_wire
from transforms.types import SourcePlan
from transforms.vectors import numbers_only


def reference_raw_vector(line: bytes, needle: bytes) -> bytes | None:
    if b"\\" in line:
        return None
    value_at = -1
    position = line.find(needle)
    while position >= 0:
        after = position + len(needle)
        follower = line[after : after + 1]
        if follower == b":":
            if value_at >= 0:
                return None
            value_at = after + 1
        elif follower.isspace():
            return None
        position = line.find(needle, after)
    if value_at < 0:
        return None
    start = line.find(b"[", value_at)
    end = line.find(b"]", start)
    if start < 0 or end < 0 or line[value_at:start].strip():
        return None
    text = line[start : end + 1]
    return text if numbers_only(text) else None


def reference_walk(record: Any, steps: tuple[str | int, ...]) -> Any:
    value = record
    try:
        for step in steps:
            if isinstance(step, int) and not isinstance(value, list):
                return MISSING
            value = value[step]
    except (KeyError, IndexError, TypeError):
        return MISSING
    return value


def reference_id(value: Any, expression: str) -> str:
    if value is MISSING or value is None:
        raise DocumentIdError(f"missing _id: {expression} matched nothing")
    if isinstance(value, bool | dict | list):
        raise DocumentIdError(f"invalid _id: {expression} is {orjson.dumps(value).decode()[:80]}")
    text = value if isinstance(value, str) else str(value)
    if not text:
        raise DocumentIdError(f"invalid _id: {expression} is an empty string")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise DocumentIdError(
            f"invalid _id: {expression} is {size} bytes long; OpenSearch allows at most {MAX_ID_BYTES} "
            f"(starts {text[:80]!r})"
        )
    return text


def reference_project(source: SourcePlan, line: bytes) -> tuple[Any, dict[str, Any], list[str]]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise RecordError("parse", f"malformed JSON: {error}") from None
    if not isinstance(record, dict):
        raise RecordError("parse", f"a record must be a JSON object, got {type(record).__name__}")
    doc_id = None
    if source.id_path is not None:
        try:
            doc_id = reference_id(reference_walk(record, source.id_path.steps), source.id_path.expression)
        except DocumentIdError as error:
            raise RecordError("map", str(error)) from None
    fields: dict[str, Any] = {}
    unmatched: list[str] = []
    for spec in source.fields:
        value = reference_walk(record, spec.path.steps)
        if value is MISSING:
            unmatched.append(spec.name)
            continue
        raw = None
        is_vector = isinstance(value, list) and value and type(value[0]) is float
        if spec.needle is not None and is_vector:
            raw = reference_raw_vector(line, spec.needle)
        fields[spec.name] = wire = raw if raw is not None else to_wire(value, spec.name)
        if spec.knn_vector and value is not None:
            check_vector(spec, value, wire, flat_numbers=raw is not None)
    return doc_id, fields, unmatched


def outcome(run: Any) -> tuple[str, Any]:
    try:
        return "ok", run()
    except RecordError as error:
        return "error", (type(error).__name__, error.stage, error.reason)


NUMBERS = ["0.5", "-0.25", "3", "-0", "-0.0", "0", "1e-05", "2.5E+3", "-7.125e-2", "1e2", "12.75", "0.000001"]
BAD_NUMBERS = ["1..2", "--1", "01", ".5", "1.", "+1", "1e", "1e400", "NaN", "Infinity", "null", "true", '"2"']
FIELD_MAPS = [
    {"embedding": "$.response.body.data[0].embedding", "_id": "$.custom_id"},
    {"embedding": "$.SageMakerOutput[0]", "text": "$.content[0]", "_id": "$.id"},
    {"embedding": "$.SageMakerOutput[0]", "first": "$.SageMakerOutput[0][1]", "_id": "$.id"},
    {"embedding": "$.response.body.data[0].embedding", "data": "$.response.body.data", "_id": "$.id"},
    {"vec": "$.response.body.data[0].embedding", "whole": "$.SageMakerOutput", "_id": "$.custom_id"},
]


def sources(dimension: int) -> list[SourcePlan]:
    plans = []
    for field_map in FIELD_MAPS:
        data_source = {"type": "local", "source": ["x"]}
        request = {"index_name": "i", "field_map": field_map, "data_source": data_source}
        for knn in ({"embedding": KnnField(dimension)}, {"embedding": KnnField(None)}, {}):
            plans.append(with_vector_checks(compile_plan(parse_request(request)), knn).sources[0])
    return plans


def number(rng: random.Random) -> str:
    if rng.random() < 0.01:
        return rng.choice(BAD_NUMBERS)
    return rng.choice(NUMBERS + [repr(rng.uniform(-1, 1))])


def vector_text(rng: random.Random, dimension: int) -> str:
    count = dimension + rng.choice([0, 0, 0, 0, 0, 1, -1, -dimension])
    items = [number(rng) for _ in range(count)]
    if items and rng.random() < 0.8:
        items[0] = repr(rng.uniform(-1, 1))
    comma = rng.choice([",", ", ", " , ", ",\t", ",\r"])
    text = "[" + rng.choice(["", " "]) + comma.join(items) + rng.choice(["", " "]) + "]"
    odd = rng.random()
    if odd < 0.02:
        return text.replace("[", "[,", 1)
    if odd < 0.04:
        return text.replace("]", ",]", 1)
    if odd < 0.06:
        return text.replace(comma, " ", 1)
    if odd < 0.08:
        return "[" + text + ", [1.5]]"
    return text


def identifier(rng: random.Random, i: int) -> str:
    return rng.choice(
        [f'"doc-{i}"', str(i), '""', "null", "true", "1.5", '"' + "é" * 200 + '"', '"' + "x" * 129 + '"']
        + ['"' + "x" * 128 + '"', "[1]", "1" * 600, f'"doc-{i}"', str(i)]
    )


def record_line(rng: random.Random, i: int, dimension: int) -> bytes:
    colon = rng.choice([": ", ":", ": "])
    key = "embedding" if rng.random() < 0.95 else rng.choice(["embedding ", "other"])
    embedding = f'"{key}"' + colon + vector_text(rng, dimension)
    if rng.random() < 0.05:
        embedding += f', "embedding"{rng.choice([":", " :"])} [1.0]'
    data = f'[{{"object"{colon}"embedding", "index": 0, {embedding}}}]'
    parts = [
        f'"custom_id"{colon}{identifier(rng, i)}',
        f'"id"{colon}{identifier(rng, i)}',
        f'"response"{colon}{{"body"{colon}{{"data"{colon}{data}}}}}',
        f'"SageMakerOutput"{colon}[{rng.choice(["", " "])}{vector_text(rng, dimension)}, [0.5]]',
        f'"content"{colon}["passage {i}"]',
    ]
    rng.shuffle(parts)
    if rng.random() < 0.05:
        parts.append(rng.choice(['"t": "say \\"hi\\""', '"embe\\u0064ding": [2.0]', '"x": "\\u00e9"']))
    text = "{" + ", ".join(parts) + "}"
    cut = rng.random()
    if cut < 0.02:
        text = text[: rng.randrange(len(text))]
    elif cut < 0.03:
        text = rng.choice(["[" + text + "]", "3", text + "}"])
    return text.encode()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_projection_matches_the_reference_on_random_lines(seed):
    rng = random.Random(seed)
    dimension = 6
    plans = sources(dimension)
    outcomes: dict[str, int] = {"ok": 0, "error": 0, "raw": 0}
    for i in range(1500):
        line = record_line(rng, i, dimension)
        for source in plans:
            kind, expected = outcome(lambda: reference_project(source, line))  # noqa: B023
            got_kind, got = outcome(lambda: project(source, parse_record(line), line))  # noqa: B023
            assert got_kind == kind, line
            outcomes[kind] += 1
            if kind == "error":
                assert got == expected, line
                continue
            assert (got[0], got[2], got[1].keys()) == (expected[0], expected[2], expected[1].keys()), line
            for name, value in expected[1].items():
                taken = got[1][name]
                if taken != value:
                    # a vector taken as written (by the key before `[0]`): the same JSON, from the line
                    assert source.fields[0].name == name and taken in line, line
                    assert orjson.dumps(orjson.loads(taken)) == value, line
                    outcomes["raw"] += 1
    assert min(outcomes.values()) > 500, outcomes  # every branch ran many times

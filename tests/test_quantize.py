"""`--quantize byte`: the option, the rule (stated, reproducible, clamps counted), the fields it
applies to, and how projecting a record quantises a marked field (the raw-vector path included)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import orjson
import pytest

from connectors.opensearch.mapping import KnnField
from pipelines.cli import main
from pipelines.ingest_options import IngestOptions, IngestOptionsError
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from transforms.projection import VectorError, project
from transforms.quantize import (
    Quantization,
    QuantizeError,
    parse_quantize,
    quantize_vector,
    quantized_fields,
    with_quantization,
)


def test_the_option_states_the_max_abs_and_the_scale():
    assert parse_quantize("byte") == Quantization("byte", 1.0)
    assert parse_quantize("byte").scale == 127.0
    assert parse_quantize("byte:2.5").scale == 127 / 2.5
    assert parse_quantize("byte:0.25").stated(3) == {
        "data_type": "byte",
        "max_abs": 0.25,
        "scale": 508.0,
        "clamped": 3,
    }
    assert IngestOptions(quantize="byte:2").quantization() == Quantization("byte", 2.0)
    assert IngestOptions().quantization() is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("float", "quantise to byte ('byte' or 'byte:MAX_ABS')"),
        ("binary", "quantise to byte"),
        ("byte:0", "MAX_ABS must be a finite number above 0"),
        ("byte:-1", "MAX_ABS must be a finite number above 0"),
        ("byte:nan", "MAX_ABS must be a finite number above 0"),
        ("byte:inf", "MAX_ABS must be a finite number above 0"),
        ("byte:one", "MAX_ABS must be a finite number above 0"),
    ],
)
def test_a_malformed_option_is_refused_naming_it(text, message):
    with pytest.raises(IngestOptionsError, match="--quantize") as refused:
        IngestOptions(quantize=text)
    assert message in str(refused.value) and repr(text) in str(refused.value)


def test_a_malformed_option_on_the_command_line_is_a_usage_error(tmp_path, capsys):
    request = tmp_path / "request.json"
    request.write_text("{}")
    with pytest.raises(SystemExit) as exited:
        main(["ingest", str(request), "--quantize", "float"])
    assert exited.value.code == 2
    assert "--quantize 'float'" in capsys.readouterr().err


def quantized(values: list, scale: float) -> list[int]:
    result = quantize_vector(values, scale)
    assert result is not None
    return orjson.loads(result.wire)


def test_the_rule_scales_rounds_halves_to_even_and_clamps_to_the_byte_range():
    values = [0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 127.0, 127.4, -128.0, -128.6, 300, -1e9, 0]
    result = quantize_vector(values, 1.0)
    assert orjson.loads(result.wire) == [0, 2, 2, 0, -2, 127, 127, 127, -128, -128, 127, -128, 0]
    assert result.clamped == 4  # 127.4, -128.6, 300 and -1e9: x * S outside [-128, 127]
    assert result.wire == b"[0,2,2,0,-2,127,127,127,-128,-128,127,-128,0]"


def test_the_default_scale_maps_a_unit_range_onto_minus_127_to_127():
    values = [0.1, -0.25, 0.333, 1.0, -1.0, 0.00393, 0.00394, 1.2]
    assert quantized(values, parse_quantize("byte").scale) == [13, -32, 42, 127, -127, 0, 1, 127]
    assert quantized(values, parse_quantize("byte:2").scale) == [6, -16, 21, 64, -64, 0, 0, 76]


def test_the_same_input_and_scale_always_give_the_same_bytes():
    rng = random.Random(17)
    for _ in range(200):
        vector = [rng.uniform(-1.3, 1.3) for _ in range(rng.randint(1, 64))]
        scale = rng.choice([127.0, 63.5, 508.0, 127 / 0.07])
        first = quantize_vector(vector, scale)
        assert quantize_vector(list(vector), scale) == first
        reference = [round(min(max(x * scale, -128), 127)) for x in vector]  # Python rounds halves to even
        assert orjson.loads(first.wire) == reference
        assert first.clamped == sum(1 for x in vector if not -128 <= x * scale <= 127)


@pytest.mark.parametrize(
    "value", ["text", [], [1.0, "2"], [True, 1.0], [1.0, None], [1.0, math.nan], [math.inf], {"v": 1}]
)
def test_what_is_not_a_vector_of_finite_numbers_is_not_quantised(value):
    assert quantize_vector(value, 127.0) is None


MAPPING = {
    "v": KnnField(4, "byte"),
    "f": KnnField(4, "float"),
    "bits": KnnField(32, "binary"),
}


def plan_for(field_map: dict, knn_fields: dict = MAPPING):
    request = {
        "index_name": "vectors",
        "field_map": {"_id": "$.id", **field_map},
        "data_source": {"type": "local", "source": ["/data/a.jsonl"]},
    }
    return with_vector_checks(compile_plan(parse_request(request)), knn_fields)


def test_only_the_byte_fields_are_marked_with_the_scale():
    plan = with_quantization(plan_for({"v": "$.emb", "f": "$.emb", "text": "$.text"}), Quantization())
    scales = {spec.name: spec.quantize_scale for spec in plan.sources[0].fields}
    assert scales == {"v": 127.0, "f": None, "text": None}
    assert quantized_fields(plan) == ["v"]


@pytest.mark.parametrize(
    "field_map, knn_fields, message",
    [
        ({"f": "$.emb"}, MAPPING, "has no byte knn_vector field to quantise into ('f' is float)"),
        (
            {"bits": "$.b", "f": "$.emb"},
            MAPPING,
            "has no byte knn_vector field to quantise into ('bits' is binary, 'f' is float)",
        ),
        ({"text": "$.text"}, MAPPING, "maps no field of the request as knn_vector"),
        ({"v": "$.emb"}, {}, "maps no field of the request as knn_vector"),
    ],
)
def test_quantising_without_a_byte_field_is_refused_naming_the_fields(field_map, knn_fields, message):
    with pytest.raises(QuantizeError) as refused:
        with_quantization(plan_for(field_map, knn_fields), Quantization())
    assert str(refused.value).startswith("--quantize byte: index 'vectors' ")
    assert message in str(refused.value)


def project_line(record: dict, clamped: Counter | None = None):
    plan = with_quantization(plan_for({"v": "$.out.embedding", "f": "$.out.embedding"}), Quantization())
    line = json.dumps(record).encode()
    return project(plan.sources[0], json.loads(line), line, clamped)


def test_projecting_quantises_a_byte_field_even_where_the_raw_vector_would_be_taken():
    clamped: Counter[str] = Counter()
    doc_id, fields, _ = project_line({"id": "a", "out": {"embedding": [0.5, -1.5, 0.02, 0.0]}}, clamped)
    assert doc_id == "a" and fields["v"] == b"[64,-128,3,0]"
    assert fields["f"] == b"[0.5, -1.5, 0.02, 0.0]"  # the float field: the raw text, as before
    assert clamped == {"v": 1}


@pytest.mark.parametrize(
    "embedding, reason",
    [
        ([0.5, 0.1, 0.2], "vector field 'v' has 3 dimensions; the index mapping expects 4"),
        ("none", "vector field 'v' is not a list of numbers but str"),
        ([0.5, "x", 0.1, 0.2], "vector field 'v' element 1 is not a number: 'x'"),
        ([], "vector field 'v' has 0 dimensions; the index mapping expects 4"),
    ],
)
def test_a_vector_that_cannot_be_quantised_is_a_dead_letter_with_its_reason(embedding, reason):
    with pytest.raises(VectorError) as rejected:
        project_line({"id": "a", "out": {"embedding": embedding}})
    assert rejected.value.stage == "validate" and rejected.value.reason == reason


def test_a_null_vector_is_left_as_it_is():
    assert project_line({"id": "a", "out": {"embedding": None}})[1]["v"] is None


def test_a_record_rejected_for_another_field_counts_no_clamped_values():
    plan = with_quantization(plan_for({"v": "$.a", "f": "$.b"}), Quantization())
    clamped: Counter[str] = Counter()
    with pytest.raises(VectorError, match="vector field 'f' is not a list of numbers but str"):
        project(plan.sources[0], {"id": "x", "a": [2.0, 0.0, 0.0, 0.0], "b": "oops"}, None, clamped)
    assert clamped == {}
    project(plan.sources[0], {"id": "y", "a": [2.0, 0.0, 0.0, 0.0], "b": [0.0] * 4}, None, clamped)
    assert clamped == {"v": 1}


def test_chunk_list_vectors_are_never_quantised():
    """A chunk member's values are lists of vectors, written as the job wrote them (docs/vectors.md)."""
    request = {
        "index_name": "i",
        "field_map": {"_id": "$.id", "v": "$.emb", "chunks[].embedding": "$.parts[*]"},
        "data_source": {"type": "local", "source": ["/x.jsonl"]},
    }
    knn = {"v": KnnField(2, "byte"), "chunks.embedding": KnnField(2, "byte")}
    plan = with_quantization(
        with_vector_checks(compile_plan(parse_request(request), chunk_lists=True), knn), Quantization()
    )
    assert quantized_fields(plan) == ["v"]
    line = b'{"id": "a", "emb": [0.5, -0.5], "parts": [[3, -4], [5, 6]]}'
    _, fields, _ = project(plan.sources[0], orjson.loads(line), line, Counter())
    written = {
        name: orjson.loads(value) if isinstance(value, bytes) else value for name, value in fields.items()
    }
    assert written["chunks[].embedding"] == [[3, -4], [5, 6]] and written["v"] == [64, -64]

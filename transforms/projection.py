"""Parse one source record and keep only what its source contributes (the **project** step, pure).

Each line is parsed with orjson, the source's paths are evaluated right away and the raw
record is dropped, so only the fields to be written travel through the join. Problems a
record can have (not JSON, not an object, no usable `_id`, a value that is not JSON) raise
`RecordError` with the stage and a reason for the dead-letter queue, as does a value of a
`knn_vector` field that is not a vector of the index mapping's dimension; list and object values
leave as their JSON bytes (see `to_wire`), vectors as their text in the raw line when that is
unambiguous (`transforms.vectors.raw_vector`, found by the path's last key, or by the key before
a last `[0]`), and the vectors of a field `--quantize` marks quantised first
(`transforms.quantize`); paths that match nothing are reported back so they can be counted, but
do not reject the record.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import orjson

from transforms.chunks import chunk_member, vector_list_problem
from transforms.document_ids import DocumentIdError, document_id
from transforms.jsonpath import MISSING
from transforms.quantize import Quantized, quantize_vector
from transforms.types import FieldSpec, SourcePlan
from transforms.vectors import key_needle, numbers_only, raw_vector, vector_problem


class RecordError(ValueError):
    """A record cannot be used; `stage` is where it failed (parse / map / validate)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class VectorError(RecordError):
    """A `knn_vector` field's value is not a vector of the mapping's dimension."""


def parse_record(payload: bytes | dict[str, Any]) -> dict[str, Any]:
    """A JSON object from a JSONL line (Parquet rows arrive as dicts already)."""
    if isinstance(payload, dict):
        return payload
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise RecordError("parse", f"malformed JSON: {error}") from None
    if not isinstance(record, dict):
        raise RecordError("parse", f"a record must be a JSON object, got {type(record).__name__}")
    return record


def project(
    source: SourcePlan, record: dict[str, Any], line: bytes | None = None, clamped: Counter[str] | None = None
) -> tuple[str | None, dict[str, Any], list[str]]:
    """(document id or None, fields this source contributes, names of fields whose path matched nothing).

    `line` is the record's raw JSON when it has one: vectors are taken from it as written.
    `clamped`, when given, counts by field the values quantisation clamped in a record projected.
    """
    doc_id = (
        None
        if source.id_path is None
        else _checked_id(source.id_path.evaluate(record), source.id_path.expression)
    )
    fields: dict[str, Any] = {}
    unmatched: list[str] = []
    clamps: list[tuple[str, int]] = []
    for spec in source.fields:
        value = spec.path.evaluate(record)
        if value is MISSING:
            unmatched.append(spec.name)
            continue
        if spec.quantize_scale is not None and value is not None:
            fields[spec.name], count = quantized(spec, spec.quantize_scale, value)
            clamps.append((spec.name, count))
            continue
        raw = _raw_vector_of(line, spec) if line is not None and _is_vector(value) else None
        fields[spec.name] = wire = raw if raw is not None else to_wire(value, spec.name)
        if spec.knn_vector and value is not None:
            check_vector(spec, value, wire, flat_numbers=raw is not None)
    if clamped is not None:
        for name, count in clamps:
            clamped[name] += count
    return doc_id, fields, unmatched


def _raw_vector_of(line: bytes, spec: FieldSpec) -> bytes | None:
    """The vector at `spec`'s path as written in `line`: found by the path's last key, or by the
    key before a last `[0]` (SageMaker's `$.SageMakerOutput[0]`), or None."""
    if spec.needle is not None:
        return raw_vector(line, spec.needle)
    steps = spec.path.steps
    if steps and len(steps) > 1 and steps[-1] == 0 and steps[-2].__class__ is str:
        return raw_vector(line, key_needle(steps[-2]), nested=True)
    return None


def _checked_id(value: Any, expression: str) -> str:
    try:
        return document_id(value, expression)
    except DocumentIdError as error:
        raise RecordError("map", str(error)) from None


def check_vector(spec: FieldSpec, value: Any, wire: Any, flat_numbers: bool = False) -> None:
    """Raise VectorError when a `knn_vector` field's value is not a vector the index accepts.

    The common case costs one pass over the serialized vector (`numbers_only`, skipped when
    the caller knows it holds only numbers) and a length; only a bad vector is looked at
    element by element, to say what is wrong with it. A chunk list's member (`transforms.chunks`)
    holds one vector per chunk, each checked.
    """
    chunked = chunk_member(spec.name) is not None
    if (
        not chunked
        and value.__class__ is list
        and spec.data_type == "float"
        and wire.__class__ is bytes
        and (spec.dimension is None or len(value) == spec.dimension)
        and len(value) > 0
        and (flat_numbers or numbers_only(wire))
    ):
        return
    if chunked:
        problem = vector_list_problem(value, spec.dimension, spec.data_type)
    else:
        problem = vector_problem(value, spec.dimension, spec.data_type)
    if problem:
        raise VectorError("validate", f"vector field {spec.name!r} {problem}")


def quantized(spec: FieldSpec, scale: float, value: Any) -> Quantized:
    """A float vector of a field `--quantize` marks, quantised with `scale` (`transforms.quantize`),
    as JSON text and how many of its values were clamped; VectorError when it is not a vector of
    the mapping's dimension to quantise."""
    result = quantize_vector(value, scale)
    if result is None or (spec.dimension is not None and len(value) != spec.dimension):
        problem = vector_problem(value, spec.dimension) or "is not a vector of finite numbers"
        raise VectorError("validate", f"vector field {spec.name!r} {problem}")
    return result


def _is_vector(value: Any) -> bool:
    return value.__class__ is list and bool(value) and value[0].__class__ is float


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def to_wire(value: Any, name: str) -> Any:
    """A field value as it travels to the writer: lists and objects as their JSON bytes.

    Vectors are most of the data; as one bytes object each they cross the shuffle about 7x
    faster than as lists of floats, and are copied into the bulk body as they are
    (`transforms.bulk_body.encode_action`). Parquet decimals become floats; binary values are not JSON.
    """
    if isinstance(value, list | dict):
        try:
            return orjson.dumps(value, default=_json_default)
        except TypeError as error:
            raise RecordError("validate", f"not JSON: field {name!r}: {error}") from None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        raise RecordError("validate", f"not JSON: field {name!r} holds bytes")
    return value

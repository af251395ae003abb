"""Client-side quantisation of float vectors into `byte` k-NN fields (`--quantize byte`, pure).

The rule is symmetric and linear, with one scale for the whole run:
`q = round(clamp(x * S, -128, 127))` with `S = 127 / MAX_ABS`, so values in [-MAX_ABS, MAX_ABS]
span [-127, 127]; rounding is to the nearest integer, halves to even; a value whose `x * S` lies
outside [-128, 127] is clamped to the bound (and counted). `--quantize byte` takes MAX_ABS = 1.0,
right for normalised embeddings (every component of a unit vector is in [-1, 1]);
`--quantize byte:MAX_ABS` states another. The arithmetic is IEEE double precision, so the same
input and option always give the same bytes.

`with_quantization` marks the plan's `byte` fields (after `pipelines.plan.with_vector_checks`)
with the scale; `transforms.projection.project` quantises their values with `quantize_vector` as
each record is projected, before any other check or encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import orjson

from transforms.chunks import chunk_member
from transforms.types import FieldSpec, IngestPlan

BYTE_MIN, BYTE_MAX = -128, 127
DEFAULT_MAX_ABS = 1.0
DATA_TYPES = ("byte",)
_NUMBER_TYPES = frozenset({int, float})


class QuantizeError(ValueError):
    """`--quantize` cannot apply: a malformed option, or no field of its data type to fill."""


@dataclass(frozen=True)
class Quantization:
    """What `--quantize` asks for: the target `data_type` and the MAX_ABS mapped to 127."""

    data_type: str = "byte"
    max_abs: float = DEFAULT_MAX_ABS

    @property
    def scale(self) -> float:
        """S, the factor every value is multiplied by before it is rounded."""
        return BYTE_MAX / self.max_abs

    def rule(self) -> str:
        return f"q = round(clamp(x * {self.scale!r}, {BYTE_MIN}, {BYTE_MAX})) (max_abs {self.max_abs!r})"

    def stated(self, clamped: int | None = None) -> dict[str, Any]:
        """The task record's `quantize`; with `clamped`, how many values were clamped."""
        fields: dict[str, Any] = {"data_type": self.data_type, "max_abs": self.max_abs, "scale": self.scale}
        return fields if clamped is None else {**fields, "clamped": clamped}


def parse_quantize(text: str) -> Quantization:
    """`byte` or `byte:MAX_ABS` (a finite number > 0); raises QuantizeError."""
    data_type, _, max_abs = text.partition(":")
    if data_type not in DATA_TYPES:
        raise QuantizeError(
            f"--quantize {text!r}: quantise to {' or '.join(DATA_TYPES)} ('byte' or 'byte:MAX_ABS')"
        )
    if not max_abs:
        return Quantization(data_type)
    try:
        value = float(max_abs)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise QuantizeError(f"--quantize {text!r}: MAX_ABS must be a finite number above 0")
    return Quantization(data_type, value)


class Quantized(NamedTuple):
    """A quantised vector as its JSON text, and how many of its values were clamped."""

    wire: bytes
    clamped: int


def quantize_vector(value: Any, scale: float) -> Quantized | None:
    """`value` quantised by the module's rule with scale S, or None when it is not a non-empty
    list of finite numbers (the caller says why)."""
    import numpy as np

    if value.__class__ is not list or not value or not set(map(type, value)) <= _NUMBER_TYPES:
        return None
    try:
        numbers = np.array(value, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(numbers).all():
        return None
    scaled = numbers * scale
    clamped = int(np.count_nonzero((scaled < BYTE_MIN) | (scaled > BYTE_MAX)))
    quantized = np.rint(np.clip(scaled, BYTE_MIN, BYTE_MAX)).astype(np.int8)
    return Quantized(orjson.dumps(quantized, option=orjson.OPT_SERIALIZE_NUMPY), clamped)


def with_quantization(plan: IngestPlan, quantization: Quantization) -> IngestPlan:
    """`plan` with its `knn_vector` fields of the quantisation's data type marked with the scale
    (other fields are left as they are); QuantizeError naming the vector fields when none is."""
    if not quantized_fields(plan, quantization.data_type):
        raise QuantizeError(_no_target(plan, quantization.data_type))

    def marked(spec: FieldSpec) -> FieldSpec:
        if spec.knn_vector and spec.data_type == quantization.data_type and chunk_member(spec.name) is None:
            return replace(spec, quantize_scale=quantization.scale)
        return spec

    sources = tuple(
        replace(source, fields=tuple(marked(spec) for spec in source.fields)) for source in plan.sources
    )
    return replace(plan, sources=sources)


def quantized_fields(plan: IngestPlan, data_type: str = "byte") -> list[str]:
    """The names of the plan's `knn_vector` fields of `data_type` (chunk-list members are written
    as the job wrote them: never quantised)."""
    return [
        spec.name
        for source in plan.sources
        for spec in source.fields
        if spec.knn_vector and spec.data_type == data_type and chunk_member(spec.name) is None
    ]


def _no_target(plan: IngestPlan, data_type: str) -> str:
    vectors = [spec for source in plan.sources for spec in source.fields if spec.knn_vector]
    where = f"--quantize {data_type}: index {plan.index_name!r}"
    if not vectors:
        return f"{where} maps no field of the request as knn_vector; quantising needs a {data_type} field"
    found = ", ".join(f"{spec.name!r} is {spec.data_type}" for spec in vectors)
    return (
        f"{where} has no {data_type} knn_vector field to quantise into ({found}); "
        f'map the field with "data_type": "{data_type}" or leave --quantize out'
    )

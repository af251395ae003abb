"""Vector checks before a document is sent (the **map / validate** step, pure).

The index mapping is read once; every `knn_vector` field of a document must hold a list of
finite numbers of the mapping's `dimension`, so bad documents go to the dead-letter queue
instead of failing inside the cluster. Fields that carry vectors but are not `knn_vector`
in the mapping are reported so the user can fix the mapping.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

_SHOWN_VALUE_CHARS = 40
_NUMBER_BYTES = b"0123456789+-.eE,"
_FLOAT_LIST = re.compile(rb"\[\s*-?\d+\.\d*(?:[eE][-+]?\d+)?\s*,")


def vector_problem(value: Any, dimension: int | None) -> str | None:
    """Why `value` cannot be a k-NN vector of `dimension` (None: any length), or None if it can."""
    if not isinstance(value, list):
        return f"is not a list of numbers but {type(value).__name__}"
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, int | float):
            return f"element {position} is not a number: {repr(number)[:_SHOWN_VALUE_CHARS]}"
        if not math.isfinite(number):
            return f"element {position} is not finite: {number}"
    if dimension is not None and len(value) != dimension:
        return f"has {len(value)} dimensions; the index mapping expects {dimension}"
    if not value:
        return "is empty"
    return None


class VectorJson(bytes):
    """The JSON text of a flat array of `numbers` numbers, counted when it was projected, so
    the writer checks a vector's length without looking at its text again."""

    numbers: int

    def __new__(cls, text: bytes, numbers: int) -> VectorJson:
        vector = super().__new__(cls, text)
        vector.numbers = numbers
        return vector

    def __reduce__(self) -> tuple[type[VectorJson], tuple[bytes, int]]:
        return VectorJson, (bytes(self), self.numbers)


def numbers_only(text: bytes) -> bool:
    """True when the JSON array `text` (orjson output) is flat and holds only numbers."""
    return text.translate(None, _NUMBER_BYTES) == b"[]"


def plain_number_count(value: bytes) -> int | None:
    """How many numbers the JSON array `value` holds, when it holds only numbers; else None.

    `value` is orjson output (see `transforms.projection.to_wire`), so once digits, signs,
    points, exponents and commas are deleted a flat array of numbers leaves just `[]` (NaN and
    infinity are `null` there). Several times faster than parsing the vector to look at it.
    """
    if len(value) < 3 or not numbers_only(value):
        return None
    return value.count(b",") + 1


def document_vector_problem(fields: dict[str, Any], knn_fields: dict[str, int | None]) -> str | None:
    """The first bad vector of a document as `<field> <problem>`, or None (bytes values are JSON)."""
    for name, dimension in knn_fields.items():
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, bytes):
            count = value.numbers if isinstance(value, VectorJson) else plain_number_count(value)
            if count is not None and (dimension is None or count == dimension):
                continue
            value = orjson.loads(bytes(value))
        problem = vector_problem(value, dimension)
        if problem:
            return f"vector field {name!r} {problem}"
    return None


def unmapped_vector_fields(fields: dict[str, Any], knn_fields: dict[str, int | None]) -> list[str]:
    """Fields holding a list of 2+ numbers that the mapping does not declare as `knn_vector`."""
    return [name for name, value in fields.items() if name not in knn_fields and _looks_like_vector(value)]


def _looks_like_vector(value: Any) -> bool:
    if isinstance(value, bytes):
        return _FLOAT_LIST.match(value) is not None
    return isinstance(value, list) and len(value) > 1 and isinstance(value[0], float)

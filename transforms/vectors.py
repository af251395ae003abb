"""Vector checks (the **project / validate** step, pure).

The index mapping is read once; every value of a `knn_vector` field must be a list of
finite numbers of the mapping's `dimension`, integers in [-128, 127] for a `byte` or `binary`
`data_type` (whose `dimension` is in bits: 8 per element); `transforms.projection.check_vector`
runs these as each record is projected, so bad records go to the dead-letter queue instead of failing
inside the cluster. Fields that carry vectors but are not `knn_vector` in the mapping are
reported so the user can fix the mapping.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import orjson

_SHOWN_VALUE_CHARS = 40
_NUMBER_BYTES = b"0123456789+-.eE, \t"
_INT8_TYPES = ("byte", "binary")
_NO_KEY, _AMBIGUOUS_KEY = -1, -2  # `_next_key` found no key, or an occurrence that may be one
_FLOAT_LIST = re.compile(rb"\[\s*-?\d+\.\d*(?:[eE][-+]?\d+)?\s*,")


def expected_elements(dimension: int | None, data_type: str = "float") -> int | None:
    """How many elements a vector of a mapping's `dimension` has: a `binary` dimension is in
    bits, one int8 element per 8 of them; `float` and `byte` have one element per dimension."""
    if dimension is None or data_type != "binary":
        return dimension
    return dimension // 8


def vector_problem(value: Any, dimension: int | None, data_type: str = "float") -> str | None:
    """Why `value` cannot be a k-NN vector of the mapping's `dimension` (None: any length) and
    `data_type` (`float`, `byte` or `binary`), or None if it can."""
    if not isinstance(value, list):
        return f"is not a list of numbers but {type(value).__name__}"
    for position, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, int | float):
            return f"element {position} is not a number: {repr(number)[:_SHOWN_VALUE_CHARS]}"
        if not math.isfinite(number):
            return f"element {position} is not finite: {number}"
        if data_type in _INT8_TYPES and (number != int(number) or not -128 <= number <= 127):
            return (
                f"element {position} is {repr(number)[:_SHOWN_VALUE_CHARS]}; a {data_type} vector holds "
                "integers in [-128, 127]"
            )
    elements = expected_elements(dimension, data_type)
    if elements is not None and len(value) != elements:
        if data_type == "binary":
            return (
                f"has {len(value)} elements; a binary vector of dimension {dimension} has {elements} "
                "(one int8 per 8 bits)"
            )
        return f"has {len(value)} dimensions; the index mapping expects {dimension}"
    if not value:
        return "is empty"
    return None


@functools.lru_cache(maxsize=256)
def key_needle(key: str) -> bytes:
    """How an object key `key` is written in JSON, quoted, as raw bytes (`b'"embedding"'`)."""
    return orjson.dumps(key)


def raw_vector(line: bytes, needle: bytes, nested: bool = False) -> bytes | None:
    """The raw JSON text of the flat array of numbers that is the value of key `needle` in the
    JSON object `line` (with `nested`: the first element of that value, itself an array, as for
    SageMaker's `$.SageMakerOutput[0]`), or None when that cannot be told for sure from the text.

    Taking a vector's text as it is skips formatting its floats again, most of the cost of
    projecting an embedding. It is only taken when it cannot be another value: the line has
    no escapes (so every key is spelled as written), the key appears exactly once as a key,
    written directly before its colon (an occurrence followed by whitespace is ambiguous), only
    whitespace comes between the colon and `[` (and, `nested`, between the two `[`), and the text
    up to the first `]` is a flat array of numbers. The caller has parsed the line and found an
    array at the key's path whose first element is a float; the slice is checked to hold only
    numbers, so no other occurrence of the key (a quoted string) can start inside it: the key
    is looked for again only after it.
    """
    if b"\\" in line:
        return None
    after = _next_key(line, needle, 0)
    if after < 0:
        return None
    start = _array_at(line, after + 1)
    if start >= 0 and nested:
        start = _array_at(line, start + 1)
    end = line.find(b"]", start) if start >= 0 else -1
    if end < 0:
        return None
    text = line[start : end + 1]
    if not numbers_only(text) or _next_key(line, needle, end + 1) != _NO_KEY:
        return None
    return text


def _next_key(line: bytes, needle: bytes, position: int) -> int:
    """Where the first occurrence of `needle` from `position` on that is a key (directly before
    its colon) ends, `_NO_KEY` without one, or `_AMBIGUOUS_KEY` when an occurrence followed by
    whitespace comes first (a key or not: the text alone cannot tell)."""
    position = line.find(needle, position)
    while position >= 0:
        after = position + len(needle)
        follower = line[after : after + 1]
        if follower == b":":
            return after
        if follower.isspace():
            return _AMBIGUOUS_KEY
        position = line.find(needle, after)
    return _NO_KEY


def _array_at(line: bytes, position: int) -> int:
    """The index of the `[` at `position` or after nothing but whitespace, or -1."""
    start = line.find(b"[", position)
    return -1 if start < 0 or line[position:start].strip() else start


def numbers_only(text: bytes) -> bool:
    """True when the JSON array `text` is flat and holds only numbers (NaN and infinity are
    `null` in orjson output, so they fail)."""
    return text.translate(None, _NUMBER_BYTES) == b"[]"


def unmapped_vector_fields(fields: dict[str, Any], knn_fields: dict[str, Any]) -> list[str]:
    """Fields holding a list of 2+ numbers that the mapping does not declare as `knn_vector`."""
    return [name for name, value in fields.items() if name not in knn_fields and _looks_like_vector(value)]


def _looks_like_vector(value: Any) -> bool:
    if isinstance(value, bytes):
        return _FLOAT_LIST.match(value) is not None
    return isinstance(value, list) and len(value) > 1 and isinstance(value[0], float)

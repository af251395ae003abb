"""Chunk lists: parallel lists zipped into one list of objects (the **map** step, pure).

A `field_map` target `LIST[].MEMBER` (for example `chunks[].text`, `chunks[].embedding`) names
one member of the objects of the list field `LIST`: each such path yields a list (one value per
chunk), and a finished document gets `LIST` as `[{MEMBER: value, ...}, ...]`, the i-th object
made of the i-th value of every member (`zip_chunks`). This runs once a document's sources are
joined, just before it is encoded (`transforms.encoded.finished_action`), so members may come
from different sources. Members whose path matched nothing (or gave null) are left out of the
objects, as a missing path leaves a plain field out; lists of different lengths raise
`ChunkError`, which makes the document a dead letter. A `knn_vector` member is checked chunk by
chunk against the nested mapping's `LIST.MEMBER` (`vector_list_problem`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson

from transforms.vectors import vector_problem

MARK = "[]."


class ChunkError(ValueError):
    """A document's chunk lists cannot be zipped; the message names the fields and their lengths."""


@functools.cache
def chunk_member(name: str) -> tuple[str, str] | None:
    """`(list field, member)` of a target `LIST[].MEMBER`, or None for any other name."""
    list_name, mark, member = name.partition(MARK)
    return (list_name, member) if mark else None


def chunk_name_problem(name: str) -> str | None:
    """Why a target containing `[].` is not a chunk member `LIST[].MEMBER`, or None."""
    found = chunk_member(name)
    if found is None:
        return None
    list_name, member = found
    if not list_name or not member:
        return "a chunk member is written LIST[].MEMBER (both parts non-empty)"
    if "[]" in list_name or "[]" in member:
        return "one level of chunk lists is supported: LIST[].MEMBER"
    return None


def mapping_path(name: str) -> str:
    """The index mapping's path of a target: `LIST.MEMBER` for a chunk member, else the name."""
    found = chunk_member(name)
    return name if found is None else f"{found[0]}.{found[1]}"


def has_chunks(fields: Mapping[str, Any]) -> bool:
    """True when some field of a document is a chunk member (to zip before encoding)."""
    return any(MARK in name for name in fields)


def _as_list(name: str, value: Any) -> list[Any]:
    decoded = orjson.loads(value) if value.__class__ is bytes else value
    if not isinstance(decoded, list):
        raise ChunkError(
            f"chunk field {name!r} is {type(decoded).__name__}, not a list (one value per chunk)"
        )
    return decoded


def zip_chunks(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with every list's members replaced by the list of chunk objects (as JSON bytes,
    where its first member was); ChunkError when a list's members differ in length."""
    members: dict[str, list[tuple[str, str, list[Any]]]] = {}
    lists: set[str] = set()
    zipped: dict[str, Any] = {}
    for name, value in fields.items():
        found = chunk_member(name)
        if found is None:
            zipped[name] = value
            continue
        list_name, member = found
        lists.add(list_name)
        zipped.setdefault(list_name, None)
        if value is not None:
            members.setdefault(list_name, []).append((name, member, _as_list(name, value)))
    for list_name, columns in members.items():
        lengths = {len(values) for _, _, values in columns}
        if len(lengths) > 1:
            shown = ", ".join(f"{name} has {len(values)}" for name, _, values in columns)
            raise ChunkError(f"chunk list {list_name!r}: its fields differ in length ({shown})")
        rows = zip(*(values for _, _, values in columns), strict=True)
        names = [member for _, member, _ in columns]
        zipped[list_name] = orjson.dumps([dict(zip(names, row, strict=True)) for row in rows])
    return {name: value for name, value in zipped.items() if name in members or name not in lists}


def vector_list_problem(value: Any, dimension: int | None, data_type: str = "float") -> str | None:
    """Why a chunk member's value is not a list of vectors of the mapping's `dimension`, or None."""
    if not isinstance(value, list):
        return f"is not a list of vectors (one per chunk) but {type(value).__name__}"
    for position, vector in enumerate(value):
        problem = vector_problem(vector, dimension, data_type)
        if problem:
            return f"chunk {position}: {problem}"
    return None

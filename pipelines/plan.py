"""Compile a checked request into an `IngestPlan` (the **plan** step, pure).

The plan says, per `source[N]`, which JSONPaths to evaluate on its records, which document
field each lands in, and which path yields the `_id`. It is built once, before the pipeline
runs, so every field-map mistake is reported up front with the field's name.

Semantics, following ML Commons:
- `"$.path"` reads from the only source; `"source[N].$.path"` from source N (the index is
  parsed, so `source[1]` never matches `source[10]`; N is ASCII digits only, at most
  `MAX_SOURCE_DIGITS` of them).
- `_id` is one path or a list with one path per source. When every path it lists is the
  same, sources it does not name use that path too (the seed's 3-file OpenAI request).
- `ingest_fields` copy a value as-is under the path's last segment (`$.id` -> `id`).
- `_id` becomes the document id and is not stored as a field.
- Beyond ML Commons: a target `LIST[].MEMBER` is one member of a chunk list (`transforms.chunks`):
  its parallel paths are zipped into `LIST: [{MEMBER: ...}, ...]` once the sources are joined.

`split_reads` then says what each source's files are read as, once their sizes are known:
large uncompressed files in byte ranges (`connectors.byte_ranges`), any other file whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from connectors.byte_ranges import FileRange, can_split, split_file
from pipelines.request import IngestRequest, RequestError
from transforms.chunks import chunk_member, chunk_name_problem, mapping_path
from transforms.echo import echo, label
from transforms.jsonpath import CompiledPath, JsonPathError, compile_path, field_name_of
from transforms.types import FieldSpec, IngestPlan, JoinPolicy, SourcePlan
from transforms.vectors import key_needle

if TYPE_CHECKING:
    from connectors.opensearch.mapping import KnnField

METADATA_FIELDS = frozenset(
    {
        "_id",
        "_index",
        "_source",
        "_routing",
        "_version",
        "_seq_no",
        "_primary_term",
        "_field_names",
        "_ignored",
    }
)
_SOURCE_PREFIX = re.compile(r"^source\[([0-9]+)\]\.(.*)$", re.DOTALL)
MAX_SOURCE_DIGITS = 6
MAX_ID_PATHS = 1000


def _split_source(value: Any, where: str, source_count: int) -> tuple[int | None, str]:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{where}: must be a JSONPath string ('$.path' or 'source[N].$.path')")
    match = _SOURCE_PREFIX.match(value)
    if match is None:
        if value.startswith("source"):
            raise RequestError(f"{where}: {echo(value)} is not of the form 'source[N].$.path'")
        return None, value
    digits = match[1]
    index = int(digits) if len(digits) <= MAX_SOURCE_DIGITS else None
    if index is None or index >= source_count:
        shown = digits[:MAX_SOURCE_DIGITS] + "…" if index is None else str(index)
        noun = "entry" if source_count == 1 else "entries"
        raise RequestError(
            f"{where}: source[{shown}] is out of range: data_source.source has {source_count} {noun}"
        )
    return index, match[2]


def _compile(expression: str, where: str) -> CompiledPath:
    try:
        return compile_path(expression)
    except JsonPathError as error:
        raise RequestError(f"{where}: {error}") from None


def _resolve_source(index: int | None, where: str, source_count: int) -> int:
    if index is not None:
        return index
    if source_count > 1:
        raise RequestError(f"{where}: with {source_count} sources, name the source: 'source[N].$.path'")
    return 0


def _id_paths(value: Any, source_count: int) -> dict[int, CompiledPath]:
    """The `_id` path of each source, or {} when the request has none."""
    if value is None:
        return {}
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise RequestError("field_map._id: is an empty list")
    if len(entries) > MAX_ID_PATHS:
        raise RequestError(f"field_map._id: has {len(entries)} paths; at most {MAX_ID_PATHS} are supported")
    named: dict[int, CompiledPath] = {}
    shared: CompiledPath | None = None
    for position, entry in enumerate(entries):
        where = "field_map._id" + (f"[{position}]" if isinstance(value, list) else "")
        index, expression = _split_source(entry, where, source_count)
        path = _compile(expression, where)
        if index is None:
            if shared is not None and shared != path:
                raise RequestError(
                    f"{where}: a second unprefixed _id path; use 'source[N].$.path' per source"
                )
            shared = path
            continue
        if index in named and named[index] != path:
            raise RequestError(
                f"{where}: source[{index}] already has _id path {echo(named[index].expression)}"
            )
        named[index] = path
    distinct = set(named.values()) | ({shared} if shared else set())
    if len(distinct) == 1:
        only = distinct.pop()
        return {index: only for index in range(source_count)}
    if shared is not None:
        raise RequestError("field_map._id: mixes an unprefixed path with different per-source paths")
    return named


NO_CHUNK_LISTS = (
    "a LIST[].MEMBER target is a chunk list only with --chunk-lists (mlbatch's extension; ML Commons "
    "would write a field literally named LIST[])"
)


def _check_chunk_lists(produced_by: dict[str, str]) -> None:
    """Refuse a plain field named as a chunk list (`chunks` beside `chunks[].text`)."""
    for name in produced_by:
        found = chunk_member(name)
        if found is not None and found[0] in produced_by:
            raise RequestError(
                f"{produced_by[found[0]]}: field {echo(found[0])} is also the chunk list of "
                f"{produced_by[name]}"
            )


def compile_plan(request: IngestRequest, join: JoinPolicy = "outer", chunk_lists: bool = False) -> IngestPlan:
    """Compile `request` into an IngestPlan; raise RequestError naming the field on any mistake.
    `LIST[].MEMBER` targets are chunk lists only with `chunk_lists` (`--chunk-lists`): without it
    such a target is refused, since ML Commons would write a field literally named `LIST[]`."""
    source_count = len(request.sources)
    id_paths = _id_paths(request.field_map.get("_id"), source_count)
    if source_count > 1:
        for index in range(source_count):
            if index not in id_paths:
                raise RequestError(
                    f"field_map._id: source[{index}] has no _id path; with {source_count} sources every "
                    "source needs one to join its records (one path for all, or one per source)"
                )

    fields_by_source: dict[int, list[FieldSpec]] = {index: [] for index in range(source_count)}
    produced_by: dict[str, str] = {}

    def add(name: str, raw: Any, where: str) -> None:
        if name in METADATA_FIELDS:
            raise RequestError(
                f"{where}: {echo(name)} is an OpenSearch metadata field and cannot be stored in a document"
            )
        if name in produced_by:
            raise RequestError(f"{where}: field {echo(name)} is already produced by {produced_by[name]}")
        index, expression = _split_source(raw, where, source_count)
        path = _compile(expression, where)
        last = path.steps[-1] if path.steps else None
        needle = key_needle(last) if isinstance(last, str) else None
        fields_by_source[_resolve_source(index, where, source_count)].append(
            FieldSpec(name, path, needle=needle)
        )
        produced_by[name] = where

    for name, raw in request.field_map.items():
        if name == "_id":
            continue
        if not name.strip():
            raise RequestError("field_map: field names must be non-empty")
        problem = chunk_name_problem(name)
        if problem:
            raise RequestError(f"field_map.{label(name)}: {problem}")
        if not chunk_lists and chunk_member(name) is not None:
            raise RequestError(f"field_map.{label(name)}: {NO_CHUNK_LISTS}")
        add(name, raw, f"field_map.{label(name)}")
    for position, raw in enumerate(request.ingest_fields):
        _, expression = _split_source(raw, f"ingest_fields[{position}]", source_count)
        add(field_name_of(expression), raw, f"ingest_fields[{position}]")
    _check_chunk_lists(produced_by)

    sources = tuple(
        SourcePlan(index, uri, id_paths.get(index), tuple(fields_by_source[index]))
        for index, uri in enumerate(request.sources)
    )
    return IngestPlan(request.index_name, request.source_type, sources, tuple(produced_by), join)


def with_vector_checks(plan: IngestPlan, knn_fields: dict[str, KnnField]) -> IngestPlan:
    """`plan` with the index mapping's `knn_vector` fields marked, so their values are checked
    (a list of finite numbers of the mapping's dimension) when each record is projected; a chunk
    member `LIST[].MEMBER` is found as the nested `LIST.MEMBER` (each of its vectors checked)."""

    def marked(spec: FieldSpec) -> FieldSpec:
        mapped = knn_fields.get(mapping_path(spec.name))
        if mapped is None:
            return spec
        return replace(spec, knn_vector=True, dimension=mapped.dimension, data_type=mapped.data_type)

    sources = tuple(
        replace(source, fields=tuple(marked(spec) for spec in source.fields)) for source in plan.sources
    )
    return replace(plan, sources=sources)


def split_reads(
    plan: IngestPlan,
    files: Sequence[Sequence[tuple[str, int]]],
    split_bytes: int,
    whole: Mapping[int, str] | None = None,
) -> tuple[tuple[tuple[FileRange, ...], ...], list[str]]:
    """What each source's `(uri, size)` files are read as, and why a file that could be split is not.

    Files of over `split_bytes` that can be split (`connectors.byte_ranges.can_split`) are read
    in byte ranges, except those of a source that derives its ids from each record's line (a
    range does not know its lines) and of the sources `whole` gives a reason for."""
    reads: list[tuple[FileRange, ...]] = []
    notes: list[str] = []
    for source, source_files in zip(plan.sources, files, strict=True):
        kept_whole = (whole or {}).get(source.index)
        if kept_whole is None and source.id_path is None and not source.cluster_ids:
            kept_whole = "its document ids are derived from each record's file and line"
        parts: list[FileRange] = []
        for uri, size in source_files:
            split = split_file(uri, size, split_bytes if can_split(uri, plan.source_type) else 0)
            if len(split) > 1 and kept_whole is not None:
                notes.append(f"source[{source.index}]: {uri} is read whole, not in byte ranges: {kept_whole}")
                split = [FileRange(uri)]
            parts += split
        reads.append(tuple(parts))
    return tuple(reads), notes

"""Merge the records of one `_id` from several sources into one document (the **join** step, pure).

ML Commons joins sources inside the cluster with one partial upsert per source; we merge
before writing so each document is written once. Policy:
- `outer` (default): every key with at least one record becomes a document with the fields
  it has; keys missing from some source are counted as incomplete.
- `inner`: only keys present in every source become documents; the others are counted.
Several records with the same key in one source: the first by (file, line) wins, the
others are returned as duplicates so the caller can dead-letter them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from transforms.types import Document, JoinPolicy, Locator, Projected


class MergeOutcome(NamedTuple):
    """What became of one key: its document (or None) and what was set aside."""

    document: Document | None
    missing_sources: tuple[int, ...] = ()
    duplicates: tuple[Projected, ...] = ()


def _by_locator(record: Projected) -> Locator:
    return record.locator


def merge_key(
    doc_id: str,
    grouped: Mapping[int, Sequence[Projected]],
    source_count: int,
    field_order: tuple[str, ...],
    join: JoinPolicy = "outer",
) -> MergeOutcome:
    """Merge the projected records of `doc_id`, grouped by source index (called once per key)."""
    chosen: list[Projected] = []
    duplicates: tuple[Projected, ...] = ()
    for source in sorted(grouped):
        records = grouped[source]
        if len(records) > 1:
            records = sorted(records, key=_by_locator)
            duplicates += tuple(records[1:])
        if records:
            chosen.append(records[0])
    missing: tuple[int, ...] = ()
    if len(chosen) < source_count:
        present = {record.locator.source for record in chosen}
        missing = tuple(source for source in range(source_count) if source not in present)
    if not chosen or (join == "inner" and missing):
        return MergeOutcome(None, missing, duplicates)
    values = chosen[0].fields
    if len(chosen) > 1:
        values = {}
        for record in chosen:
            values.update(record.fields)
    fields = {name: values[name] for name in field_order if name in values}
    origins = tuple(record.locator for record in chosen)
    return MergeOutcome(Document(doc_id, fields, origins), missing, duplicates)

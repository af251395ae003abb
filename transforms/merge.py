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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transforms.types import Document, JoinPolicy, Projected


@dataclass(frozen=True)
class MergeOutcome:
    """What became of one key: its document (or None) and what was set aside."""

    document: Document | None
    missing_sources: tuple[int, ...] = ()
    duplicates: tuple[Projected, ...] = field(default=())


def merge_key(
    doc_id: str,
    grouped: Mapping[int, Iterable[Projected]],
    source_count: int,
    field_order: tuple[str, ...],
    join: JoinPolicy = "outer",
) -> MergeOutcome:
    """Merge the projected records of `doc_id`, grouped by source index."""
    chosen: dict[int, Projected] = {}
    duplicates: list[Projected] = []
    for source, records in grouped.items():
        ordered = sorted(records, key=lambda record: record.locator)
        if ordered:
            chosen[source] = ordered[0]
            duplicates.extend(ordered[1:])
    missing = tuple(source for source in range(source_count) if source not in chosen)
    if not chosen or (join == "inner" and missing):
        return MergeOutcome(None, missing, tuple(duplicates))
    values: dict[str, Any] = {}
    for source in sorted(chosen):
        values.update(chosen[source].fields)
    fields = {name: values[name] for name in field_order if name in values}
    origins = tuple(chosen[source].locator for source in sorted(chosen))
    return MergeOutcome(Document(doc_id, fields, origins), missing, tuple(duplicates))

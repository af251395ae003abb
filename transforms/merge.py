"""Merge the records of one `_id` from several sources into one document (the **join** step, pure).

ML Commons joins sources inside the cluster with one partial upsert per source; we merge
before writing so each document is written once. Policy:
- `outer` (default): every key with at least one record becomes a document with the fields
  it has; keys missing from some source are counted as incomplete.
- `inner`: only keys present in every source become documents; the others are counted.
Several records with the same key in one source: the first by (file, position) wins, the
others are returned as duplicates so the caller can dead-letter them.

`merge_key` decides one key; `join_key` adds its dead letters and its counts to a `JoinTally`.
Both join strategies meet here: the shuffle join's core, `join_batches`, joins every record
of one `_id` bucket; the broadcast join's core is `transforms.stream_join.stream_join`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from connectors.byte_ranges import FileRange
from transforms import counters
from transforms.types import DeadLetter, Document, IngestPlan, JoinPolicy, Locator, Projected, ProjectedRecord

Grouped = dict[int, list[Projected]]
RecordBatch = tuple[int, FileRange, list[ProjectedRecord]]  # (source, file or range, records)


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


@dataclass
class JoinTally:
    """The join step's counts since the last `take_counts`: keys merged, keys missing from some
    source, keys an inner join dropped (and their records by source), duplicates set aside, and
    records merged into documents."""

    keys: int = 0
    incomplete: int = 0
    join_dropped: int = 0
    duplicates: int = 0
    merged_records: int = 0
    dropped_by_source: Counter[int] = field(default_factory=Counter)

    def take_counts(self) -> dict[str, int]:
        """The counts by counter name (those not zero), and start counting anew."""
        counts = {
            name: count
            for name, count in (
                (counters.KEYS, self.keys),
                (counters.INCOMPLETE, self.incomplete),
                (counters.JOIN_DROPPED, self.join_dropped),
                (counters.DUPLICATES, self.duplicates),
                (counters.MERGED_RECORDS, self.merged_records),
            )
            if count
        }
        for source, count in self.dropped_by_source.items():
            counts[counters.accounted_by_source(source)] = count
        self.keys = self.incomplete = self.join_dropped = self.duplicates = self.merged_records = 0
        self.dropped_by_source = Counter()
        return counts


def duplicate_dead_letter(doc_id: str, duplicate: Projected, kept: Locator) -> DeadLetter:
    return DeadLetter(
        "map",
        f"duplicate _id {doc_id!r} in source[{duplicate.locator.source}]; the record at {kept} was kept",
        (duplicate.locator,),
        duplicate.fields,
    )


def join_key(
    doc_id: str, grouped: Grouped, plan: IngestPlan, tally: JoinTally
) -> Iterator[Document | DeadLetter]:
    """The key's document (if the join keeps it) and dead letters for its duplicates, counted in `tally`."""
    document, missing, duplicates = merge_key(doc_id, grouped, len(plan.sources), plan.field_order, plan.join)
    tally.keys += 1
    if missing:
        tally.incomplete += 1
    for duplicate in duplicates:
        tally.duplicates += 1
        kept = min(record.locator for record in grouped[duplicate.locator.source])
        yield duplicate_dead_letter(doc_id, duplicate, kept)
    if document is None:
        tally.join_dropped += 1
        for source, records in grouped.items():
            if records:
                tally.dropped_by_source[source] += 1
        return
    tally.merged_records += len(document.origins)
    yield document


def index_by_id(batches: Iterable[RecordBatch]) -> dict[str, Grouped]:
    """`{doc_id: {source: [Projected, ...]}}` from `(source, part, [(doc_id, position, fields)])` batches."""
    by_id: dict[str, Grouped] = {}
    for source, part, records in batches:
        uri, by_offset = part.uri, part.by_offset
        for doc_id, position, fields in records:
            projected = Projected(Locator(source, uri, position, by_offset), fields)
            by_id.setdefault(doc_id, {}).setdefault(source, []).append(projected)
    return by_id


def join_batches(
    batches: Iterable[RecordBatch], plan: IngestPlan, tally: JoinTally
) -> Iterator[Document | DeadLetter]:
    """The shuffle join's core: the record batches of one `_id` bucket, from every source, joined by `_id`."""
    for doc_id, grouped in index_by_id(batches).items():
        yield from join_key(doc_id, grouped, plan, tally)

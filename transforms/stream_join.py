"""The broadcast join's streamed side meeting the small sources (the **join** step, pure).

The large source streams in order (`source[N]`'s projected records, as `transforms.read.SourceReader`
yields them) against the other sources' records held in memory by `_id`
(`transforms.merge.index_by_id`). Each streamed key is merged with what the small sources
have for it as soon as it is read (`transforms.merge.join_key`). Records the read step rejected
pass through as they come.

- `stream_join`, a whole file: a key met again in the file is a duplicate, dead-lettered with the
  line that was kept (the first); keys only the small sources have are merged after the file's
  last record. Gives the same documents, dead letters and counts as the shuffle join
  (`transforms.merge.join_batches`) on the same records.
- `stream_range`, one unit of a streamed source of several units (the byte ranges of a split
  file, and the files of a source of several files, each whole or in ranges): it cannot know
  what other units hold, so it merges the first record of each key in the unit (without
  counting, nor dead-lettering the small sources' duplicates) and says what it met as `Claim`s:
  the first record of each key by its file (its index in the source's sorted file list) and
  position (byte offset, or line in a whole file), and every later one with its fields (a
  duplicate whichever unit holds the first). `transforms.range_settle` settles the claims of
  every unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from connectors.byte_ranges import FileRange
from transforms.merge import Grouped, JoinTally, duplicate_dead_letter, join_key, merge_key
from transforms.types import DeadLetter, Document, IngestPlan, Locator, Projected, ProjectedRecord


class Claim(NamedTuple):
    """A streamed record a unit met, at `position` in the streamed source's file number `file`:
    the first of its key in the unit (`fields` None: the unit merged it) or a later one (with its
    fields: never merged)."""

    doc_id: str
    file: int
    position: int
    fields: dict[str, Any] | None


def stream_join(
    records: Iterable[ProjectedRecord | DeadLetter],
    streamed: int,
    part: FileRange,
    side: dict[str, Grouped],
    plan: IngestPlan,
    tally: JoinTally,
) -> Iterator[Document | DeadLetter]:
    """Documents and dead letters of the whole file `part` of `source[streamed]` joined with `side`
    (which it empties as keys are met), counted in `tally`."""
    uri, by_offset = part.uri, part.by_offset
    first_position: dict[str, int] = {}
    for record in records:
        if isinstance(record, DeadLetter):
            yield record
            continue
        doc_id, position, fields = record
        projected = Projected(Locator(streamed, uri, position, by_offset), fields)
        if doc_id in first_position:
            tally.duplicates += 1
            kept = Locator(streamed, uri, first_position[doc_id], by_offset)
            yield duplicate_dead_letter(doc_id, projected, kept)
            continue
        first_position[doc_id] = position
        grouped = side.pop(doc_id, {})
        grouped[streamed] = [projected]
        yield from join_key(doc_id, grouped, plan, tally)
    for doc_id, grouped in side.items():
        yield from join_key(doc_id, grouped, plan, tally)


def stream_range(
    records: Iterable[ProjectedRecord | DeadLetter],
    streamed: int,
    file: int,
    part: FileRange,
    side: Mapping[str, Grouped],
    plan: IngestPlan,
) -> Iterator[Document | DeadLetter | Claim]:
    """The documents of the keys first met in the unit `part` (a byte range or a whole file, the
    streamed source's file number `file`) merged with `side`, which it leaves as it is, the read
    step's dead letters, and a `Claim` for every streamed record."""
    uri, by_offset = part.uri, part.by_offset
    first_position: dict[str, int] = {}
    for record in records:
        if isinstance(record, DeadLetter):
            yield record
            continue
        doc_id, position, fields = record
        if doc_id in first_position:
            yield Claim(doc_id, file, position, fields)
            continue
        first_position[doc_id] = position
        grouped = {
            **side.get(doc_id, {}),
            streamed: [Projected(Locator(streamed, uri, position, by_offset), fields)],
        }
        document = merge_key(doc_id, grouped, len(plan.sources), plan.field_order, plan.join).document
        if document is not None:
            yield document
        yield Claim(doc_id, file, position, None)

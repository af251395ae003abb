"""What a reader runs, in a read helper process or in the pipeline's own (the **read + project**,
and for the hot paths **join + encode**, steps; no Beam).

Each job is a frozen, picklable description whose `frames()` yields its output in order:
- `ProjectJob`: one file or byte range of a source, projected: `(records, Tally)` frames of up
  to `FRAME_RECORDS` records or dead letters (the side of a split join, the shuffle join).
- `DocumentsJob`: a single source's file or range, each record made its `Document` and
  encoded: `Frame`s of `EncodedBlock`s (`transforms.encoded`) and dead letters.
- `BroadcastJob`: the whole broadcast join of one streamed file: the small sources' files read
  and held in memory by `_id` (`transforms.merge.index_by_id`), the streamed file joined
  against them as it is read (`transforms.stream_join.stream_join`), every document encoded:
  `Frame`s as above. Run in a helper process that starts before Beam loads, it has most of the
  join done, ready to send, by the time the pipeline runs.
A `Frame` carries the job's counts since the previous frame, by counter name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms.bulk_body import BulkAction
from transforms.encoded import EncodedBlock, encoded_blocks
from transforms.merge import JoinTally, RecordBatch, index_by_id
from transforms.record_stream import Tally, projected_records
from transforms.stream_join import stream_join
from transforms.types import DeadLetter, Document, IngestPlan, Locator, ProjectedRecord, SourcePlan

FRAME_RECORDS = 1000
Frame = tuple[list[Any], dict[str, int]]  # (EncodedBlocks and DeadLetters, counts by counter name)


@dataclass(frozen=True)
class ProjectJob:
    """The projected records of one file or byte range of `source`."""

    source: SourcePlan
    part: FileRange
    access: SourceAccess = field(compare=False)

    def frames(self) -> Iterator[tuple[list[ProjectedRecord | DeadLetter], Tally]]:
        tally = Tally()
        batch: list[ProjectedRecord | DeadLetter] = []
        for record in projected_records(self.source, self.access, self.part, tally):
            batch.append(record)
            if len(batch) >= FRAME_RECORDS:
                yield batch, tally.take()
                batch = []
        yield batch, tally.take()


@dataclass(frozen=True)
class DocumentsJob:
    """The documents of one file or byte range of a request's single source, encoded for `action`."""

    source: SourcePlan
    part: FileRange
    action: BulkAction
    access: SourceAccess = field(compare=False)

    def frames(self) -> Iterator[Frame]:
        tally = Tally()
        index, uri, by_offset = self.source.index, self.part.uri, self.part.by_offset
        documents = (
            record
            if isinstance(record, DeadLetter)
            else Document(record[0], record[2], (Locator(index, uri, record[1], by_offset),))
            for record in projected_records(self.source, self.access, self.part, tally)
        )
        return framed(encoded_blocks(documents, self.action), lambda: tally.take().counts(index))


@dataclass(frozen=True)
class BroadcastJob:
    """The broadcast join of the whole file `part` of `source[streamed]` with the other sources'
    files (`side`: `(source index, its files)`), encoded for `action`."""

    plan: IngestPlan
    streamed: int
    part: FileRange
    side: tuple[tuple[int, tuple[FileRange, ...]], ...]
    action: BulkAction
    access: SourceAccess = field(compare=False)

    def frames(self) -> Iterator[Frame]:
        side_counts: Counter[str] = Counter()  # `update` adds, and keeps zero counts (see CounterSet)
        side_items: list[Any] = []
        batches = [
            self._side_batch(source, part, side_counts, side_items)
            for source, parts in self.side
            for part in parts
        ]
        side = index_by_id(batches)
        del batches
        read_tally, join_tally = Tally(), JoinTally()
        records = projected_records(self.plan.sources[self.streamed], self.access, self.part, read_tally)
        joined = stream_join(records, self.streamed, self.part, side, self.plan, join_tally)

        def counts() -> dict[str, int]:
            taken = Counter(read_tally.take().counts(self.streamed))
            taken.update(join_tally.take_counts())
            taken.update(side_counts)
            side_counts.clear()
            return taken

        yield from framed(_chained(side_items, encoded_blocks(joined, self.action)), counts)

    def _side_batch(self, source: int, part: FileRange, counts: Counter[str], dead: list[Any]) -> RecordBatch:
        tally = Tally()
        records: list[ProjectedRecord] = []
        for record in projected_records(self.plan.sources[source], self.access, part, tally):
            if isinstance(record, DeadLetter):
                dead.append(record)
            else:
                records.append(record)
        counts.update(tally.counts(source))
        return source, part, records


def broadcast_job(
    plan: IngestPlan,
    reads_by_source: Sequence[Sequence[FileRange]],
    streamed: int,
    access: SourceAccess,
    action: BulkAction,
) -> BroadcastJob:
    """The `BroadcastJob` of a request whose `source[streamed]` is one whole file."""
    (part,) = reads_by_source[streamed]
    side = tuple((index, tuple(parts)) for index, parts in enumerate(reads_by_source) if index != streamed)
    return BroadcastJob(plan, streamed, part, side, action, access)


def _chained(first: list[Any], rest: Iterable[Any]) -> Iterator[Any]:
    yield from first
    first.clear()
    yield from rest


def framed(items: Iterable[Any], counts: Callable[[], dict[str, int]]) -> Iterator[Frame]:
    """`items` cut into frames, one after each `EncodedBlock` (or `FRAME_RECORDS` other items),
    each with `counts()` taken after its last item; when `items` fails, the frame so far comes
    before the error."""
    frame: list[Any] = []
    try:
        for item in items:
            frame.append(item)
            if type(item) is EncodedBlock or len(frame) >= FRAME_RECORDS:
                yield frame, counts()
                frame = []
    except Exception:  # a file failed midway: what was read and rejected so far still counts
        yield frame, counts()
        raise
    yield frame, counts()

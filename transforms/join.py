"""Join the projected records of several sources by `_id` (the **join** step, on Beam).

Two strategies around pure cores that give the same documents and counts on the same records:
- `JoinSources`, the shuffle join: CoGroupByKey groups the record batches of every
  `source[N]` by `_id` bucket (`transforms.buckets`) and each bucket's records are joined
  by `_id` in memory (`transforms.merge.join_batches`). Beside it, the distinct buckets are
  counted through their own (tiny) shuffle, so a runner that splits one bucket's records over
  two groups is caught at the end of the run. Scales to any input size on a runner that spills
  its shuffle to disk.
- `BroadcastJoin`, for one large single-file source (the embeddings) and small others (the
  inputs): the small sources are a side input indexed by `_id` in memory, and the large
  file streams through read -> project -> merge without a shuffle
  (`transforms.stream_join.stream_join`). Keys found only in the small sources are merged
  after the file's last record. A large source of several files, or a file split into byte
  ranges, is joined file by file and range by range on any worker instead
  (`transforms.split_join.SplitBroadcastJoin`).
Incomplete keys (missing from some source) and keys dropped by an inner join are counted
(`transforms.merge.JoinTally`); duplicates within one source go to the dead-letter queue with
the locator of the record that was kept (the first by file and position).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms import counters
from transforms.counters import CounterSet
from transforms.merge import JoinTally, index_by_id, join_batches
from transforms.read import SourceReader
from transforms.stream_join import stream_join
from transforms.types import DEAD_LETTERS, Document, IngestPlan, SourcePlan

_FLUSH_EVERY = 1000  # keys: a counter update per key costs more than the merge


class _MergeFn(beam.DoFn):
    def __init__(self, plan: IngestPlan) -> None:
        self._plan = plan
        self._counters = CounterSet()
        self._groups = counters.counter(counters.BUCKET_GROUPS)

    def process(self, element: tuple[int, dict[int, Any]]) -> Iterator[Any]:
        _, batches_by_source = element
        self._groups.inc()
        tally = JoinTally()
        batches = (batch for source_batches in batches_by_source.values() for batch in source_batches)
        try:
            for joined in join_batches(batches, self._plan, tally):
                yield joined if type(joined) is Document else TaggedOutput(DEAD_LETTERS, joined)
        finally:
            self._counters.add(tally.take_counts())


class _CountFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._counter = counters.counter(name)

    def process(self, count: int) -> None:
        self._counter.inc(count)


class CountDistinctBuckets(beam.PTransform):
    """Bucket numbers seen by the readers -> the `distinct_buckets` counter (a tiny shuffle of its own)."""

    def expand(self, buckets: beam.PCollection) -> beam.PCollection:
        return (
            buckets
            | "DistinctBuckets" >> beam.Distinct()
            | "CountBuckets" >> beam.combiners.Count.Globally()
            | "DistinctBucketsCounter" >> beam.ParDo(_CountFn(counters.DISTINCT_BUCKETS))
        )


class JoinSources(beam.PTransform):
    """{source index: bucketed record batches} -> merged Documents + dead letters."""

    def __init__(self, plan: IngestPlan) -> None:
        super().__init__()
        self._plan = plan

    def expand(self, keyed_by_source: dict[int, beam.PCollection]) -> beam.pvalue.DoOutputsTuple:
        return (
            keyed_by_source
            | "GroupById" >> beam.CoGroupByKey()
            | "Merge" >> beam.ParDo(_MergeFn(self._plan)).with_outputs(DEAD_LETTERS, main="documents")
        )


class _StreamJoinFn(beam.DoFn):
    def __init__(self, plan: IngestPlan, streamed: SourcePlan, access: SourceAccess, helper: bool) -> None:
        self._plan = plan
        self._reader = SourceReader(streamed, access, helper)
        self._counters = CounterSet()

    def process(self, part: FileRange, side_batches: Iterable[tuple[int, FileRange, bytes]]) -> Iterator[Any]:
        records = self._reader.records(part)  # a helper process starts parsing while the side is indexed
        side = index_by_id((source, read, pickle.loads(batch)) for source, read, batch in side_batches)
        tally = JoinTally()
        try:
            for joined in stream_join(records, self._reader.source.index, part, side, self._plan, tally):
                yield joined if type(joined) is Document else TaggedOutput(DEAD_LETTERS, joined)
                if tally.keys >= _FLUSH_EVERY:
                    self._counters.add(tally.take_counts())
        finally:
            self._counters.add(tally.take_counts())


class BroadcastJoin(beam.PTransform):
    """The streamed source's one file + the other sources' record batches -> merged Documents + dead letters.

    The file is a single element, so one worker reads it in order: its own duplicates are
    found as they come, and it alone knows which keys of the small sources it never saw.
    """

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        whole: FileRange,
        access: SourceAccess,
        helper: bool = False,
    ) -> None:
        super().__init__()
        self._whole = whole
        self._join_fn = _StreamJoinFn(plan, streamed, access, helper)

    def expand(self, side_batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            side_batches.pipeline
            | "StreamedFile" >> beam.Create([self._whole])
            | "ReadProjectMerge"
            >> beam.ParDo(self._join_fn, beam.pvalue.AsIter(side_batches)).with_outputs(
                DEAD_LETTERS, main="documents"
            )
        )

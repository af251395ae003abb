"""Join the projected records of several sources by `_id` (the **join** step, on Beam).

Two strategies around pure cores that give the same documents and counts on the same records:
- `JoinSources`, the shuffle join: CoGroupByKey groups the record batches of every
  `source[N]` by `_id` bucket (`transforms.buckets`) and each bucket's records are joined
  by `_id` in memory (`transforms.merge.join_batches`). Beside it, the distinct buckets are
  counted through their own (tiny) shuffle, so a runner that splits one bucket's records over
  two groups is caught at the end of the run. Scales to any input size on a runner that spills
  its shuffle to disk.
- `BroadcastJoin`, for one large single-file source (the embeddings) and small others (the
  inputs): one step reads the small sources into memory by `_id` and streams the large file
  through read -> project -> merge -> encode without a shuffle, handing the write step
  blocks of encoded documents (`transforms.read_jobs.BroadcastJob`, in the read helper when
  there is one). Keys found only in the small sources are merged after the file's last record.
  A large source of several files, or a file split into byte
  ranges, is joined file by file and range by range on any worker instead
  (`transforms.split_join.SplitBroadcastJoin`).
Incomplete keys (missing from some source) and keys dropped by an inner join are counted
(`transforms.merge.JoinTally`); duplicates within one source go to the dead-letter queue with
the locator of the record that was kept (the first by file and position).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from transforms import counters
from transforms.block_coder import EncodedBlock
from transforms.bulk_body import BulkAction
from transforms.counters import CounterSet
from transforms.encoded import encoded_blocks
from transforms.merge import JoinTally, join_batches
from transforms.read import emitted
from transforms.read_helper import run_job
from transforms.read_jobs import BroadcastJob
from transforms.types import DEAD_LETTERS, IngestPlan


class _MergeFn(beam.DoFn):
    def __init__(self, plan: IngestPlan, action: BulkAction) -> None:
        self._plan = plan
        self._action = action
        self._counters = CounterSet()
        self._groups = counters.counter(counters.BUCKET_GROUPS)

    def process(self, element: tuple[int, dict[int, Any]]) -> Iterator[Any]:
        _, batches_by_source = element
        self._groups.inc()
        tally = JoinTally()
        batches = (batch for source_batches in batches_by_source.values() for batch in source_batches)
        try:
            for joined in encoded_blocks(join_batches(batches, self._plan, tally), self._action):
                yield joined if type(joined) is EncodedBlock else TaggedOutput(DEAD_LETTERS, joined)
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
    """{source index: bucketed record batches} -> merged documents, encoded for `action` in
    blocks, + dead letters."""

    def __init__(self, plan: IngestPlan, action: BulkAction = "index") -> None:
        super().__init__()
        self._plan = plan
        self._action = action

    def expand(self, keyed_by_source: dict[int, beam.PCollection]) -> beam.pvalue.DoOutputsTuple:
        return (
            keyed_by_source
            | "GroupById" >> beam.CoGroupByKey()
            | "Merge"
            >> beam.ParDo(_MergeFn(self._plan, self._action))
            .with_output_types(EncodedBlock)
            .with_outputs(DEAD_LETTERS, main="documents")
        )


class _BroadcastJoinFn(beam.DoFn):
    def __init__(self, job: BroadcastJob, helper: bool) -> None:
        self._job = job
        self._helper = helper
        self._counters = CounterSet()

    def process(self, part: FileRange) -> Iterator[Any]:
        side_parts = tuple(side for _, parts in self._job.side for side in parts)
        return emitted(run_job(self._job, self._helper), self._counters, (part, *side_parts))


class BroadcastJoin(beam.PTransform):
    """The streamed source's one file, joined with the other sources' files -> blocks of encoded
    documents + dead letters.

    The file is a single element, so one worker reads it in order: its own duplicates are
    found as they come, and it alone knows which keys of the small sources it never saw.
    """

    def __init__(self, job: BroadcastJob, helper: bool = False) -> None:
        super().__init__()
        self._job = job
        self._join_fn = _BroadcastJoinFn(job, helper)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            begin
            | "StreamedFile" >> beam.Create([self._job.part])
            | "ReadProjectMergeEncode"
            >> beam.ParDo(self._join_fn)
            .with_output_types(EncodedBlock)
            .with_outputs(DEAD_LETTERS, main="documents")
        )

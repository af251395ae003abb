"""Join the projected records of several sources by `_id` (the **join** step).

Two strategies, one merge (`KeyMerger`, around the pure `transforms.merge.merge_key`):
- `JoinSources`, the shuffle join: CoGroupByKey groups the record batches of every
  `source[N]` by `_id` bucket (`transforms.buckets`) and each bucket's records are joined
  by `_id` in memory. Beside it, the distinct buckets are counted through their own (tiny)
  shuffle, so a runner that splits one bucket's records over two groups is caught at the
  end of the run. Scales to any input size on a runner that spills its shuffle to disk.
- `BroadcastJoin`, for one large single-file source (the embeddings) and small others (the
  inputs): the small sources are a side input indexed by `_id` in memory, and the large
  file streams through read -> project -> merge without a shuffle. Keys found only in the
  small sources are merged after the file's last record.
Incomplete keys (missing from some source) and keys dropped by an inner join are counted;
duplicates within one source go to the dead-letter queue with the locator of the record
that was kept (the first by file and line).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from connectors.sources import SourceAccess
from transforms.merge import merge_key
from transforms.read import SourceReader
from transforms.types import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    DeadLetter,
    IngestPlan,
    Locator,
    Projected,
    SourcePlan,
    accounted_counter,
)

Grouped = dict[int, list[Projected]]
_FLUSH_EVERY = 1000


def duplicate_dead_letter(doc_id: str, duplicate: Projected, kept: Locator) -> DeadLetter:
    return DeadLetter(
        "map",
        f"duplicate _id {doc_id!r} in source[{duplicate.locator.source}]; the record at {kept} was kept",
        (duplicate.locator,),
        duplicate.fields,
    )


class KeyMerger:
    """Merges the records of one key and tallies the outcome (picklable, for DoFns).

    Tallies go to the Beam counters in `flush`: a counter update per key costs more than the merge.
    """

    _TALLIES = ("keys", "incomplete", "join_dropped", "duplicates", "merged_records")

    def __init__(self, plan: IngestPlan) -> None:
        self._plan = plan
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in self._TALLIES}
        self._accounted = [accounted_counter(source.index) for source in plan.sources]
        self._tallies = dict.fromkeys(self._TALLIES, 0)
        self._dropped_by_source = [0] * len(plan.sources)

    def merge(self, doc_id: str, grouped: Grouped) -> Iterator[Any]:
        """The key's document (if any) and dead letters for its duplicates."""
        plan = self._plan
        document, missing, duplicates = merge_key(
            doc_id, grouped, len(plan.sources), plan.field_order, plan.join
        )
        tallies = self._tallies
        tallies["keys"] += 1
        if missing:
            tallies["incomplete"] += 1
        for duplicate in duplicates:
            tallies["duplicates"] += 1
            kept = min(record.locator for record in grouped[duplicate.locator.source])
            yield TaggedOutput(DEAD_LETTERS, duplicate_dead_letter(doc_id, duplicate, kept))
        if document is None:
            tallies["join_dropped"] += 1
            for source, records in grouped.items():
                if records:
                    self._dropped_by_source[source] += 1
            return
        tallies["merged_records"] += len(document.origins)
        yield document

    def tally_duplicate(self) -> None:
        """Count a duplicate the caller set aside itself (the streamed file's, as it is read)."""
        self._tallies["duplicates"] += 1

    def flush(self) -> None:
        """Add the tallies so far to the Beam counters."""
        for name, count in self._tallies.items():
            if count:
                self._counters[name].inc(count)
                self._tallies[name] = 0
        for source, count in enumerate(self._dropped_by_source):
            if count:
                self._accounted[source].inc(count)
                self._dropped_by_source[source] = 0


class _MergeFn(beam.DoFn):
    def __init__(self, plan: IngestPlan) -> None:
        self._merger = KeyMerger(plan)
        self._groups = Metrics.counter(METRICS_NAMESPACE, "bucket_groups")

    def process(self, element: tuple[int, dict[int, Any]]) -> Iterator[Any]:
        _, batches_by_source = element
        self._groups.inc()
        try:
            for doc_id, grouped in index_by_id(
                batch for batches in batches_by_source.values() for batch in batches
            ).items():
                yield from self._merger.merge(doc_id, grouped)
        finally:
            self._merger.flush()


def index_by_id(batches: Iterable[tuple[int, str, list[Any]]]) -> dict[str, Grouped]:
    """`{doc_id: {source: [Projected, ...]}}` from `(source, uri, [(doc_id, line, fields), ...])` batches."""
    by_id: dict[str, Grouped] = {}
    for source, uri, records in batches:
        for doc_id, line, fields in records:
            projected = Projected(Locator(source, uri, line), fields)
            by_id.setdefault(doc_id, {}).setdefault(source, []).append(projected)
    return by_id


class _CountFn(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._counter = Metrics.counter(METRICS_NAMESPACE, name)

    def process(self, count: int) -> None:
        self._counter.inc(count)


class CountDistinctBuckets(beam.PTransform):
    """Bucket numbers seen by the readers -> the `distinct_buckets` counter (a tiny shuffle of its own)."""

    def expand(self, buckets: beam.PCollection) -> beam.PCollection:
        return (
            buckets
            | "DistinctBuckets" >> beam.Distinct()
            | "CountBuckets" >> beam.combiners.Count.Globally()
            | "DistinctBucketsCounter" >> beam.ParDo(_CountFn("distinct_buckets"))
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
        self._reader = SourceReader(streamed, access, helper)
        self._merger = KeyMerger(plan)

    def process(self, uri: str, side_batches: Iterable[tuple[int, str, bytes]]) -> Iterator[Any]:
        records = self._reader.records(uri)
        side = index_by_id((source, path, pickle.loads(batch)) for source, path, batch in side_batches)
        streamed = self._reader.source.index
        first_line: dict[str, int] = {}
        try:
            for record in records:
                if isinstance(record, DeadLetter):
                    yield TaggedOutput(DEAD_LETTERS, record)
                    continue
                doc_id, line, fields = record
                projected = Projected(Locator(streamed, uri, line), fields)
                if doc_id in first_line:
                    self._merger.tally_duplicate()
                    kept = Locator(streamed, uri, first_line[doc_id])
                    yield TaggedOutput(DEAD_LETTERS, duplicate_dead_letter(doc_id, projected, kept))
                    continue
                first_line[doc_id] = line
                grouped = side.pop(doc_id, {})
                grouped[streamed] = [projected]
                yield from self._merger.merge(doc_id, grouped)
                if len(first_line) % _FLUSH_EVERY == 0:
                    self._merger.flush()
            for doc_id, grouped in side.items():
                yield from self._merger.merge(doc_id, grouped)
        finally:
            self._merger.flush()


class BroadcastJoin(beam.PTransform):
    """The streamed source's one file + the other sources' record batches -> merged Documents + dead letters.

    The file is a single element, so one worker reads it in order: its own duplicates are
    found as they come, and it alone knows which keys of the small sources it never saw.
    """

    def __init__(
        self, plan: IngestPlan, streamed: SourcePlan, uri: str, access: SourceAccess, helper: bool = False
    ) -> None:
        super().__init__()
        self._plan = plan
        self._streamed = streamed
        self._uri = uri
        self._access = access
        self._helper = helper

    def expand(self, side_batches: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            side_batches.pipeline
            | "StreamedFile" >> beam.Create([self._uri])
            | "ReadProjectMerge"
            >> beam.ParDo(
                _StreamJoinFn(self._plan, self._streamed, self._access, self._helper),
                beam.pvalue.AsIter(side_batches),
            ).with_outputs(DEAD_LETTERS, main="documents")
        )

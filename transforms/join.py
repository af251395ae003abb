"""Join the projected records of several sources by `_id` (the **join** step).

`JoinSources` CoGroupByKey-groups the record batches of every `source[N]` by `_id` bucket
(`transforms.buckets`), joins each bucket's records by `_id` in memory and merges each key
with `transforms.merge.merge_key`. Incomplete keys (missing from some source) and
keys dropped by an inner join are counted; duplicates within one source go to the
dead-letter queue with the locator of the record that was kept. Beside the join, the
distinct buckets are counted through their own (tiny) shuffle, so a runner that splits one
bucket's records over two groups is caught at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from transforms.merge import merge_key
from transforms.types import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    DeadLetter,
    IngestPlan,
    Locator,
    Projected,
    accounted_counter,
)


class _MergeFn(beam.DoFn):
    def __init__(self, plan: IngestPlan) -> None:
        self._plan = plan
        self._keys = Metrics.counter(METRICS_NAMESPACE, "keys")
        self._incomplete = Metrics.counter(METRICS_NAMESPACE, "incomplete")
        self._dropped = Metrics.counter(METRICS_NAMESPACE, "join_dropped")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")
        self._merged = Metrics.counter(METRICS_NAMESPACE, "merged_records")
        self._groups = Metrics.counter(METRICS_NAMESPACE, "bucket_groups")
        self._accounted = [accounted_counter(source.index) for source in plan.sources]

    def process(self, element: tuple[int, dict[int, Any]]) -> Iterator[Any]:
        _, batches_by_source = element
        self._groups.inc()
        by_id: dict[str, dict[int, list[Projected]]] = {}
        for batches in batches_by_source.values():
            for source, uri, records in batches:
                for doc_id, line, fields in records:
                    projected = Projected(Locator(source, uri, line), fields)
                    by_id.setdefault(doc_id, {}).setdefault(source, []).append(projected)
        for doc_id, grouped in by_id.items():
            yield from self._merge(doc_id, grouped)

    def _merge(self, doc_id: str, grouped: dict[int, list[Projected]]) -> Iterator[Any]:
        outcome = merge_key(doc_id, grouped, len(self._plan.sources), self._plan.field_order, self._plan.join)
        self._keys.inc()
        if outcome.missing_sources:
            self._incomplete.inc()
        for duplicate in outcome.duplicates:
            self._duplicates.inc()
            kept = min(record.locator for record in grouped[duplicate.locator.source])
            yield TaggedOutput(
                DEAD_LETTERS,
                DeadLetter(
                    "map",
                    f"duplicate _id {doc_id!r} in source[{duplicate.locator.source}]; "
                    f"the record at {kept} was kept",
                    (duplicate.locator,),
                    duplicate.fields,
                ),
            )
        if outcome.document is None:
            self._dropped.inc()
            for source, records in grouped.items():
                if records:
                    self._accounted[source].inc()
            return
        self._merged.inc(len(outcome.document.origins))
        yield outcome.document


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

"""Read one `source[N]` and project its records right away (the **read + project** steps).

`ReadSource` takes the source's concrete file URIs (expanded at plan time), spreads them
over workers, and for every record parses it, evaluates only that source's paths and drops
the raw record. Output: for a join, batches of records keyed by a hash bucket of their `_id`
(`transforms.buckets`: a few large elements through the shuffle instead of one per record)
and each bucket number on the `buckets` output; or finished `Document`s
when the request has a single source (no shuffle). Records that cannot be used leave as
`DeadLetter`s on the `dead_letters` output, never silently; a file that cannot be read
fails the job with its URI (`SourceError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from connectors.sources import SourceAccess, read_records
from transforms import progress
from transforms.buckets import BUCKETS, BucketBuffer
from transforms.projection import RecordError, parse_record, project
from transforms.types import (
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    Document,
    Locator,
    SourcePlan,
    dead_letter,
)

_COUNT_EVERY = 1000


class _ReadAndProjectFn(beam.DoFn):
    def __init__(self, source: SourcePlan, access: SourceAccess, keyed: bool) -> None:
        self._source = source
        self._access = access
        self._keyed = keyed
        self._read = Metrics.counter(METRICS_NAMESPACE, "read")
        self._read_by_source = Metrics.counter(METRICS_NAMESPACE, f"read.source[{source.index}]")
        self._projected = Metrics.counter(METRICS_NAMESPACE, "projected")

    def process(self, uri: str) -> Iterator[Any]:
        read = projected = 0
        index = self._source.index
        buckets = BucketBuffer()
        try:
            for line, payload in read_records(uri, self._access):
                read += 1
                if read % _COUNT_EVERY == 0:
                    self._count(read, projected)
                    read = projected = 0
                try:
                    doc_id, fields, unmatched = project(self._source, parse_record(payload))
                except RecordError as error:
                    locator = Locator(index, uri, line)
                    yield TaggedOutput(DEAD_LETTERS, dead_letter(error.stage, error.reason, locator, payload))
                    continue
                for name in unmatched:
                    Metrics.counter(METRICS_NAMESPACE, f"unmatched.{name}").inc()
                projected += 1
                if not self._keyed:
                    yield Document(doc_id, fields, (Locator(index, uri, line),))
                    continue
                buckets.add(doc_id, line, fields)
                if buckets.full:
                    yield from self._emit(buckets.take(), uri)
            if self._keyed:
                yield from self._emit(buckets.take(), uri)
        finally:
            self._count(read, projected)

    def _emit(self, batches: dict[int, list[Any]], uri: str) -> Iterator[Any]:
        for bucket, records in batches.items():
            yield bucket, (self._source.index, uri, records)
            yield TaggedOutput(BUCKETS, bucket)

    def _count(self, read: int, projected: int) -> None:
        """Counters in batches: a Beam counter update per record costs more than the record's parse."""
        self._read.inc(read)
        self._read_by_source.inc(read)
        self._projected.inc(projected)
        progress.READ.add(read)


class ReadSource(beam.PTransform):
    """File URIs of one source -> projected records (keyed or as documents) + dead letters."""

    def __init__(self, source: SourcePlan, files: list[str], access: SourceAccess, keyed: bool) -> None:
        super().__init__()
        self._source = source
        self._files = files
        self._access = access
        self._keyed = keyed

    def expand(self, begin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        files = begin | "Files" >> beam.Create(self._files)
        if len(self._files) > 1:
            files = files | "SpreadFiles" >> beam.Reshuffle()
        return files | "ReadAndProject" >> beam.ParDo(
            _ReadAndProjectFn(self._source, self._access, self._keyed)
        ).with_outputs(DEAD_LETTERS, BUCKETS, main="records")

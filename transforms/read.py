"""Read one `source[N]` and project its records right away (the **read + project** steps).

`ReadSource` takes what the source's files are read as, planned ahead: whole files and byte
ranges of large ones (`connectors.byte_ranges.FileRange`), spreads them over workers, and
for every record parses it, evaluates only that source's paths and drops the raw record
(`SourceReader`, shared with the broadcast join's streamed source). Output, by `ReadOutput`,
each shaped by its own DoFn:
- `documents`: finished documents, encoded in `EncodedBlock`s, when the request has a single
  source (no shuffle: `transforms.read_jobs.DocumentsJob`, in the read helper when there is one);
- `buckets`: batches of records keyed by a hash bucket of their `_id` for the shuffle join
  (`transforms.buckets`: a few large elements through the shuffle instead of one per
  record), and each bucket number on the `buckets` output;
- `batches`: `(source, file or range, pickled records)` batches, the side input of the
  broadcast join (Beam's side-input cache sizes every object it holds; one bytes value per batch is sized
  at once, and unpickles faster than the runner's coder decodes the records).
Records that cannot be used leave as `DeadLetter`s on the `dead_letters` output, never
silently; a file that cannot be read fails the job with its URI (`SourceError`).
"""

from __future__ import annotations

import pickle
from collections.abc import Collection, Iterator
from typing import Any, Literal

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms import counters, progress
from transforms.block_coder import EncodedBlock
from transforms.buckets import BUCKETS, FLUSH_RECORDS, BucketBuffer
from transforms.bulk_body import BulkAction
from transforms.counters import CounterSet
from transforms.read_helper import HelperRead, run_job
from transforms.read_jobs import DocumentsJob, Frame, ProjectJob
from transforms.record_stream import Tally, projected_at, projected_records
from transforms.types import DEAD_LETTERS, DeadLetter, ProjectedRecord, SourcePlan

ReadOutput = Literal["documents", "buckets", "batches"]
_COUNT_EVERY = 1000


class SourceReader:
    """Reads and projects the files (or byte ranges) of one source, counting as it goes
    (picklable, for DoFns).

    With `helper`, a helper process parses each file or range (`transforms.read_helper`) while
    this process merges and writes what it has already parsed.
    """

    def __init__(self, source: SourcePlan, access: SourceAccess, helper: bool = False) -> None:
        self.source = source
        self._access = access
        self._helper = helper
        self._counters = CounterSet()

    def records(self, part: FileRange) -> Iterator[ProjectedRecord | DeadLetter]:
        """`(doc_id, position, fields)` for every usable record of `part`, a DeadLetter for the others.

        A helper process starts at once, so it parses while the caller prepares.
        """
        if self._helper:
            records = self._counted(HelperRead.for_job(ProjectJob(self.source, part, self._access)).frames())
        else:
            records = self._records_here(part)
        return _finished(records, part)

    def documents(self, part: FileRange, action: BulkAction) -> Iterator[Frame]:
        """The frames of `part`'s documents, encoded for `action` (a single source's)."""
        return run_job(DocumentsJob(self.source, part, action, self._access), self._helper)

    def _counted(self, frames: Iterator[tuple[list[Any], Tally]]) -> Iterator[ProjectedRecord | DeadLetter]:
        for records, tally in frames:
            self._count(tally)
            yield from records

    def fields_at(
        self, uri: str, positions: Collection[int], by_offset: bool
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """`(position, fields)` of the records of file `uri` at these byte offsets or lines, read
        again (not counted: they were read once), each as it is read."""
        return projected_at(self.source, self._access, uri, positions, by_offset)

    def _records_here(self, part: FileRange) -> Iterator[ProjectedRecord | DeadLetter]:
        tally = Tally()
        try:
            for record in projected_records(self.source, self._access, part, tally):
                yield record
                if tally.read >= _COUNT_EVERY:
                    self._count(tally.take())
        finally:
            self._count(tally)

    def _count(self, tally: Tally) -> None:
        """Counters in batches: a Beam counter update per record costs more than the record's parse."""
        self._counters.add(tally.counts(self.source.index))
        progress.READ.add(tally.read)
        progress.INPUT.add(tally.read_bytes)


def _finished(records: Iterator[Any], part: FileRange) -> Iterator[Any]:
    """`records`, then `part` counted as read (`transforms.progress.InputBytes.finish`)."""
    yield from records
    progress.INPUT.finish(part)


class _ReadFn(beam.DoFn):
    """Reads a file or byte range with the source's `SourceReader`; each subclass shapes one output."""

    def __init__(self, source: SourcePlan, access: SourceAccess, helper: bool, action: BulkAction) -> None:
        self._reader = SourceReader(source, access, helper)
        self._action = action  # how documents are encoded (`index` or `create`)


def emitted(frames: Iterator[Frame], counter_set: CounterSet, parts: tuple[FileRange, ...]) -> Iterator[Any]:
    """The blocks of documents of `frames` (main output) and their dead letters, counted; then
    the `parts` they were read from counted as read."""
    for items, counts in frames:
        counter_set.add(counts)  # read before written: a run stopped midway shows both
        progress.READ.add(counts.get(counters.READ, 0))
        progress.INPUT.add(counts.get(counters.READ_BYTES, 0))
        for item in items:
            yield item if type(item) is EncodedBlock else TaggedOutput(DEAD_LETTERS, item)
    progress.INPUT.finish(*parts)


class _ReadDocumentsFn(_ReadFn):
    """Finished documents, encoded in blocks: a single source has nothing to join."""

    def __init__(self, source: SourcePlan, access: SourceAccess, helper: bool, action: BulkAction) -> None:
        super().__init__(source, access, helper, action)
        self._counters = CounterSet()

    def process(self, part: FileRange) -> Iterator[Any]:
        return emitted(self._reader.documents(part, self._action), self._counters, (part,))


class _ReadBucketsFn(_ReadFn):
    """`(bucket, (source, part, records))` batches for the shuffle join, and each bucket number."""

    def process(self, part: FileRange) -> Iterator[Any]:
        buckets = BucketBuffer()
        for record in self._reader.records(part):
            if isinstance(record, DeadLetter):
                yield TaggedOutput(DEAD_LETTERS, record)
                continue
            buckets.add(*record)
            if buckets.full:
                yield from self._emit_buckets(buckets.take(), part)
        yield from self._emit_buckets(buckets.take(), part)

    def _emit_buckets(self, batches: dict[int, list[Any]], part: FileRange) -> Iterator[Any]:
        for bucket, records in batches.items():
            yield bucket, (self._reader.source.index, part, records)
            yield TaggedOutput(BUCKETS, bucket)


class _ReadBatchesFn(_ReadFn):
    """`(source, part, pickled records)` batches: the side input of the broadcast join."""

    def process(self, part: FileRange) -> Iterator[Any]:
        index = self._reader.source.index
        batch: list[ProjectedRecord] = []
        for record in self._reader.records(part):
            if isinstance(record, DeadLetter):
                yield TaggedOutput(DEAD_LETTERS, record)
                continue
            batch.append(record)
            if len(batch) >= FLUSH_RECORDS:
                yield index, part, pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
                batch = []
        if batch:
            yield index, part, pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)


_READ_FNS: dict[ReadOutput, type[_ReadFn]] = {
    "documents": _ReadDocumentsFn,
    "buckets": _ReadBucketsFn,
    "batches": _ReadBatchesFn,
}


class ReadSource(beam.PTransform):
    """The files and byte ranges of one source -> projected records (shaped as `output` says)
    + dead letters."""

    def __init__(
        self,
        source: SourcePlan,
        parts: list[FileRange],
        access: SourceAccess,
        output: ReadOutput,
        helper: bool = False,
        action: BulkAction = "index",
    ) -> None:
        super().__init__()
        self._parts = parts
        self._read_fn = _READ_FNS[output](source, access, helper, action)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        files = begin | "Files" >> beam.Create(self._parts)
        if len(self._parts) > 1:
            files = files | "SpreadFiles" >> beam.Reshuffle()
        read = beam.ParDo(self._read_fn)
        if isinstance(self._read_fn, _ReadDocumentsFn):
            read = read.with_output_types(EncodedBlock)
        return files | "ReadAndProject" >> read.with_outputs(DEAD_LETTERS, BUCKETS, main="records")

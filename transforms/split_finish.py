"""Put right the keys a streamed source's units could not settle alone (the **join** step, on Beam).

`transforms.split_join.SplitBroadcastJoin` writes each unit's documents at once; settling the
units' claims (`transforms.range_settle`) finds the keys first met in several units (`Rewrite`s)
and the keys only the small sources have. `FinishSplitJoin` writes the latter, and for each
`Rewrite` reads back its records, grouped by file so a file read whole (compressed, Parquet,
small) is read once, by line, and a split file's records by byte offset; it dead-letters the
losers and writes the winner again, once every unit's writes are done (a side input on the
first write step's output orders it), with counts that leave the extra writes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms.bulk import OpenSearchWriteConfig, WriteToOpenSearch
from transforms.counters import CounterSet
from transforms.range_settle import At, Rewrite, StreamedFile, rewrite_winner, streamed_files
from transforms.read import SourceReader
from transforms.split_join import REWRITES, SETTLED_DEAD_LETTERS, SETTLED_DOCUMENTS
from transforms.types import DEAD_LETTERS, IngestPlan, SourcePlan


def _doc_id(rewrite: Rewrite) -> str:
    return rewrite.doc_id


def _wanted(rewrite: Rewrite) -> Iterator[tuple[int, tuple[str, int]]]:
    """(file number, (doc_id, position)) of each record of a `Rewrite` to read back."""
    for file, position in (rewrite.winner, *rewrite.losers):
        yield file, (rewrite.doc_id, position)


class _ReadBackFn(beam.DoFn):
    """Reads back the records wanted from one file: (doc_id, ((file number, position), fields))."""

    def __init__(self, streamed: SourcePlan, files: tuple[StreamedFile, ...], access: SourceAccess) -> None:
        self._reader = SourceReader(streamed, access)
        self._files = files

    def process(self, element: tuple[int, Iterable[tuple[str, int]]]) -> Iterator[Any]:
        file, wanted = element
        id_at = {position: doc_id for doc_id, position in wanted}
        uri, by_offset = self._files[file]
        for position, fields in self._reader.fields_at(uri, id_at, by_offset).items():
            yield id_at[position], ((file, position), fields)


class _RewriteFn(beam.DoFn):
    """A `Rewrite` with its records read back: the losers' dead letters, the winner's document."""

    def __init__(self, plan: IngestPlan, streamed: int, files: tuple[StreamedFile, ...]) -> None:
        self._plan = plan
        self._streamed = streamed
        self._files = files
        self._counters = CounterSet()

    def process(self, element: tuple[str, dict[str, Iterable[Any]]], first_writes_done: int) -> Iterator[Any]:
        _, found = element
        fields_at: dict[At, dict[str, Any]] = dict(found["records"])
        for rewrite in found["rewrite"]:
            losers = [fields_at[at] for at in rewrite.losers]
            document, dead, counts = rewrite_winner(
                rewrite, fields_at[rewrite.winner], losers, self._plan, self._streamed, self._files
            )
            self._counters.add(counts)
            yield from (TaggedOutput(DEAD_LETTERS, letter) for letter in dead)
            if document is not None:
                yield document


class FinishSplitJoin(beam.PTransform):
    """`SplitBroadcastJoin`'s settled outputs -> the keys only the small sources have written, and
    the winners of `Rewrite`s written again once `first_writes` (the output of the step writing
    the units' documents) is complete; returns the dead letters of each step."""

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        parts: list[FileRange],
        access: SourceAccess,
        write: OpenSearchWriteConfig,
        first_writes: beam.PCollection,
    ) -> None:
        super().__init__()
        files = streamed_files(parts)
        self._read_back_fn = _ReadBackFn(streamed, files, access)
        self._rewrite_fn = _RewriteFn(plan, streamed.index, files)
        self._write = write
        self._first_writes = first_writes

    def expand(self, settled: dict[str, beam.PCollection]) -> tuple[beam.PCollection, ...]:
        done = self._first_writes | "FirstWritesDone" >> beam.combiners.Count.Globally()
        rewrites = settled[REWRITES]
        records = (
            rewrites
            | "WantedByFile" >> beam.FlatMap(_wanted)
            | "GroupByFile" >> beam.GroupByKey()
            | "ReadBack" >> beam.ParDo(self._read_back_fn)
        )
        keyed = rewrites | "RewriteById" >> beam.WithKeys(_doc_id)
        rewritten = (
            {"rewrite": keyed, "records": records}
            | "WithRecords" >> beam.CoGroupByKey()
            | "RewriteWinners"
            >> beam.ParDo(self._rewrite_fn, beam.pvalue.AsSingleton(done)).with_outputs(
                DEAD_LETTERS, main="documents"
            )
        )
        return (
            settled[SETTLED_DEAD_LETTERS],
            settled[SETTLED_DOCUMENTS] | "WriteSettled" >> WriteToOpenSearch(self._write),
            rewritten[DEAD_LETTERS],
            rewritten.documents | "WriteAgain" >> WriteToOpenSearch(self._write),
        )

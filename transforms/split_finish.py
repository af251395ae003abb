"""Put right the keys a streamed source's units could not settle alone (the **join** step, on Beam).

`transforms.split_join.SplitBroadcastJoin` writes each unit's documents at once; settling the
units' claims (`transforms.range_settle`) finds the keys first met in several units (`Rewrite`s)
and the keys only the small sources have. `FinishSplitJoin` writes the latter, and reads back
the records of each `Rewrite` with no record's fields ever shuffled or held together: each
`Rewrite` becomes small tasks (the `Rewrite` itself for its winner, a `Loser` for each loser)
grouped by the unit holding the record (a whole file, read once by line, or a byte range of a
split file, its records read by byte offset, so the ranges are read back in parallel), and the
read-back of a unit yields, as it meets each wanted record, the loser's dead letter or the
winner's document, written again once every unit's writes are done (a side input on the first
write step's output orders it), with counts that leave the extra writes out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms.bulk import OpenSearchWriteConfig, WriteToOpenSearch
from transforms.counters import CounterSet
from transforms.range_settle import (
    At,
    Loser,
    Rewrite,
    StreamedFile,
    lose,
    losers_of,
    rewrite_winner,
    streamed_files,
)
from transforms.read import SourceReader
from transforms.split_join import REWRITES, SETTLED_DEAD_LETTERS, SETTLED_DOCUMENTS
from transforms.types import DEAD_LETTERS, IngestPlan, SourcePlan

Task = Rewrite | Loser  # read back the record of a `Rewrite`'s winner, or of one of its losers
UnitKey = tuple[int, int]  # (file number, start of the byte range holding the record; 0 when read whole)


def _position(task: Task) -> int:
    return task.winner[1] if type(task) is Rewrite else task.at[1]


class ReadBackTasks:
    """A `Rewrite` -> its tasks, each keyed by the unit holding its record (picklable, for FlatMap)."""

    def __init__(self, streamed: int, files: tuple[StreamedFile, ...], parts: list[FileRange]) -> None:
        self._streamed = streamed
        self._files = files
        number = {file.uri: position for position, file in enumerate(files)}
        starts: dict[int, list[int]] = {}
        for part in parts:
            if part.by_offset:
                starts.setdefault(number[part.uri], []).append(part.start)
        self._starts = {file: sorted(found) for file, found in starts.items()}

    def __call__(self, rewrite: Rewrite) -> Iterator[tuple[UnitKey, Task]]:
        yield self._unit_of(rewrite.winner), rewrite
        for loser in losers_of(rewrite, self._streamed, self._files):
            yield self._unit_of(loser.at), loser

    def _unit_of(self, at: At) -> UnitKey:
        file, position = at
        starts = self._starts.get(file)
        if starts is None:
            return file, 0
        return file, starts[bisect_right(starts, position) - 1]


class ReadBackFn(beam.DoFn):
    """The tasks of one unit -> each loser's dead letter and each winner's document, yielded as
    its record is read back (one record's fields at a time)."""

    def __init__(
        self, plan: IngestPlan, streamed: SourcePlan, files: tuple[StreamedFile, ...], access: SourceAccess
    ) -> None:
        self._plan = plan
        self._reader = SourceReader(streamed, access)
        self._files = files
        self._counters = CounterSet()

    def process(self, element: tuple[UnitKey, Iterable[Task]], first_writes_done: int) -> Iterator[Any]:
        (file, _), tasks = element
        wanted = {_position(task): task for task in tasks}
        uri, by_offset = self._files[file]
        streamed = self._reader.source.index
        for position, fields in self._reader.fields_at(uri, wanted, by_offset):
            task = wanted.pop(position)
            if type(task) is Rewrite:
                document, counts = rewrite_winner(task, fields, self._plan, streamed, self._files)
                self._counters.add(counts)
                if document is not None:
                    yield document
            else:
                letter, counts = lose(task, fields, streamed, self._files)
                self._counters.add(counts)
                yield TaggedOutput(DEAD_LETTERS, letter)


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
        self._tasks = ReadBackTasks(streamed.index, files, parts)
        self._read_back_fn = ReadBackFn(plan, streamed, files, access)
        self._write = write
        self._first_writes = first_writes

    def expand(self, settled: dict[str, beam.PCollection]) -> tuple[beam.PCollection, ...]:
        done = self._first_writes | "FirstWritesDone" >> beam.combiners.Count.Globally()
        rewritten = (
            settled[REWRITES]
            | "ReadBackTasks" >> beam.FlatMap(self._tasks)
            | "TasksByUnit" >> beam.GroupByKey()
            | "ReadBack"
            >> beam.ParDo(self._read_back_fn, beam.pvalue.AsSingleton(done)).with_outputs(
                DEAD_LETTERS, main="documents"
            )
        )
        return (
            settled[SETTLED_DEAD_LETTERS],
            settled[SETTLED_DOCUMENTS] | "WriteSettled" >> WriteToOpenSearch(self._write),
            rewritten[DEAD_LETTERS],
            rewritten.documents | "WriteAgain" >> WriteToOpenSearch(self._write),
        )

"""The broadcast join of a streamed file split into byte ranges (the **join** step, on Beam).

`transforms.join.BroadcastJoin` streams a whole file through one element. A large file is
split into ranges (`connectors.byte_ranges`) so that any worker reads any range:
`SplitBroadcastJoin` spreads the ranges with a Reshuffle, and each range is read, projected,
merged with the small sources (a side input, indexed once per worker process: `_SharedSide`)
and written with no shuffle of its records (`transforms.stream_join.stream_range`).

A range cannot know two things the whole-file join knows: whether a key it meets was met
before in an earlier range, and which keys of the small sources no range meets. Both need a
global view, which comes from a small shuffle of `(id, offset)` claims only (no vectors;
a later record of a key within one range travels with its fields, as it is dead-lettered
whatever happens), bucketed by `_id` and settled per bucket with the small sources
(`transforms.range_settle.settle_bucket`): keys only the small sources have are merged, every
key is counted once, duplicates are dead-lettered. Holding the ranges' documents until the
global view is known would hold the whole file (vectors included) in the runner, so ranges
write at once instead, and a key first met in several ranges (rare: a duplicate in the same
range as the first record needs nothing more) is put right afterwards by `FinishSplitJoin`: the
losing records are read back by offset and dead-lettered, and the winner's document (the first
by offset, as in the whole-file join) is read back, merged and written again once every
range's writes are done (a side input on the first write step's output orders it), with
counts that leave the extra writes out. The index, the dead letters (positions as byte
offsets) and the counts equal those of the whole-file join, unless the cluster rejects such a
key's document (each write of it is then dead-lettered). With `--action create` the first
write of a key would stay, so the streamed file is not split then (`pipelines.ingest_checks`).
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any, ClassVar

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from transforms.buckets import BUCKETS_COUNT, BucketBuffer
from transforms.bulk import OpenSearchWriteConfig, WriteToOpenSearch
from transforms.counters import CounterSet
from transforms.merge import JoinTally, index_by_id
from transforms.range_settle import Rewrite, SideIndex, rewrite_winner, settle_bucket
from transforms.read import SourceReader
from transforms.stream_join import Claim, stream_range
from transforms.types import DEAD_LETTERS, Document, IngestPlan, SourcePlan

CLAIMS = "claims"
REWRITES = "rewrites"
SETTLED_DOCUMENTS = "settled_documents"
SETTLED_DEAD_LETTERS = "settled_dead_letters"


class _SharedSide:
    """The small sources' `SideIndex` of one join, built once per worker process for all its
    steps and ranges (the side input is the same for all: the pipeline has one global window)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _held: ClassVar[tuple[str, SideIndex] | None] = None

    @classmethod
    def index(cls, token: str, side_batches: Iterable[tuple[int, FileRange, bytes]]) -> SideIndex:
        with cls._lock:
            if cls._held is None or cls._held[0] != token:
                cls._held = None
                batches = ((source, part, pickle.loads(batch)) for source, part, batch in side_batches)
                cls._held = (token, SideIndex(index_by_id(batches)))
            return cls._held[1]

    @classmethod
    def release(cls, token: str) -> None:
        with cls._lock:
            if cls._held is not None and cls._held[0] == token:
                cls._held = None


class _RangeJoinFn(beam.DoFn):
    """One range: documents of its first records, the read step's dead letters, bucketed claims."""

    def __init__(
        self, plan: IngestPlan, streamed: SourcePlan, access: SourceAccess, helper: bool, token: str
    ) -> None:
        self._plan = plan
        self._reader = SourceReader(streamed, access, helper)
        self._token = token

    def process(self, part: FileRange, side_batches: Iterable[tuple[int, FileRange, bytes]]) -> Iterator[Any]:
        records = self._reader.records(part)  # a helper process starts parsing while the side is indexed
        side = _SharedSide.index(self._token, side_batches).by_id
        claims = BucketBuffer()
        for joined in stream_range(records, self._reader.source.index, part, side, self._plan):
            kind = type(joined)
            if kind is Document:
                yield joined
            elif kind is Claim:
                claims.add(*joined)
                if claims.full:
                    yield from _tagged_buckets(claims)
            else:
                yield TaggedOutput(DEAD_LETTERS, joined)
        yield from _tagged_buckets(claims)

    def teardown(self) -> None:
        _SharedSide.release(self._token)


def _tagged_buckets(claims: BucketBuffer) -> Iterator[TaggedOutput]:
    for bucket, batch in claims.take().items():
        yield TaggedOutput(CLAIMS, (bucket, batch))


class _SettleFn(beam.DoFn):
    """One `_id` bucket's claims from every range, with the small sources' keys of that bucket."""

    def __init__(self, plan: IngestPlan, streamed: int, uri: str, token: str) -> None:
        self._plan = plan
        self._streamed = streamed
        self._uri = uri
        self._token = token
        self._counters = CounterSet()

    def process(
        self, element: tuple[int, Iterable[list[tuple]]], side_batches: Iterable[tuple[int, FileRange, bytes]]
    ) -> Iterator[Any]:
        bucket, batches = element
        side = _SharedSide.index(self._token, side_batches)
        claims = (Claim(*claim) for claim in chain.from_iterable(batches))
        tally = JoinTally()
        try:
            for settled in settle_bucket(
                claims, side.ids_in(bucket), side.by_id, self._plan, self._streamed, self._uri, tally
            ):
                kind = type(settled)
                if kind is Document:
                    yield settled
                elif kind is Rewrite:
                    yield TaggedOutput(REWRITES, settled)
                else:
                    yield TaggedOutput(DEAD_LETTERS, settled)
        finally:
            self._counters.add(tally.take_counts())

    def teardown(self) -> None:
        _SharedSide.release(self._token)


class SplitBroadcastJoin(beam.PTransform):
    """The ranges of the streamed file + the other sources' record batches -> the ranges' Documents
    (`documents`, to be written by a step fused with the ranges, so they are never held) and
    dead letters, and what `FinishSplitJoin` writes: the documents of the keys only the other
    sources have, the settling's dead letters, and the `Rewrite`s."""

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        parts: list[FileRange],
        access: SourceAccess,
        helper: bool = False,
    ) -> None:
        super().__init__()
        self._parts = parts
        token = uuid.uuid4().hex
        self._range_fn = _RangeJoinFn(plan, streamed, access, helper, token)
        self._settle_fn = _SettleFn(plan, streamed.index, parts[0].uri, token)

    def expand(self, side_batches: beam.PCollection) -> dict[str, beam.PCollection]:
        side = beam.pvalue.AsIter(side_batches)
        pipeline = side_batches.pipeline
        ranges = (
            pipeline
            | "Ranges" >> beam.Create(self._parts)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadProjectMerge"
            >> beam.ParDo(self._range_fn, side).with_outputs(DEAD_LETTERS, CLAIMS, main="documents")
        )
        every_bucket = pipeline | "EveryBucket" >> beam.Create(
            [(bucket, []) for bucket in range(BUCKETS_COUNT)]
        )
        settled = (
            (ranges[CLAIMS], every_bucket)
            | "AllClaims" >> beam.Flatten()
            | "ClaimsByBucket" >> beam.GroupByKey()
            | "Settle"
            >> beam.ParDo(self._settle_fn, side).with_outputs(DEAD_LETTERS, REWRITES, main="documents")
        )
        return {
            "documents": ranges.documents,
            DEAD_LETTERS: ranges[DEAD_LETTERS],
            SETTLED_DOCUMENTS: settled.documents,
            SETTLED_DEAD_LETTERS: settled[DEAD_LETTERS],
            REWRITES: settled[REWRITES],
        }


class _RewriteFn(beam.DoFn):
    """Reads a `Rewrite`'s records back by offset: the losers' dead letters, the winner's document."""

    def __init__(self, plan: IngestPlan, streamed: SourcePlan, uri: str, access: SourceAccess) -> None:
        self._plan = plan
        self._reader = SourceReader(streamed, access)
        self._uri = uri
        self._counters = CounterSet()

    def process(self, rewrite: Rewrite, first_writes_done: int) -> Iterator[Any]:
        _, _, winner = self._reader.record_at(self._uri, rewrite.winner)
        losers = [self._reader.record_at(self._uri, offset)[2] for offset in rewrite.losers]
        source = self._reader.source.index
        document, dead, counts = rewrite_winner(rewrite, winner, losers, self._plan, source, self._uri)
        self._counters.add(counts)
        yield from (TaggedOutput(DEAD_LETTERS, letter) for letter in dead)
        if document is not None:
            yield document


class FinishSplitJoin(beam.PTransform):
    """`SplitBroadcastJoin`'s settled outputs -> the keys only the small sources have written, and
    the winners of `Rewrite`s written again once `first_writes` (the output of the step writing
    the ranges' documents) is complete; returns the dead letters of each step."""

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        uri: str,
        access: SourceAccess,
        write: OpenSearchWriteConfig,
        first_writes: beam.PCollection,
    ) -> None:
        super().__init__()
        self._rewrite_fn = _RewriteFn(plan, streamed, uri, access)
        self._write = write
        self._first_writes = first_writes

    def expand(self, settled: dict[str, beam.PCollection]) -> tuple[beam.PCollection, ...]:
        done = self._first_writes | "FirstWritesDone" >> beam.combiners.Count.Globally()
        rewritten = settled[REWRITES] | "ReadBackWinners" >> beam.ParDo(
            self._rewrite_fn, beam.pvalue.AsSingleton(done)
        ).with_outputs(DEAD_LETTERS, main="documents")
        return (
            settled[SETTLED_DEAD_LETTERS],
            settled[SETTLED_DOCUMENTS] | "WriteSettled" >> WriteToOpenSearch(self._write),
            rewritten[DEAD_LETTERS],
            rewritten.documents | "WriteAgain" >> WriteToOpenSearch(self._write),
        )

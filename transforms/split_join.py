"""The broadcast join of a streamed source read in several units (the **join** step, on Beam).

`transforms.join.BroadcastJoin` streams one whole file through one element. A large file is
split into ranges (`connectors.byte_ranges`), and a batch job often writes several files
(SageMaker one `.out` per input file): each byte range, and each file not split (compressed,
Parquet, small), is a unit, so that any worker reads any unit. `SplitBroadcastJoin` spreads
the units with a Reshuffle, and each unit is read, projected, merged with the small sources (a
side input, indexed once per worker process: `_SharedSide`) and written with no shuffle of its
records (`transforms.stream_join.stream_range`).

A unit cannot know two things the whole-file join knows: whether a key it meets was met
before in an earlier unit, and which keys of the small sources no unit meets. Both need a
global view, which comes from a small shuffle of `(id, file, position)` claims only (no
vectors; a later record of a key within one unit travels with its fields, as it is
dead-lettered whatever happens), bucketed by `_id` and settled per bucket with the small
sources (`transforms.range_settle.settle_bucket`). Holding the units' documents until the
global view is known would hold the whole source (vectors included) in the runner, so units
write at once instead, and a key first met in several units (a duplicate across ranges or
files; one in the same unit as the first record needs nothing more) is put right afterwards
by `transforms.split_finish.FinishSplitJoin`: the winner is the first record by file and
position, as in the whole-file and the shuffle join (see `transforms.range_settle`). The
index, the dead letters and the counts equal those of the shuffle join, unless the cluster
rejects such a key's document (each write of it is then dead-lettered). With `--action
create` the first write of a key would stay, so the streamed source is then one file read
whole (`pipelines.ingest_checks`, `pipelines.join_strategy`).
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
from transforms.block_coder import EncodedBlock
from transforms.buckets import BUCKETS_COUNT, BucketBuffer
from transforms.bulk_body import BulkAction
from transforms.counters import CounterSet
from transforms.encoded import encoded_blocks
from transforms.merge import JoinTally, index_by_id
from transforms.range_settle import Rewrite, SideIndex, StreamedFile, settle_bucket, streamed_files
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
    """One unit (file number, whole file or byte range): documents of its first records (encoded,
    in blocks), the read step's dead letters, bucketed claims."""

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        access: SourceAccess,
        helper: bool,
        token: str,
        action: BulkAction,
    ) -> None:
        self._plan = plan
        self._reader = SourceReader(streamed, access, helper)
        self._token = token
        self._action = action

    def process(
        self, unit: tuple[int, FileRange], side_batches: Iterable[tuple[int, FileRange, bytes]]
    ) -> Iterator[Any]:
        file, part = unit
        records = self._reader.records(part)  # a helper process starts parsing while the side is indexed
        side = _SharedSide.index(self._token, side_batches).by_id
        claims = BucketBuffer()
        joined_units = stream_range(records, self._reader.source.index, file, part, side, self._plan)
        for joined in encoded_blocks(joined_units, self._action):
            kind = type(joined)
            if kind is EncodedBlock:
                yield joined
            elif kind is Claim:
                claims.add_row(tuple(joined))
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
    """One `_id` bucket's claims from every unit, with the small sources' keys of that bucket."""

    def __init__(self, plan: IngestPlan, streamed: int, files: tuple[StreamedFile, ...], token: str) -> None:
        self._plan = plan
        self._streamed = streamed
        self._files = files
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
                claims, side.ids_in(bucket), side.by_id, self._plan, self._streamed, self._files, tally
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
    """The units of the streamed source + the other sources' record batches -> the units' Documents
    (`documents`, to be written by a step fused with the units, so they are never held) and
    dead letters, and what `FinishSplitJoin` writes: the documents of the keys only the other
    sources have, the settling's dead letters, and the `Rewrite`s."""

    def __init__(
        self,
        plan: IngestPlan,
        streamed: SourcePlan,
        parts: list[FileRange],
        access: SourceAccess,
        helper: bool = False,
        action: BulkAction = "index",
    ) -> None:
        super().__init__()
        files = streamed_files(parts)
        number = {file.uri: position for position, file in enumerate(files)}
        self._units = [(number[part.uri], part) for part in parts]
        token = uuid.uuid4().hex
        self._range_fn = _RangeJoinFn(plan, streamed, access, helper, token, action)
        self._settle_fn = _SettleFn(plan, streamed.index, files, token)

    def expand(self, side_batches: beam.PCollection) -> dict[str, beam.PCollection]:
        side = beam.pvalue.AsIter(side_batches)
        pipeline = side_batches.pipeline
        ranges = (
            pipeline
            | "Units" >> beam.Create(self._units)
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadProjectMerge"
            >> beam.ParDo(self._range_fn, side)
            .with_output_types(EncodedBlock)
            .with_outputs(DEAD_LETTERS, CLAIMS, main="documents")
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

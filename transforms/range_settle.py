"""Settle what the units of a streamed source met (the **join** step's global view, pure).

The broadcast join's streamed source is read in units when it has several: the byte ranges of
a split file, and each of its files, whole or in ranges. Each unit merged and wrote the first
record of each key it met, and sent its `Claim`s (`transforms.stream_join.stream_range`),
bucketed by `_id`. Per bucket, with the small sources' records (`SideIndex`), `settle_bucket`
does what the whole-file join (`transforms.stream_join.stream_join`) and the shuffle join do
for every key, so the index, the dead letters and the counts come out the same:
- keys only the small sources have are merged here (`transforms.merge.join_key`);
- every key a unit met is counted here once, as if merged with its first record in the source,
  and the small sources' duplicates of it are dead-lettered here once;
- later records of a key within one unit are duplicates of the first in the source;
- a key first met in several units was written by each of them (in no set order): a `Rewrite`
  says which record won and which lost. Each loser read back is dead-lettered (`lose`), and
  `rewrite_winner` builds the winner's document again from its record read back, to be written
  after every unit's writes, with the counts that make the extra writes not count.

Records are ordered as the shuffle join orders them (`transforms.merge`: the first by locator
wins): by file, in the order of the source's sorted file list (`StreamedFile`s, sorted by URI
as locators are), then by position in the file: byte offset in a file read in ranges, line in
a file read whole (compressed, Parquet, or small). The first record of a key wins across files
too, as within one file, rather than the last as ML Commons' partial upserts would leave it:
one rule for every duplicate, whatever the strategy and however the files were cut, so the
index does not depend on how a batch job split its output, and the winner is the record the
`--join-strategy shuffle` run and the single-file join keep.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from connectors.byte_ranges import FileRange
from transforms import counters
from transforms.buckets import bucket_of
from transforms.merge import Grouped, JoinTally, duplicate_dead_letter, join_key, merge_key
from transforms.stream_join import Claim
from transforms.types import DeadLetter, Document, IngestPlan, Locator, Projected


class SideIndex:
    """The small sources' records by `_id`, and their ids by bucket (made when first asked)."""

    def __init__(self, by_id: dict[str, Grouped]) -> None:
        self.by_id = by_id
        self._by_bucket: dict[int, list[str]] | None = None

    def ids_in(self, bucket: int) -> list[str]:
        if self._by_bucket is None:
            by_bucket: dict[int, list[str]] = {}
            for doc_id in self.by_id:
                by_bucket.setdefault(bucket_of(doc_id), []).append(doc_id)
            self._by_bucket = by_bucket
        return self._by_bucket.get(bucket, [])


class StreamedFile(NamedTuple):
    """One file of the streamed source: its URI and whether its positions are byte offsets."""

    uri: str
    by_offset: bool


At = tuple[int, int]  # (file number in the streamed source's `StreamedFile`s, position in the file)


def streamed_files(parts: Iterable[FileRange]) -> tuple[StreamedFile, ...]:
    """The files of the streamed source's units (whole files and byte ranges), sorted by URI as
    locators are; a file is located by byte offset when it is read in ranges."""
    by_offset: dict[str, bool] = {}
    for part in parts:
        by_offset[part.uri] = by_offset.get(part.uri, False) or part.by_offset
    return tuple(StreamedFile(uri, by_offset[uri]) for uri in sorted(by_offset))


def locator_at(streamed: int, files: Sequence[StreamedFile], at: At) -> Locator:
    file = files[at[0]]
    return Locator(streamed, file.uri, at[1], file.by_offset)


class Rewrite(NamedTuple):
    """A key first met in several units: where the winner is, where the losers are, and the
    key's records in the small sources."""

    doc_id: str
    winner: At
    losers: tuple[At, ...]
    side: Grouped


def settle_bucket(
    claims: Iterable[Claim],
    side_ids: Iterable[str],
    side: Mapping[str, Grouped],
    plan: IngestPlan,
    streamed: int,
    files: Sequence[StreamedFile],
    tally: JoinTally,
) -> Iterator[Document | DeadLetter | Rewrite]:
    """Documents of the keys only `side` has, dead letters and `Rewrite`s for the claims of one
    bucket (from every unit of `source[streamed]`, whose files are `files`), counted in `tally`."""
    by_key: dict[str, list[Claim]] = {}
    for claim in claims:
        by_key.setdefault(claim.doc_id, []).append(claim)
    for doc_id, found in by_key.items():
        yield from _settle_key(doc_id, found, side.get(doc_id, {}), plan, streamed, files, tally)
    for doc_id in side_ids:
        if doc_id not in by_key:
            yield from join_key(doc_id, side[doc_id], plan, tally)


def _settle_key(
    doc_id: str,
    found: list[Claim],
    side_grouped: Grouped,
    plan: IngestPlan,
    streamed: int,
    files: Sequence[StreamedFile],
    tally: JoinTally,
) -> Iterator[DeadLetter | Rewrite]:
    firsts = sorted((claim.file, claim.position) for claim in found if claim.fields is None)
    kept = locator_at(streamed, files, firsts[0])
    # The key's counts and its small-source duplicates do not depend on the streamed record's fields.
    grouped = {**side_grouped, streamed: [Projected(kept, {})]}
    for joined in join_key(doc_id, grouped, plan, tally):
        if type(joined) is DeadLetter:
            yield joined
    for claim in found:
        if claim.fields is not None:
            tally.duplicates += 1
            duplicate = Projected(locator_at(streamed, files, (claim.file, claim.position)), claim.fields)
            yield duplicate_dead_letter(doc_id, duplicate, kept)
    if len(firsts) > 1:
        yield Rewrite(doc_id, firsts[0], tuple(firsts[1:]), side_grouped)


class Loser(NamedTuple):
    """A losing record of a `Rewrite` (`at`), to read back and dead-letter, and where the winner is."""

    doc_id: str
    at: At
    kept: Locator


def losers_of(rewrite: Rewrite, streamed: int, files: Sequence[StreamedFile]) -> list[Loser]:
    kept = locator_at(streamed, files, rewrite.winner)
    return [Loser(rewrite.doc_id, at, kept) for at in rewrite.losers]


def lose(
    loser: Loser, fields: dict[str, Any], streamed: int, files: Sequence[StreamedFile]
) -> tuple[DeadLetter, dict[str, int]]:
    """The dead letter of a losing record read back (`fields`), counted as a duplicate."""
    duplicate = Projected(locator_at(streamed, files, loser.at), fields)
    return duplicate_dead_letter(loser.doc_id, duplicate, loser.kept), {counters.DUPLICATES: 1}


def rewrite_winner(
    rewrite: Rewrite,
    winner: dict[str, Any],
    plan: IngestPlan,
    streamed: int,
    files: Sequence[StreamedFile],
) -> tuple[Document | None, dict[str, int]]:
    """The winner's document to write again from its record read back (None when the join drops
    the key), and the counts that leave out what the writes of the key beyond the first added
    (each losing unit's document and this one, with the same sources)."""
    kept = locator_at(streamed, files, rewrite.winner)
    grouped = {**rewrite.side, streamed: [Projected(kept, winner)]}
    document = merge_key(rewrite.doc_id, grouped, len(plan.sources), plan.field_order, plan.join).document
    counts: dict[str, int] = {}
    if document is not None:
        extra_writes = len(rewrite.losers) + 1
        counts[counters.INDEXED] = counts[counters.UPDATED] = -extra_writes
        for origin in document.origins:
            counts[counters.accounted_by_source(origin.source)] = -extra_writes
    return document, counts

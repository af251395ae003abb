"""Settle what the ranges of a split streamed file met (the **join** step's global view, pure).

Each range of the broadcast join's streamed file merged and wrote the first record of each key
it met, and sent its `Claim`s (`transforms.stream_join.stream_range`), bucketed by `_id`. Per
bucket, with the small sources' records (`SideIndex`), `settle_bucket` does what the whole-file
join (`transforms.stream_join.stream_join`) does for every key, so the index, the dead letters
and the counts come out the same:
- keys only the small sources have are merged here (`transforms.merge.join_key`);
- every key a range met is counted here once, as if merged with its first record in the file,
  and the small sources' duplicates of it are dead-lettered here once;
- later records of a key within one range are duplicates of the first in the file;
- a key first met in several ranges was written by each of them (in no set order): a `Rewrite`
  says which offset won (the smallest) and which lost. `rewrite_winner` then dead-letters
  the losers and builds the winner's document again from its record read back by offset, to be
  written after every range's writes, with the counts that make the extra writes not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

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


class Rewrite(NamedTuple):
    """A key first met in several ranges: the winning offset, the losing ones, and the key's
    records in the small sources."""

    doc_id: str
    winner: int
    losers: tuple[int, ...]
    side: Grouped


def settle_bucket(
    claims: Iterable[Claim],
    side_ids: Iterable[str],
    side: Mapping[str, Grouped],
    plan: IngestPlan,
    streamed: int,
    uri: str,
    tally: JoinTally,
) -> Iterator[Document | DeadLetter | Rewrite]:
    """Documents of the keys only `side` has, dead letters and `Rewrite`s for the claims of one
    bucket (from every range of `source[streamed]`'s file `uri`), counted in `tally`."""
    by_key: dict[str, list[Claim]] = {}
    for claim in claims:
        by_key.setdefault(claim.doc_id, []).append(claim)
    for doc_id, found in by_key.items():
        yield from _settle_key(doc_id, found, side.get(doc_id, {}), plan, streamed, uri, tally)
    for doc_id in side_ids:
        if doc_id not in by_key:
            yield from join_key(doc_id, side[doc_id], plan, tally)


def _settle_key(
    doc_id: str,
    found: list[Claim],
    side_grouped: Grouped,
    plan: IngestPlan,
    streamed: int,
    uri: str,
    tally: JoinTally,
) -> Iterator[DeadLetter | Rewrite]:
    firsts = sorted(claim.offset for claim in found if claim.fields is None)
    kept = Locator(streamed, uri, firsts[0], True)
    # The key's counts and its small-source duplicates do not depend on the streamed record's fields.
    grouped = {**side_grouped, streamed: [Projected(kept, {})]}
    for joined in join_key(doc_id, grouped, plan, tally):
        if type(joined) is DeadLetter:
            yield joined
    for claim in found:
        if claim.fields is not None:
            tally.duplicates += 1
            duplicate = Projected(Locator(streamed, uri, claim.offset, True), claim.fields)
            yield duplicate_dead_letter(doc_id, duplicate, kept)
    if len(firsts) > 1:
        yield Rewrite(doc_id, firsts[0], tuple(firsts[1:]), side_grouped)


def rewrite_winner(
    rewrite: Rewrite,
    winner: dict[str, Any],
    losers: Sequence[dict[str, Any]],
    plan: IngestPlan,
    streamed: int,
    uri: str,
) -> tuple[Document | None, list[DeadLetter], dict[str, int]]:
    """The winner's document to write again (None when the join drops the key), the losers' dead
    letters, and the counts: the duplicates, less what the writes of the key beyond the first
    added (each losing range's document and this one, with the same sources)."""
    kept = Locator(streamed, uri, rewrite.winner, True)
    dead = [
        duplicate_dead_letter(rewrite.doc_id, Projected(Locator(streamed, uri, offset, True), fields), kept)
        for offset, fields in zip(rewrite.losers, losers, strict=True)
    ]
    grouped = {**rewrite.side, streamed: [Projected(kept, winner)]}
    document = merge_key(rewrite.doc_id, grouped, len(plan.sources), plan.field_order, plan.join).document
    counts = {counters.DUPLICATES: len(dead)}
    if document is not None:
        extra_writes = len(rewrite.losers) + 1
        counts[counters.INDEXED] = counts[counters.UPDATED] = -extra_writes
        for origin in document.origins:
            counts[counters.accounted_by_source(origin.source)] = -extra_writes
    return document, dead, counts

"""The broadcast join's streamed side meeting the small sources (the **join** step, pure).

One large file streams in order (`source[N]`'s projected records, as `transforms.read.SourceReader`
yields them) against the other sources' records held in memory by `_id`
(`transforms.merge.index_by_id`). Each streamed key is merged with what the small sources
have for it as soon as it is read (`transforms.merge.join_key`); a key met again in the file is
a duplicate, dead-lettered with the line that was kept (the first); keys only the small
sources have are merged after the file's last record. Records the read step rejected pass
through as they come. Gives the same documents, dead letters and counts as the shuffle join
(`transforms.merge.join_batches`) on the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from transforms.merge import Grouped, JoinTally, duplicate_dead_letter, join_key
from transforms.types import DeadLetter, Document, IngestPlan, Locator, Projected, ProjectedRecord


def stream_join(
    records: Iterable[ProjectedRecord | DeadLetter],
    streamed: int,
    uri: str,
    side: dict[str, Grouped],
    plan: IngestPlan,
    tally: JoinTally,
) -> Iterator[Document | DeadLetter]:
    """Documents and dead letters of the file `uri` of `source[streamed]` joined with `side` (which
    it empties as keys are met), counted in `tally`."""
    first_line: dict[str, int] = {}
    for record in records:
        if isinstance(record, DeadLetter):
            yield record
            continue
        doc_id, line, fields = record
        projected = Projected(Locator(streamed, uri, line), fields)
        if doc_id in first_line:
            tally.duplicates += 1
            yield duplicate_dead_letter(doc_id, projected, Locator(streamed, uri, first_line[doc_id]))
            continue
        first_line[doc_id] = line
        grouped = side.pop(doc_id, {})
        grouped[streamed] = [projected]
        yield from join_key(doc_id, grouped, plan, tally)
    for doc_id, grouped in side.items():
        yield from join_key(doc_id, grouped, plan, tally)

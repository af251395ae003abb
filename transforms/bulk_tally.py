"""What one `_bulk` batch did with its documents (the **write** step's tally, pure).

`tally_bulk_outcome` reads a batch's `BulkOutcome` (after retries and splits) against the
actions sent (with each one's document id and origins): which were written (and of those,
how many the cluster updated rather than created), which a `create` found already there
(409: skipped, not an error), and which were rejected, each as a `DeadLetter` with the
cluster's reason and the document read back from its action. Written and skipped documents
count as accounted for, per `source[N]` of their origins (see `pipelines.outcome`).
`transforms.bulk._BulkWriteFn` adds `BulkTally.counts()` to the Beam counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from connectors.opensearch.bulk_retry import BulkOutcome
from transforms import counters
from transforms.bulk_body import BulkAction, Sent
from transforms.encoded import action_fields
from transforms.types import DeadLetter, Locator


@dataclass(frozen=True)
class BulkTally:
    """One batch's fate: counts, the rejected documents, and records accounted for by source."""

    indexed: int
    updated: int
    skipped_existing: int
    rejected: list[DeadLetter]
    accounted_by_source: list[int]  # by source index
    requests: int = 0
    retries: int = 0
    splits: int = 0

    @property
    def created(self) -> int:
        return self.indexed - self.updated

    def counts(self) -> dict[str, int]:
        """The tally by counter name (per-source counts only for sources it accounts for)."""
        counts = {
            counters.BULK_REQUESTS: self.requests,
            counters.BULK_RETRIES: self.retries,
            counters.BULK_SPLITS: self.splits,
            counters.SKIPPED_EXISTING: self.skipped_existing,
            counters.BULK_REJECTED: len(self.rejected),
            counters.INDEXED: self.indexed,
            counters.UPDATED: self.updated,
            counters.CREATED: self.created,
        }
        for source, count in enumerate(self.accounted_by_source):
            if count:
                counts[counters.accounted_by_source(source)] = count
        return counts


def _account(accounted: list[int], origins: tuple[Locator, ...]) -> None:
    for origin in origins:
        accounted[origin.source] += 1


def tally_bulk_outcome(
    sent: Sequence[Sent],
    actions: Sequence[bytes],
    outcome: BulkOutcome,
    action: BulkAction,
    source_count: int = 1,
) -> BulkTally:
    """The fate of the documents `sent` as `actions`, in this order, as `outcome` reports it (of
    `source_count` sources).

    A document whose result came back was written; a failed `create` with 409 found its
    document already indexed (skipped); any other failure rejects the document.
    """
    indexed = updated = 0
    accounted = [0] * source_count
    for (_, origins), item in zip(sent, outcome.results, strict=True):
        if item is None:
            continue
        indexed += 1
        if next(iter(item.values())).get("result") == "updated":
            updated += 1
        _account(accounted, origins)
    skipped = 0
    rejected: list[DeadLetter] = []
    for position, status, reason in outcome.failures:
        doc_id, origins = sent[position]
        if action == "create" and status == 409:
            skipped += 1
            _account(accounted, origins)
        else:
            document = {"_id": doc_id, **action_fields(actions[position])}
            rejected.append(DeadLetter("bulk", reason, origins, document))
    return BulkTally(
        indexed, updated, skipped, rejected, accounted, outcome.requests, outcome.retries, outcome.splits
    )

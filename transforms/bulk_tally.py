"""What one `_bulk` batch did with its documents (the **write** step's tally, pure).

`tally_bulk_outcome` reads a batch's `BulkOutcome` (after retries and splits) against the
documents sent: which were written (and of those, how many the cluster updated rather than
created), which a `create` found already there (409: skipped, not an error), and which were
rejected, each as a `DeadLetter` with the cluster's reason. Written and skipped documents
count as accounted for, per `source[N]` of their origins (see `pipelines.outcome`).
`transforms.bulk._BulkWriteFn` adds `BulkTally.counts()` to the Beam counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from connectors.opensearch.bulk_retry import BulkOutcome
from transforms import counters
from transforms.bulk_body import BulkAction
from transforms.types import DeadLetter, Document


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


def document_dead_letter(document: Document, stage: str, reason: str) -> DeadLetter:
    """A DeadLetter for a document the write step could not index, standing for all its origins."""
    return DeadLetter(stage, reason, document.origins, {"_id": document.doc_id, **document.fields})


def _account(accounted: list[int], document: Document) -> None:
    for origin in document.origins:
        accounted[origin.source] += 1


def tally_bulk_outcome(
    documents: Sequence[Document], outcome: BulkOutcome, action: BulkAction, source_count: int = 1
) -> BulkTally:
    """The fate of `documents`, sent in this order, as `outcome` reports it (of `source_count` sources).

    A document whose result came back was written; a failed `create` with 409 found its
    document already indexed (skipped); any other failure rejects the document.
    """
    indexed = updated = 0
    accounted = [0] * source_count
    for document, item in zip(documents, outcome.results, strict=True):
        if item is None:
            continue
        indexed += 1
        if next(iter(item.values())).get("result") == "updated":
            updated += 1
        _account(accounted, document)
    skipped = 0
    rejected: list[DeadLetter] = []
    for position, status, reason in outcome.failures:
        document = documents[position]
        if action == "create" and status == 409:
            skipped += 1
            _account(accounted, document)
        else:
            rejected.append(document_dead_letter(document, "bulk", reason))
    return BulkTally(
        indexed, updated, skipped, rejected, accounted, outcome.requests, outcome.retries, outcome.splits
    )

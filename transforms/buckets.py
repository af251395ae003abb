"""Records of a shuffle join travel in batches keyed by a hash bucket of their `_id` (its wire format).

Beam's per-element cost dominates a shuffle of small records, so the read step groups the
projected records of each source into `(bucket, (source, uri, [(doc_id, line, fields), ...]))`
elements, `bucket = crc32(doc_id) % BUCKETS_COUNT` (stable across processes, unlike `hash`).
CoGroupByKey then brings every record of a bucket, from every source, to one merge call,
which joins them by `_id` in memory. Buffers are flushed every `FLUSH_RECORDS` records, so a
reader holds a bounded number of records.
"""

from __future__ import annotations

import zlib
from typing import Any

BUCKETS = "buckets"
BUCKETS_COUNT = 512
FLUSH_RECORDS = 10_000


def bucket_of(doc_id: str) -> int:
    return zlib.crc32(doc_id.encode()) % BUCKETS_COUNT


class BucketBuffer:
    """Projected records of one source, gathered per bucket until there are enough to send."""

    def __init__(self, flush_records: int = FLUSH_RECORDS) -> None:
        self._flush_records = flush_records
        self._batches: dict[int, list[Any]] = {}
        self._size = 0

    def add(self, doc_id: str, line: int, fields: dict[str, Any]) -> None:
        self._batches.setdefault(bucket_of(doc_id), []).append((doc_id, line, fields))
        self._size += 1

    def add_row(self, row: tuple[Any, ...]) -> None:
        """Any row whose first item is its `_id`."""
        self._batches.setdefault(bucket_of(row[0]), []).append(row)
        self._size += 1

    @property
    def full(self) -> bool:
        return self._size >= self._flush_records

    def take(self) -> dict[int, list[Any]]:
        batches, self._batches, self._size = self._batches, {}, 0
        return batches

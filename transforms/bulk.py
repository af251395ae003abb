"""Batch documents into `_bulk` bodies and write them (the **batch + write** steps).

Pure parts: `encode_action` serializes one document once (action line + source line) and
`BulkBuffer` cuts bodies by document count and bytes. `WriteToOpenSearch` wraps them:
`_BulkWriteFn` warns of vectors in fields the mapping does not declare `knn_vector` (the
declared ones were checked at projection), buffers in `process`, sends full
bodies on a small thread pool (`bulk_concurrency` in flight per worker) through
`connectors.bulk_retry.send_with_retries` (retries, and splits after a 413 or a whole-request
400; the body size a 413 taught is kept for the rest of the worker's bodies), and turns every
rejected document into a `DeadLetter` with its reason. Metrics are only touched on the
bundle's own thread.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from connectors.bulk_retry import (
    DEFAULT_BULK_CONCURRENCY,
    BulkOutcome,
    RetryPolicy,
    WriterShared,
    send_with_retries,
)
from connectors.opensearch import BulkClient, KnnField, OpenSearchConfig
from transforms import progress
from transforms.types import DEAD_LETTERS, METRICS_NAMESPACE, DeadLetter, Document, accounted_counter
from transforms.vectors import unmapped_vector_fields

DEFAULT_BULK_SIZE = 500
_MAPPING_CHECK_DOCUMENTS = 100  # fields holding vectors outside the mapping show in the first documents
DEFAULT_BULK_BYTES = 10 * 1024 * 1024
BulkAction = Literal["index", "create"]
log = logging.getLogger("mlbatch")


@functools.cache
def _member_key(name: str) -> bytes:
    return orjson.dumps(name) + b":"


def encode_action(document: Document, action: BulkAction = "index") -> bytes:
    """The two NDJSON lines of an `index` (or `create`) action, each document serialized once.

    Built in one join: bytes values are JSON already (see `transforms.projection.to_wire`) and
    are copied in once, not re-encoded; other values are encoded with orjson.
    """
    meta = b"{}}\n" if document.doc_id is None else b'{"_id":' + orjson.dumps(document.doc_id) + b"}}\n"
    parts = [b'{"', action.encode(), b'":', meta, b"{"]
    for name, value in document.fields.items():
        parts += (_member_key(name), value if isinstance(value, bytes) else orjson.dumps(value), b",")
    if parts[-1] == b",":
        parts.pop()
    parts.append(b"}\n")
    return b"".join(parts)


class BulkBuffer:
    """Collects encoded actions and says when a body is full (by documents or bytes)."""

    def __init__(self, max_docs: int = DEFAULT_BULK_SIZE, max_bytes: int = DEFAULT_BULK_BYTES) -> None:
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self.documents: list[Document] = []
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, document: Document, encoded: bytes) -> None:
        self.documents.append(document)
        self._chunks.append(encoded)
        self._size += len(encoded)

    def would_overflow(self, encoded: bytes) -> bool:
        """True when adding `encoded` would pass the byte limit of a non-empty body."""
        return bool(self._chunks) and self._size + len(encoded) > self.max_bytes

    @property
    def full(self) -> bool:
        return len(self._chunks) >= self.max_docs or self._size >= self.max_bytes

    def take(self) -> tuple[list[bytes], list[Document]]:
        chunks, documents = self._chunks, self.documents
        self.documents, self._chunks, self._size = [], [], 0
        return chunks, documents

    def __len__(self) -> int:
        return len(self._chunks)


@dataclass(frozen=True)
class OpenSearchWriteConfig:
    """Where and how documents are written."""

    cluster: OpenSearchConfig
    index_name: str
    bulk_size: int = DEFAULT_BULK_SIZE
    bulk_bytes: int = DEFAULT_BULK_BYTES
    bulk_concurrency: int = DEFAULT_BULK_CONCURRENCY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    action: BulkAction = "index"
    knn_fields: dict[str, KnnField] = field(default_factory=dict)
    source_count: int = 1


def _document_dead_letter(document: Document, stage: str, reason: str) -> DeadLetter:
    return DeadLetter(stage, reason, document.origins, {"_id": document.doc_id, **document.fields})


def _already_exists(status: int, action: BulkAction) -> bool:
    return action == "create" and status == 409


class _BulkWriteFn(beam.DoFn):
    def __init__(self, config: OpenSearchWriteConfig) -> None:
        self._config = config
        self._counters = {
            name: Metrics.counter(METRICS_NAMESPACE, name)
            for name in (
                "indexed",
                "created",
                "updated",
                "skipped_existing",
                "bulk_rejected",
                "bulk_requests",
                "bulk_retries",
                "bulk_splits",
            )
        }
        self._accounted = [accounted_counter(source) for source in range(config.source_count)]

    def setup(self) -> None:
        self._client = BulkClient(self._config.cluster, self._config.index_name)
        self._pool = ThreadPoolExecutor(
            max_workers=self._config.bulk_concurrency, thread_name_prefix="mlbatch-bulk"
        )
        self._warned_fields: set[str] = set()
        self._mapping_checks_left = _MAPPING_CHECK_DOCUMENTS
        self._shared = WriterShared(self._config.bulk_bytes, on_retry=progress.RETRIES.add)
        self._reported_limit = self._config.bulk_bytes

    def start_bundle(self) -> None:
        self._buffer = BulkBuffer(self._config.bulk_size, self._config.bulk_bytes)
        self._in_flight: deque[tuple[list[Document], Future[BulkOutcome]]] = deque()

    def _account(self, documents: list[Document]) -> None:
        per_source = [0] * len(self._accounted)
        for document in documents:
            for origin in document.origins:
                per_source[origin.source] += 1
        for source, count in enumerate(per_source):
            if count:
                self._accounted[source].inc(count)

    def _warn_unmapped_vectors(self, document: Document) -> None:
        """Vectors of the first documents in fields the mapping does not declare `knn_vector`, once each.

        Fields it does declare were checked when their records were projected.
        """
        self._mapping_checks_left -= 1
        for name in unmapped_vector_fields(document.fields, self._config.knn_fields):
            if name not in self._warned_fields:
                self._warned_fields.add(name)
                log.warning("field %r holds vectors but is not a knn_vector field in the index mapping", name)

    def process(self, document: Document) -> Iterator[Any]:
        if self._mapping_checks_left:
            self._warn_unmapped_vectors(document)
        try:
            encoded = encode_action(document, self._config.action)
        except TypeError as error:
            yield TaggedOutput(
                DEAD_LETTERS, _document_dead_letter(document, "validate", f"not JSON: {error}")
            )
            return
        rejected: list[DeadLetter] = []
        self._buffer.max_bytes = self._shared.max_bytes
        if self._buffer.would_overflow(encoded):
            rejected += self._submit()
        self._buffer.add(document, encoded)
        if self._buffer.full:
            rejected += self._submit()
        for dead in rejected:
            yield TaggedOutput(DEAD_LETTERS, dead)

    def finish_bundle(self) -> Iterator[Any]:
        rejected = self._submit()
        while self._in_flight:
            rejected += self._collect_oldest()
        for dead in rejected:
            yield TaggedOutput(DEAD_LETTERS, GlobalWindows.windowed_value(dead))

    def _submit(self) -> list[DeadLetter]:
        """Send the buffered body; first wait for the oldest send if the pool is busy."""
        rejected: list[DeadLetter] = []
        if not len(self._buffer):
            return rejected
        while len(self._in_flight) >= self._config.bulk_concurrency:
            rejected += self._collect_oldest()
        chunks, documents = self._buffer.take()
        future = self._pool.submit(
            send_with_retries,
            chunks,
            self._client.send,
            self._config.retry,
            sleep=self._shared.stop.wait,
            shared=self._shared,
        )
        self._in_flight.append((documents, future))
        return rejected

    def _collect_oldest(self) -> list[DeadLetter]:
        documents, future = self._in_flight.popleft()
        outcome = future.result()
        self._counters["bulk_requests"].inc(outcome.requests)
        self._counters["bulk_retries"].inc(outcome.retries)
        self._counters["bulk_splits"].inc(outcome.splits)
        self._report_body_limit()
        rejected: list[DeadLetter] = []
        skipped: list[Document] = []
        for position, status, reason in outcome.failures:
            document = documents[position]
            if _already_exists(status, self._config.action):
                skipped.append(document)
                continue
            rejected.append(_document_dead_letter(document, "bulk", reason))
        written = [
            document for document, item in zip(documents, outcome.results, strict=True) if item is not None
        ]
        updated = sum(
            1
            for item in outcome.results
            if item is not None and next(iter(item.values())).get("result") == "updated"
        )
        self._account(written + skipped)
        self._counters["skipped_existing"].inc(len(skipped))
        self._counters["bulk_rejected"].inc(len(rejected))
        self._counters["indexed"].inc(len(written))
        self._counters["updated"].inc(updated)
        self._counters["created"].inc(len(written) - updated)
        progress.INDEXED.add(len(written))
        return rejected

    def _report_body_limit(self) -> None:
        if self._shared.max_bytes < self._reported_limit:
            self._reported_limit = self._shared.max_bytes
            log.warning(
                "the cluster refused a _bulk body as too large (HTTP 413); bodies are now cut at %d bytes",
                self._reported_limit,
            )

    def teardown(self) -> None:
        """Stop at once, also when the run ends early (an interrupt, a failure elsewhere): senders
        still backing off give up instead of retrying for up to the retry budget."""
        shared = getattr(self, "_shared", None)
        if shared is not None:
            shared.stop.set()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class WriteToOpenSearch(beam.PTransform):
    """Documents in, dead letters of rejected documents out (tagged `dead_letters`)."""

    def __init__(self, config: OpenSearchWriteConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, documents: beam.PCollection) -> beam.PCollection:
        results = documents | "BulkWrite" >> beam.ParDo(_BulkWriteFn(self._config)).with_outputs(
            DEAD_LETTERS, main="written"
        )
        return results[DEAD_LETTERS]

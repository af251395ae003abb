"""Write documents to OpenSearch with `_bulk` (the **batch + write** steps, on Beam).

`WriteToOpenSearch` wraps the pure parts: `transforms.bulk_body` (serialize each document
once, cut bodies by documents and bytes) and `transforms.bulk_tally` (what a batch's answer
did to its documents). Its elements are `Document`s or, from the hot paths, `EncodedBlock`s of
documents serialized already (`transforms.encoded`). `_BulkWriteFn` warns of vectors in
fields the mapping does not declare `knn_vector` (the declared ones were checked at
projection), buffers in `process`, sends full
bodies on a small thread pool (`bulk_concurrency` in flight per worker) through
`connectors.opensearch.bulk_retry.send_with_retries` (retries, and splits after a 413 or a
whole-request 400; the body size a 413 taught is kept for the rest of the worker's bodies),
and adds each batch's tally to the counters; rejected documents leave as `DeadLetter`s.
Metrics are only touched on the bundle's own thread.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from connectors.opensearch.bulk_client import BulkClient
from connectors.opensearch.bulk_retry import (
    DEFAULT_BULK_CONCURRENCY,
    BulkOutcome,
    WriterShared,
    send_with_retries,
)
from connectors.opensearch.config import OpenSearchConfig
from connectors.opensearch.mapping import KnnField
from connectors.retry import RetryPolicy
from transforms import progress
from transforms.bulk_body import (
    DEFAULT_BULK_BYTES,
    DEFAULT_BULK_SIZE,
    BulkAction,
    BulkBuffer,
    Sent,
)
from transforms.bulk_tally import tally_bulk_outcome
from transforms.counters import CounterSet
from transforms.encoded import EncodedBlock, action_fields, finished_action
from transforms.types import DEAD_LETTERS, DeadLetter, Document
from transforms.vectors import unmapped_vector_fields

_MAPPING_CHECK_DOCUMENTS = 100  # fields holding vectors outside the mapping show in the first documents
log = logging.getLogger("mlbatch")


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


class _BulkWriteFn(beam.DoFn):
    def __init__(self, config: OpenSearchWriteConfig) -> None:
        self._config = config
        self._counters = CounterSet()

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
        self._in_flight: deque[tuple[list[bytes], list[Sent], Future[BulkOutcome]]] = deque()

    def _warn_unmapped_vectors(self, encoded: bytes) -> None:
        """Vectors of the first documents in fields the mapping does not declare `knn_vector`, once each.

        Fields it does declare were checked when their records were projected.
        """
        self._mapping_checks_left -= 1
        for name in unmapped_vector_fields(action_fields(encoded), self._config.knn_fields):
            if name not in self._warned_fields:
                self._warned_fields.add(name)
                log.warning("field %r holds vectors but is not a knn_vector field in the index mapping", name)

    def process(self, element: Document | EncodedBlock) -> Iterator[Any]:
        if type(element) is EncodedBlock:
            actions = zip(element.doc_ids, element.origins, element.actions, strict=True)
        else:
            encoded = finished_action(element, self._config.action)
            if encoded.__class__ is DeadLetter:
                yield TaggedOutput(DEAD_LETTERS, encoded)
                return
            actions = iter([(element.doc_id, element.origins, encoded)])
        rejected: list[DeadLetter] = []
        buffer, shared = self._buffer, self._shared
        for doc_id, origins, encoded in actions:
            if self._mapping_checks_left:
                self._warn_unmapped_vectors(encoded)
            buffer.max_bytes = shared.max_bytes  # a 413 answer to an earlier body may have lowered it
            if buffer.would_overflow(encoded):
                rejected += self._submit()
            buffer.add(doc_id, origins, encoded)
            if buffer.full:
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
        chunks, sent = self._buffer.take()
        future = self._pool.submit(
            send_with_retries,
            chunks,
            self._client.send,
            self._config.retry,
            sleep=self._shared.stop.wait,
            shared=self._shared,
        )
        self._in_flight.append((chunks, sent, future))
        return rejected

    def _collect_oldest(self) -> list[DeadLetter]:
        chunks, sent, future = self._in_flight.popleft()
        outcome = future.result()
        tally = tally_bulk_outcome(sent, chunks, outcome, self._config.action, self._config.source_count)
        self._counters.add(tally.counts())
        progress.INDEXED.add(tally.indexed)
        self._report_body_limit()
        return tally.rejected

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

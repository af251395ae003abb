"""Batch documents into `_bulk` bodies and write them (the **batch + write** steps).

Pure parts: `encode_index_action` serializes one document once (action line + source line)
and `BulkBuffer` cuts bodies by document count and bytes. `WriteToOpenSearch` wraps them:
`_BulkWriteFn` buffers in `process`, flushes in `finish_bundle`, and turns each rejected
item into a `DeadLetter` with the server's `error.type` and `error.reason`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from connectors.opensearch import BulkClient, OpenSearchConfig
from transforms import progress
from transforms.types import DEAD_LETTERS, METRICS_NAMESPACE, DeadLetter, Document

DEFAULT_BULK_SIZE = 500
DEFAULT_BULK_BYTES = 10 * 1024 * 1024
_AUTO_ID_ACTION = b'{"index":{}}\n'


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def encode_index_action(document: Document) -> bytes:
    """The two NDJSON lines of an `index` action for `document`; TypeError if it is not JSON-able.

    Parquet decimals become JSON numbers; other non-JSON values (e.g. binary columns) raise.
    """
    if document.doc_id is None:
        action = _AUTO_ID_ACTION
    else:
        action = b'{"index":{"_id":' + orjson.dumps(document.doc_id) + b"}}\n"
    return action + orjson.dumps(document.fields, default=_json_default) + b"\n"


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

    def take(self) -> tuple[bytes, list[Document]]:
        body, documents = b"".join(self._chunks), self.documents
        self.documents, self._chunks, self._size = [], [], 0
        return body, documents

    def __len__(self) -> int:
        return len(self._chunks)


def item_failure(item: dict[str, Any]) -> str | None:
    """The failure reason of one bulk item result, or None if it succeeded."""
    result = next(iter(item.values()))
    if 200 <= result.get("status", 500) < 300:
        return None
    error = result.get("error") or {}
    if isinstance(error, dict):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        caused_by = error.get("caused_by")
        if isinstance(caused_by, dict) and caused_by.get("reason"):
            reason += f" (caused by {caused_by.get('type', 'error')}: {caused_by['reason']})"
        return f"HTTP {result.get('status')} {reason}"
    return f"HTTP {result.get('status')} {error}"


@dataclass(frozen=True)
class OpenSearchWriteConfig:
    """Where and how documents are written."""

    cluster: OpenSearchConfig
    index_name: str
    bulk_size: int = DEFAULT_BULK_SIZE
    bulk_bytes: int = DEFAULT_BULK_BYTES


def _document_dead_letter(document: Document, stage: str, reason: str) -> DeadLetter:
    origin = document.origins[0] if document.origins else None
    return DeadLetter(
        stage,
        reason,
        origin.uri if origin else "",
        origin.line if origin else 0,
        {"_id": document.doc_id, **document.fields},
    )


class _BulkWriteFn(beam.DoFn):
    def __init__(self, config: OpenSearchWriteConfig) -> None:
        self._config = config
        self._indexed = Metrics.counter(METRICS_NAMESPACE, "indexed")
        self._created = Metrics.counter(METRICS_NAMESPACE, "created")
        self._updated = Metrics.counter(METRICS_NAMESPACE, "updated")
        self._rejected = Metrics.counter(METRICS_NAMESPACE, "bulk_rejected")
        self._requests = Metrics.counter(METRICS_NAMESPACE, "bulk_requests")

    def setup(self) -> None:
        self._client = BulkClient(self._config.cluster, self._config.index_name)

    def start_bundle(self) -> None:
        self._buffer = BulkBuffer(self._config.bulk_size, self._config.bulk_bytes)

    def process(self, document: Document) -> Iterator[Any]:
        try:
            encoded = encode_index_action(document)
        except TypeError as error:
            yield TaggedOutput(
                DEAD_LETTERS, _document_dead_letter(document, "validate", f"not JSON: {error}")
            )
            return
        rejected: list[DeadLetter] = []
        if self._buffer.would_overflow(encoded):
            rejected = self._flush()
        self._buffer.add(document, encoded)
        if self._buffer.full:
            rejected += self._flush()
        for dead in rejected:
            yield TaggedOutput(DEAD_LETTERS, dead)

    def finish_bundle(self) -> Iterator[Any]:
        for dead in self._flush():
            yield TaggedOutput(DEAD_LETTERS, GlobalWindows.windowed_value(dead))

    def _flush(self) -> list[DeadLetter]:
        rejected: list[DeadLetter] = []
        if not len(self._buffer):
            return rejected
        body, documents = self._buffer.take()
        items = self._client.send(body)
        self._requests.inc()
        succeeded = 0
        for document, item in zip(documents, items, strict=True):
            reason = item_failure(item)
            if reason is None:
                succeeded += 1
                result = next(iter(item.values())).get("result")
                (self._updated if result == "updated" else self._created).inc()
                continue
            self._rejected.inc()
            rejected.append(_document_dead_letter(document, "bulk", reason))
        self._indexed.inc(succeeded)
        progress.INDEXED.add(succeeded)
        return rejected

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class WriteToOpenSearch(beam.PTransform):
    """Documents in, dead letters of rejected items out (tagged `dead_letters`)."""

    def __init__(self, config: OpenSearchWriteConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, documents: beam.PCollection) -> beam.PCollection:
        results = documents | "BulkWrite" >> beam.ParDo(_BulkWriteFn(self._config)).with_outputs(
            DEAD_LETTERS, main="written"
        )
        return results[DEAD_LETTERS]

"""Serialize documents into `_bulk` bodies (the **batch** step, pure: no Beam, no I/O).

`encode_action` serializes one document once (action line + source line) and `BulkBuffer`
cuts bodies by document count and bytes, keeping each action's id and origins for the tally
(`transforms.bulk_tally`). `transforms.bulk.WriteToOpenSearch` sends them.
"""

from __future__ import annotations

import functools
from typing import Literal

import orjson

from transforms.types import Document, Locator

DEFAULT_BULK_SIZE = 500
DEFAULT_BULK_BYTES = 10 * 1024 * 1024
BulkAction = Literal["index", "create"]
Sent = tuple[str | None, tuple[Locator, ...]]  # (document id, the records it came from) of one action


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
        self._sent: list[Sent] = []
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, doc_id: str | None, origins: tuple[Locator, ...], encoded: bytes) -> None:
        self._sent.append((doc_id, origins))
        self._chunks.append(encoded)
        self._size += len(encoded)

    def would_overflow(self, encoded: bytes) -> bool:
        """True when adding `encoded` would pass the byte limit of a non-empty body."""
        return bool(self._chunks) and self._size + len(encoded) > self.max_bytes

    @property
    def full(self) -> bool:
        return len(self._chunks) >= self.max_docs or self._size >= self.max_bytes

    def take(self) -> tuple[list[bytes], list[Sent]]:
        chunks, sent = self._chunks, self._sent
        self._sent, self._chunks, self._size = [], [], 0
        return chunks, sent

    def __len__(self) -> int:
        return len(self._chunks)

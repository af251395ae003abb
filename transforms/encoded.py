"""Blocks of documents already serialized as `_bulk` actions (between the **join** and **write** steps, pure).

A Beam element costs the runner the same whatever it holds, so the hot paths (the broadcast
join, a single source, the units of a split join, the shuffle join's merge) hand the write step
`EncodedBlock`s of up to `BLOCK_DOCUMENTS` documents instead of one `Document` each: every
document serialized once where it was made (`transforms.bulk_body.encode_action`), with its id
and the records it came from, which is all the write step needs to send it and account for
it. `finished_action` is where every document is finished, on these paths and the others
alike: its chunk lists zipped (`transforms.chunks`), then encoded. A document the cluster
rejects is read back from its own action for the dead-letter queue (`action_fields`), so the
fields never travel twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson

from transforms.bulk_body import BulkAction, encode_action
from transforms.chunks import ChunkError, has_chunks, zip_chunks
from transforms.types import DeadLetter, Document, Locator

BLOCK_DOCUMENTS = 1000


class EncodedBlock(NamedTuple):
    """Documents ready to send, in order: `actions[i]` is the `_bulk` action of document `doc_ids[i]`,
    made of the records `origins[i]`."""

    doc_ids: list[str | None]
    origins: list[tuple[Locator, ...]]
    actions: list[bytes]


def action_fields(action: bytes) -> dict[str, Any]:
    """The document of an encoded action (its second line), as JSON values."""
    return orjson.loads(action[action.index(b"\n") + 1 :])


def unencodable(document: Document, error: TypeError) -> DeadLetter:
    """The dead letter of a document whose values are not JSON."""
    raw = {"_id": document.doc_id, **document.fields}
    return DeadLetter("validate", f"not JSON: {error}", document.origins, raw)


def chunk_dead_letter(document: Document, error: ChunkError) -> DeadLetter:
    """The dead letter of a document whose chunk lists cannot be zipped."""
    raw = {"_id": document.doc_id, **document.fields}
    return DeadLetter("map", str(error), document.origins, raw)


def finished_action(document: Document, action: BulkAction) -> bytes | DeadLetter:
    """The `_bulk` action of `document` with its chunk lists zipped, or its dead letter when
    they cannot be zipped or a value is not JSON."""
    try:
        if has_chunks(document.fields):
            document = document._replace(fields=zip_chunks(document.fields))
        return encode_action(document, action)
    except ChunkError as error:
        return chunk_dead_letter(document, error)
    except TypeError as error:
        return unencodable(document, error)


class BlockBuilder:
    """Encodes documents into blocks of at most `size`; a document that cannot be encoded is
    returned as a dead letter by `add`."""

    def __init__(self, action: BulkAction, size: int | None = None) -> None:
        self._action = action
        self._size = size or BLOCK_DOCUMENTS  # read when used: tests make blocks small
        self._ids: list[str | None] = []
        self._origins: list[tuple[Locator, ...]] = []
        self._actions: list[bytes] = []

    def add(self, document: Document) -> DeadLetter | None:
        encoded = finished_action(document, self._action)
        if encoded.__class__ is DeadLetter:
            return encoded
        self._ids.append(document.doc_id)
        self._origins.append(document.origins)
        self._actions.append(encoded)
        return None

    @property
    def full(self) -> bool:
        return len(self._actions) >= self._size

    def take(self) -> EncodedBlock | None:
        """The block so far (None when empty), and start a new one."""
        if not self._actions:
            return None
        block = EncodedBlock(self._ids, self._origins, self._actions)
        self._ids, self._origins, self._actions = [], [], []
        return block


def encoded_blocks(items: Iterable[Any], action: BulkAction, size: int | None = None) -> Iterator[Any]:
    """`items` with their `Document`s gathered into `EncodedBlock`s (in order); every other item
    (dead letters, claims, …) passes through at once, and the documents that cannot be encoded
    leave as dead letters."""
    builder = BlockBuilder(action, size)
    for item in items:
        if type(item) is not Document:
            yield item
            continue
        rejected = builder.add(item)
        if rejected is not None:
            yield rejected
        elif builder.full:
            yield builder.take()
    block = builder.take()
    if block is not None:
        yield block

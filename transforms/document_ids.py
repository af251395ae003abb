"""Document ids (the **map** step, pure): the `_id` a record's path gives, checked against
OpenSearch's limit, or one derived from where the record is when the request has no `_id`.

Without an `_id` in the `field_map`, ML Commons lets the cluster assign ids, so a retried
`_bulk` request or a re-run writes the same records again. mlbatch derives the id from the
record's file and line instead (`derived_document_id`): a retry or a re-run of the same
files overwrites the same documents. Such a source's files are never read in byte ranges
(`pipelines.plan.split_reads`), whose records know their byte offset but not their line, so
the ids do not depend on how files are split. `--cluster-ids` keeps ML Commons' behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import replace
from typing import Any

import orjson

from transforms.jsonpath import MISSING
from transforms.types import IngestPlan

MAX_ID_BYTES = 512  # OpenSearch refuses a whole _bulk request holding a longer _id
_SHOWN_ID_CHARS = 80
_SURELY_SHORT_CHARS = MAX_ID_BYTES // 4  # a string of no more characters has no more bytes in UTF-8


class DocumentIdError(ValueError):
    """A record's `_id` value cannot be a document id; the message says why."""


def document_id(value: Any, expression: str) -> str:
    """The `_id` value as the document id string (numbers are stringified, as OpenSearch does)."""
    if value.__class__ is str and 0 < len(value) <= _SURELY_SHORT_CHARS:
        return value
    if value.__class__ is int and len(text := str(value)) <= MAX_ID_BYTES:
        return text
    if value is MISSING or value is None:
        raise DocumentIdError(f"missing _id: {expression} matched nothing")
    if isinstance(value, bool | dict | list):
        raise DocumentIdError(
            f"invalid _id: {expression} is {orjson.dumps(value).decode()[:_SHOWN_ID_CHARS]}"
        )
    text = value if isinstance(value, str) else str(value)
    if not text:
        raise DocumentIdError(f"invalid _id: {expression} is an empty string")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise DocumentIdError(
            f"invalid _id: {expression} is {size} bytes long; OpenSearch allows at most {MAX_ID_BYTES} "
            f"(starts {text[:_SHOWN_ID_CHARS]!r})"
        )
    return text


def canonical_uri(uri: str, source_type: str) -> str:
    """The name a file's records are identified by: the absolute path of a local file (so a
    re-run from another directory finds the same ids), an S3 URI or OpenAI file id as given."""
    return os.path.abspath(uri) if source_type == "local" else uri


def derived_document_id(canonical: str, position: int) -> str:
    """A 20-character id, stable across runs, for the record at `position` (line or row) of the
    file named `canonical` (see `canonical_uri`)."""
    digest = hashlib.sha256(f"{canonical}\n{position}".encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest[:15]).decode()


def with_cluster_assigned_ids(plan: IngestPlan) -> IngestPlan:
    """`plan` with ids left to the cluster for sources that have no `_id` path (ML Commons'
    behaviour: a retried request or a re-run writes those records again)."""
    return replace(plan, sources=tuple(replace(source, cluster_ids=True) for source in plan.sources))

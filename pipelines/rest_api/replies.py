"""Answers the REST handlers share (pure): a task record as shown, OpenSearch's answer to a delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HIDDEN_FIELDS = ("owner",)


def public_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A task record as the API shows it (without what only the service uses)."""
    return {key: value for key, value in record.items() if key not in HIDDEN_FIELDS}


def deleted_answer(index: str, object_id: str) -> dict[str, Any]:
    """OpenSearch's answer to a document delete."""
    return {
        "_index": index,
        "_id": object_id,
        "_version": 2,
        "result": "deleted",
        "_shards": {"total": 1, "successful": 1, "failed": 0},
        "_seq_no": 0,
        "_primary_term": 1,
    }

"""The ML Commons `_batch_ingestion` request body, parsed and checked (the **plan** step's input).

`parse_request` accepts the exact body of `POST /_plugins/_ml/_batch_ingestion` and returns
an `IngestRequest`, or raises `RequestError` with one line naming the offending field.
Where ML Commons has its own message for a mistake we use it word for word.
Field-map semantics (paths, `source[N]`, `_id`) are checked by `transforms.plan`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from connectors.index_names import index_name_problem

SOURCE_TYPES = {"s3": "s3", "openai": "openAI", "local": "local"}
KNOWN_FIELDS = ("index_name", "field_map", "ingest_fields", "credential", "data_source", "connector_id")
_S3_URI = re.compile(r"^s3://([a-zA-Z0-9.-]+)(/.*)?$")


NO_DATA_SOURCES = (
    "No data sources were provided for ingestion. Please specify at least one valid data source to proceed."
)


class RequestError(ValueError):
    """The request body is wrong; the message names the field and what is wrong."""


@dataclass(frozen=True)
class IngestRequest:
    """A checked `_batch_ingestion` body."""

    index_name: str
    field_map: dict[str, Any]
    ingest_fields: tuple[str, ...]
    source_type: str
    sources: tuple[str, ...]
    credential: dict[str, str] = field(default_factory=dict, repr=False)
    connector_id: str | None = None


def _require_string_list(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RequestError(f"{name}: must be a list of non-empty strings")
    return tuple(value)


def _check_sources(source_type: str, sources: tuple[str, ...], credential: dict[str, str]) -> None:
    if source_type == "s3":
        if not sources:
            raise RequestError("The batch ingest input s3Uris is empty")
        invalid = [uri for uri in sources if not _S3_URI.match(uri)]
        if invalid:
            raise RequestError(
                f"The following batch ingest input S3 URIs are invalid: [{', '.join(invalid)}]"
            )
        return
    if not sources:
        raise RequestError(NO_DATA_SOURCES)
    if source_type == "openAI":
        for position, file_id in enumerate(sources):
            if not file_id.startswith("file-") or file_id == "file-":
                raise RequestError(
                    f"data_source.source[{position}]: {file_id!r} is not an OpenAI file ID (file-...)"
                )
        if not credential.get("openAI_key") and not os.environ.get("OPENAI_API_KEY"):
            raise RequestError(
                "credential.openAI_key: missing; OpenAI sources need an API key "
                "(or set OPENAI_API_KEY in the environment)"
            )


def _parse_credential(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise RequestError("credential: must be an object of string values")
    return dict(value)


def parse_request(body: Any) -> IngestRequest:
    """Check a decoded request body and return it typed; raise RequestError on the first problem."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object")
    unknown = sorted(set(body) - set(KNOWN_FIELDS))
    if unknown:
        raise RequestError(f"request body: unknown field {unknown[0]!r} (known: {', '.join(KNOWN_FIELDS)})")

    index_name = body.get("index_name")
    if index_name is None:
        raise RequestError(
            "The index name for data ingestion is missing. Please provide a valid index name to proceed."
        )
    if not isinstance(index_name, str) or not index_name.strip():
        raise RequestError("index_name: must be a non-empty string")
    problem = index_name_problem(index_name)
    if problem:
        raise RequestError(f"index_name: {index_name!r} is not a valid index name: {problem}")

    data_source = body.get("data_source")
    if data_source is None:
        raise RequestError(NO_DATA_SOURCES)
    if not isinstance(data_source, dict) or not data_source:
        raise RequestError("data_source: must be an object with 'type' and 'source'")
    if data_source.get("type") is None or data_source.get("source") is None:
        raise RequestError("The batch ingest input data source is missing data type or source")
    raw_type = data_source["type"]
    source_type = SOURCE_TYPES.get(raw_type.lower()) if isinstance(raw_type, str) else None
    if source_type is None:
        raise RequestError(f"data_source.type: unknown type {raw_type!r} (expected one of s3, openAI, local)")
    unknown_keys = sorted(set(data_source) - {"type", "source"})
    if unknown_keys:
        raise RequestError(f"data_source: unknown field {unknown_keys[0]!r} (known: type, source)")
    sources = _require_string_list(data_source["source"], "data_source.source")

    credential = _parse_credential(body.get("credential"))
    connector_id = body.get("connector_id")
    if connector_id is not None and not credential:
        raise RequestError(
            "connector_id: reading credentials from a connector is not supported yet; "
            "put them in the request's 'credential' field"
        )
    _check_sources(source_type, sources, credential)

    field_map = body.get("field_map") or {}
    if not isinstance(field_map, dict):
        raise RequestError("field_map: must be an object of field name -> JSONPath")
    ingest_fields = _require_string_list(body.get("ingest_fields") or [], "ingest_fields")
    if not [name for name in field_map if name != "_id"] and not ingest_fields:
        raise RequestError("field_map: nothing to ingest; map at least one field or list ingest_fields")

    return IngestRequest(
        index_name=index_name,
        field_map=dict(field_map),
        ingest_fields=ingest_fields,
        source_type=source_type,
        sources=sources,
        credential=credential,
        connector_id=connector_id if isinstance(connector_id, str) else None,
    )

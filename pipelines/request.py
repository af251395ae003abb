"""The ML Commons `_batch_ingestion` request body, parsed and checked (the **plan** step's input).

`parse_request` accepts the exact body of `POST /_plugins/_ml/_batch_ingestion` and returns
an `IngestRequest`, or raises `RequestError` with one line naming the offending field.
Where ML Commons has its own message for a mistake we use it word for word. Values quoted
in a message are cut to a few dozen characters (`transforms.echo`). Fields ML Commons does
not know are ignored with a warning, as ML Commons ignores them. Sizes are capped:
`MAX_FIELDS` fields to ingest (OpenSearch's default field limit per index), `MAX_SOURCES`
sources of at most `MAX_SOURCE_CHARS` characters each.
Field-map semantics (paths, `source[N]`, `_id`) are checked by `pipelines.plan`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.index_names import index_name_problem
from transforms.echo import cut, echo, json_type

SOURCE_TYPES = {"s3": "s3", "openai": "openAI", "local": "local"}
KNOWN_FIELDS = ("index_name", "field_map", "ingest_fields", "credential", "data_source", "connector_id")
_S3_URI = re.compile(r"s3://([a-zA-Z0-9.-]+)(/.*)?")
MAX_FIELDS = 1000
MAX_SOURCES = 1000
MAX_SOURCE_CHARS = 4096
_MAX_LISTED = 3
log = logging.getLogger("mlbatch")

EMPTY_BODY = "Batch Ingestion request has empty body"
MISSING_INDEX_NAME = (
    "The index name for data ingestion is missing. Please provide a valid index name to proceed."
)
NO_DATA_SOURCES = (
    "No data sources were provided for ingestion. Please specify at least one valid data source to proceed."
)
EMPTY_DATA_SOURCE = "The batch ingest input data source cannot be null"
MISSING_TYPE_OR_SOURCE = "The batch ingest input data source is missing data type or source"


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


def decode_body(raw: bytes) -> Any:
    """A request body from the bytes of its file: RequestError with ML Commons' message when it is
    empty (or only whitespace), and naming the problem when it is not JSON."""
    if not raw.strip():
        raise RequestError(EMPTY_BODY)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError(f"request body: not valid JSON ({cut(str(error))})") from None


def _require_string_list(value: Any, name: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RequestError(f"{name}: must be a list of non-empty strings")
    if len(value) > limit:
        raise RequestError(f"{name}: has {len(value)} entries; at most {limit} are supported")
    return tuple(value)


def _listed(values: list[str]) -> str:
    """Values for an ML Commons `[a, b]` list message, each cut, at most `_MAX_LISTED` of them."""
    shown = [cut(value) for value in values[:_MAX_LISTED]]
    if len(values) > _MAX_LISTED:
        shown.append(f"… {len(values) - _MAX_LISTED} more")
    return "[" + ", ".join(shown) + "]"


def _check_sources(source_type: str, sources: tuple[str, ...], credential: dict[str, str]) -> None:
    if source_type == "s3":
        if not sources:
            raise RequestError("The batch ingest input s3Uris is empty")
        invalid = [uri for uri in sources if not _S3_URI.fullmatch(uri)]
        if invalid:
            raise RequestError(f"The following batch ingest input S3 URIs are invalid: {_listed(invalid)}")
    if not sources:
        raise RequestError(NO_DATA_SOURCES)
    for position, source in enumerate(sources):
        if len(source) > MAX_SOURCE_CHARS:
            raise RequestError(
                f"data_source.source[{position}]: is {len(source)} characters long; "
                f"at most {MAX_SOURCE_CHARS} are supported"
            )
    if source_type == "openAI":
        for position, file_id in enumerate(sources):
            if not file_id.startswith("file-") or file_id == "file-":
                raise RequestError(
                    f"data_source.source[{position}]: {echo(file_id)} is not an OpenAI file ID (file-...)"
                )
        if not credential.get("openAI_key") and not os.environ.get("OPENAI_API_KEY"):
            raise RequestError(
                "credential.openAI_key: missing; OpenAI sources need an API key "
                "(or set OPENAI_API_KEY in the environment)"
            )


def _parse_credential(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise RequestError("credential: must be an object of string values")
    return dict(value)


def _warn_unknown(where: str, fields: dict[str, Any], known: tuple[str, ...]) -> None:
    """Log the fields ML Commons would skip (it ignores unknown fields; so do we, but say so)."""
    unknown = sorted(set(fields) - set(known))
    if unknown:
        names = ", ".join(echo(name) for name in unknown[:_MAX_LISTED])
        more = f" and {len(unknown) - _MAX_LISTED} more" if len(unknown) > _MAX_LISTED else ""
        log.warning("%s: ignoring unknown field(s) %s%s (known: %s)", where, names, more, ", ".join(known))


def _index_name(value: Any) -> str:
    if value is None:
        raise RequestError(MISSING_INDEX_NAME)
    if not isinstance(value, str) or not value.strip():
        raise RequestError("index_name: must be a non-empty string")
    problem = index_name_problem(value)
    if problem:
        raise RequestError(f"index_name: {echo(value)} is not a valid index name: {problem}")
    return value


def _data_source(value: Any) -> tuple[str, tuple[str, ...]]:
    """The source type and the sources of `data_source`, in ML Commons' order of checks."""
    if value is None:
        raise RequestError(NO_DATA_SOURCES)
    if not isinstance(value, dict):
        raise RequestError(f"data_source: must be an object with 'type' and 'source', not {json_type(value)}")
    if not value:
        raise RequestError(EMPTY_DATA_SOURCE)
    if value.get("type") is None or value.get("source") is None:
        raise RequestError(MISSING_TYPE_OR_SOURCE)
    raw_type = value["type"]
    if not isinstance(raw_type, str):
        raise RequestError(
            f"data_source.type: must be a string (s3, openAI or local), not {json_type(raw_type)}"
        )
    source_type = SOURCE_TYPES.get(raw_type.lower())
    if source_type is None:
        raise RequestError(
            f"data_source.type: unknown type {echo(raw_type)} (expected one of s3, openAI, local)"
        )
    _warn_unknown("data_source", value, ("type", "source"))
    return source_type, _require_string_list(value["source"], "data_source.source", MAX_SOURCES)


def _connector_id(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise RequestError(f"connector_id: must be a non-empty string, not {json_type(value)}")
    return value


def _field_map(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"field_map: must be an object of field name -> JSONPath, not {json_type(value)}")
    return dict(value)


def parse_request(body: Any) -> IngestRequest:
    """Check a decoded request body and return it typed; raise RequestError on the first problem."""
    if not isinstance(body, dict):
        raise RequestError("request body: must be a JSON object")
    _warn_unknown("request body", body, KNOWN_FIELDS)
    index_name = _index_name(body.get("index_name"))
    source_type, sources = _data_source(body.get("data_source"))

    credential = _parse_credential(body.get("credential"))
    connector_id = _connector_id(body.get("connector_id"))
    if connector_id is not None and not credential:
        raise RequestError(
            "connector_id: this run cannot read the connector store; put the credential in the request's "
            "'credential' field (mlbatch ingest and mlbatch serve-api read connectors stored by serve-api)"
        )
    _check_sources(source_type, sources, credential)

    field_map = _field_map(body.get("field_map"))
    raw_ingest_fields = body.get("ingest_fields")
    ingest_fields = _require_string_list(
        [] if raw_ingest_fields is None else raw_ingest_fields, "ingest_fields", MAX_FIELDS
    )
    if len(field_map) + len(ingest_fields) > MAX_FIELDS:
        raise RequestError(
            f"field_map: {len(field_map)} fields and {len(ingest_fields)} ingest_fields; "
            f"at most {MAX_FIELDS} together are supported"
        )
    if not [name for name in field_map if name != "_id"] and not ingest_fields:
        raise RequestError("field_map: nothing to ingest; map at least one field or list ingest_fields")

    return IngestRequest(
        index_name=index_name,
        field_map=field_map,
        ingest_fields=ingest_fields,
        source_type=source_type,
        sources=sources,
        credential=credential,
        connector_id=connector_id,
    )

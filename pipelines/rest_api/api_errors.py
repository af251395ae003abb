"""Errors of the REST API as ML Commons answers them: an HTTP status and OpenSearch's error body.

Handlers raise `ApiError(status, kind, reason)`; the service turns it into
`{"error": {"root_cause": [{"type", "reason"}], "type", "reason"}, "status"}`. The `kind`s are
those ML Commons' exceptions carry: `status_exception` (OpenSearchStatusException, the usual
one, with its status), `illegal_argument_exception` (400), `parse_exception` for bodies that are
not JSON, `exception` (500) where ML Commons throws a plain one.
"""

from __future__ import annotations

from typing import Any

import orjson

from connectors.local.http_server import Reply, opensearch_error
from transforms.echo import cut

STATUS = "status_exception"
ILLEGAL_ARGUMENT = "illegal_argument_exception"
MAX_REASON_CHARS = 1000


class ApiError(Exception):
    """A request the API refuses: `status` and OpenSearch's exception `kind`, `reason` for people."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def reply(self) -> Reply:
        return opensearch_error(self.status, self.kind, cut(self.reason, MAX_REASON_CHARS))


def bad_request(reason: str) -> ApiError:
    """A 400 for a request the caller got wrong."""
    return ApiError(400, ILLEGAL_ARGUMENT, reason)


def not_found(reason: str) -> ApiError:
    """A 404, as ML Commons answers an unknown id (`status_exception`)."""
    return ApiError(404, STATUS, reason)


def internal_error(reason: str) -> ApiError:
    """A 500 whose reason says what is wrong on the service's side (a master key that opens nothing, …)."""
    return ApiError(500, "exception", reason)


def conflict(reason: str) -> ApiError:
    """A 409: the object is in use."""
    return ApiError(409, STATUS, reason)


def as_object(body: Any, what: str) -> dict[str, Any]:
    """`body` if it is a JSON object, else a 400 naming `what`."""
    if not isinstance(body, dict):
        raise bad_request(f"{what}: the body must be a JSON object")
    return body


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    """A body that must be a JSON object: OpenSearch's 400 `parse_exception` when it is not."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "parse_exception", f"{what}: request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "parse_exception", f"{what}: request body must be a JSON object")
    return body

"""Errors of the REST API as ML Commons answers them: an HTTP status and OpenSearch's error body.

Handlers raise `ApiError(status, kind, reason)`; the service turns it into
`{"error": {"root_cause": [{"type", "reason"}], "type", "reason"}, "status"}`. The `kind`s are
those ML Commons' exceptions carry: `status_exception` (OpenSearchStatusException, the usual
one, with its status), `illegal_argument_exception` (400), `resource_not_found_exception` (404),
`parse_exception` / `json_parse_exception` for bodies that are not JSON.
"""

from __future__ import annotations

from typing import Any

from connectors.local.http_server import Reply, opensearch_error
from transforms.echo import cut

STATUS = "status_exception"
ILLEGAL_ARGUMENT = "illegal_argument_exception"
NOT_FOUND = "resource_not_found_exception"
MAX_REASON_CHARS = 1000


class ApiError(Exception):
    """A request the API refuses: `status` and OpenSearch's exception `kind`, `reason` for people."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def reply(self) -> Reply:
        return opensearch_error(self.status, self.kind, cut(self.reason, MAX_REASON_CHARS))


def bad_request(reason: str) -> ApiError:
    return ApiError(400, ILLEGAL_ARGUMENT, reason)


def not_found(reason: str) -> ApiError:
    return ApiError(404, STATUS, reason)


def internal_error(reason: str) -> ApiError:
    """A 500 whose reason says what is wrong on the service's side (a master key that opens nothing, …)."""
    return ApiError(500, "exception", reason)


def conflict(reason: str) -> ApiError:
    return ApiError(409, STATUS, reason)


def as_object(body: Any, what: str) -> dict[str, Any]:
    """`body` if it is a JSON object, else a 400 naming `what`."""
    if not isinstance(body, dict):
        raise bad_request(f"{what}: the body must be a JSON object")
    return body

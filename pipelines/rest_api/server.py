"""The HTTP front of `mlbatch serve-api`: who may call, how big a body may be, one log line per answer.

`ApiServer` is a `JsonHttpServer` (waitress: bounded threads, idle connections closed, bodies
over `max_body_bytes` answered 413) in front of a service's `handle` (`MlService.handle`). With
`credentials` every request must carry one of them (`pipelines.rest_api.auth`), else 401 with the
security plugin's error body and a `WWW-Authenticate` challenge, checked before anything else: the
method, the body's size or its gzip encoding. Every answer, waitress's own (400, 413) and 500s
included, is logged as `127.0.0.1 POST /_plugins/_ml/_batch_ingestion 200 12 ms` — the client, the
method, the path without its query, the status and the time: never a body, a query string or a header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from email.message import Message
from typing import Any, Protocol
from urllib.parse import parse_qsl

from connectors.local.http_server import JsonHttpServer, Reply, request_path
from pipelines.rest_api.auth import (
    ECHOED_PATH_CHARS,
    WWW_AUTHENTICATE,
    Credentials,
    authorized,
    unauthorized_reply,
)
from transforms.echo import cut

log = logging.getLogger("mlbatch")
CHALLENGE = [("WWW-Authenticate", WWW_AUTHENTICATE)]


class Service(Protocol):
    """What `ApiServer` serves (`MlService`): one answer per request."""

    def handle(self, method: str, path: str, query: Mapping[str, str], raw: bytes) -> Reply: ...


class ApiServer(JsonHttpServer):
    """Serves one `Service` on `host:port`."""

    def __init__(
        self,
        service: Service,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Credentials | None = None,
        max_body_bytes: int = 10 * 2**20,
    ) -> None:
        self._service, self._credentials = service, credentials
        super().__init__(None, port, host=host, max_body_bytes=max_body_bytes)

    def screen(self, method: str, environ: dict[str, Any], headers: Message) -> Reply | None:
        """401 for a request without valid credentials (when the server has any), before its body is read."""
        if self._credentials is None:
            return None
        sent = headers.get("Authorization")
        if authorized(self._credentials, sent):
            return None
        status, payload = unauthorized_reply(request_path(environ), wrong=sent is not None)
        return status, payload, CHALLENGE

    def dispatch(self, method: str, environ: dict[str, Any], headers: Message, body: bytes) -> Reply:
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        return self._service.handle(method, request_path(environ), query, body)

    def served(self, method: str, path: str, client: str, status: int, seconds: float) -> None:
        log.info(
            "%s %s %s %d %.0f ms",
            cut(client, 64),
            cut(method, 32),
            cut(path, ECHOED_PATH_CHARS),
            status,
            seconds * 1000,
        )

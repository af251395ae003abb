"""The HTTP front of `mlbatch serve-api`: who may call, how big a body may be, one log line per request.

`ApiServer` is a `JsonHttpServer` (waitress: bounded threads, idle connections closed, bodies
over `max_body_bytes` answered 413) in front of `MlService.handle`. With `credentials` every
request must carry one of them (`pipelines.rest_api.auth`), else 401 with the security plugin's
error body and a `WWW-Authenticate` challenge. Each request is logged as
`127.0.0.1 POST /_plugins/_ml/_batch_ingestion 200 12 ms` — the client, the method, the path
without its query, the status and the time: never a body, a query string or a header.
"""

from __future__ import annotations

import logging
import time
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from connectors.local.http_server import JsonHttpServer, Reply, request_path
from pipelines.rest_api.auth import WWW_AUTHENTICATE, Credentials, authorized, unauthorized_reply
from pipelines.rest_api.service import MlService
from transforms.echo import cut

log = logging.getLogger("mlbatch")
CHALLENGE = [("WWW-Authenticate", WWW_AUTHENTICATE)]


class ApiServer(JsonHttpServer):
    """Serves one `MlService` on `host:port`."""

    def __init__(
        self,
        service: MlService,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: Credentials | None = None,
        max_body_bytes: int = 10 * 2**20,
    ) -> None:
        self._service, self._credentials = service, credentials
        super().__init__(self._refuse, port, host=host, max_body_bytes=max_body_bytes)

    @staticmethod
    def _refuse(method: str, path: str, headers: Message, body: bytes) -> Reply:
        raise AssertionError("ApiServer answers in dispatch")

    def dispatch(self, method: str, environ: dict[str, Any], headers: Message, body: bytes) -> Reply:
        started = time.monotonic()
        path = request_path(environ)
        reply = self._answer(method, path, environ, headers, body)
        log.info(
            "%s %s %s %d %.0f ms",
            environ.get("REMOTE_ADDR", "-"),
            method,
            cut(path, 200),
            reply[0],
            (time.monotonic() - started) * 1000,
        )
        return reply

    def _answer(
        self, method: str, path: str, environ: dict[str, Any], headers: Message, body: bytes
    ) -> Reply:
        if self._credentials is not None:
            sent = headers.get("Authorization")
            if not authorized(self._credentials, sent):
                status, payload = unauthorized_reply(path, wrong=sent is not None)
                return status, payload, CHALLENGE
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        return self._service.handle(method, path, query, body)

"""The small HTTP server under every local service (`serve-index`, `serve-embeddings`, test servers).

`JsonHttpServer` listens on 127.0.0.1 (or `host`; a free port by default) and hands each request's
`(method, raw path without query, headers, body)` to one handler function, then writes its `(status,
payload)` answer (or `(status, payload, extra headers)`): bytes as they are, anything else as JSON.
A subclass may instead answer in `dispatch` (given no handler; it sees the whole request), refuse a
request in `screen` before its body is read or inflated, and hear of every answer in `served`.
The HTTP is waitress's (pure Python): chunked bodies, a bounded pool of handler threads, connections
read without a thread each and closed after `channel_timeout` seconds idle or stalled, bodies over
`max_body_bytes` refused with 413, malformed requests answered with 400. A `Content-Encoding: gzip`
body is inflated here, within the same limit. Every error, waitress's own included, is answered as
JSON in `error_reply`'s shape (OpenSearch's by default); a handler that raises gets a 500.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from email.message import Message
from http import HTTPStatus
from typing import Any, Self

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

Reply = tuple[int, Any] | tuple[int, Any, list[tuple[str, str]]]
Handle = Callable[[str, str, Message, bytes], Reply]
MiB = 1024 * 1024
GZIP_PIECE = 4096
log = logging.getLogger("mlbatch")

_ERROR_KINDS = {
    400: "illegal_argument_exception",
    405: "method_not_allowed_exception",
    413: "content_too_long_exception",
}
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})


class BodyError(ValueError):
    """A request body that cannot be read; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def opensearch_error(status: int, kind: str, reason: str) -> Reply:
    """An error answer shaped as OpenSearch shapes them."""
    return status, {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


def request_headers(environ: dict[str, Any]) -> Message:
    """The request's headers from a WSGI environ, looked up case-insensitively with `.get`."""
    headers = Message()
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-")] = value
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            headers[name] = environ[key]
    return headers


def request_path(environ: dict[str, Any]) -> str:
    """The request target's path as sent (still percent-encoded), without the query."""
    return target_path(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")


def target_path(target: str) -> str:
    """The path of a request target (`/a?b`, or absolute: `http://host/a?b`), without the query."""
    if not target.startswith("/"):
        target = "/" + target.split("://", 1)[-1].partition("/")[2]
    return target.split("?", 1)[0].split("#", 1)[0]


def decoded_body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its `Content-Encoding` (none or gzip) undone, at most `limit` bytes."""
    if not encoding or encoding.strip().lower() == "identity":
        return raw
    if encoding.strip().lower() != "gzip":
        raise BodyError(400, f"unsupported Content-Encoding [{encoding}]: send gzip or none")
    inflated = bytearray()
    view, position = memoryview(raw), 0
    try:
        while position < len(view):
            position = _inflate_member(view, position, inflated, limit)
    except zlib.error as error:
        raise BodyError(400, f"the body is not valid gzip ({error})") from None
    return bytes(inflated)


def _inflate_member(view: memoryview, position: int, inflated: bytearray, limit: int) -> int:
    """Inflate the gzip member at `position` onto `inflated`; where the next member starts. The input goes
    in `GZIP_PIECE` pieces, so what zlib copies after a member's end stays small however many there are."""
    member = zlib.decompressobj(wbits=31)
    while not member.eof:
        if position >= len(view):
            raise BodyError(400, "the gzip body is truncated")
        piece = view[position : position + GZIP_PIECE]
        inflated += member.decompress(piece, limit + 1 - len(inflated))
        if len(inflated) > limit:
            raise BodyError(413, f"the gzip body inflates to more than {limit} bytes")
        position += len(piece) - len(member.unused_data)
    return position


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def encoded(payload: Any) -> tuple[bytes, str]:
    """The answer's bytes and content type: bytes as they are, anything else as JSON."""
    if isinstance(payload, bytes):
        return payload, "application/octet-stream"
    return json.dumps(payload).encode(), "application/json"


class JsonHttpServer:
    """A loopback HTTP server around one handler function (services subclass it). The limits are class
    attributes; `max_body_bytes` and `channel_timeout` can also be given per server by keyword."""

    max_body_bytes: int = 100 * MiB
    channel_timeout: float = 30.0
    threads: int = 8
    connection_limit: int = 500

    def __init__(
        self,
        handle: Handle | None = None,
        port: int = 0,
        url_suffix: str = "",
        *,
        max_body_bytes: int | None = None,
        channel_timeout: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if handle is None and type(self).dispatch is JsonHttpServer.dispatch:
            raise TypeError(f"{type(self).__name__} needs a handler function or a dispatch method")
        self._handle = handle
        self._max_body = max_body_bytes or self.max_body_bytes
        timeout = channel_timeout or self.channel_timeout
        self._server = create_server(
            self._application,
            host=host,
            port=port,
            threads=self.threads,
            connection_limit=self.connection_limit,
            channel_timeout=timeout,
            cleanup_interval=max(timeout / 2, 0.25),
            max_request_body_size=self._max_body + 1,
            inbuf_overflow=min(self._max_body + 1, 16 * MiB),
            recv_bytes=MiB,
            asyncore_use_poll=True,
            ident="mlbatch",
        )
        self._server.channel_class = self._channel_class()
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{self._server.effective_port}{url_suffix}"
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake_lock = threading.Lock()
        self._serving = False
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def error_reply(self, status: int, kind: str, reason: str) -> Reply:
        """How this server shapes an error answer (OpenSearch's shape; services may override)."""
        return opensearch_error(status, kind, reason)

    def screen(self, method: str, environ: dict[str, Any], headers: Message) -> Reply | None:
        """A refusal given before the method is checked and the body (buffered by waitress) inflated
        or handled, or None to go on (the default)."""
        return None

    def served(self, method: str, path: str, client: str, status: int, seconds: float) -> None:
        """Told of every answer just before it is sent: method, path without query ("-" for what waitress
        could not parse), client host, status, seconds taken. Does nothing by default."""

    def _channel_class(self) -> type[HTTPChannel]:
        """waitress's connection class: its own errors (400, 413, …) in `error_reply`'s shape, `served`."""
        server = self

        class JsonErrorTask(ErrorTask):
            def execute(self) -> None:
                error, target = self.request.error, getattr(self.request, "request_uri", "")
                status, payload = server.error_reply(
                    error.code, _ERROR_KINDS.get(error.code, "http_exception"), str(error.body)
                )
                data, content_type = encoded(payload)
                self.status = status_line(status)
                self.response_headers.append(("Content-Type", content_type))
                self.set_close_on_finish()
                self.content_length = len(data)
                method = getattr(self.request, "command", "") or "-"
                path, client = target_path(target) if target else "-", str(self.channel.addr[0])
                server.served(method, path, client, status, time.time() - self.start_time)
                self.write(data)

        class JsonChannel(HTTPChannel):
            error_task_class = JsonErrorTask

        return JsonChannel

    def dispatch(self, method: str, environ: dict[str, Any], headers: Message, body: bytes) -> Reply:
        """Answer one request whose body was read: the handler function's answer, unless overridden."""
        return self._handle(method, request_path(environ), headers, body)

    def _application(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        method, path = environ["REQUEST_METHOD"], request_path(environ)
        status, payload, *more = self._reply(method, path, environ)
        data, content_type = encoded(payload)
        start_response(
            status_line(status),
            [("Content-Type", content_type), ("Content-Length", str(len(data))), *(more[0] if more else [])],
        )
        self.served(method, path, environ.get("REMOTE_ADDR") or "-", status, time.monotonic() - started)
        return [] if method == "HEAD" else [data]

    def _reply(self, method: str, path: str, environ: dict[str, Any]) -> Reply:
        """The answer to one request: `screen`'s, else `dispatch`'s once the body is read, or an error."""
        headers = request_headers(environ)
        try:
            screened = self.screen(method, environ, headers)
            if screened is not None:
                return screened
            if method not in _METHODS:
                raise BodyError(405, f"method {method} is not supported")
            body = decoded_body(environ["wsgi.input"].read(), headers.get("Content-Encoding"), self._max_body)
            return self.dispatch(method, environ, headers, body)
        except BodyError as error:
            return self.error_reply(error.status, _ERROR_KINDS[error.status], str(error))
        except RecursionError:
            return self.error_reply(400, _ERROR_KINDS[400], "the request body nests too deeply")
        except Exception as error:
            log.exception("%s %s failed", method, path)
            return self.error_reply(500, "exception", f"internal error: {type(error).__name__}")

    def start(self) -> Self:
        """Serve in a background thread; returns the server."""
        self._claim_loop()
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until `close` (from another thread) or KeyboardInterrupt."""
        self._claim_loop()
        self._loop()

    def _claim_loop(self) -> None:
        """One serving loop per server: two would read the same sockets and mix their bytes."""
        with self._wake_lock:
            if self._serving:
                raise RuntimeError(f"{self.url} is already being served")
            self._serving = True

    def _loop(self) -> None:
        """Everything is closed here, in the serving thread, once the loop has stopped and the handler
        threads are done: waitress's wake-up pipe is never closed under a thread that may write to it."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(
                    timeout=self._server.adj.asyncore_loop_timeout,
                    map=self._server._map,
                    use_poll=True,
                    count=1,
                )
        finally:
            self._server.task_dispatcher.shutdown(timeout=5)
            with self._wake_lock:
                self._close_all()
                self._stopped.set()

    def close(self) -> None:
        """Stop serving: close the listening socket and every connection, stop the handler threads."""
        self._stopping.set()
        if self._serving:
            with self._wake_lock:
                if not self._stopped.is_set():
                    self._server.pull_trigger()
            self._stopped.wait(timeout=10)
        else:
            self._server.task_dispatcher.shutdown(timeout=5)
            self._close_all()

    def _close_all(self) -> None:
        for channel in list(self._server._map.values()):
            channel.close()

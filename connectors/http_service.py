"""The small HTTP server under every local service (`serve-index`, `serve-embeddings`, test servers).

`JsonHttpServer` listens on 127.0.0.1 (a free port by default), reads each request body
(gunzipping `Content-Encoding: gzip`), hands `(method, path, headers, body)` to one handler
function, and writes its `(status, payload)` answer: bytes as they are, anything else as JSON.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = tuple[int, Any]
Handle = Callable[[str, str, Message, bytes], Reply]


class JsonHttpServer:
    """A threaded loopback HTTP server around one handler function (services subclass it)."""

    def __init__(self, handle: Handle, port: int = 0, url_suffix: str = "") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status, payload = handle(self.command, self.path.split("?")[0], self.headers, body)
                binary = isinstance(payload, bytes)
                data = payload if binary else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if binary else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}{url_suffix}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> Self:
        """Serve in a background thread; returns the server."""
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

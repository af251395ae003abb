"""Real local servers for the integration tests, all on 127.0.0.1.

- `MotoS3`: the moto server in its own process (the real S3 wire API, not the in-process mock).
- `OpenAIFilesServer`: a small HTTP service speaking the OpenAI Files API subset the
  openai SDK uses to read batch files (`GET /v1/files/{id}` and `/v1/files/{id}/content`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """`moto_server` on a free loopback port, stopped on close."""

    def __init__(self) -> None:
        port = free_port()
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("moto_server did not start within 30 s")

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=5
        ).close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class OpenAIFilesServer:
    """Serves `files` (id -> bytes) with the OpenAI Files API shapes; checks the bearer key."""

    def __init__(self, api_key: str) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {api_key}":
                    error = {
                        "error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}
                    }
                    return self._send(401, json.dumps(error).encode())
                parts = [unquote(part) for part in self.path.split("?")[0].strip("/").split("/")]
                if len(parts) < 3 or parts[:2] != ["v1", "files"] or parts[2] not in server.files:
                    error = {"error": {"message": "No such File object", "type": "invalid_request_error"}}
                    return self._send(404, json.dumps(error).encode())
                content = server.files[parts[2]]
                if len(parts) == 4 and parts[3] == "content":
                    return self._send(200, content, "application/octet-stream")
                meta = {
                    "id": parts[2],
                    "object": "file",
                    "bytes": len(content),
                    "created_at": 0,
                    "filename": f"{parts[2]}.jsonl",
                    "purpose": "batch_output",
                    "status": "processed",
                }
                return self._send(200, json.dumps(meta).encode())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

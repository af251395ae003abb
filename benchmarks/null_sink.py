"""A null OpenSearch `_bulk` sink on 127.0.0.1: accepts, counts and stores nothing.

Answers just enough of the REST API for `mlbatch ingest` (`GET /`, index exists/create,
`POST /{index}/_bulk` with one success item per action) so benchmarks and the
runner-mode experiment measure our side of the wire only.

    python -m benchmarks.null_sink [--port N]   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class NullSink:
    """The server; `documents` counts every action received. `bulk_status` other than 200
    makes every `_bulk` call fail with that status (for failure-path tests)."""

    def __init__(self, port: int = 0, bulk_status: int = 200) -> None:
        self.documents = 0
        self.ids: set[str] = set()
        self.bodies = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _reply(self, status: int, payload: object) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_HEAD(self) -> None:  # noqa: N802
                self._reply(200, {})

            def do_GET(self) -> None:  # noqa: N802
                self._reply(200, {"version": {"number": "2.19.0", "distribution": "opensearch"}})

            def do_PUT(self) -> None:  # noqa: N802
                self._body()
                self._reply(200, {"acknowledged": True})

            def do_POST(self) -> None:  # noqa: N802
                lines = self._body().splitlines()
                if bulk_status != 200:
                    error = {"type": "null_sink_exception", "reason": "configured to refuse _bulk"}
                    return self._reply(bulk_status, {"error": error, "status": bulk_status})
                actions = [json.loads(line) for line in lines[0::2] if line]
                items = []
                for action in actions:
                    meta = action.get("index", {})
                    items.append(
                        {"index": {"_id": meta.get("_id", "auto"), "status": 201, "result": "created"}}
                    )
                with sink._lock:
                    sink.documents += len(actions)
                    sink.bodies += 1
                    sink.ids.update(item["index"]["_id"] for item in items)
                self._reply(200, {"took": 0, "errors": False, "items": items})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> NullSink:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    sink = NullSink(parser.parse_args().port).start()
    print(sink.url, flush=True)
    sink._thread.join()


if __name__ == "__main__":
    main()

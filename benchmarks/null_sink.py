"""A null OpenSearch `_bulk` sink on 127.0.0.1: accepts, counts and stores nothing.

Answers just enough of the REST API for `mlbatch ingest` (`GET /`, index exists / mapping /
settings, `POST /{index}/_bulk` with one success item per action) so benchmarks and the
runner-mode experiment measure our side of the wire only. `first_bulk_at` is the epoch time
the first `_bulk` request arrived (set it to None before each run), for start-up times.
`handle` is the one method a richer test server overrides (see `tests/fault_server.py`).

    python -m benchmarks.null_sink [--port N]   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import threading
import time
from email.message import Message

import orjson

from connectors.local.http_server import JsonHttpServer, Reply


def action_lines(body: bytes) -> list[tuple[str, dict]]:
    """(action, metadata) of each `index`/`create` action, without parsing the documents: a null
    sink should cost next to nothing, so the contenders' CPU is what the benchmark measures."""
    lines = body.split(b"\n")
    return [next(iter(orjson.loads(line).items())) for line in lines[0::2] if line.strip()]


class NullSink:
    """The server. `bulk_status` other than 200 makes every `_bulk` call fail with that status;
    `properties` is the mapping every index reports (e.g. a `knn_vector` field, so the
    ingest checks vectors as it would against a real cluster)."""

    def __init__(self, port: int = 0, bulk_status: int = 200, properties: dict | None = None) -> None:
        self.bulk_status = bulk_status
        self.properties = properties or {}
        self.documents = 0
        self.ids: set[str] = set()
        self.bodies = 0
        self.first_bulk_at: float | None = None
        self.lock = threading.Lock()
        self._http = JsonHttpServer(self.handle, port)
        self.url = self._http.url

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        """Answer one request: (HTTP status, JSON payload)."""
        if method == "POST" and path.endswith("/_bulk"):
            if self.bulk_status != 200:
                error = {"type": "null_sink_exception", "reason": "configured to refuse _bulk"}
                return self.bulk_status, {"error": error, "status": self.bulk_status}
            items = [
                {name: {"_id": meta.get("_id", "auto"), "status": 201, "result": "created"}}
                for name, meta in action_lines(body)
            ]
            with self.lock:
                if self.first_bulk_at is None:
                    self.first_bulk_at = time.time()
                self.documents += len(items)
                self.bodies += 1
                self.ids.update(next(iter(item.values()))["_id"] for item in items)
            return 200, {"took": 0, "errors": False, "items": items}
        if path.endswith("/_mapping"):
            return 200, {path.strip("/").split("/")[0]: {"mappings": {"properties": self.properties}}}
        if method == "PUT":
            return 200, {"acknowledged": True}
        return 200, {"version": {"number": "2.19.0", "distribution": "opensearch"}}

    def start(self) -> NullSink:
        self._http.start()
        return self

    def close(self) -> None:
        self._http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    sink = NullSink(parser.parse_args().port)
    print(sink.url, flush=True)
    sink._http.serve_forever()


if __name__ == "__main__":
    main()

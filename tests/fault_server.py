"""A fault-injecting OpenSearch-compatible server on 127.0.0.1 (osmem-server cannot inject faults).

It is `mlbatch serve-index`'s server (in memory) with faults on top:
- whole `_bulk` requests fail with a status every Nth request (`request_faults={429: 3}`),
  before anything is applied;
- every Kth item gets 429 without being applied (`item_429_every=K`);
- basic auth can be required; `Authorization` headers (e.g. SigV4) and gzip bodies are recorded;
- `_bulk` can be slowed down (`bulk_delay` seconds), for kill-and-rerun tests.
`applied` counts successful writes per `_id`, so tests can check "exactly once".
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from email.message import Message
from typing import Any

from connectors.index_service import LocalIndexServer, Reply, error_reply


class FaultServer(LocalIndexServer):
    def __init__(
        self,
        request_faults: dict[int, int] | None = None,
        item_429_every: int = 0,
        basic_auth: tuple[str, str] | None = None,
        bulk_delay: float = 0.0,
    ) -> None:
        super().__init__()
        self.request_faults = request_faults or {}
        self.item_429_every = item_429_every
        self.basic_auth = basic_auth
        self.bulk_delay = bulk_delay
        self.applied: Counter[str] = Counter()
        self.bulk_calls = 0
        self.items_seen = 0
        self.authorizations: list[str] = []
        self.content_encodings: list[str | None] = []
        self.settings_history: list[dict[str, Any]] = []

    @property
    def indices(self) -> dict[str, dict[str, Any]]:
        return self.store.indices

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        return self.store.indices[index]["docs"]

    def item_fault(self, position: int, doc_id: str) -> dict[str, Any] | None:
        self.items_seen += 1
        if self.item_429_every and self.items_seen % self.item_429_every == 0:
            return {
                "status": 429,
                "error": {
                    "type": "es_rejected_execution_exception",
                    "reason": "rejected execution (injected)",
                },
            }
        return None

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        self.authorizations.append(headers.get("Authorization", ""))
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if headers.get("Authorization") != expected:
                return error_reply(401, "security_exception", "authentication required")
        if path.endswith("/_bulk"):
            self.content_encodings.append(headers.get("Content-Encoding"))
            time.sleep(self.bulk_delay)
            self.bulk_calls += 1
            for status, every in self.request_faults.items():
                if self.bulk_calls % every == 0:
                    return error_reply(
                        status, "injected_fault", f"injected HTTP {status} on _bulk {self.bulk_calls}"
                    )
        if path.endswith("/_settings") and method == "PUT":
            self.settings_history.append(dict(json.loads(body)["index"]))
        status, payload = super().handle(method, path, headers, body)
        if path.endswith("/_bulk") and status == 200:
            for item in payload["items"]:
                result = next(iter(item.values()))
                if result.get("result") in ("created", "updated"):
                    self.applied[result["_id"]] += 1
        return status, payload

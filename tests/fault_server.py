"""A fault-injecting OpenSearch-compatible server on 127.0.0.1 (osmem-server cannot inject faults).

It is `mlbatch serve-index`'s server (in memory) with faults on top:
- whole `_bulk` requests fail with a status every Nth request (`request_faults={429: 3}`),
  before anything is applied;
- every Kth item gets 429 without being applied (`item_429_every=K`);
- basic auth can be required; `Authorization` headers (e.g. SigV4) and gzip bodies are recorded;
- `_bulk` can be slowed down (`bulk_delay` seconds), for kill-and-rerun tests;
- bodies over `max_body_bytes` are refused with 413, as by a proxy or `http.max_content_length`;
- a whole `_bulk` request holding an `_id` over 512 bytes is refused with 400, as OpenSearch does;
- every Nth `_bulk` request is applied and then answered 502 (`lost_answer_every=N`), as when
  the answer is lost on the way back, so the client retries a request that was applied;
- `_bulk` requests numbered in `outage` (1-based) all fail with 503, as a restarting cluster;
- a whole `_bulk` request holding the text `poison` is refused with 400, as a cluster refuses
  a request for one document it cannot take;
- `GET _settings` can answer `settings_answer` instead (a proxy or another cluster's shape);
- every Nth `_bulk` request hangs for `hang_seconds` before it is applied (`hang_every=N`), so
  the client times out and retries a request that is applied later.
`applied` counts successful writes per `_id`, so tests can check "exactly once".
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from email.message import Message
from typing import Any

from connectors.local.http_server import Reply
from connectors.local.http_server import opensearch_error as error_reply
from connectors.local.index_requests import BulkAction, bulk_actions, path_parts
from connectors.local.index_server import LocalIndexServer

REJECTED = {
    "status": 429,
    "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution (injected)"},
}


class FaultServer(LocalIndexServer):
    def __init__(
        self,
        request_faults: dict[int, int] | None = None,
        item_429_every: int = 0,
        basic_auth: tuple[str, str] | None = None,
        bulk_delay: float = 0.0,
        max_body_bytes: int | None = None,
        lost_answer_every: int = 0,
        outage: range = range(0),
        poison: str | None = None,
        settings_answer: Any = None,
        hang_every: int = 0,
        hang_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.hang_every, self.hang_seconds = hang_every, hang_seconds
        self.settings_answer = settings_answer
        self.outage = outage
        self.poison = poison.encode() if poison else None
        self.max_body_bytes = max_body_bytes
        self.lost_answer_every = lost_answer_every
        self.request_faults = request_faults or {}
        self.item_429_every = item_429_every
        self.basic_auth = basic_auth
        self.bulk_delay = bulk_delay
        self.applied: Counter[str] = Counter()
        self.bulk_calls = 0
        self.items_seen = 0
        self.items_lock = threading.Lock()
        self.authorizations: list[str] = []
        self.content_encodings: list[str | None] = []
        self.settings_history: list[dict[str, Any]] = []

    @property
    def indices(self) -> dict[str, dict[str, Any]]:
        return self.store.indices

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        return self.store.indices[index]["docs"]

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
            if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
                return 413, b"413 Request Entity Too Large"
            if self.hang_every and self.bulk_calls % self.hang_every == 0:
                time.sleep(self.hang_seconds)
            if self.bulk_calls in self.outage:
                return error_reply(503, "cluster_block_exception", "the cluster is restarting (injected)")
            if self.poison is not None and self.poison in body:
                return error_reply(400, "illegal_argument_exception", "a poisoned document (injected)")
            for status, every in self.request_faults.items():
                if self.bulk_calls % every == 0:
                    return error_reply(
                        status, "injected_fault", f"injected HTTP {status} on _bulk {self.bulk_calls}"
                    )
            long_id = _long_id_problem(body)
            if long_id:
                return error_reply(400, "action_request_validation_exception", long_id)
        if path.endswith("/_settings") and method == "PUT":
            self.settings_history.append(dict(json.loads(body)["index"]))
        if path.endswith("/_settings") and method == "GET" and self.settings_answer is not None:
            return 200, self.settings_answer
        if path.endswith("/_bulk") and self.item_429_every:
            status, payload = self._bulk_rejecting_items(method, path, headers, body)
        else:
            status, payload = super().handle(method, path, headers, body)
        if path.endswith("/_bulk") and status == 200:
            for item in payload["items"]:
                result = next(iter(item.values()))
                if result.get("result") in ("created", "updated"):
                    self.applied[result["_id"]] += 1
            if self.lost_answer_every and self.bulk_calls % self.lost_answer_every == 0:
                return error_reply(502, "injected_fault", "applied, then the answer was lost")
        return status, payload

    def _bulk_rejecting_items(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        """A `_bulk` request with every `item_429_every`th item (counted over all requests) answered
        429 and not applied: the others go to the real server, the 429s are put back in order."""
        try:
            name = path_parts(path)[0]
            actions = bulk_actions(body)
        except (ValueError, IndexError):
            return super().handle(method, path, headers, body)
        if name not in self.store.indices or not actions:
            return super().handle(method, path, headers, body)
        rejected: dict[int, dict[str, Any]] = {}
        with self.items_lock:
            for position, (action, meta, _) in enumerate(actions):
                self.items_seen += 1
                if self.items_seen % self.item_429_every == 0:
                    doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
                    rejected[position] = {action: {"_index": name, "_id": doc_id, **REJECTED}}
        kept = [action for position, action in enumerate(actions) if position not in rejected]
        if not kept:
            return 200, {"took": 1, "errors": True, "items": list(rejected.values())}
        status, payload = super().handle(method, path, headers, _bulk_body(kept))
        if status != 200:
            return status, payload
        applied = iter(payload["items"])
        items = [rejected.get(position) or next(applied) for position in range(len(actions))]
        return 200, {**payload, "errors": payload["errors"] or bool(rejected), "items": items}


def _bulk_body(actions: list[BulkAction]) -> bytes:
    """An NDJSON `_bulk` body holding `actions` (what `bulk_actions` reads back)."""
    lines = []
    for action, meta, document in actions:
        lines.append(json.dumps({action: meta}))
        if action != "delete":
            lines.append(json.dumps(document))
    return ("\n".join(lines) + "\n").encode()


def _long_id_problem(body: bytes) -> str | None:
    """OpenSearch's validation of a whole `_bulk` request: every `_id` at most 512 bytes."""
    for line in body.split(b"\n")[0::2]:
        if not line.strip():
            continue
        action = json.loads(line)
        meta = next(iter(action.values())) if isinstance(action, dict) and action else {}
        doc_id = meta.get("_id") if isinstance(meta, dict) else None
        if isinstance(doc_id, str) and len(doc_id.encode()) > 512:
            return (
                f"Validation Failed: 1: id [{doc_id}] is too long, must be no longer than 512 bytes "
                f"but was: {len(doc_id.encode())};"
            )
    return None

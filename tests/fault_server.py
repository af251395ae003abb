"""A fault-injecting OpenSearch-compatible server on 127.0.0.1 (osmem-server cannot inject faults).

It keeps indexes in memory (mappings, settings, documents), applies `_bulk` `index` and
`create` actions with per-item results shaped as OpenSearch shapes them, checks
`knn_vector` dimensions and `integer` fields (400 `mapper_parsing_exception`), and can:
- fail whole `_bulk` requests with a status every Nth request (`request_faults={429: 3}`),
  before applying anything;
- answer 429 to every Kth item (`item_429_every=K`), without applying it;
- require basic auth, record SigV4 `Authorization` headers and gzip bodies;
- slow every `_bulk` request down (`bulk_delay` seconds), for kill-and-rerun tests.
`applied` counts successful writes per `_id`, so tests can check "exactly once".
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from email.message import Message
from typing import Any

from benchmarks.null_sink import NullSink, Reply, bulk_actions


def _error(status: int, kind: str, reason: str) -> Reply:
    return status, {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


class FaultServer(NullSink):
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
        self.indices: dict[str, dict[str, Any]] = {}
        self.applied: Counter[str] = Counter()
        self.bulk_calls = 0
        self.items_seen = 0
        self.authorizations: list[str] = []
        self.content_encodings: list[str | None] = []
        self.settings_history: list[dict[str, Any]] = []

    def docs(self, index: str) -> dict[str, dict[str, Any]]:
        return self.indices[index]["docs"]

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        self.authorizations.append(headers.get("Authorization", ""))
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if headers.get("Authorization") != expected:
                return _error(401, "security_exception", "authentication required")
        parts = [part for part in path.split("/") if part]
        if not parts:
            return 200, {"version": {"number": "2.19.0", "distribution": "opensearch"}}
        with self.lock:
            if parts[-1] == "_bulk":
                self.content_encodings.append(headers.get("Content-Encoding"))
                return self._bulk(parts[0], body)
            return self._index_api(method, parts, body)

    def _index_api(self, method: str, parts: list[str], body: bytes) -> Reply:
        name = parts[0]
        index = self.indices.get(name)
        if method == "PUT" and len(parts) == 1:
            if index is not None:
                return _error(400, "resource_already_exists_exception", f"index [{name}] already exists")
            spec = json.loads(body or b"{}")
            settings = {"number_of_replicas": "1", "number_of_shards": "1", **spec.get("settings", {})}
            self.indices[name] = {
                "mappings": spec.get("mappings", {"properties": {}}),
                "settings": settings,
                "docs": {},
            }
            return 200, {"acknowledged": True, "index": name}
        if index is None:
            return _error(404, "index_not_found_exception", f"no such index [{name}]")
        if len(parts) == 1:
            return 200, {name: {"mappings": index["mappings"], "settings": {"index": index["settings"]}}}
        if parts[1] == "_mapping":
            return 200, {name: {"mappings": index["mappings"]}}
        if parts[1] == "_settings" and method == "PUT":
            update = json.loads(body)["index"]
            self.settings_history.append(dict(update))
            for key, value in update.items():
                if value is None:
                    index["settings"].pop(key, None)
                else:
                    index["settings"][key] = str(value)
            return 200, {"acknowledged": True}
        if parts[1] == "_settings":
            return 200, {name: {"settings": {"index": dict(index["settings"])}}}
        return _error(400, "illegal_argument_exception", f"unsupported {method} {'/'.join(parts)}")

    def _field_error(self, index: dict[str, Any], document: dict[str, Any]) -> str | None:
        for field, spec in index["mappings"].get("properties", {}).items():
            value = document.get(field)
            if value is None:
                continue
            if spec.get("type") == "knn_vector" and len(value) != spec.get("dimension"):
                return f"Vector dimension mismatch. Expected: {spec.get('dimension')}, Given: {len(value)}"
            if spec.get("type") == "integer" and not isinstance(value, int):
                return f'failed to parse field [{field}] of type [integer]: For input string: "{value}"'
        return None

    def _bulk(self, name: str, body: bytes) -> Reply:
        time.sleep(self.bulk_delay)
        self.bulk_calls += 1
        for status, every in self.request_faults.items():
            if self.bulk_calls % every == 0:
                return _error(
                    status, "injected_fault", f"injected HTTP {status} on _bulk request {self.bulk_calls}"
                )
        index = self.indices.get(name)
        if index is None:
            return _error(404, "index_not_found_exception", f"no such index [{name}]")
        items = []
        for action, meta, document in bulk_actions(body):
            self.items_seen += 1
            doc_id = meta.get("_id") or f"auto-{self.items_seen}"
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            problem = self._field_error(index, document or {})
            if self.item_429_every and self.items_seen % self.item_429_every == 0:
                result.update(
                    status=429,
                    error={
                        "type": "es_rejected_execution_exception",
                        "reason": "rejected execution (injected)",
                    },
                )
            elif problem:
                result.update(status=400, error={"type": "mapper_parsing_exception", "reason": problem})
            elif action == "create" and doc_id in index["docs"]:
                result.update(
                    status=409,
                    error={
                        "type": "version_conflict_engine_exception",
                        "reason": f"[{doc_id}]: version conflict, document already exists",
                    },
                )
            else:
                existed = doc_id in index["docs"]
                index["docs"][doc_id] = document
                self.applied[doc_id] += 1
                result.update(status=200 if existed else 201, result="updated" if existed else "created")
            items.append({action: result})
        return 200, {
            "took": 1,
            "errors": any(next(iter(i.values()))["status"] >= 300 for i in items),
            "items": items,
        }

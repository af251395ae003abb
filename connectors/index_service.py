"""`mlbatch serve-index`: a local k-NN index server speaking OpenSearch's REST API (the embedded default).

Enough of the API for this system and a user's first queries: cluster info; create, get,
delete and check indexes with `knn_vector` mappings; `_mapping`, `_settings`; `_bulk`
(`index`, `create`, `update`, `delete`, per-item results and errors shaped as OpenSearch
shapes them, dimension checks); `_refresh`, `_count`, `_doc/{id}`; `_search` with
`match_all`, `term`, `match`, `bool` filters and the `knn` query (`vector`, `k`, optional
`filter`), scored as OpenSearch scores each `space_type`. The search is exact, on faiss
(OpenSearch's own k-NN engine) flat indexes: right for the small indexes it is meant for.
Indexes persist under `$MLBATCH_HOME/index-service/` as a mapping file and an append-only
log of writes, so a later run or `mlbatch search` finds them. It is a local stand-in, not
the scaling path: point `--opensearch` at a real cluster for that.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

from connectors.http_service import JsonHttpServer, Reply

_WORD = re.compile(r"\w+")


def error_reply(status: int, kind: str, reason: str) -> Reply:
    return status, {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


def bulk_actions(body: bytes) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(action name, action metadata, document) for each action of an NDJSON `_bulk` body."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    actions = []
    position = 0
    while position < len(lines):
        ((name, meta),) = json.loads(lines[position]).items()
        document = None if name == "delete" else json.loads(lines[position + 1])
        position += 1 if name == "delete" else 2
        actions.append((name, meta, document))
    return actions


def knn_score(space_type: str, distance_or_similarity: float) -> float:
    """OpenSearch's k-NN score: l2 1/(1+d²), cosinesimil (1+cos)/2, innerproduct ip+1 or 1/(1-ip)."""
    if space_type == "l2":
        return 1.0 / (1.0 + distance_or_similarity)
    if space_type == "cosinesimil":
        return (1.0 + distance_or_similarity) / 2.0
    return (
        distance_or_similarity + 1.0 if distance_or_similarity >= 0 else 1.0 / (1.0 - distance_or_similarity)
    )


def _words(value: Any) -> set[str]:
    return {word.lower() for word in _WORD.findall(value if isinstance(value, str) else json.dumps(value))}


def matches(document: dict[str, Any], query: dict[str, Any]) -> float:
    """The (non-k-NN) score of `document` for `query`, 0 when it does not match."""
    if not query or "match_all" in query:
        return 1.0
    if "term" in query:
        ((field, wanted),) = query["term"].items()
        wanted = wanted.get("value") if isinstance(wanted, dict) else wanted
        value = document.get(field)
        return 1.0 if value == wanted or (isinstance(value, list) and wanted in value) else 0.0
    if "match" in query:
        ((field, text),) = query["match"].items()
        text = text.get("query") if isinstance(text, dict) else text
        return float(len(_words(text) & _words(document.get(field, ""))))
    if "bool" in query:
        clauses = query["bool"]
        required = [*_as_list(clauses.get("must")), *_as_list(clauses.get("filter"))]
        scores = [matches(document, clause) for clause in required]
        if any(score == 0 for score in scores):
            return 0.0
        if any(matches(document, clause) for clause in _as_list(clauses.get("must_not"))):
            return 0.0
        should = [matches(document, clause) for clause in _as_list(clauses.get("should"))]
        if should and not required and not any(should):
            return 0.0
        return sum(scores) + sum(should) or 1.0
    raise ValueError(f"unsupported query {sorted(query)}")


def _as_list(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


class LocalIndexes:
    """The indexes: mappings, settings and documents in memory, persisted under `directory`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.indices: dict[str, dict[str, Any]] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for meta in sorted(directory.glob("*/meta.json")):
                self._load(meta.parent)

    # -- persistence -----------------------------------------------------------------------

    def _load(self, folder: Path) -> None:
        index = json.loads((folder / "meta.json").read_text())
        index["docs"] = {}
        log = folder / "docs.jsonl"
        if log.exists():
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if entry["op"] == "delete":
                    index["docs"].pop(entry["id"], None)
                else:
                    index["docs"][entry["id"]] = entry["doc"]
        self.indices[folder.name] = index

    def _save_meta(self, name: str) -> None:
        if self.directory is not None:
            folder = self.directory / name
            folder.mkdir(exist_ok=True)
            index = self.indices[name]
            (folder / "meta.json").write_text(
                json.dumps({"mappings": index["mappings"], "settings": index["settings"]})
            )

    def _log(self, name: str, entries: list[dict[str, Any]]) -> None:
        if self.directory is not None and entries:
            with (self.directory / name / "docs.jsonl").open("a") as log:
                log.write("".join(json.dumps(entry) + "\n" for entry in entries))

    # -- index API -------------------------------------------------------------------------

    def create(self, name: str, spec: dict[str, Any]) -> Reply:
        if name in self.indices:
            return error_reply(400, "resource_already_exists_exception", f"index [{name}] already exists")
        settings = {"number_of_replicas": "1", "number_of_shards": "1", **spec.get("settings", {})}
        self.indices[name] = {
            "mappings": spec.get("mappings", {"properties": {}}),
            "settings": settings,
            "docs": {},
        }
        self._save_meta(name)
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete(self, name: str) -> Reply:
        self.indices.pop(name)
        if self.directory is not None:
            shutil.rmtree(self.directory / name, ignore_errors=True)
        return 200, {"acknowledged": True}

    def put_settings(self, name: str, update: dict[str, Any]) -> Reply:
        settings = self.indices[name]["settings"]
        for key, value in update.items():
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = str(value)
        self._save_meta(name)
        return 200, {"acknowledged": True}

    def field_error(self, name: str, document: dict[str, Any]) -> str | None:
        for field, spec in self.indices[name]["mappings"].get("properties", {}).items():
            value = document.get(field)
            if value is None:
                continue
            if spec.get("type") == "knn_vector":
                if not isinstance(value, list) or not all(isinstance(x, int | float) for x in value):
                    return f"failed to parse field [{field}] of type [knn_vector]"
                if len(value) != spec.get("dimension"):
                    return (
                        f"Vector dimension mismatch. Expected: {spec.get('dimension')}, Given: {len(value)}"
                    )
            if spec.get("type") == "integer" and not isinstance(value, int):
                return f'failed to parse field [{field}] of type [integer]: For input string: "{value}"'
        return None

    def bulk(self, name: str, body: bytes, item_fault: Any = None) -> Reply:
        """Apply a `_bulk` body; `item_fault(position, doc_id)` may return an error result to inject."""
        index = self.indices[name]
        items, log = [], []
        for position, (action, meta, document) in enumerate(bulk_actions(body)):
            doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            injected = item_fault(position, doc_id) if item_fault else None
            if action == "update" and document is not None:
                document = {**index["docs"].get(doc_id, {}), **document.get("doc", {})}
            problem = None if document is None else self.field_error(name, document)
            if injected:
                result.update(injected)
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
            elif action == "delete":
                found = index["docs"].pop(doc_id, None) is not None
                log.append({"op": "delete", "id": doc_id})
                result.update(status=200 if found else 404, result="deleted" if found else "not_found")
            else:
                existed = doc_id in index["docs"]
                index["docs"][doc_id] = document
                log.append({"op": "index", "id": doc_id, "doc": document})
                result.update(status=200 if existed else 201, result="updated" if existed else "created")
            items.append({action: result})
        self._log(name, log)
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def search(self, name: str, request: dict[str, Any]) -> Reply:
        index = self.indices[name]
        query = request.get("query") or {"match_all": {}}
        size = int(request.get("size", 10))
        if "knn" in query:
            scored = self._knn(index, query["knn"])
        else:
            scored = [
                (doc_id, score) for doc_id, doc in index["docs"].items() if (score := matches(doc, query))
            ]
            scored.sort(key=lambda pair: -pair[1])
        hits = []
        for doc_id, score in scored[:size]:
            source = index["docs"][doc_id]
            wanted = request.get("_source", True)
            if isinstance(wanted, list):
                source = {field: value for field, value in source.items() if field in wanted}
            hit = {"_index": name, "_id": doc_id, "_score": score}
            if wanted is not False:
                hit["_source"] = source
            hits.append(hit)
        return 200, {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {
                "total": {"value": len(scored), "relation": "eq"},
                "max_score": hits[0]["_score"] if hits else None,
                "hits": hits,
            },
        }

    def _knn(self, index: dict[str, Any], knn: dict[str, Any]) -> list[tuple[str, float]]:
        import faiss
        import numpy as np

        ((field, spec),) = knn.items()
        mapping = index["mappings"].get("properties", {}).get(field, {})
        if mapping.get("type") != "knn_vector":
            raise ValueError(f"field [{field}] is not a knn_vector field")
        space = mapping.get("method", {}).get("space_type") or mapping.get("space_type") or "l2"
        query = np.array([spec["vector"]], dtype=np.float32)
        if query.shape[1] != mapping.get("dimension"):
            raise ValueError(
                f"query vector has {query.shape[1]} dimensions, [{field}] has {mapping.get('dimension')}"
            )
        ids = [
            doc_id
            for doc_id, doc in index["docs"].items()
            if isinstance(doc.get(field), list) and matches(doc, spec.get("filter") or {})
        ]
        if not ids:
            return []
        vectors = np.array([index["docs"][doc_id][field] for doc_id in ids], dtype=np.float32)
        if space == "cosinesimil":
            faiss.normalize_L2(vectors)
            faiss.normalize_L2(query)
        flat = faiss.IndexFlatL2(vectors.shape[1]) if space == "l2" else faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        values, positions = flat.search(query, min(int(spec.get("k", 10)), len(ids)))
        return [
            (ids[p], knn_score(space, float(v)))
            for v, p in zip(values[0], positions[0], strict=True)
            if p >= 0 and math.isfinite(float(v))
        ]


class LocalIndexServer(JsonHttpServer):
    """The HTTP front of `LocalIndexes` on 127.0.0.1; `handle` is the one method subclasses extend."""

    def __init__(self, directory: Path | None = None, port: int = 0) -> None:
        self.store = LocalIndexes(directory)
        self.lock = threading.Lock()
        super().__init__(self.handle, port)

    def item_fault(self, position: int, doc_id: str) -> dict[str, Any] | None:
        """An error result to answer for one bulk item instead of applying it (none here; tests inject)."""
        return None

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        parts = [part for part in path.split("/") if part]
        if not parts:
            return 200, {
                "name": "mlbatch-serve-index",
                "cluster_name": "mlbatch",
                "version": {"number": "2.19.0", "distribution": "opensearch"},
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            }
        with self.lock:
            try:
                return self._route(
                    method, parts, json.loads(body) if body.strip() and parts[-1] != "_bulk" else {}, body
                )
            except (ValueError, KeyError, TypeError) as error:
                return error_reply(400, "illegal_argument_exception", str(error))

    def _route(self, method: str, parts: list[str], request: dict[str, Any], body: bytes) -> Reply:
        store, name = self.store, parts[0]
        if method == "PUT" and len(parts) == 1:
            return store.create(name, request)
        if name not in store.indices:
            return error_reply(404, "index_not_found_exception", f"no such index [{name}]")
        index = store.indices[name]
        operation = parts[1] if len(parts) > 1 else None
        if operation is None:
            if method == "DELETE":
                return store.delete(name)
            return 200, {
                name: {"aliases": {}, "mappings": index["mappings"], "settings": {"index": index["settings"]}}
            }
        if operation == "_bulk":
            return store.bulk(name, body, self.item_fault)
        if operation == "_mapping":
            return 200, {name: {"mappings": index["mappings"]}}
        if operation == "_settings":
            if method == "PUT":
                return store.put_settings(name, request.get("index", request))
            return 200, {name: {"settings": {"index": dict(index["settings"])}}}
        if operation == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if operation == "_count":
            return 200, {
                "count": sum(1 for doc in index["docs"].values() if matches(doc, request.get("query") or {}))
            }
        if operation == "_search":
            return store.search(name, request)
        if operation == "_doc" and len(parts) == 3:
            doc = index["docs"].get(parts[2])
            if doc is None:
                return 404, {"_index": name, "_id": parts[2], "found": False}
            return 200, {"_index": name, "_id": parts[2], "_version": 1, "found": True, "_source": doc}
        return error_reply(400, "illegal_argument_exception", f"unsupported {method} /{'/'.join(parts)}")

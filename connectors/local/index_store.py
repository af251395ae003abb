"""The storage of the local index server (the stand-in for the **write** edge's cluster).

`LocalIndexes` holds each index's mappings, settings and documents in memory and answers
the writes: create, delete, `_settings` updates and `_bulk` (`index`, `create`, `update`,
`delete`, per-item results and errors shaped as OpenSearch shapes them, vectors checked
against their mapping). With a data directory, every index persists in a folder of its own
(`index_folder` keeps it a direct child of the directory) as a mapping file and an
append-only log of writes, rewritten without its dead entries once they outnumber the live
ones, so a later run or `mlbatch search` finds it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from connectors.index_names import index_name_problem
from connectors.local.http_server import Reply, opensearch_error
from connectors.local.index_query import vector_problem
from connectors.local.index_requests import bulk_actions
from connectors.local.nested_knn import nested_vector_problem

log = logging.getLogger("mlbatch")


def index_folder(directory: Path, name: str) -> Path:
    """The folder of index `name`: a direct child of the (resolved) data `directory`, or ValueError."""
    folder = (directory / name).resolve()
    if folder.parent != directory:
        raise ValueError(f"index [{name}] cannot be stored inside the data directory")
    return folder


def _replace(path: Path, text: str) -> None:
    """Write `path` atomically: a temporary file beside it, then a rename over it."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def field_error(mappings: dict[str, Any], document: Any) -> str | None:
    """Why OpenSearch would refuse `document` under `mappings`, or None."""
    if not isinstance(document, dict):
        return "failed to parse: the document is not a JSON object"
    for field, spec in mappings.get("properties", {}).items():
        value = document.get(field)
        if value is None:
            continue
        if spec.get("type") in ("knn_vector", "nested"):
            problem = (
                vector_problem(field, spec, value)
                if spec["type"] == "knn_vector"
                else nested_vector_problem(field, spec, value, vector_problem)
            )
            if problem:
                return problem
        if spec.get("type") == "integer" and not isinstance(value, int):
            return f'failed to parse field [{field}] of type [integer]: For input string: "{value}"'
    return None


class LocalIndexes:
    """The indexes: mappings, settings and documents in memory, persisted under `directory`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory.resolve() if directory is not None else None
        self.indices: dict[str, dict[str, Any]] = {}
        self.log_lines: dict[str, int] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for meta in sorted(self.directory.glob("*/meta.json")):
                if index_name_problem(meta.parent.name) is None:
                    self._load(meta.parent)

    # -- persistence -----------------------------------------------------------------------

    def _load(self, folder: Path) -> None:
        index = json.loads((folder / "meta.json").read_text())
        index["docs"] = {}
        log_file = folder / "docs.jsonl"
        lines = log_file.read_text().splitlines() if log_file.exists() else []
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                if entry["op"] == "delete":
                    index["docs"].pop(entry["id"], None)
                else:
                    index["docs"][entry["id"]] = entry["doc"]
            except (ValueError, KeyError, TypeError):
                log.warning("index %s: skipped unreadable line %d of %s", folder.name, number, log_file)
        self.indices[folder.name] = index
        self.log_lines[folder.name] = len(lines)

    def _save_meta(self, name: str) -> None:
        if self.directory is not None:
            folder = index_folder(self.directory, name)
            folder.mkdir(exist_ok=True)
            index = self.indices[name]
            _replace(
                folder / "meta.json",
                json.dumps({"mappings": index["mappings"], "settings": index["settings"]}),
            )

    def _log(self, name: str, entries: list[dict[str, Any]]) -> None:
        """Append `entries` to the index's log; rewrite it with the live documents only once its
        dead entries (overwritten or deleted) outnumber them."""
        if self.directory is None or not entries:
            return
        log_file = index_folder(self.directory, name) / "docs.jsonl"
        with log_file.open("a") as appending:
            appending.write("".join(json.dumps(entry) + "\n" for entry in entries))
        self.log_lines[name] += len(entries)
        live = len(self.indices[name]["docs"])
        if self.log_lines[name] - live > live:
            docs = self.indices[name]["docs"].items()
            _replace(
                log_file,
                "".join(json.dumps({"op": "index", "id": doc_id, "doc": doc}) + "\n" for doc_id, doc in docs),
            )
            self.log_lines[name] = live

    # -- index API -------------------------------------------------------------------------

    def create(self, name: str, spec: dict[str, Any]) -> Reply:
        if name in self.indices:
            return opensearch_error(
                400, "resource_already_exists_exception", f"index [{name}] already exists"
            )
        if self.directory is not None:
            (index_folder(self.directory, name) / "docs.jsonl").unlink(missing_ok=True)
        settings = {"number_of_replicas": "1", "number_of_shards": "1", **spec.get("settings", {})}
        self.indices[name] = {
            "mappings": spec.get("mappings", {"properties": {}}),
            "settings": settings,
            "docs": {},
        }
        self.log_lines[name] = 0
        self._save_meta(name)
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete(self, name: str) -> Reply:
        self.indices.pop(name)
        self.log_lines.pop(name, None)
        if self.directory is not None:
            shutil.rmtree(index_folder(self.directory, name), ignore_errors=True)
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

    def bulk(self, name: str, body: bytes) -> Reply:
        """Apply a `_bulk` body to index `name`: one result per action, in order."""
        actions = bulk_actions(body)
        if not actions:
            return opensearch_error(
                400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"
            )
        items, entries = [], []
        for action, meta, document in actions:
            doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            result.update(self._apply(name, action, doc_id, document, entries))
            items.append({action: result})
        self._log(name, entries)
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def _apply(
        self, name: str, action: str, doc_id: str, document: Any, entries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply one bulk action, adding its log entry to `entries`; its result's status and outcome."""
        index = self.indices[name]
        problem = None
        if action == "update":
            partial = document.get("doc") if isinstance(document, dict) else None
            if isinstance(partial, dict):
                document = {**index["docs"].get(doc_id, {}), **partial}
            else:
                problem = "Validation Failed: 1: script or doc is missing;"
        if action != "delete" and problem is None:
            problem = field_error(index["mappings"], document)
        if problem:
            return {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": problem}}
        if action == "create" and doc_id in index["docs"]:
            return {
                "status": 409,
                "error": {
                    "type": "version_conflict_engine_exception",
                    "reason": f"[{doc_id}]: version conflict, document already exists",
                },
            }
        if action == "delete":
            found = index["docs"].pop(doc_id, None) is not None
            entries.append({"op": "delete", "id": doc_id})
            return {"status": 200 if found else 404, "result": "deleted" if found else "not_found"}
        existed = doc_id in index["docs"]
        index["docs"][doc_id] = document
        entries.append({"op": "index", "id": doc_id, "doc": document})
        return {"status": 200 if existed else 201, "result": "updated" if existed else "created"}

"""`mlbatch serve-index`: a local k-NN index server speaking OpenSearch's REST API (the embedded default).

Enough of the API for this system and a user's first queries: cluster info; create, get,
delete and check indexes with `knn_vector` mappings; `_mapping`, `_settings`; `_bulk`
(`index`, `create`, `update`, `delete`, per-item results and errors shaped as OpenSearch
shapes them, dimension checks); `_refresh`, `_count`, `_doc/{id}`; `_search` with
`match_all`, `term`, `match`, `bool` filters and the `knn` query (`vector`, `k`, optional
`filter`), scored as OpenSearch scores each `space_type`. The search is exact, on faiss
(OpenSearch's own k-NN engine) flat indexes: right for the small indexes it is meant for.
`knn_vector` fields may be `float` (the default), `byte` (ints in [-128, 127]) or `binary`
(`dimension` bits packed as dimension/8 such ints, searched by `hamming` distance).
Indexes persist under `$MLBATCH_HOME/index-service/` as a mapping file and an append-only
log of writes (rewritten without its dead entries once they outnumber the live ones), so a
later run or `mlbatch search` finds them. Index names are checked as OpenSearch checks them
(after percent-decoding the path) in every route, and every file stays inside the data
directory. It is a local stand-in, not the scaling path: point `--opensearch` at a real
cluster for that.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import threading
import uuid
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from connectors.index_names import index_name_problem
from connectors.local.http_server import JsonHttpServer, Reply, opensearch_error

_WORD = re.compile(r"\w+")
BULK_ACTIONS = ("index", "create", "update", "delete")
DATA_TYPES = ("float", "byte", "binary")
FLOAT_SPACES = ("l2", "cosinesimil", "innerproduct")
log = logging.getLogger("mlbatch")

error_reply = opensearch_error


class BulkFormatError(ValueError):
    """A `_bulk` body that is not NDJSON action (and document) lines; answered with a 400."""


def path_parts(path: str) -> list[str]:
    """The non-empty segments of a request path, each percent-decoded (UTF-8) as OpenSearch does."""
    try:
        return [unquote(part, errors="strict") for part in path.split("/") if part]
    except UnicodeDecodeError:
        raise ValueError(f"the path [{path}] is not valid percent-encoded UTF-8") from None


def invalid_index_name(name: str) -> Reply | None:
    """OpenSearch's `invalid_index_name_exception` answer for `name`, or None when it is valid."""
    problem = index_name_problem(name)
    if problem is None:
        return None
    reason = f"Invalid index name [{name}], {problem.removeprefix('it ')}"
    cause = {"type": "invalid_index_name_exception", "reason": reason, "index": name, "index_uuid": "_na_"}
    return 400, {"error": {"root_cause": [cause], **cause}, "status": 400}


def request_object(body: bytes) -> dict[str, Any]:
    """The JSON object a request body holds ({} for none); ValueError for anything else."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as error:
        raise ValueError(f"the request body is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError("the request body must be a JSON object")
    return value


def _json_line(line: bytes, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        raise BulkFormatError(f"line [{number}] of the _bulk body is not valid JSON ({error})") from None


def bulk_actions(body: bytes) -> list[tuple[str, dict[str, Any], Any]]:
    """(action name, action metadata, document or None) for each action of an NDJSON `_bulk` body."""
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    actions = []
    position = 0
    while position < len(lines):
        number, line = lines[position]
        action = _json_line(line, number)
        if not isinstance(action, dict) or len(action) != 1:
            raise BulkFormatError(
                f"Malformed action/metadata line [{number}], expected an object with one action"
                f" but found [{json.dumps(action)[:80]}]"
            )
        ((name, meta),) = action.items()
        if name not in BULK_ACTIONS or not isinstance(meta, dict):
            raise BulkFormatError(
                f"Malformed action/metadata line [{number}], expected field [create], [delete], [index]"
                f" or [update] with an object but found [{name}]"
            )
        document = None
        if name != "delete":
            if position + 1 >= len(lines):
                raise BulkFormatError(f"the [{name}] action on line [{number}] has no document line after it")
            document = _json_line(lines[position + 1][1], lines[position + 1][0])
        position += 1 if name == "delete" else 2
        actions.append((name, meta, document))
    return actions


def vector_problem(field: str, mapping: dict[str, Any], value: Any) -> str | None:
    """Why OpenSearch would refuse `value` for the `knn_vector` field `mapping`, or None.

    `float` vectors hold `dimension` finite numbers, `byte` vectors `dimension` integers in
    [-128, 127], `binary` vectors `dimension / 8` such integers (eight bits each).
    """
    if not isinstance(value, list) or not all(type(x) in (int, float) for x in value):
        return f"failed to parse field [{field}] of type [knn_vector]"
    if any(isinstance(x, float) and math.isnan(x) for x in value):
        return "KNN vector values cannot be NaN"
    if any(isinstance(x, float) and math.isinf(x) for x in value):
        return "KNN vector values cannot be infinity"
    data_type = mapping.get("data_type", "float")
    if data_type in ("byte", "binary"):
        prefix = f"[data_type] field was set as [{data_type}] in index mapping. But, KNN vector values are"
        if any(x % 1 for x in value):
            return f"{prefix} floats instead of byte integers"
        if any(not -128 <= x <= 127 for x in value):
            return f"{prefix} not within in the byte range [-128, 127]"
    dimension = mapping.get("dimension")
    if data_type == "binary" and len(value) * 8 != dimension:
        return (
            "The dimension of the binary vector must be 8 times the length of the provided vector."
            f" Expected: {dimension}, Given: {len(value) * 8}"
        )
    if data_type != "binary" and len(value) != dimension:
        return f"Vector dimension mismatch. Expected: {dimension}, Given: {len(value)}"
    return None


def knn_space(field: str, mapping: dict[str, Any]) -> tuple[str, str]:
    """The `data_type` and `space_type` a k-NN search of `field` uses; ValueError for those it cannot."""
    data_type = mapping.get("data_type", "float")
    if data_type not in DATA_TYPES:
        raise ValueError(
            f"field [{field}] has data_type [{data_type}]: this server searches {', '.join(DATA_TYPES)}"
        )
    method = mapping.get("method") or {}
    space = (
        method.get("space_type")
        or mapping.get("space_type")
        or ("hamming" if data_type == "binary" else "l2")
    )
    if data_type == "binary" and space != "hamming":
        raise ValueError(
            f"space_type [{space}] is not supported with [binary] data_type: binary vectors use [hamming]"
        )
    if data_type != "binary" and space not in FLOAT_SPACES:
        raise ValueError(
            f"space_type [{space}] is not supported for [{data_type}] vectors: use {', '.join(FLOAT_SPACES)}"
        )
    return data_type, space


def knn_score(space_type: str, distance_or_similarity: float) -> float:
    """OpenSearch's k-NN score: l2 1/(1+d²), hamming 1/(1+d), cosinesimil (1+cos)/2,
    innerproduct ip+1 or 1/(1-ip)."""
    if space_type in ("l2", "hamming"):
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
            return error_reply(400, "resource_already_exists_exception", f"index [{name}] already exists")
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

    def field_error(self, name: str, document: Any) -> str | None:
        if not isinstance(document, dict):
            return "failed to parse: the document is not a JSON object"
        for field, spec in self.indices[name]["mappings"].get("properties", {}).items():
            value = document.get(field)
            if value is None:
                continue
            if spec.get("type") == "knn_vector":
                problem = vector_problem(field, spec, value)
                if problem:
                    return problem
            if spec.get("type") == "integer" and not isinstance(value, int):
                return f'failed to parse field [{field}] of type [integer]: For input string: "{value}"'
        return None

    def bulk(self, name: str, body: bytes, item_fault: Any = None) -> Reply:
        """Apply a `_bulk` body; `item_fault(position, doc_id)` may return an error result to inject."""
        index = self.indices[name]
        actions = bulk_actions(body)
        if not actions:
            return error_reply(
                400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"
            )
        items, entries = [], []
        for position, (action, meta, document) in enumerate(actions):
            doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
            result: dict[str, Any] = {"_index": name, "_id": doc_id}
            injected = item_fault(position, doc_id) if item_fault else None
            problem = None
            if action == "update":
                partial = document.get("doc") if isinstance(document, dict) else None
                if isinstance(partial, dict):
                    document = {**index["docs"].get(doc_id, {}), **partial}
                else:
                    problem = "Validation Failed: 1: script or doc is missing;"
            if action != "delete" and problem is None:
                problem = self.field_error(name, document)
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
                entries.append({"op": "delete", "id": doc_id})
                result.update(status=200 if found else 404, result="deleted" if found else "not_found")
            else:
                existed = doc_id in index["docs"]
                index["docs"][doc_id] = document
                entries.append({"op": "index", "id": doc_id, "doc": document})
                result.update(status=200 if existed else 201, result="updated" if existed else "created")
            items.append({action: result})
        self._log(name, entries)
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
        data_type, space = knn_space(field, mapping)
        problem = vector_problem(field, mapping, spec.get("vector"))
        if problem:
            raise ValueError(f"the query vector: {problem}")
        k = int(spec.get("k", 10))
        if k < 1:
            raise ValueError(f"[k] must be at least 1, found [{k}]")
        ids = [
            doc_id
            for doc_id, doc in index["docs"].items()
            if isinstance(doc.get(field), list) and matches(doc, spec.get("filter") or {})
        ]
        if not ids:
            return []
        if data_type == "binary":
            flat = faiss.IndexBinaryFlat(mapping["dimension"])
            flat.add(np.array([index["docs"][doc_id][field] for doc_id in ids], dtype=np.int8).view(np.uint8))
            query = np.array([spec["vector"]], dtype=np.int8).view(np.uint8)
        else:
            vectors = np.array([index["docs"][doc_id][field] for doc_id in ids], dtype=np.float32)
            query = np.array([spec["vector"]], dtype=np.float32)
            if space == "cosinesimil":
                faiss.normalize_L2(vectors)
                faiss.normalize_L2(query)
            flat = (
                faiss.IndexFlatL2(vectors.shape[1]) if space == "l2" else faiss.IndexFlatIP(vectors.shape[1])
            )
            flat.add(vectors)
        values, positions = flat.search(query, min(k, len(ids)))
        return [
            (ids[p], knn_score(space, float(v)))
            for v, p in zip(values[0], positions[0], strict=True)
            if p >= 0 and math.isfinite(float(v))
        ]


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


class LocalIndexServer(JsonHttpServer):
    """The HTTP front of `LocalIndexes` on 127.0.0.1; `handle` is the one method subclasses extend."""

    def __init__(
        self,
        directory: Path | None = None,
        port: int = 0,
        *,
        max_body_bytes: int | None = None,
        channel_timeout: float | None = None,
    ) -> None:
        self.store = LocalIndexes(directory)
        self.lock = threading.Lock()
        super().__init__(self.handle, port, max_body_bytes=max_body_bytes, channel_timeout=channel_timeout)

    def item_fault(self, position: int, doc_id: str) -> dict[str, Any] | None:
        """An error result to answer for one bulk item instead of applying it (none here; tests inject)."""
        return None

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        try:
            parts = path_parts(path)
            request = request_object(body) if parts and parts[-1] != "_bulk" else {}
        except ValueError as error:
            return error_reply(400, "parse_exception", str(error))
        if not parts:
            return 200, {
                "name": "mlbatch-serve-index",
                "cluster_name": "mlbatch",
                "version": {"number": "2.19.0", "distribution": "opensearch"},
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            }
        invalid = invalid_index_name(parts[0])
        if invalid:
            return invalid
        with self.lock:
            try:
                return self._route(method, parts, request, body)
            except KeyError as error:
                return error_reply(
                    400, "illegal_argument_exception", f"the request is missing [{error.args[0]}]"
                )
            except (ValueError, TypeError, AttributeError, IndexError) as error:
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

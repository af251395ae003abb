"""`mlbatch serve-index`: a local k-NN index server speaking OpenSearch's REST API (the embedded default).

The stand-in for the **write** edge's cluster. Enough of the API for this system and a user's
first queries: cluster info; create, get, delete and check indexes with `knn_vector`
mappings; `_mapping`, `_settings`; `_bulk`; `_refresh`, `_count`, `_doc/{id}`; `_search`
with `match_all`, `term`, `match`, `bool` filters and the exact `knn` query (`vector`, `k`,
optional `filter`), scored as OpenSearch scores each `space_type`, also over a `nested` field
(`nested` + `knn`: each document by its best chunk, `inner_hits` naming it). `knn_vector` fields may
be `float` (the default), `byte` (ints in [-128, 127]) or `binary` (`dimension` bits packed
as dimension/8 such ints, searched by `hamming` distance).

This module only routes: `index_requests` reads a request, `index_store` (`LocalIndexes`)
holds and persists the indexes under `$MLBATCH_HOME/index-service/`, `index_query` scores
searches. Index names are checked as OpenSearch checks them (after percent-decoding the
path) in every route, and every file stays inside the data directory. It is a local
stand-in, not the scaling path: point `--opensearch` at a real cluster for that.
"""

from __future__ import annotations

import threading
from email.message import Message
from pathlib import Path
from typing import Any

from connectors.local.http_server import JsonHttpServer, Reply, opensearch_error
from connectors.local.index_query import count_matching, search_answer
from connectors.local.index_requests import invalid_index_name, path_parts, request_object
from connectors.local.index_store import LocalIndexes

CLUSTER_INFO = {
    "name": "mlbatch-serve-index",
    "cluster_name": "mlbatch",
    "version": {"number": "2.19.0", "distribution": "opensearch"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}


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

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        try:
            parts = path_parts(path)
            request = request_object(body) if parts and parts[-1] != "_bulk" else {}
        except ValueError as error:
            return opensearch_error(400, "parse_exception", str(error))
        if not parts:
            return 200, CLUSTER_INFO
        invalid = invalid_index_name(parts[0])
        if invalid:
            return invalid
        with self.lock:
            try:
                return self._route(method, parts, request, body)
            except KeyError as error:
                return opensearch_error(
                    400, "illegal_argument_exception", f"the request is missing [{error.args[0]}]"
                )
            except (ValueError, TypeError, AttributeError, IndexError) as error:
                return opensearch_error(400, "illegal_argument_exception", str(error))

    def _route(self, method: str, parts: list[str], request: dict[str, Any], body: bytes) -> Reply:
        store, name = self.store, parts[0]
        if method == "PUT" and len(parts) == 1:
            return store.create(name, request)
        if name not in store.indices:
            return opensearch_error(404, "index_not_found_exception", f"no such index [{name}]")
        index = store.indices[name]
        operation = parts[1] if len(parts) > 1 else None
        if operation is None:
            if method == "DELETE":
                return store.delete(name)
            return 200, {
                name: {"aliases": {}, "mappings": index["mappings"], "settings": {"index": index["settings"]}}
            }
        if operation == "_bulk":
            return store.bulk(name, body)
        if operation == "_mapping":
            return 200, {name: {"mappings": index["mappings"]}}
        if operation == "_settings":
            if method == "PUT":
                return store.put_settings(name, request.get("index", request))
            return 200, {name: {"settings": {"index": dict(index["settings"])}}}
        if operation == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if operation == "_count":
            return 200, {"count": count_matching(index["docs"], request.get("query") or {})}
        if operation == "_search":
            return 200, search_answer(name, index["mappings"], index["docs"], request)
        if operation == "_doc" and len(parts) == 3:
            doc = index["docs"].get(parts[2])
            if doc is None:
                return 404, {"_index": name, "_id": parts[2], "found": False}
            return 200, {"_index": name, "_id": parts[2], "_version": 1, "found": True, "_source": doc}
        return opensearch_error(400, "illegal_argument_exception", f"unsupported {method} /{'/'.join(parts)}")

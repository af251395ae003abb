"""k-NN over `nested` fields in the local index server (the stand-in for the **write** edge's cluster).

Pure functions, no I/O. A document with a `nested` field holds a list of objects (chunks), each
with its own vector; OpenSearch's k-NN search of such a field scores each document by its chunk
nearest to the query and returns the `k` best documents, and a `nested` query with
`inner_hits` says which chunk matched (`_nested.offset`, the chunk's `_source`). `nested_search`
answers

    {"nested": {"path": "chunks", "query": {"knn": {"chunks.embedding": {"vector": [...], "k": 3}}},
                "inner_hits": {}}}

exactly, on the same faiss search as a plain `knn` query (`index_query.knn_hits`, run over
every chunk, then the best chunk of each document kept); `nested_vector_problem` checks the
vectors of a document's chunks as they are written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Documents = dict[str, dict[str, Any]]
KnnHits = Callable[[dict[str, Any], Documents, dict[str, Any]], list[tuple[str, float]]]
VectorProblem = Callable[[str, dict[str, Any], Any], "str | None"]


def _objects(value: Any) -> list[Any]:
    """The objects of a nested field's value (one object or a list of them)."""
    return value if isinstance(value, list) else [value]


def nested_vector_problem(
    field: str, mapping: dict[str, Any], value: Any, vector_problem: VectorProblem
) -> str | None:
    """Why OpenSearch would refuse a `nested` field's `value` for its `knn_vector` members (each
    checked by `vector_problem`, `index_query`'s), or None."""
    members = {
        name: spec for name, spec in mapping.get("properties", {}).items() if spec.get("type") == "knn_vector"
    }
    for chunk in _objects(value):
        if not isinstance(chunk, dict):
            return (
                f"object mapping for [{field}] tried to parse field [{field}] as object, "
                "but found a concrete value"
            )
        for name, spec in members.items():
            if chunk.get(name) is not None:
                problem = vector_problem(f"{field}.{name}", spec, chunk[name])
                if problem:
                    return problem
    return None


def _nested_field(mappings: dict[str, Any], path: Any) -> dict[str, Any]:
    mapping = mappings.get("properties", {}).get(path) if isinstance(path, str) else None
    if not isinstance(mapping, dict) or mapping.get("type") != "nested":
        raise ValueError(f"[nested] failed to find nested object under path [{path}]")
    return mapping


def _knn_member(path: str, mapping: dict[str, Any], inner: Any) -> tuple[str, dict[str, Any]]:
    """(member name, its knn query) of the nested query's inner `knn` query on `path.member`."""
    knn = inner.get("knn") if isinstance(inner, dict) else None
    if not isinstance(knn, dict) or len(knn) != 1:
        raise ValueError("this server answers a [nested] query whose query is one [knn] query")
    ((field, spec),) = knn.items()
    member = field[len(path) + 1 :] if field.startswith(f"{path}.") else ""
    if mapping.get("properties", {}).get(member, {}).get("type") != "knn_vector":
        raise ValueError(f"field [{field}] is not a knn_vector field under [{path}]")
    if not isinstance(spec, dict) or spec.get("filter"):
        raise ValueError(f"[knn] on [{field}]: this server takes [vector] and [k] in a nested query")
    return member, spec


def _chunk_source(chunk: dict[str, Any], wanted: Any) -> dict[str, Any]:
    return {k: v for k, v in chunk.items() if k in wanted} if isinstance(wanted, list) else chunk


def _inner_hits(
    index: str, path: str, doc_id: str, offset: int, score: float, chunk: dict[str, Any], options: dict
) -> dict[str, Any]:
    """The `inner_hits` of one document: the chunk that matched, as OpenSearch shapes it."""
    hit: dict[str, Any] = {
        "_index": index,
        "_id": doc_id,
        "_nested": {"field": path, "offset": offset},
        "_score": score,
    }
    wanted = options.get("_source", True)
    if wanted is not False:
        hit["_source"] = _chunk_source(chunk, wanted)
    hits = {"total": {"value": 1, "relation": "eq"}, "max_score": score, "hits": [hit]}
    return {str(options.get("name") or path): {"hits": hits}}


def nested_search(
    index: str, mappings: dict[str, Any], docs: Documents, nested: Any, knn_hits: KnnHits
) -> tuple[list[tuple[str, float]], dict[str, dict[str, Any]]]:
    """(doc id, score) of the `k` documents whose best chunk is nearest to a nested `knn` query,
    best first, and the `inner_hits` of each when the query asks for them; `knn_hits` is
    `index_query`'s exact search, run over the chunks."""
    if not isinstance(nested, dict):
        raise ValueError("[nested] query malformed")
    path = nested.get("path")
    mapping = _nested_field(mappings, path)
    member, spec = _knn_member(path, mapping, nested.get("query"))
    field = f"{path}.{member}"
    chunks: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for doc_id, doc in docs.items():
        for offset, chunk in enumerate(_objects(doc.get(path) or [])):
            if isinstance(chunk, dict) and isinstance(chunk.get(member), list):
                chunks[str(len(chunks))] = (doc_id, offset, chunk)
    k = int(spec.get("k", 10))
    if k < 1:
        raise ValueError(f"[k] must be at least 1, found [{k}]")
    everything = {**spec, "k": max(len(chunks), 1)}
    scored = knn_hits(
        {"properties": {field: mapping["properties"][member]}},
        {key: {field: chunk[member]} for key, (_, _, chunk) in chunks.items()},
        {field: everything},
    )
    seen: set[str] = set()
    best: list[tuple[str, float]] = []
    inner: dict[str, dict[str, Any]] = {}
    options = nested.get("inner_hits")
    for key, score in scored:
        doc_id, offset, chunk = chunks[key]
        if doc_id in seen:
            continue
        seen.add(doc_id)
        best.append((doc_id, score))
        if isinstance(options, dict):
            inner[doc_id] = _inner_hits(index, path, doc_id, offset, score, chunk, options)
        if len(best) == k:
            break
    return best, inner

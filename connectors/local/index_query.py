"""Scoring queries in the local index server (the stand-in for the **write** edge's cluster).

Pure functions over an index's mappings and stored documents, no I/O: `vector_problem`
checks a `knn_vector` value as OpenSearch does; `matches` scores `match_all`, `term`,
`match` and `bool` queries; `knn_space` and `knn_score` give a field's space and
OpenSearch's score for it; `knn_hits` is the exact k-NN search over the stored vectors, on
faiss (OpenSearch's own k-NN engine) flat indexes (over `nested` fields: `nested_knn`);
`search_answer` and `count_matching` are `_search` and `_count`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from connectors.local.nested_knn import nested_search

_WORD = re.compile(r"\w+")
DATA_TYPES = ("float", "byte", "binary")
FLOAT_SPACES = ("l2", "cosinesimil", "innerproduct")

Documents = dict[str, dict[str, Any]]


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


def _as_list(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else []


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


def count_matching(docs: Documents, query: dict[str, Any]) -> int:
    """How many of `docs` match `query` (`_count`)."""
    return sum(1 for doc in docs.values() if matches(doc, query))


def knn_hits(mappings: dict[str, Any], docs: Documents, knn: dict[str, Any]) -> list[tuple[str, float]]:
    """(id, score) of the `k` stored vectors nearest to a `knn` query's, best first, exactly."""
    import faiss
    import numpy as np

    ((field, spec),) = knn.items()
    mapping = mappings.get("properties", {}).get(field, {})
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
        for doc_id, doc in docs.items()
        if isinstance(doc.get(field), list) and matches(doc, spec.get("filter") or {})
    ]
    if not ids:
        return []
    if data_type == "binary":
        flat = faiss.IndexBinaryFlat(mapping["dimension"])
        flat.add(np.array([docs[doc_id][field] for doc_id in ids], dtype=np.int8).view(np.uint8))
        query = np.array([spec["vector"]], dtype=np.int8).view(np.uint8)
    else:
        vectors = np.array([docs[doc_id][field] for doc_id in ids], dtype=np.float32)
        query = np.array([spec["vector"]], dtype=np.float32)
        if space == "cosinesimil":
            faiss.normalize_L2(vectors)
            faiss.normalize_L2(query)
        flat = faiss.IndexFlatL2(vectors.shape[1]) if space == "l2" else faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
    values, positions = flat.search(query, min(k, len(ids)))
    return [
        (ids[p], knn_score(space, float(v)))
        for v, p in zip(values[0], positions[0], strict=True)
        if p >= 0 and math.isfinite(float(v))
    ]


def search_answer(
    name: str, mappings: dict[str, Any], docs: Documents, request: dict[str, Any]
) -> dict[str, Any]:
    """The `_search` answer for `request` (`query`, `size`, `_source`) over index `name`."""
    query = request.get("query") or {"match_all": {}}
    size = int(request.get("size", 10))
    inner: dict[str, dict[str, Any]] = {}
    if "knn" in query:
        scored = knn_hits(mappings, docs, query["knn"])
    elif "nested" in query:
        scored, inner = nested_search(name, mappings, docs, query["nested"], knn_hits)
    else:
        scored = [(doc_id, score) for doc_id, doc in docs.items() if (score := matches(doc, query))]
        scored.sort(key=lambda pair: -pair[1])
    wanted = request.get("_source", True)
    hits = []
    for doc_id, score in scored[:size]:
        source = docs[doc_id]
        if isinstance(wanted, list):
            source = {field: value for field, value in source.items() if field in wanted}
        hit = {"_index": name, "_id": doc_id, "_score": score}
        if wanted is not False:
            hit["_source"] = source
        if doc_id in inner:
            hit["inner_hits"] = inner[doc_id]
        hits.append(hit)
    return search_response(len(scored), hits[0]["_score"] if hits else None, hits)


def search_response(total: int, max_score: float | None, hits: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenSearch's answer to a search on one shard: `total` matches, these `hits`."""
    return {
        "took": 0,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {"total": {"value": total, "relation": "eq"}, "max_score": max_score, "hits": hits},
    }

"""What an index mapping says about k-NN vectors (pure; read once before the run)."""

from __future__ import annotations

from typing import Any, NamedTuple


class KnnField(NamedTuple):
    """What a `knn_vector` mapping says about its vectors: `dimension` (bits for `binary`) and
    `data_type` (`float`, `byte` or `binary`)."""

    dimension: int | None
    data_type: str = "float"


def knn_vector_fields(properties: dict[str, Any], prefix: str = "") -> dict[str, KnnField]:
    """`{field path: KnnField}` of every `knn_vector` field in a mapping's properties."""
    found: dict[str, KnnField] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if spec.get("type") == "knn_vector":
            dimension = spec.get("dimension")
            data_type = str(spec.get("data_type") or "float").lower()
            found[path] = KnnField(int(dimension) if dimension is not None else None, data_type)
        if isinstance(spec.get("properties"), dict):
            found.update(knn_vector_fields(spec["properties"], f"{path}."))
    return found

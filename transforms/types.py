"""Plain types every stage speaks (plan -> read -> project -> join -> map -> write).

The plan types are compiled once from the request (`pipelines.plan`); the record types
travel through the pipeline. They hold data only; the logic lives in pure modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from transforms.jsonpath import CompiledPath

JoinPolicy = Literal["outer", "inner"]
DEAD_LETTERS = "dead_letters"
RAW_LIMIT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FieldSpec:
    """One document field and the path that fills it."""

    name: str
    path: CompiledPath
    knn_vector: bool = False  # a knn_vector field of the index: checked as the record is projected
    dimension: int | None = None  # its mapping's dimension (None: any)
    data_type: str = "float"  # its mapping's data_type: float, byte or binary (dimension in bits)
    needle: bytes | None = None  # the path's last key as JSON text: vectors are taken from the raw line
    quantize_scale: float | None = None  # --quantize byte: S of `transforms.quantize` (a byte field)


@dataclass(frozen=True)
class SourcePlan:
    """What the project step does with the records of one `source[N]`."""

    index: int
    uri: str
    id_path: CompiledPath | None
    fields: tuple[FieldSpec, ...]
    cluster_ids: bool = False  # without id_path: let the cluster assign ids instead of deriving them


@dataclass(frozen=True)
class IngestPlan:
    """Everything the pipeline needs to know about the request, compiled."""

    index_name: str
    source_type: str
    sources: tuple[SourcePlan, ...]
    field_order: tuple[str, ...]
    join: JoinPolicy = "outer"

    @property
    def needs_join(self) -> bool:
        return len(self.sources) > 1


class Locator(NamedTuple):
    """Where a record came from: its `source[N]`, file URI and position in the file: its 1-based
    line (or Parquet row), or, in a file read in byte ranges (`by_offset`), the byte offset of its
    line, which a range knows without reading the file before it. Records of one file are
    located the same way, so ordering locators orders records by file and position."""

    source: int
    uri: str
    position: int
    by_offset: bool = False

    def __str__(self) -> str:
        return f"{self.uri} (byte {self.position})" if self.by_offset else f"{self.uri}:{self.position}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.uri, "byte_offset" if self.by_offset else "line": self.position}


ProjectedRecord = tuple[Any, int, dict[str, Any]]  # (doc_id, position, fields) as the read step yields it


class Projected(NamedTuple):
    """One source record after the project step: only the fields its source contributes."""

    locator: Locator
    fields: dict[str, Any]


class Document(NamedTuple):
    """A document ready to write: its id (None for auto ids), fields and the records it came from."""

    doc_id: str | None
    fields: dict[str, Any]
    origins: tuple[Locator, ...]


class DeadLetter(NamedTuple):
    """Records that could not be indexed, with the stage and reason, for the dead-letter queue.

    `origins` are the records it stands for: one for a source record, one per source for a
    rejected joined document.
    """

    stage: str
    reason: str
    origins: tuple[Locator, ...]
    raw: Any
    raw_truncated: bool = False

    def to_json(self, task_id: str) -> dict[str, Any]:
        entry = {"task_id": task_id, "stage": self.stage, "reason": self.reason}
        entry.update(self.origins[0].to_json())
        entry["raw"] = self.raw
        if len(self.origins) > 1:
            entry["origins"] = [origin.to_json() for origin in self.origins]
        if self.raw_truncated:
            entry["raw_truncated"] = True
        return entry


def dead_letter(stage: str, reason: str, locator: Locator, payload: bytes | dict[str, Any]) -> DeadLetter:
    """A DeadLetter for a source record: the raw line as text (cut at RAW_LIMIT_BYTES) or the Parquet row."""
    if isinstance(payload, dict):
        row = {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in payload.items()}
        return DeadLetter(stage, reason, (locator,), row)
    text = payload[:RAW_LIMIT_BYTES].decode("utf-8", errors="replace")
    return DeadLetter(stage, reason, (locator,), text, len(payload) > RAW_LIMIT_BYTES)

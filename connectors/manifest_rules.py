"""What an incremental or resumed run reads again (the **plan** step's file choice, pure).

With `--incremental` or `--resume`, a run is cut into *units*, each run as a pipeline of its own
and recorded in the index's manifest (`connectors.manifest`) once it finished:
- one source: each file is a unit (all its byte ranges together), so a run killed midway has
  its finished files recorded and a re-run reads only the others;
- several sources: the whole run is one unit, since a document joins records from files of
  different sources; its files are recorded together, only when it finished.

A unit is skipped when every file of it is recorded unchanged (same size and version: the
mtime of a local file, the ETag of an S3 object) under the same `fingerprint` (the request's
meaning and the cluster). A run of several sources is skipped only when its files are exactly
the files one earlier run recorded. `--resume TASK_ID` counts only what that task (and the
tasks it resumed) recorded; `--incremental` counts what any run recorded.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.byte_ranges import FileRange

FileKey = tuple[int, str]  # (source index, uri)


@dataclass(frozen=True)
class FileState:
    """One source file as this run sees it: which source, where, its size and version."""

    source: int
    uri: str
    size: int
    version: str

    @property
    def key(self) -> FileKey:
        return (self.source, self.uri)


@dataclass(frozen=True)
class Recorded:
    """A manifest entry: a file as it was when the run `task_id` ingested it, and that run's counts."""

    state: FileState
    task_id: str
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """What one pipeline of an incremental run reads: its files, and their reads per source."""

    files: tuple[FileState, ...]
    reads: tuple[tuple[FileRange, ...], ...]


def fingerprint(
    source_type: str,
    field_map: Mapping[str, Any],
    ingest_fields: Sequence[str],
    join: str,
    cluster_url: str,
    quantize_scale: float | None = None,
) -> str:
    """What makes two runs write the same documents from the same files: the request's meaning
    (not its credential, not its source patterns), the cluster it writes to, and how its vectors
    are quantised (`--quantize`: another scale writes other bytes)."""
    meaning = {
        "source_type": source_type,
        "field_map": field_map,
        "ingest_fields": list(ingest_fields),
        "join": join,
        "cluster": cluster_url,
        "quantize_scale": quantize_scale,
    }
    return hashlib.sha256(orjson.dumps(meaning, option=orjson.OPT_SORT_KEYS)).hexdigest()


def units_of(reads: Sequence[Sequence[FileRange]], files: Sequence[FileState]) -> list[Unit]:
    """The units of a run: one per file (in read order) with one source, else one for the run."""
    if len(reads) != 1:
        return [Unit(tuple(files), tuple(tuple(parts) for parts in reads))]
    by_uri: dict[str, list[FileRange]] = {}
    for part in reads[0]:
        by_uri.setdefault(part.uri, []).append(part)
    state_of = {state.uri: state for state in files}
    return [Unit((state_of[uri],), (tuple(parts),)) for uri, parts in by_uri.items()]


def is_done(unit: Unit, recorded: Mapping[FileKey, Recorded], tasks: Collection[str] | None) -> bool:
    """Whether `unit` was ingested as it is now: by any run (`tasks` None) or by one of `tasks`."""
    entries = [recorded.get(state.key) for state in unit.files]
    unchanged = [
        entry for entry, state in zip(entries, unit.files, strict=True) if entry and entry.state == state
    ]
    if not unit.files or len(unchanged) < len(unit.files):
        return False
    owners = {entry.task_id for entry in unchanged}
    if tasks is not None and not owners <= set(tasks):
        return False
    if len(unit.reads) == 1:
        return True
    per_task = Counter(entry.task_id for entry in recorded.values())
    return len(owners) == 1 and per_task[owners.pop()] == len(unit.files)


def resume_chain(task_id: str, resumed_from: Callable[[str], str | None]) -> list[str]:
    """`task_id` and the tasks it resumed, in turn (each once); `resumed_from` names a task's."""
    chain: list[str] = []
    current: str | None = task_id
    while current is not None and current not in chain:
        chain.append(current)
        current = resumed_from(current)
    return chain


def add_counters(total: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Two runs' counters, summed by name."""
    summed = dict(total)
    for name, value in more.items():
        summed[name] = summed.get(name, 0) + value
    return summed

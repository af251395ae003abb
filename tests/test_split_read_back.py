"""Reading back the records of keys first met in several units holds one record's fields at a time:
the tasks grouped by unit carry no fields, and the read-back yields each loser's dead letter or
winner's document as soon as its record is projected again (a split file's ranges apart)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from pipelines.plan import compile_plan
from pipelines.request import parse_request
from transforms import record_stream
from transforms.range_settle import Loser, Rewrite, streamed_files
from transforms.split_finish import ReadBackFn, ReadBackTasks
from transforms.types import DeadLetter, Document, IngestPlan

KEYS = 10


def duplicated_file(path: Path) -> list[int]:
    """KEYS records, then the same ids again (a batch output duplicated): each line's byte offset."""
    lines = [
        json.dumps({"id": f"k{i % KEYS}", "v": [float(i)] * 50}).encode() + b"\n" for i in range(2 * KEYS)
    ]
    path.write_bytes(b"".join(lines))
    return [sum(map(len, lines[:i])) for i in range(2 * KEYS)]


def ingest_plan(path: Path) -> IngestPlan:
    request = {
        "index_name": "i",
        "field_map": {
            "v": "source[0].$.v",
            "q": "source[1].$.q",
            "_id": ["source[0].$.id", "source[1].$.id"],
        },
        "data_source": {"type": "local", "source": [str(path), str(path.with_name("input.jsonl"))]},
    }
    return compile_plan(parse_request(request))


def read_back(plan: IngestPlan, parts: list[FileRange], positions: list[int], monkeypatch) -> dict:
    """Outputs of each unit's read-back, each with how many records had been projected when it came."""
    projected = 0
    project = record_stream.project

    def counted(*args):
        nonlocal projected
        projected += 1
        return project(*args)

    monkeypatch.setattr(record_stream, "project", counted)
    files = streamed_files(parts)
    rewrites = [Rewrite(f"k{i}", (0, positions[i]), ((0, positions[i + KEYS]),), {}) for i in range(KEYS)]
    by_unit: dict[tuple[int, int], list] = {}
    for unit, task in (keyed for rewrite in rewrites for keyed in ReadBackTasks(0, files, parts)(rewrite)):
        assert type(task) in (Rewrite, Loser)  # no record's fields travel to the read-back
        by_unit.setdefault(unit, []).append(task)
    read_back_fn = ReadBackFn(plan, plan.sources[0], files, SourceAccess("local"))
    outputs: dict = {}
    for unit, tasks in by_unit.items():
        projected = 0
        found: Iterator = read_back_fn.process((unit, tasks), 0)
        outputs[unit] = [(getattr(item, "value", item), projected) for item in found]
    return outputs


@pytest.mark.parametrize("split", [True, False])
def test_the_read_back_yields_each_record_as_it_is_projected(tmp_path, monkeypatch, split):
    path = tmp_path / "out.jsonl"
    positions = duplicated_file(path)
    size = path.stat().st_size
    parts = [FileRange(str(path), 0, positions[KEYS]), FileRange(str(path), positions[KEYS], size)]
    if not split:
        parts, positions = [FileRange(str(path))], list(range(1, 2 * KEYS + 1))
    outputs = read_back(ingest_plan(path), parts, positions, monkeypatch)

    # A split file's winners and losers are read back apart, by the range holding them.
    assert sorted(outputs) == ([(0, 0), (0, positions[KEYS])] if split else [(0, 0)])
    items = [item for unit in sorted(outputs) for item in outputs[unit]]
    for unit_items in outputs.values():
        assert [held for _, held in unit_items] == list(range(1, len(unit_items) + 1))
    documents = [item for item, _ in items if type(item) is Document]
    letters = [item for item, _ in items if type(item) is DeadLetter]
    assert [json.loads(d.fields["v"])[0] for d in documents] == [float(i) for i in range(KEYS)]
    assert [json.loads(letter.raw["v"])[0] for letter in letters] == [float(i + KEYS) for i in range(KEYS)]
    assert [letter.origins[0].position for letter in letters] == positions[KEYS:]
    kept = f"{path} (byte {positions[3]})" if split else f"{path}:4"
    assert letters[3].reason == f"duplicate _id 'k3' in source[0]; the record at {kept} was kept"

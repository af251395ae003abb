"""The summary table `mlbatch ingest` prints on stderr when a run ends (the **report** step, for a person).

Built from the final task record's counts (`pipelines.report`, `transforms.counters`), so it
says the same for every runner: one row per source (files, records read, matched, dead
letters) and the run's totals (written, created, updated, rejected, bulk retries, time).
`source_rows` and `total_rows` are pure; `print_summary` draws them with rich.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TextIO

SOURCE_COLUMNS = ("source", "files", "records read", "matched", "dead letters")


def source_rows(record: Mapping[str, Any], files_by_source: Sequence[int] = ()) -> list[tuple[str, ...]]:
    """One row per source: its files (`?` when not listed), records read, records matched
    (accounted for without a dead letter: written, merged into a document, skipped, or left
    out by `--join inner`) and records in dead letters."""
    counts = record.get("counts") or {}
    listed = (record.get("data_source") or {}).get("source") or ()
    sources = len(listed) or len(counts.get("read_by_source", {}))
    rows = []
    for index in range(sources):
        name = f"source[{index}]"
        rejected = counts.get("rejected_by_source", {}).get(name, 0)
        accounted = counts.get("accounted_by_source", {}).get(name, 0)
        files = str(files_by_source[index]) if index < len(files_by_source) else "?"
        read = counts.get("read_by_source", {}).get(name, 0)
        rows.append((name, files, str(read), str(max(accounted - rejected, 0)), str(rejected)))
    return rows


def total_rows(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's totals: written (= indexed), created, updated, rejected (dead letters, with the
    records they hold and their stages), bulk retries, time, and the state."""
    counts = record.get("counts") or {}
    by_stage = sorted(counts.get("rejected_by_stage", {}).items())
    stages = ", ".join(f"{stage} {count}" for stage, count in by_stage)
    rejected = f"{counts.get('dlq', 0)} dead letters ({counts.get('rejected_records', 0)} records)"
    rows = [
        ("written", str(counts.get("indexed", 0))),
        ("created / updated", f"{counts.get('created', 0)} / {counts.get('updated', 0)}"),
        ("rejected", rejected + (f": {stages}" if stages else "")),
        ("bulk retries", str(counts.get("bulk_retries", 0))),
        ("time", run_time(record)),
        ("state", str(record.get("state", "?"))),
    ]
    if counts.get("partial"):
        rows.append(("counts", "partial: what this process saw of a run that ran elsewhere"))
    return rows


def run_time(record: Mapping[str, Any]) -> str:
    """From the task's creation to its last update: `4.2 s`, `3 min 07 s`."""
    start, end = record.get("create_time"), record.get("last_update_time")
    if not isinstance(start, int) or not isinstance(end, int):
        return "?"
    seconds = max(end - start, 0) / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def print_summary(record: Mapping[str, Any], files_by_source: Sequence[int], stream: TextIO) -> None:
    """Draw the sources' table and the totals' table on `stream` (colours only on a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False, width=100 if not stream.isatty() else None)
    sources = Table(*SOURCE_COLUMNS, title=f"task {record.get('task_id', '?')}", box=box.SIMPLE)
    for column in sources.columns[1:]:
        column.justify = "right"
    for row in source_rows(record, files_by_source):
        sources.add_row(*row)
    totals = Table("total", "", box=box.SIMPLE, show_header=False)
    for row in total_rows(record):
        totals.add_row(*row)
    console.print(sources)
    console.print(totals)

"""The task store: ML Commons-shaped task records in SQLite under `$MLBATCH_HOME` (the **report** step).

Records look like `GET /_plugins/_ml/tasks/{id}`: `task_id`, `task_type`, `state`,
`create_time` / `last_update_time` (epoch milliseconds), plus our `counts` and `error`.
Callers redact credentials before saving; the store keeps what it is given.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"


def mlbatch_home() -> Path:
    return Path(os.environ.get("MLBATCH_HOME") or Path.home() / ".mlbatch")


def new_task_id() -> str:
    """A 20-character id shaped like OpenSearch's auto-generated ids, never starting with '-'
    (the command line would read it as an option)."""
    first = secrets.choice(string.ascii_letters + string.digits)
    return first + "".join(secrets.choice(_ID_ALPHABET) for _ in range(19))


def now_millis() -> int:
    return int(time.time() * 1000)


class TaskNotFound(LookupError):
    """No task with that id."""


class TaskStore:
    """Create, update and read task records."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or mlbatch_home() / "tasks.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, created INTEGER, record BLOB)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose changes are committed on success, closed in every case."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def create(self, task_type: str, **fields: Any) -> dict[str, Any]:
        stamp = now_millis()
        record = {
            "task_id": new_task_id(),
            "task_type": task_type,
            "state": "CREATED",
            "create_time": stamp,
            "last_update_time": stamp,
            **fields,
        }
        with self._connect() as db:
            db.execute("INSERT INTO tasks VALUES (?, ?, ?)", (record["task_id"], stamp, orjson.dumps(record)))
        return record

    def update(self, task_id: str, drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
        """Set `fields` (and remove the `drop` fields) of a task; returns the new record."""
        record = {**self.get(task_id), **fields, "last_update_time": now_millis()}
        for name in drop:
            record.pop(name, None)
        with self._connect() as db:
            db.execute("UPDATE tasks SET record = ? WHERE task_id = ?", (orjson.dumps(record), task_id))
        return record

    def get(self, task_id: str) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT record FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"task {task_id!r} not found in {self.path}")
        return orjson.loads(row[0])

    def list(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT record FROM tasks ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [orjson.loads(row[0]) for row in rows]

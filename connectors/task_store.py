"""The task store: ML Commons-shaped task records in SQLite under `$MLBATCH_HOME` (the **report** step).

Records look like `GET /_plugins/_ml/tasks/{id}`: `task_id`, `task_type`, `state`,
`create_time` / `last_update_time` (epoch milliseconds), plus our `counts` and `error`.
Callers redact credentials before saving; the store keeps what it is given.

A task that a local process is running (CREATED or RUNNING) names that process in `owner`:
host, pid and the process's start time, so a pid the system later gives to another process
is not mistaken for it. Whenever tasks are read, one whose owner on this host is gone (killed,
crashed) becomes FAILED with "the process running it died" (or, for a task `mlbatch serve-api`
queued, "the mlbatch serve-api process …"), keeping the counts it had. A task without an owner
(a batch prediction waiting on its remote job) is never failed this way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import string
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from connectors.sqlite_file import committed

_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
OWNED_STATES = frozenset({"CREATED", "RUNNING"})
OWNER_DIED = "the process running it died"
SERVICE_ROLE = "serve-api"
SERVICE_DIED = (
    "the mlbatch serve-api process that had this task stopped (killed or crashed) before it finished; "
    "submit the request again"
)
_PROC = Path("/proc")


def mlbatch_home() -> Path:
    return Path(os.environ.get("MLBATCH_HOME") or Path.home() / ".mlbatch")


def new_task_id() -> str:
    """A 20-character id shaped like OpenSearch's auto-generated ids, never starting with '-'
    (the command line would read it as an option)."""
    first = secrets.choice(string.ascii_letters + string.digits)
    return first + "".join(secrets.choice(_ID_ALPHABET) for _ in range(19))


def now_millis() -> int:
    return int(time.time() * 1000)


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22); None if
    there is no such process or it has exited (a zombie). Without /proc, 0 for any process that
    exists (the pid alone)."""
    if _PROC.is_dir():
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # the fields after "pid (comm)", from field 3 on
        return None if fields[0] in ("Z", "X") else int(fields[19])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def this_process(role: str | None = None) -> dict[str, Any]:
    """The `owner` of tasks this process runs; `role` names a service that owns them on behalf of
    others (`SERVICE_ROLE`)."""
    pid = os.getpid()
    owner = {"host": socket.gethostname(), "pid": pid, "start_time": process_start_time(pid)}
    return {**owner, "role": role} if role else owner


def owner_is_gone(owner: Mapping[str, Any], host: str, start_time_of: Callable[[int], int | None]) -> bool:
    """Whether the process that owns a task is known to be gone: it ran on `host` (other hosts
    cannot be checked) and its pid is free or belongs to a process started at another time."""
    if owner.get("host") != host or not isinstance(owner.get("pid"), int):
        return False
    started = start_time_of(owner["pid"])
    return started is None or started != owner.get("start_time")


def orphaned(record: Mapping[str, Any], host: str, start_time_of: Callable[[int], int | None]) -> bool:
    """A CREATED or RUNNING task whose owner process is gone."""
    owner = record.get("owner")
    return (
        record.get("state") in OWNED_STATES
        and isinstance(owner, Mapping)
        and owner_is_gone(owner, host, start_time_of)
    )


def as_died(record: Mapping[str, Any], stamp: int) -> dict[str, Any]:
    """What a task whose process died becomes: FAILED, its counts kept, no owner."""
    died = {key: value for key, value in record.items() if key != "owner"}
    error = SERVICE_DIED if record.get("owner", {}).get("role") == SERVICE_ROLE else OWNER_DIED
    return {**died, "state": "FAILED", "error": error, "last_update_time": stamp}


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

    def _connect(self, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return committed(self.path, write)

    def create(self, task_type: str, **fields: Any) -> dict[str, Any]:
        """A CREATED task owned by this process (`update(..., drop=("owner",))` lets go of it)."""
        stamp = now_millis()
        record = {
            "task_id": new_task_id(),
            "task_type": task_type,
            "state": "CREATED",
            "create_time": stamp,
            "last_update_time": stamp,
            "owner": this_process(),
            **fields,
        }
        with self._connect() as db:
            db.execute("INSERT INTO tasks VALUES (?, ?, ?)", (record["task_id"], stamp, orjson.dumps(record)))
        return record

    def update(
        self,
        task_id: str,
        drop: tuple[str, ...] = (),
        only_if: Callable[[dict[str, Any]], bool] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Set `fields` (and remove the `drop` fields) of a task; returns the new record. With
        `only_if`, the change is made only when it holds for the stored record (else that record
        is returned as it is); read and write are one transaction, so no change is lost.

        A task that leaves CREATED and RUNNING has no owner any more."""
        with self._connect(write=True) as db:
            row = db.execute("SELECT record FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(f"task {task_id!r} not found in {self.path}")
            stored = orjson.loads(row[0])
            if only_if is not None and not only_if(stored):
                return stored
            record = {**stored, **fields, "last_update_time": now_millis()}
            for name in drop:
                record.pop(name, None)
            if record.get("state") not in OWNED_STATES:
                record.pop("owner", None)
            db.execute("UPDATE tasks SET record = ? WHERE task_id = ?", (orjson.dumps(record), task_id))
        return record

    def get(self, task_id: str) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT record FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"task {task_id!r} not found in {self.path}")
        return self._settled(row[0])

    def list(self, limit: int | None = 20) -> list[dict[str, Any]]:
        """The most recent `limit` tasks (None: all), newest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT record FROM tasks ORDER BY created DESC LIMIT ?", (-1 if limit is None else limit,)
            ).fetchall()
        return [self._settled(row[0]) for row in rows]

    def settle_orphans(self) -> list[str]:
        """Make FAILED every CREATED or RUNNING task whose owner process died; their ids."""
        host = socket.gethostname()
        with self._connect() as db:
            rows = db.execute("SELECT record FROM tasks").fetchall()
        stale = [row[0] for row in rows if orphaned(orjson.loads(row[0]), host, process_start_time)]
        return [self._settled(stored)["task_id"] for stored in stale]

    def delete(self, task_id: str) -> None:
        with self._connect() as db:
            if not db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,)).rowcount:
                raise TaskNotFound(f"task {task_id!r} not found in {self.path}")

    def _settled(self, stored: bytes) -> dict[str, Any]:
        """The record, made FAILED (and saved so) when the process running it died."""
        record = orjson.loads(stored)
        if not orphaned(record, socket.gethostname(), process_start_time):
            return record
        task_id, died = record["task_id"], as_died(record, now_millis())
        with self._connect() as db:  # only if no one changed it since it was read
            changed = db.execute(
                "UPDATE tasks SET record = ? WHERE task_id = ? AND record = ?",
                (orjson.dumps(died), task_id, stored),
            ).rowcount
            if not changed:
                return orjson.loads(
                    db.execute("SELECT record FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0]
                )
        return died

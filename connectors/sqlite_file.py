"""The SQLite files of mlbatch's stores (tasks, connectors and models, ingestion manifests): one
connection per use, so the threads of one process share a store freely."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def committed(path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to `path` whose changes are committed on success, closed in every case. With
    `write` it takes the write lock at once (`BEGIN IMMEDIATE`), so what it reads stays true until
    it writes."""
    db = sqlite3.connect(path, timeout=30)
    try:
        with db:
            if write:
                db.execute("BEGIN IMMEDIATE")
            yield db
    finally:
        db.close()

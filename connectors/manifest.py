"""The manifest of an index: which source files runs ingested (the **report** step's record of files).

One SQLite file per index, `$MLBATCH_HOME/manifests/<index>.sqlite`, holds one entry per
(request fingerprint, source, file): its size and version when it was ingested, the task that
ingested it and that run's counts (`connectors.manifest_rules` decides what they allow a run to
skip). `file_versions` reads what a file's version is now: a local file's mtime in
nanoseconds, an S3 object's ETag (one HEAD request each), nothing for an OpenAI file id (its
content never changes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from connectors.manifest_rules import FileKey, FileState, Recorded
from connectors.source_access import SourceAccess
from connectors.sources import SourceError
from connectors.sqlite_file import committed
from connectors.task_store import mlbatch_home, now_millis

_MAX_NAME_BYTES = 200


def manifest_path(index_name: str, home: Path | None = None) -> Path:
    """Where the manifest of `index_name` lives (a long name is cut and made unique by a hash)."""
    name = index_name
    if len(name.encode()) > _MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = name.encode()[:_MAX_NAME_BYTES].decode(errors="ignore") + "-" + digest
    return (home or mlbatch_home()) / "manifests" / f"{name}.sqlite"


class Manifest:
    """Read and record the files runs ingested into one index."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (fingerprint TEXT, source INTEGER, uri TEXT, size INTEGER, "
                "version TEXT, task_id TEXT, counts BLOB, finished INTEGER, "
                "PRIMARY KEY (fingerprint, source, uri))"
            )

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return committed(self.path)

    def entries(self, fingerprint: str) -> dict[FileKey, Recorded]:
        """Every file recorded under `fingerprint`, by (source, uri)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT source, uri, size, version, task_id, counts FROM files WHERE fingerprint = ?",
                (fingerprint,),
            ).fetchall()
        found = {}
        for source, uri, size, version, task_id, counts in rows:
            found[(source, uri)] = Recorded(
                FileState(source, uri, size, version), task_id, orjson.loads(counts)
            )
        return found

    def record(self, fingerprint: str, files: Sequence[FileState], task_id: str, counts: dict) -> None:
        """Record `files` as ingested by `task_id`, replacing what was recorded of them."""
        stamp, blob = now_millis(), orjson.dumps(counts)
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(fingerprint, f.source, f.uri, f.size, f.version, task_id, blob, stamp) for f in files],
            )


def file_versions(source: int, uris: Sequence[str], access: SourceAccess) -> list[FileState]:
    """The files of `source` with their size and version now; SourceError when one cannot be read."""
    try:
        if access.source_type == "s3":
            client = access.s3_client()
            return [_s3_state(client, source, uri) for uri in uris]
        if access.source_type == "openAI":
            files = access.openai_client().files
            return [FileState(source, uri, int(files.retrieve(uri).bytes or 0), "") for uri in uris]
        return [_local_state(source, uri) for uri in uris]
    except (OSError, ClientError, BotoCoreError) as error:
        raise SourceError(f"cannot read a source file's size and version: {error}") from None


def _local_state(source: int, path: str) -> FileState:
    stat = os.stat(path)
    return FileState(source, path, stat.st_size, str(stat.st_mtime_ns))


def _s3_state(client: Any, source: int, uri: str) -> FileState:
    parsed = urlparse(uri)
    head = client.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    return FileState(source, uri, int(head["ContentLength"]), str(head.get("ETag", "")))

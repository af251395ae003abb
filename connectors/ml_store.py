"""The ML object store: connectors and models `mlbatch serve-api` registers, in SQLite under $MLBATCH_HOME.

Records look like what `GET /_plugins/_ml/connectors/{id}` and `GET /_plugins/_ml/models/{id}` answer:
the fields the caller gave plus `created_time` / `last_updated_time` (epoch milliseconds); the id is
the row's key, not a field. A connector's `credential` is never in its record: it is sealed with the
`SecretBox` into a column of its own, so the database file never holds it in plain text, and only
`credential()` opens it.

Models name their connector in `connector_id`: a model cannot name a connector that does not exist,
and a connector that models name cannot be deleted (both checked in the transaction that writes).
Each call opens its own connection, so threads of one process share a store freely.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connectors.secret_box import SecretBox
from connectors.sqlite_file import committed
from connectors.task_store import mlbatch_home, new_task_id, now_millis

KINDS = frozenset({"connector", "model"})
CREDENTIAL = "credential"


@dataclass(frozen=True)
class Reference:
    """Records of `kind` name an object of `target` kind in their `field`."""

    kind: str
    field: str
    target: str


REFERENCES = (Reference("model", "connector_id", "connector"),)


class ObjectNotFound(LookupError):
    """No object of that kind with that id."""


class ObjectInUse(ValueError):
    """The object is named by others (a connector by models) and cannot be deleted."""

    def __init__(self, message: str, users: list[str]) -> None:
        super().__init__(message)
        self.users = users


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {sorted(KINDS)}")


def not_found(kind: str, object_id: str) -> ObjectNotFound:
    return ObjectNotFound(f"Failed to find {kind} with the provided {kind} id: {object_id}")


def in_use(reference: Reference, users: list[str]) -> ObjectInUse:
    """The error ML Commons answers (409) when a connector that models use is deleted."""
    names = ", ".join(users)
    return ObjectInUse(
        f"{len(users)} {reference.kind}s are still using this {reference.target}, "
        f"please delete or update the {reference.kind}s first: [{names}]",
        users,
    )


def without_credential(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` itself, refused if it carries a credential (that goes to `credential=`)."""
    if CREDENTIAL in record:
        raise ValueError(f"a record never holds its {CREDENTIAL!r}: pass it as credential= to be sealed")
    return dict(record)


class MlStore:
    """Create, read, update and delete connector and model records, credentials sealed."""

    def __init__(self, box: SecretBox, path: Path | None = None) -> None:
        self.box = box
        self.path = path or mlbatch_home() / "ml.db"
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._connect(write=True) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS objects (kind TEXT, object_id TEXT, created INTEGER, "
                "record BLOB, sealed TEXT, PRIMARY KEY (kind, object_id))"
            )

    def _connect(self, write: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return committed(self.path, write)

    def create(
        self, kind: str, record: Mapping[str, Any], credential: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Store a new object; returns its new id and its record (what `get` will answer)."""
        check_kind(kind)
        stamp = now_millis()
        stored = {**without_credential(record), "created_time": stamp, "last_updated_time": stamp}
        object_id = new_task_id()
        sealed = None if credential is None else self.box.seal(credential)
        with self._connect(write=True) as db:
            _check_targets(db, kind, stored)
            db.execute(
                "INSERT INTO objects VALUES (?, ?, ?, ?, ?)",
                (kind, object_id, stamp, orjson.dumps(stored), sealed),
            )
        return object_id, stored

    def get(self, kind: str, object_id: str) -> dict[str, Any]:
        """The record (never with its credential)."""
        with self._connect() as db:
            return orjson.loads(_row(db, kind, object_id)[0])

    def credential(self, kind: str, object_id: str) -> dict[str, str]:
        """The object's credential, opened ({} when it was stored without one)."""
        with self._connect() as db:
            sealed = _row(db, kind, object_id)[1]
        return {} if sealed is None else self.box.open(sealed)

    def update(
        self, kind: str, object_id: str, /, *, credential: Mapping[str, str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Set `fields` of the record (and replace its credential when one is given); returns the
        new record."""
        sealed = None if credential is None else self.box.seal(credential)
        with self._connect(write=True) as db:
            stored, old_sealed = _row(db, kind, object_id)
            record = {**orjson.loads(stored), **fields, "last_updated_time": now_millis()}
            _check_targets(db, kind, record)
            db.execute(
                "UPDATE objects SET record = ?, sealed = ? WHERE kind = ? AND object_id = ?",
                (orjson.dumps(record), sealed or old_sealed, kind, object_id),
            )
        return record

    def delete(self, kind: str, object_id: str) -> None:
        """Remove the object; ObjectInUse when other records name it (a connector that models use)."""
        with self._connect(write=True) as db:
            _row(db, kind, object_id)
            for reference in REFERENCES:
                if reference.target == kind:
                    users = [user for user, _ in _matching(db, reference.kind, reference.field, object_id)]
                    if users:
                        raise in_use(reference, users)
            db.execute("DELETE FROM objects WHERE kind = ? AND object_id = ?", (kind, object_id))


def _row(db: sqlite3.Connection, kind: str, object_id: str) -> tuple[bytes, str | None]:
    """The stored record and sealed credential of an object."""
    check_kind(kind)
    row = db.execute(
        "SELECT record, sealed FROM objects WHERE kind = ? AND object_id = ?", (kind, object_id)
    ).fetchone()
    if row is None:
        raise not_found(kind, object_id)
    return row


def _matching(db: sqlite3.Connection, kind: str, field: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    rows = db.execute(
        "SELECT object_id, record FROM objects WHERE kind = ? ORDER BY created, object_id", (kind,)
    ).fetchall()
    records = ((object_id, orjson.loads(stored)) for object_id, stored in rows)
    return [(object_id, record) for object_id, record in records if record.get(field) == value]


def _check_targets(db: sqlite3.Connection, kind: str, record: Mapping[str, Any]) -> None:
    """ObjectNotFound when the record names (in a reference field) an object that does not exist."""
    for reference in REFERENCES:
        if reference.kind == kind and record.get(reference.field) is not None:
            _row(db, reference.target, record[reference.field])

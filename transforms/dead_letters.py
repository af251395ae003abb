"""Write rejected records to the dead-letter queue (the side exit of every step).

One JSONL file per bundle under the DLQ directory (local path, or `s3://` through smart_open
with the request's S3 credential or the default AWS chain), one entry per record: task_id,
stage, reason, source, line and the raw line or document. A bundle's file is named after the
task, the writer's step and its first entry's stage and origins (`bundle_file_name`), so a
bundle that runs again (a retry, or a task a distributed runner recomputes after losing a
worker) writes over its own file instead of adding a second copy of its entries. Known secrets are redacted
before anything is written. A record counts as accounted for (see `pipelines.outcome`)
only once its entry is written here.

Every step that rejects records gets its own `WriteDeadLetters` (see `pipelines.ingest_graph`),
so the writer is fused into that step on every runner (the project's Dask runner included: it
runs a chain of ParDos as one task) and an entry is written while its bundle runs, not after
the whole job. A bundle's file is closed when the bundle finishes; when
the job fails or is interrupted instead, the files of the bundles cut short in this process are
closed by `close_open_files()` (the in-process runner's bundles: nothing is written twice, as
those bundles never finish). On a distributed runner a failed bundle's file is left unclosed
(an S3 upload never completed is not written) and the bundle's retry writes the file anew.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import IO, Any

import apache_beam as beam
import orjson

from connectors.redact import Redactor
from connectors.sources import SourceAccess
from transforms import counters, progress
from transforms.types import DeadLetter

log = logging.getLogger("mlbatch")
_open_files: set[IO[bytes]] = set()
_open_files_lock = threading.Lock()


def close_open_files() -> None:
    """Close the DLQ files of bundles that did not finish (a failed or interrupted run)."""
    with _open_files_lock:
        streams = list(_open_files)
        _open_files.clear()
    for stream in streams:
        try:
            stream.close()
        except Exception as error:  # a failing store must not hide the run's own error
            log.warning("could not close a dead-letter file: %s", error)


def dead_letter_counts(dead: DeadLetter) -> dict[str, int]:
    """What one written entry adds, by counter name: an entry of its stage, its records, each
    of them accounted for."""
    counts = {
        counters.dlq_by_stage(dead.stage): 1,
        counters.DLQ: 1,
        counters.REJECTED_RECORDS: len(dead.origins),
    }
    for origin in dead.origins:
        for name in (counters.accounted_by_source(origin.source), counters.rejected_by_source(origin.source)):
            counts[name] = counts.get(name, 0) + 1
    return counts


def bundle_file_name(task_id: str, step: str, first: DeadLetter) -> str:
    """The file of the bundle whose first entry is `first`: the same each time the bundle runs
    (a record is rejected in one bundle of a step, so no other bundle of the step starts with it)."""
    digest = hashlib.sha256(f"{task_id}|{step}|{first.stage}|{first.origins!r}".encode()).hexdigest()
    return f"rejected-{step}-{digest[:24]}.jsonl"


def _raw_json(value: Any) -> Any:
    """Field values that travel as JSON bytes go in as JSON; anything else odd as its text."""
    return orjson.Fragment(value) if isinstance(value, bytes) else str(value)


class _WriteDeadLettersFn(beam.DoFn):
    def __init__(
        self, directory: str, task_id: str, redactor: Redactor, access: SourceAccess, step: str
    ) -> None:
        self._directory = directory.rstrip("/")
        self._task_id = task_id
        self._step = step
        self._redactor = redactor
        self._access = access
        self._counters = counters.CounterSet()

    def start_bundle(self) -> None:
        self._stream = None

    def process(self, dead: DeadLetter) -> None:
        if self._stream is None:
            if "://" not in self._directory:
                os.makedirs(self._directory, exist_ok=True)
            path = f"{self._directory}/{bundle_file_name(self._task_id, self._step, dead)}"
            params = {"client": self._access.s3_client()} if path.startswith("s3://") else {}
            import smart_open  # loads boto3's stack: only when a dead letter is written

            self._stream = smart_open.open(path, "wb", transport_params=params)
            with _open_files_lock:
                _open_files.add(self._stream)
        entry = self._redactor.value(dead.to_json(self._task_id))
        self._stream.write(orjson.dumps(entry, default=_raw_json) + b"\n")
        self._counters.add(dead_letter_counts(dead))
        progress.DEAD_LETTERS.add()
        progress.REJECTED_RECORDS.add(len(dead.origins))

    def finish_bundle(self) -> None:
        if self._stream is not None:
            with _open_files_lock:
                _open_files.discard(self._stream)
            self._stream.close()
            self._stream = None


class WriteDeadLetters(beam.PTransform):
    """DeadLetters in; JSONL files under `directory` out. `step` names the writer among the
    job's writers (part of each file's name)."""

    def __init__(
        self, directory: str, task_id: str, redactor: Redactor, access: SourceAccess, step: str
    ) -> None:
        super().__init__()
        self._fn = _WriteDeadLettersFn(directory, task_id, redactor, access, step)

    def expand(self, dead_letters: beam.PCollection) -> beam.PCollection:
        return dead_letters | "WriteDLQ" >> beam.ParDo(self._fn)

"""Write rejected records to the dead-letter queue (the side exit of every step).

One JSONL file per bundle under the DLQ directory (local path, or `s3://` through smart_open
with the request's S3 credential or the default AWS chain), one entry per record: task_id,
stage, reason, source, line and the raw line or document. Known secrets are redacted
before anything is written. A record counts as accounted for (see `pipelines.outcome`)
only once its entry is written here.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import apache_beam as beam
import orjson
import smart_open
from apache_beam.metrics import Metrics

from connectors.redact import Redactor
from connectors.sources import SourceAccess
from transforms.types import METRICS_NAMESPACE, DeadLetter, accounted_counter


def _raw_json(value: Any) -> Any:
    """Field values that travel as JSON bytes go in as JSON; anything else odd as its text."""
    return orjson.Fragment(value) if isinstance(value, bytes) else str(value)


class _WriteDeadLettersFn(beam.DoFn):
    def __init__(self, directory: str, task_id: str, redactor: Redactor, access: SourceAccess) -> None:
        self._directory = directory.rstrip("/")
        self._task_id = task_id
        self._redactor = redactor
        self._access = access

    def start_bundle(self) -> None:
        self._stream = None

    def process(self, dead: DeadLetter) -> None:
        if self._stream is None:
            if "://" not in self._directory:
                os.makedirs(self._directory, exist_ok=True)
            path = f"{self._directory}/rejected-{uuid.uuid4().hex}.jsonl"
            params = {"client": self._access.s3_client()} if path.startswith("s3://") else {}
            self._stream = smart_open.open(path, "wb", transport_params=params)
        entry = self._redactor.value(dead.to_json(self._task_id))
        self._stream.write(orjson.dumps(entry, default=_raw_json) + b"\n")
        Metrics.counter(METRICS_NAMESPACE, f"dlq.{dead.stage}").inc()
        Metrics.counter(METRICS_NAMESPACE, "dlq").inc()
        Metrics.counter(METRICS_NAMESPACE, "rejected_records").inc(len(dead.origins))
        for origin in dead.origins:
            accounted_counter(origin.source).inc()

    def finish_bundle(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class WriteDeadLetters(beam.PTransform):
    """DeadLetters in; JSONL files under `directory` out."""

    def __init__(self, directory: str, task_id: str, redactor: Redactor, access: SourceAccess) -> None:
        super().__init__()
        self._fn = _WriteDeadLettersFn(directory, task_id, redactor, access)

    def expand(self, dead_letters: beam.PCollection) -> beam.PCollection:
        return dead_letters | "WriteDLQ" >> beam.ParDo(self._fn)

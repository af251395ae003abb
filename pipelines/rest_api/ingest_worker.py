"""One `_batch_ingestion` task of `mlbatch serve-api`, run in a process of its own (the **run** step
behind the REST API).

The service starts `python -P -m pipelines.rest_api.ingest_worker SERVICE_PID` for each task it
runs and writes one JSON object on its stdin (`worker_payload`): the task id, the request body
(its credential included: secrets never go through argv, the environment or a file) and the
service's ingestion options. The worker runs the same `run_ingest` as `mlbatch ingest`, taking
over the CREATED task, and logs to stderr, which the service relays into its own log.

A process per run keeps each run's counters, signals and memory apart (they are process-wide) and
lets a cancel stop it: SIGTERM (or SIGINT) ends the run as interrupted, its record FAILED with the
counts reached, which the service then turns into CANCELLED. When the service process is gone
(killed), the worker interrupts itself, so no ingestion outlives the service that answers for it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from typing import Any

import orjson

from connectors.parent_watch import wait_until_orphaned
from connectors.task_store import SERVICE_DIED, TaskStore
from pipelines import task_lifecycle
from pipelines.cli_common import EXIT_FAILED, EXIT_INTERRUPTED, UsageError, configure_logging, log
from pipelines.ingest_options import IngestOptions


def worker_payload(task_id: str, body: Any, options: IngestOptions) -> bytes:
    """What the service writes on a worker's stdin."""
    return orjson.dumps({"task_id": task_id, "body": body, "options": dataclasses.asdict(options)})


def options_from(fields: dict[str, Any]) -> IngestOptions:
    """The options `worker_payload` carried (JSON has no tuples)."""
    return IngestOptions(**{**fields, "beam_args": tuple(fields.get("beam_args", ()))})


def _interrupt_when_orphaned(service_pid: int, gone: threading.Event) -> None:
    wait_until_orphaned(service_pid)
    gone.set()
    os.kill(os.getpid(), signal.SIGTERM)


def run_task(payload: dict[str, Any], service_gone: threading.Event) -> int:
    """Run the payload's task to its final record; the exit code of `mlbatch ingest`."""
    from pipelines.ingest_command import exit_code
    from pipelines.ingest_run import run_ingest

    task_id = payload["task_id"]
    store = TaskStore()
    try:
        result = run_ingest(options_from(payload["options"]), payload["body"], task_id=task_id)
    except UsageError as error:  # a --create-index file of the service that cannot be read, …
        log.error("%s", error)
        store.update(task_id, state="FAILED", error=str(error))
        return EXIT_FAILED
    if result.interrupted and service_gone.is_set():
        store.update(task_id, error=SERVICE_DIED)
    return exit_code(result)


def main() -> None:
    service_pid = int(sys.argv[1])  # given, not read: the service may be gone before this runs
    configure_logging(quiet=False, debug=False)
    service_gone = threading.Event()
    threading.Thread(target=_interrupt_when_orphaned, args=(service_pid, service_gone), daemon=True).start()
    try:
        with task_lifecycle.interrupts_raise():
            payload = orjson.loads(sys.stdin.buffer.read())
            code = run_task(payload, service_gone)
    except KeyboardInterrupt:  # before the run took the task: the service records how it ended
        code = EXIT_INTERRUPTED
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

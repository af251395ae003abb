"""The `_batch_ingestion` tasks of `mlbatch serve-api`: at most `max_running` at once, up to
`max_queued` waiting, each in a worker process (`pipelines.rest_api.ingest_worker`).

`submit` queues a CREATED task (owned by the service until a worker takes it over) or refuses
with `QueueFull`; `cancel` takes a waiting task off the queue or stops a running one (SIGTERM,
then SIGKILL after `stop_grace` seconds) and records it CANCELLED with the counts it reached;
`close` stops everything when the service stops. Whatever way a worker ends — its own final
record, a crash, a kill — the task's record ends in a final state: a worker that ended without
taking the task over leaves it FAILED with its exit code, and one killed while it ran leaves it
FAILED "the process running it died" (the task store's rule).
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from connectors.secret_box import KEY_ENV
from connectors.task_store import OWNED_STATES, OWNER_DIED, SERVICE_DIED, TaskStore
from pipelines import task_lifecycle
from pipelines.ingest_options import IngestOptions
from pipelines.rest_api.ingest_worker import worker_payload

log = logging.getLogger("mlbatch")
SERVICE_STOPPED = "mlbatch serve-api stopped before the task ran; submit the request again"
WORKER_LOG_PREFIX = "mlbatch: "
END_ATTEMPTS = 3  # tries at recording how a run ended; after them it stays as it is until a restart fails it
STOPPED_ERRORS = frozenset({task_lifecycle.INTERRUPTED, OWNER_DIED, SERVICE_DIED})  # a stopped worker's end


class QueueFull(RuntimeError):
    """No room for another task."""


@dataclass
class _Run:
    task_id: str
    payload: bytes = field(repr=False)
    process: subprocess.Popen | None = None
    cancelled: bool = False
    ending: bool = False  # its end is being recorded (once)
    done: threading.Event = field(default_factory=threading.Event)  # and has been


def worker_command() -> list[str]:
    return [sys.executable, "-P", "-m", "pipelines.rest_api.ingest_worker", str(os.getpid())]


def worker_environment() -> dict[str, str]:
    """The service's environment without the master key: a worker reads no stored credential."""
    return {name: value for name, value in os.environ.items() if name != KEY_ENV}


class IngestQueue:
    """Runs queued ingestion tasks in worker processes, `max_running` at a time."""

    def __init__(
        self,
        store: TaskStore,
        options: IngestOptions,
        max_running: int = 1,
        max_queued: int = 100,
        stop_grace: float = 30.0,
    ) -> None:
        self._store, self._options = store, options
        self._max_queued, self._stop_grace = max_queued, stop_grace
        self._waiting: queue.Queue[_Run | None] = queue.Queue()
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, name=f"mlbatch-ingest-{n}", daemon=True)
            for n in range(max_running)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task_id: str, body: Any) -> None:
        """Queue the CREATED task `task_id` to ingest `body`; QueueFull when `max_queued` wait."""
        with self._lock:
            waiting = sum(1 for run in self._runs.values() if run.process is None)
            if self._closing or waiting >= self._max_queued:
                raise QueueFull(f"{waiting} ingestion tasks are already waiting to run")
            run = _Run(task_id, worker_payload(task_id, body, self._options))
            self._runs[task_id] = run
        self._waiting.put(run)

    def cancel(self, task_id: str, wait: float) -> bool:
        """Stop the task if it waits or runs here (False if not) and wait up to `wait` seconds for
        its final record."""
        with self._lock:
            run = self._runs.get(task_id)
            if run is None:
                return False
            run.cancelled = True
            process = run.process
        if process is None:
            self._finish(run, None)
        else:
            self._stop(process)
        run.done.wait(wait)
        return True

    def close(self) -> None:
        """Stop taking tasks, fail the waiting ones, stop the running ones and wait for their records."""
        with self._lock:
            self._closing = True
            runs = list(self._runs.values())
        for run in runs:
            if run.process is None:
                self._finish(run, None, SERVICE_STOPPED)
            else:
                self._stop(run.process)
        for _ in self._threads:
            self._waiting.put(None)
        for thread in self._threads:
            thread.join(self._stop_grace + 5)

    def _stop(self, process: subprocess.Popen) -> None:
        """SIGTERM now, SIGKILL if the worker is still there after `stop_grace` seconds."""
        if process.poll() is None:
            process.terminate()
            timer = threading.Timer(self._stop_grace, lambda: process.poll() is None and process.kill())
            timer.daemon = True
            timer.start()

    def _work(self) -> None:
        while (run := self._waiting.get()) is not None:
            try:
                self._run(run)
            except Exception as error:  # no task may wait forever behind a thread that died
                reason = f"the ingestion worker could not run: {type(error).__name__}: {error}"
                log.error("task %s: %s", run.task_id, reason)
                if run.process is not None and run.process.poll() is None:
                    run.process.kill()
                self._finish(run, None, reason)

    def _run(self, run: _Run) -> None:
        with self._lock:
            if run.ending or run.cancelled or self._closing:  # cancel and close record it
                return
            run.process = subprocess.Popen(
                worker_command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C at the service's terminal is the service's to handle
                env=worker_environment(),
            )
        self._feed(run)
        self._relay_log(run)
        self._finish(run, run.process.wait())

    def _feed(self, run: _Run) -> None:
        assert run.process is not None and run.process.stdin is not None
        try:
            run.process.stdin.write(run.payload)
            run.process.stdin.close()
        except BrokenPipeError:  # the worker is already gone: its exit code tells
            pass
        run.payload = b""

    def _relay_log(self, run: _Run) -> None:
        assert run.process is not None and run.process.stderr is not None
        for raw in run.process.stderr:
            line = raw.decode(errors="replace").rstrip().removeprefix(WORKER_LOG_PREFIX)
            log.info("%s", line if line.startswith(f"task {run.task_id}") else f"task {run.task_id}: {line}")

    def _finish(self, run: _Run, exit_code: int | None, error: str | None = None) -> None:
        """The task's final record after its worker ended (`exit_code`) or before one started."""
        with self._lock:
            if run.ending:
                return
            run.ending = True
            self._runs.pop(run.task_id, None)
        try:
            for attempt in range(END_ATTEMPTS):
                try:
                    self._record_end(run, exit_code, error)
                    break
                except Exception as failure:  # a store locked for long: once more, then give up
                    log.error("task %s: could not record its end: %s", run.task_id, failure)
                    time.sleep(attempt + 1)
        finally:
            run.done.set()

    def _record_end(self, run: _Run, exit_code: int | None, error: str | None) -> None:
        try:
            record = self._store.get(run.task_id)
        except LookupError:  # deleted meanwhile
            return
        if run.cancelled and (record["state"] in OWNED_STATES or record.get("error") in STOPPED_ERRORS):
            self._store.update(run.task_id, state="CANCELLED", drop=("error",))
        elif record["state"] in OWNED_STATES:
            reason = error or f"the ingestion worker exited with code {exit_code} before recording an end"
            self._store.update(run.task_id, state="FAILED", error=reason)

"""Run a read job (`transforms.read_jobs`) in a helper process, so parsing runs beside the pipeline.

The DirectRunner runs a pipeline on one thread, and parsing JSON is most of a record's cost.
`HelperRead` starts `python -m transforms.read_helper`, sends it the job (a file or byte range
to project; for the hot paths, a single source's documents or a whole broadcast join, encoded)
with the source access on stdin (so a credential never shows in the process list) and yields
the job's frames as the helper streams them back on stdout, in order. The helper runs the same
`frames()` as in-process reading (`run_job` picks one or the other); a file it cannot read
raises SourceError with the same message.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any, BinaryIO

from connectors.parent_watch import wait_until_orphaned
from connectors.sources import SourceError
from transforms.read_jobs import BroadcastJob, DocumentsJob, ProjectJob

ReadJob = ProjectJob | DocumentsJob | BroadcastJob
READ_AHEAD_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct("<Q")


def read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class _Outbox:
    """Writes frames to the pipe on a thread, so the helper keeps parsing while the pipeline is
    busy elsewhere, up to `limit` bytes ahead of it."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self._out = out
        self._limit = limit
        self._frames: deque[bytes] = deque()
        self._pending = 0
        self._done = False
        self._failed: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._write_all, name="read-helper-out", daemon=True)
        self._thread.start()

    def put(self, item: Any) -> None:
        data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        with self._changed:
            while self._frames and self._pending + len(data) > self._limit and self._failed is None:
                self._changed.wait()
            if self._failed is not None:
                raise self._failed
            self._frames.append(data)
            self._pending += len(data)
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._done = True
            self._changed.notify_all()
        self._thread.join()

    def _write_all(self) -> None:
        while True:
            with self._changed:
                while not self._frames and not self._done:
                    self._changed.wait()
                if not self._frames:
                    return
                data = self._frames.popleft()
            try:
                self._out.write(_HEADER.pack(len(data)))
                self._out.write(data)
                self._out.flush()
            except BaseException as error:  # e.g. the pipeline stopped reading: `put` must not wait forever
                with self._changed:
                    self._failed = error
                    self._changed.notify_all()
                return
            with self._changed:
                self._pending -= len(data)
                self._changed.notify_all()


def serve(job: BinaryIO, out: BinaryIO, read_ahead: int = READ_AHEAD_BYTES) -> None:
    """The helper's side: read the job, stream frames, end with `end` or `error`."""
    outbox = _Outbox(out, read_ahead)
    try:
        for frame in pickle.loads(job.read()).frames():
            outbox.put(("frame", frame))
        outbox.put(("end",))
    except SourceError as error:
        outbox.put(("error", str(error)))
    except OSError:
        return
    except Exception as error:  # reported to the pipeline as this file's failure, not a bare traceback
        outbox.put(("error", f"the read helper failed: {type(error).__name__}: {error}"))
    finally:
        outbox.close()


def run_job(job: ReadJob, helper: bool) -> Iterator[Any]:
    """The frames of `job`, from a helper process (`helper`) or computed in this one."""
    return HelperRead.for_job(job).frames() if helper else job.frames()


class HelperRead:
    """A helper process running one read job, started at once; `frames` yields what it sends.

    The process is stopped when `frames` ends or is closed, or when this object is dropped
    unread (say, the caller failed before reading). `start_early` starts the helper of a
    job the pipeline will run before the pipeline is even built; `for_job` hands it to
    the step that runs that job when it runs in the same process (the DirectRunner), and
    starts a new one otherwise.
    """

    _early: dict[ReadJob, HelperRead] = {}

    @classmethod
    def start_early(cls, job: ReadJob) -> None:
        cls._early[job] = cls(job)

    @classmethod
    def for_job(cls, job: ReadJob) -> HelperRead:
        early = cls._early.pop(job, None)
        return early if early is not None else cls(job)

    @classmethod
    def discard_early(cls) -> None:
        """Stop the early helpers no step took (the run failed before reading them)."""
        while cls._early:
            cls._early.popitem()[1]._stop()

    def __init__(self, job: ReadJob) -> None:
        self._uri = job.part.uri
        self._process = subprocess.Popen(
            # -P: never import a `transforms` package from the user's working directory
            [sys.executable, "-P", "-m", "transforms.read_helper", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._stop = weakref.finalize(self, _stop, self._process)
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(pickle.dumps(job, pickle.HIGHEST_PROTOCOL))
            self._process.stdin.close()
        except BrokenPipeError:  # the helper died at start; `frames` reports it as this file's failure
            pass

    def frames(self) -> Iterator[Any]:
        """The job's frames, in order."""
        stream = self._process.stdout
        assert stream is not None
        try:
            while True:
                try:
                    kind, *rest = read_frame(stream)
                except EOFError:
                    code = self._process.wait()
                    raise SourceError(f"{self._uri}: the read helper exited early ({code})") from None
                if kind == "end":
                    return
                if kind == "error":
                    raise SourceError(rest[0])
                yield rest[0]
        finally:
            self._stop()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _exit_when_orphaned(parent: int) -> None:
    """Exit as soon as the pipeline's process is gone (killed with SIGKILL, say), even while the
    job writes nothing (reading the small sources of a broadcast join)."""
    wait_until_orphaned(parent)
    os._exit(1)


def main() -> None:
    """The helper process (`python -m transforms.read_helper PIPELINE_PID`): frames go to the
    original stdout, anything printed goes to stderr, Ctrl-C is left to the pipeline, which stops
    the helper, and the helper ends with the pipeline's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = int(sys.argv[1])  # given, not read: the pipeline may be gone before this runs
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, frames)


if __name__ == "__main__":
    main()

"""Progress lines on stderr while a job runs (read and write steps), at most one per interval.

Counters are per process: in-process runners (DirectRunner in_memory) show the whole job;
worker processes of other modes report through their runner's logging. The write step's
line carries the bulk retries and dead letters so far:
`indexed 12000 documents (4100/s), 37 retries, 3 dead letters`.

The same counters are what a run that fails or is interrupted records as its counts (Beam's
metrics are gone by then): `snapshot()`. `INPUT` holds the bytes of input planned (set once the
sources are listed) and read so far, for the progress bar of `pipelines.progress_bar`, which
drops the lines logged here (they carry `PROGRESS_LINE`) while it is shown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from connectors.byte_ranges import FileRange, can_split
from transforms import counters

log = logging.getLogger("mlbatch")
PROGRESS_LINE = "mlbatch_progress_line"  # set on the log records of progress lines


class Tally:
    """A thread-safe count of one kind of event, shown beside a `Progress` line."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self.count = 0
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Start counting anew (at the start of a run)."""
        with self._lock:
            self.count = 0

    def add(self, count: int = 1) -> None:
        with self._lock:
            self.count += count


class Progress:
    """Counts items of one kind and logs `<verb> N <noun> (R/s)[, M <extra>…]` every `interval` seconds.

    `extras` are tallies shown after the rate once they are not zero.
    """

    def __init__(self, verb: str, noun: str, interval: float = 2.0, extras: tuple[Tally, ...] = ()) -> None:
        self.verb, self.noun, self.interval, self.extras = verb, noun, interval, extras
        self.count = 0
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Start counting anew (at the start of a run)."""
        with self._lock:
            self.count = 0
            self._started = self._last = time.monotonic()

    def add(self, count: int = 1) -> None:
        with self._lock:
            self.count += count
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
            rate = self.count / max(now - self._started, 1e-9)
        line = progress_line(self.verb, self.count, self.noun, rate, self._extra_counts())
        log.info("%s", line, extra={PROGRESS_LINE: True})

    def _extra_counts(self) -> list[tuple[int, str]]:
        return [(extra.count, extra.noun) for extra in self.extras]


class InputBytes:
    """The input's bytes: those planned (`plan`, from the listed files' sizes) and those read so far.

    Plain JSONL lines are counted as they are read (`add`, from the read steps' counts); a file
    read whole that is not plain JSONL (compressed, Parquet, an OpenAI file) counts all its
    bytes when its read step ends (`finish`). `live` says whether the read steps run in this
    process, so that `read` moves as they go.
    """

    def __init__(self) -> None:
        self.read = 0
        self.total: int | None = None
        self.live = False
        self.files_by_source: tuple[int, ...] = ()
        self._counted_at_end: dict[str, int] = {}
        self._lock = threading.Lock()

    def plan(self, files: Sequence[Sequence[tuple[str, int]]], source_type: str, live: bool) -> None:
        """The `(uri, size)` files of each source, as listed before the run."""
        with self._lock:
            self.total = sum(size for listed in files for _, size in listed)
            self.live = live
            self.files_by_source = tuple(len(listed) for listed in files)
            self._counted_at_end = {
                uri: size for listed in files for uri, size in listed if not can_split(uri, source_type)
            }

    def clear(self) -> None:
        """Forget the plan (a new run, not planned yet)."""
        with self._lock:
            self.read, self.total, self.live, self.files_by_source = 0, None, False, ()
            self._counted_at_end = {}

    def restart(self) -> None:
        with self._lock:
            self.read = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.read += count

    def finish(self, *parts: FileRange) -> None:
        """The read steps of `parts` ended: whole files not read as lines count their size."""
        with self._lock:
            for part in parts:
                if part.end is None:
                    self.read += self._counted_at_end.get(part.uri, 0)


def progress_line(verb: str, count: int, noun: str, rate: float, extras: list[tuple[int, str]]) -> str:
    """`indexed 12000 documents (4100/s), 37 retries, 3 dead letters`: extras that are not zero."""
    shown = "".join(f", {number} {name}" for number, name in extras if number)
    return f"{verb} {count} {noun} ({rate:.0f}/s){shown}"


READ = Progress("read", "records")
RETRIES = Tally("retries")
DEAD_LETTERS = Tally("dead letters")
REJECTED_RECORDS = Tally("rejected records")
INDEXED = Progress("indexed", "documents", extras=(RETRIES, DEAD_LETTERS))
INPUT = InputBytes()
_ALL = (READ, INDEXED, RETRIES, DEAD_LETTERS, REJECTED_RECORDS, INPUT)


def restart_all() -> None:
    """Zero every counter (a new run in this process)."""
    for counter in _ALL:
        counter.restart()


def snapshot() -> dict[str, int]:
    """The counts so far, named as the task record's counts."""
    return {
        counters.READ: READ.count,
        counters.INDEXED: INDEXED.count,
        counters.BULK_RETRIES: RETRIES.count,
        counters.DLQ: DEAD_LETTERS.count,
        counters.REJECTED_RECORDS: REJECTED_RECORDS.count,
    }

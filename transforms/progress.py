"""Progress lines on stderr while a job runs (read and write steps), at most one per interval.

Counters are per process: in-process runners (DirectRunner in_memory) show the whole job;
worker processes of other modes report through their runner's logging. The write step's
line carries the bulk retries and dead letters so far:
`indexed 12000 documents (4100/s), 37 retries, 3 dead letters`.

The same counters are what a run that fails or is interrupted records as its counts (Beam's
metrics are gone by then): `snapshot()`.
"""

from __future__ import annotations

import logging
import threading
import time

from transforms import counters

log = logging.getLogger("mlbatch")


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
        log.info("%s", progress_line(self.verb, self.count, self.noun, rate, self._extra_counts()))

    def _extra_counts(self) -> list[tuple[int, str]]:
        return [(extra.count, extra.noun) for extra in self.extras]


def progress_line(verb: str, count: int, noun: str, rate: float, extras: list[tuple[int, str]]) -> str:
    """`indexed 12000 documents (4100/s), 37 retries, 3 dead letters`: extras that are not zero."""
    shown = "".join(f", {number} {name}" for number, name in extras if number)
    return f"{verb} {count} {noun} ({rate:.0f}/s){shown}"


READ = Progress("read", "records")
RETRIES = Tally("retries")
DEAD_LETTERS = Tally("dead letters")
REJECTED_RECORDS = Tally("rejected records")
INDEXED = Progress("indexed", "documents", extras=(RETRIES, DEAD_LETTERS))
_ALL = (READ, INDEXED, RETRIES, DEAD_LETTERS, REJECTED_RECORDS)


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

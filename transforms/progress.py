"""Progress lines on stderr while a job runs (read and write steps), at most one per interval.

Counters are per process: in-process runners (DirectRunner in_memory) show the whole job;
worker processes of other modes report through their runner's logging.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("mlbatch")


class Progress:
    """Counts items of one kind and logs `<verb> N <noun> (R/s)` every `interval` seconds."""

    def __init__(self, verb: str, noun: str, interval: float = 2.0) -> None:
        self.verb, self.noun, self.interval = verb, noun, interval
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
        log.info("%s %d %s (%.0f/s)", self.verb, self.count, self.noun, rate)


READ = Progress("read", "records")
INDEXED = Progress("indexed", "documents")

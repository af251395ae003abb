"""How a command's run ends when it does not finish: interrupts, and counts saved along the way.

- `interrupts_raise()`: Ctrl-C (SIGINT) and SIGTERM both raise `KeyboardInterrupt` in the main
  thread for the whole command, so every ending goes through the same clean path (task record,
  one line, exit 130).
- `is_interrupt(error)`: whether a failed run was really interrupted. Beam's runners re-raise
  a KeyboardInterrupt from a step as another exception (`RuntimeError: KeyboardInterrupt
  [while running 'Write/…']`); the cause chain, the message, or an interrupt received by this
  process tells.
- `CountsCheckpoint`: while a run is RUNNING, saves the in-process counts into its record every
  few seconds, so a task whose process is killed (and which `connectors.task_store` then marks
  FAILED) keeps the counts it had reached.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

INTERRUPTED = "interrupted"
log = logging.getLogger("mlbatch")
_INTERRUPT_MESSAGE = re.compile(r"^\s*(?:\w+\.)*KeyboardInterrupt\b", re.MULTILINE)
_received = threading.Event()


def cause_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it (`__cause__`, else `__context__`), each once."""
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        yield seen
        seen = seen.__cause__ or seen.__context__


def caused_by_interrupt(error: BaseException) -> bool:
    """A KeyboardInterrupt, or an exception that wraps one (in its cause chain or its message)."""
    return any(
        isinstance(seen, KeyboardInterrupt) or _INTERRUPT_MESSAGE.search(str(seen))
        for seen in cause_chain(error)
    )


def is_interrupt(error: BaseException) -> bool:
    """Whether `error` ended a run because this process was interrupted."""
    return _received.is_set() or caused_by_interrupt(error)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (and are remembered) while the block runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        _received.set()
        raise KeyboardInterrupt

    _received.clear()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class CountsCheckpoint:
    """Calls `save(counts())` every `interval` seconds on a background thread while the block runs."""

    def __init__(
        self,
        save: Callable[[dict[str, Any]], Any],
        counts: Callable[[], dict[str, Any]],
        interval: float = 5.0,
    ) -> None:
        self._save, self._counts, self._interval = save, counts, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlbatch-checkpoint", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._save(self._counts())
            except Exception as error:  # a busy task store: the next checkpoint or the end saves them
                log.debug("could not save the counts so far: %s", error)

    def __enter__(self) -> CountsCheckpoint:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Stop, and wait for a save under way, so it never lands after the final record."""
        self._stop.set()
        self._thread.join()

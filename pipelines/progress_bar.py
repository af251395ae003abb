"""The progress bar of `mlbatch ingest` on a terminal (the **run** step, as a person watches it).

While a run's read steps run in this process (`transforms.progress.INPUT.live`), a tqdm bar on
stderr shows the percentage of input bytes read, documents indexed per second, the time left,
and the bulk retries and dead letters so far; it appears once the sources are listed (the
total is known) and replaces the progress lines of `transforms.progress`. Other log lines
print above it. Without a terminal, with `--quiet`, or when the runner's steps run elsewhere
(Dask, Dataflow: this process has no counts to show), there is no bar and the lines stay.

`percent_read`, `eta_seconds` and `bar_postfix` are the bar's arithmetic, pure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from transforms import progress

if TYPE_CHECKING:
    from tqdm import tqdm

POLL_SECONDS = 0.2
FALLBACK_COLUMNS, FALLBACK_ROWS = 120, 24
_BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B{postfix}"
log = logging.getLogger("mlbatch")


@dataclass(frozen=True)
class BarStatus:
    """What the bar shows at one moment."""

    read_bytes: int
    total_bytes: int
    documents: int
    elapsed: float
    retries: int = 0
    dead_letters: int = 0


def percent_read(read_bytes: int, total_bytes: int) -> float:
    """The share of the input read, in [0, 100]: an empty input is all read."""
    if total_bytes <= 0:
        return 100.0
    return min(100.0, 100.0 * read_bytes / total_bytes)


def eta_seconds(read_bytes: int, total_bytes: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before anything was read."""
    if read_bytes <= 0 or elapsed <= 0:
        return None
    left = max(total_bytes - read_bytes, 0)
    return left * elapsed / read_bytes


def format_seconds(seconds: float) -> str:
    """`0:07`, `12:05`, `1:02:03`."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar_postfix(status: BarStatus) -> str:
    """`12000 docs (4100/s), ETA 0:12, 37 retries, 3 dead letters`: retries and dead letters
    once they are not zero."""
    rate = status.documents / status.elapsed if status.elapsed > 0 else 0.0
    eta = eta_seconds(status.read_bytes, status.total_bytes, status.elapsed)
    parts = [f"{status.documents} docs ({rate:.0f}/s)", f"ETA {'?' if eta is None else format_seconds(eta)}"]
    extras = ((status.retries, "retries"), (status.dead_letters, "dead letters"))
    parts += [f"{count} {noun}" for count, noun in extras if count]
    return ", ".join(parts)


def current_status(started: float) -> BarStatus:
    """The bar's status from this process's counters (`transforms.progress`)."""
    return BarStatus(
        read_bytes=progress.INPUT.read,
        total_bytes=progress.INPUT.total or 0,
        documents=progress.INDEXED.count,
        elapsed=time.monotonic() - started,
        retries=progress.RETRIES.count,
        dead_letters=progress.DEAD_LETTERS.count,
    )


class _BarLogHandler(logging.Handler):
    """The mlbatch logger's lines above the bar (tqdm.write); progress lines dropped while it shows."""

    def __init__(self, display: ProgressBar, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self._display = display
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        if self._display.showing and getattr(record, progress.PROGRESS_LINE, False):
            return
        from tqdm import tqdm  # loaded by the bar already, or at once: only on a terminal

        tqdm.write(self.format(record), file=sys.stderr)


class ProgressBar:
    """Polls the counters on a thread and draws the bar once the run's input is planned."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="progress-bar", daemon=True)

    @property
    def showing(self) -> bool:
        return self._bar is not None

    def start(self) -> None:
        self._thread.start()

    def close(self, all_read: bool) -> None:
        """Stop drawing (once); `all_read`: the run read its whole input, so the bar ends at 100%
        (blank lines and line ends are not counted as they are read)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._draw(all_read)
            self._bar.close()

    def _poll(self) -> None:
        from tqdm import tqdm  # a third of a second: only when a bar may show

        while not self._stop.wait(POLL_SECONDS):
            if self._bar is None and progress.INPUT.live and progress.INPUT.total is not None:
                self._started = time.monotonic()
                sized = _terminal_width() > 0  # else tqdm would draw in 0 columns
                self._bar = tqdm(
                    total=progress.INPUT.total,
                    file=sys.stderr,
                    bar_format=_BAR_FORMAT,
                    unit_scale=True,
                    unit_divisor=1024,
                    ncols=None if sized else FALLBACK_COLUMNS,
                    nrows=None if sized else FALLBACK_ROWS,
                    dynamic_ncols=sized,
                    mininterval=0,
                )
            if self._bar is not None:
                self._draw()

    def _draw(self, all_read: bool = False) -> None:
        assert self._bar is not None
        status = current_status(self._started)
        if all_read:
            status = replace(status, read_bytes=status.total_bytes)
        self._bar.n = min(status.read_bytes, status.total_bytes)
        self._bar.set_postfix_str(bar_postfix(status), refresh=False)
        self._bar.refresh()


def _terminal_width() -> int:
    """stderr's terminal width; 0 when it says none (a pseudo-terminal nobody sized)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def progress_display(enabled: bool) -> Iterator[ProgressBar | None]:
    """A progress bar for the run inside (None when not `enabled`); the plan of a previous run
    in this process is forgotten. The caller closes the bar, saying whether all was read."""
    progress.INPUT.clear()
    if not enabled:
        yield None
        return
    display = ProgressBar()
    handlers = log.handlers[:]
    formatter = handlers[0].formatter if handlers else None
    log.handlers[:] = [_BarLogHandler(display, formatter)]
    display.start()
    try:
        yield display
    finally:
        display.close(all_read=False)
        log.handlers[:] = handlers


def wants_bar(stream: object = None) -> bool:
    """Whether stderr (or `stream`) is a terminal and progress is shown (not `--quiet`)."""
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    return bool(isatty and isatty()) and log.isEnabledFor(logging.INFO)

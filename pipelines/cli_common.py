"""What every `mlbatch` command shares: exit codes, usage errors, JSON files in and out, logging,
and start-up without the garbage collector."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipelines.request import RequestError, decode_body

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WITH_ERRORS, EXIT_INTERRUPTED, EXIT_TIMEOUT = 0, 1, 2, 3, 130, 124
EXIT_COUNTS_UNKNOWN = 4
log = logging.getLogger("mlbatch")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a block that makes many long-lived objects and few
    cycles (loading Beam and building the pipeline: a tenth of the start-up went to collector
    passes over them), then back on as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class UsageError(Exception):
    """A mistake in the command line or its files; printed as one line, exit 2."""


def configure_logging(quiet: bool, debug: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mlbatch: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.ERROR)
    logging.getLogger("apache_beam").setLevel(logging.ERROR if debug else logging.CRITICAL)
    return handler


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as error:
        raise UsageError(f"{what} {path}: cannot read ({error.strerror or error})") from None


def read_json(path: str, what: str) -> Any:
    raw = _read_bytes(path, what)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{what} {path}: not valid JSON ({error})") from None


def read_request_body(path: str, what: str) -> Any:
    """A `_batch_ingestion` body from a file, with ML Commons' message for an empty one."""
    raw = _read_bytes(path, what)
    try:
        return decode_body(raw)
    except RequestError as error:
        raise UsageError(f"{what} {path}: {error}") from None


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")

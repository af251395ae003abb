"""The `mlbatch` command line.

    mlbatch ingest REQUEST.json [--opensearch URL] [options] [Beam options]
    mlbatch predict submit --connector C.json [--parameters JSON]
    mlbatch predict status|wait|cancel TASK_ID
    mlbatch task get TASK_ID | mlbatch task list [--limit N]
    mlbatch serve-index | serve-embeddings | search "text" --index NAME
    mlbatch serve-api [--opensearch URL] [--host H --auth-file FILE] [ingest options]

See `pipelines.ingest_command` and `pipelines.predict_command` for what each does. Ctrl-C
and SIGTERM interrupt any command the same way: one line on stderr, exit 130 (a task it was
running is recorded as such).

The command modules load when the parser is built (`build_parser`), not when this module is
imported, so that `run`, which owns the process, loads them with the cyclic garbage collector
off (see `run`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from pipelines import task_lifecycle
from pipelines.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    configure_logging,
    log,
    paused_gc,
    print_json,
    read_request_body,
)

if TYPE_CHECKING:
    from pipelines.ingest_options import IngestOptions


def _task(args: argparse.Namespace) -> int:
    from connectors.task_store import TaskNotFound, TaskStore

    store = TaskStore()
    if args.task_command == "get":
        try:
            print_json(store.get(args.task_id))
        except TaskNotFound as error:
            raise UsageError(str(error)) from None
    else:
        print_json(store.list(args.limit))
    return EXIT_OK


def with_stored_connector(body: Any) -> Any:
    """The body with a `connector_id` resolved from the connector store, when it uses one."""
    from pipelines.stored_connectors import StoredConnectorError, stored_credential, with_connector_credential

    try:
        return with_connector_credential(body, stored_credential)
    except StoredConnectorError as error:
        raise UsageError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of every command (this loads the command modules)."""
    from pipelines.ingest_command import add_ingest_command
    from pipelines.local_commands import add_local_commands
    from pipelines.predict_command import add_predict_commands
    from pipelines.serve_api_command import add_serve_api_command

    parser = argparse.ArgumentParser(
        prog="mlbatch", description="Offline ML batch ingestion into OpenSearch k-NN indexes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    add_ingest_command(commands)
    add_predict_commands(commands)
    add_local_commands(commands)
    add_serve_api_command(commands)

    task = commands.add_parser("task", help="show task records")
    task_commands = task.add_subparsers(dest="task_command", required=True)
    get = task_commands.add_parser("get", help="print one task record")
    get.add_argument("task_id")
    listing = task_commands.add_parser("list", help="print the most recent task records")
    listing.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the command `argv` (default: this process's arguments); `parser` is `build_parser()`'s."""
    from pipelines.ingest_command import parse_ingest_options

    parser = parser or build_parser()
    args, extra = parser.parse_known_args(argv)
    configure_logging(getattr(args, "quiet", False), getattr(args, "debug", False))
    runs_ingest = args.command in ("ingest", "serve-api") or getattr(args, "then_ingest", None)
    if extra and not runs_ingest:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    ingest_options = parse_ingest_options(parser, args, extra) if runs_ingest else None
    if args.command in ("serve-index", "serve-embeddings", "serve-api"):  # they stop on Ctrl-C or SIGTERM
        return _run(args, ingest_options)
    try:
        with task_lifecycle.interrupts_raise():
            return _run(args, ingest_options)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, ingest_options: IngestOptions | None) -> int:
    """Run the command; `ingest_options` are those of `ingest` and `predict wait --then-ingest`."""
    from pipelines.ingest_command import ingest
    from pipelines.local_commands import run_local_command
    from pipelines.predict_command import run_predict

    try:
        if args.command == "ingest":
            body = read_request_body(args.request, "request")
            return ingest(ingest_options, with_stored_connector(body), debug=args.debug)
        if args.command == "predict":
            return run_predict(args, ingest_options)
        if args.command == "task":
            return _task(args)
        if args.command == "serve-api":
            from pipelines.serve_api_command import serve_api

            return serve_api(args, ingest_options)
        return run_local_command(args)
    except UsageError as error:
        print(f"mlbatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def frozen_parser() -> argparse.ArgumentParser:
    """`build_parser()`, its modules loaded with the cyclic garbage collector off, then kept out of
    its later passes (`gc.freeze`).

    Loading modules makes objects that live as long as the process (modules, classes, functions);
    the collector scanned them again and again as they came, 25 ms of the 0.3 s the command
    modules take to load, and each full pass after that scanned them once more (50 ms less
    collecting before an ingestion's first `_bulk`). A process-wide setting: only for `run`,
    which owns the process, never for `main` called in a host's process (Airflow's worker)."""
    with paused_gc():
        try:
            return build_parser()
        finally:
            gc.freeze()


def run() -> None:
    """The `mlbatch` command: `main`, then exit without the interpreter's teardown.

    Once a run is over everything it wrote is closed (task store, DLQ files, helpers); what
    is left is freeing Beam's modules and the run's objects one by one, which took 0.4 s of a
    5 s ingest. Output streams and logs are flushed first.
    """
    code = main(parser=frozen_parser())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

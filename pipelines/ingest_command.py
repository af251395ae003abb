"""`mlbatch ingest`: the command line of an ingestion run, and its exit code.

The options are parsed and checked into `IngestOptions` (`pipelines.ingest_options`), the run
itself is `pipelines.ingest_run.run_ingest`, and its final task record is printed as JSON on
stdout. Exit codes: 0 COMPLETED, 1 FAILED, 2 bad request or usage, 3 COMPLETED_WITH_ERROR,
4 COUNTS_UNKNOWN (the runner ended without the job's counters, e.g. a Dataflow `--dry_run`),
130 interrupted (Ctrl-C or SIGTERM; the task is FAILED with "interrupted").
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pipelines.cli_common import (
    EXIT_COUNTS_UNKNOWN,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WITH_ERRORS,
    log,
    print_json,
)
from pipelines.ingest_options import (
    IngestOptions,
    IngestOptionsError,
    add_ingest_options,
    ingest_options_from,
)
from pipelines.ingest_run import IngestResult, run_ingest
from pipelines.progress_bar import progress_display, wants_bar
from pipelines.report import COUNTS_UNKNOWN
from pipelines.run_summary import print_summary
from transforms import progress

_EXIT_BY_STATE = {
    "COMPLETED": EXIT_OK,
    "COMPLETED_WITH_ERROR": EXIT_WITH_ERRORS,
    COUNTS_UNKNOWN: EXIT_COUNTS_UNKNOWN,
}


def add_ingest_command(commands: argparse._SubParsersAction) -> None:
    ingest = commands.add_parser(
        "ingest",
        help="run an ML Commons _batch_ingestion request as a Beam pipeline",
        description="Unknown options are passed to Apache Beam (e.g. --runner, --direct_running_mode).",
    )
    ingest.add_argument("request", help="the _batch_ingestion request body (JSON file)")
    add_ingest_options(ingest)


def parse_ingest_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, beam_args: list[str]
) -> IngestOptions:
    """The ingestion options of `args`; a wrong one is a usage error of `parser` (exit 2)."""
    try:
        return ingest_options_from(args, beam_args)
    except IngestOptionsError as error:
        parser.error(str(error))


def exit_code(result: IngestResult) -> int:
    if result.interrupted:
        return EXIT_INTERRUPTED
    return _EXIT_BY_STATE.get(result.record["state"], EXIT_FAILED)


def ingest(
    options: IngestOptions, body: Any, extra_fields: dict[str, Any] | None = None, debug: bool = False
) -> int:
    """Run the ingestion (a progress bar on a terminal, `pipelines.progress_bar`), print a summary
    table on stderr when its pipeline ran to the end (`pipelines.run_summary`; not with `--quiet`)
    and its task record, return the exit code; with `debug`, a failed run's error is raised after
    the record is printed."""
    with progress_display(wants_bar()) as bar:
        result = run_ingest(options, body, extra_fields)
        if bar is not None:
            bar.close(all_read=result.record.get("state") not in ("FAILED", None))
    ran = progress.INPUT.total is not None and not result.interrupted and result.error is None
    if ran and log.isEnabledFor(logging.INFO):  # a run that ended early keeps its one-line cause last
        print_summary(result.record, progress.INPUT.files_by_source, sys.stderr)
    print_json(result.record)
    if debug and result.error is not None:
        raise result.error
    return exit_code(result)

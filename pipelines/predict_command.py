"""`mlbatch predict`: submit, poll, wait for and cancel remote batch jobs; chain into ingestion.

    mlbatch predict submit --connector C.json [--parameters JSON|@FILE]
    mlbatch predict status TASK_ID [--connector C.json]
    mlbatch predict wait TASK_ID [--interval S] [--timeout S] [--then-ingest REQUEST.json [ingest options]]
    mlbatch predict cancel TASK_ID [--connector C.json]

`wait` polls with a growing interval (x1.5, at most `--max-interval`) until the job is
COMPLETED (exit 0), ends otherwise (exit 1) or `--timeout` passes (exit 124). With
`--then-ingest`, `${remote_job.x}` placeholders in the request's `data_source.source` are
filled from the finished job and the ingestion runs, its task record printed instead.
Interrupting `wait` (Ctrl-C, SIGTERM) stops the waiting, not the remote job: exit 130.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from connectors.redact import RedactingFilter
from connectors.task_store import TaskNotFound, TaskStore
from pipelines.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    UsageError,
    log,
    print_json,
    read_json,
    read_request_body,
)
from pipelines.ingest_command import ingest
from pipelines.ingest_options import IngestOptions, add_ingest_options

if TYPE_CHECKING:
    from connectors.batch_predict.launcher import Launcher


def _parameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        value = read_json(text[1:], "--parameters")
    else:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise UsageError(f"--parameters: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise UsageError("--parameters: must be a JSON object")
    return value


def add_predict_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="remote batch prediction jobs through ML Commons connectors"
    )
    actions = predict.add_subparsers(dest="predict_command", required=True)
    partial = {
        "action": "store_true",
        "help": "treat partiallyCompleted as FAILED (default: COMPLETED + warning)",
    }

    submit = actions.add_parser("submit", help="submit a batch job with a connector's batch_predict action")
    submit.add_argument("--connector", required=True, help="ML Commons connector JSON file")
    submit.add_argument("--parameters", help="request parameters: a JSON object, or @FILE")
    submit.add_argument("--quiet", action="store_true", help="no progress on stderr")

    for name, help_text in (("status", "poll the job once and print the task"), ("cancel", "cancel the job")):
        command = actions.add_parser(name, help=help_text)
        command.add_argument("task_id")
        command.add_argument(
            "--connector", help="connector JSON (default: the file the job was submitted with)"
        )
        command.add_argument("--partial-is-failure", **partial)
        command.add_argument("--quiet", action="store_true", help="no progress on stderr")

    wait = actions.add_parser("wait", help="poll until the job ends; optionally ingest its output")
    wait.add_argument("task_id")
    wait.add_argument("--connector", help="connector JSON (default: the file the job was submitted with)")
    wait.add_argument("--interval", type=float, default=5.0, help="first poll interval, s (default 5)")
    wait.add_argument(
        "--max-interval", type=float, default=60.0, help="longest poll interval, s (default 60)"
    )
    wait.add_argument("--timeout", type=float, help="give up after this many seconds (exit 124)")
    wait.add_argument("--partial-is-failure", **partial)
    wait.add_argument(
        "--then-ingest", metavar="REQUEST.json", help="run this ingestion request when the job completes"
    )
    add_ingest_options(wait)


def _wait(launcher: Launcher, args: argparse.Namespace) -> dict[str, Any]:
    from connectors.batch_predict.job_calls import FINAL_STATES
    from connectors.batch_predict.job_status import service_status

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    delay = args.interval
    while True:
        record = launcher.refresh(args.task_id, args.connector)
        status = service_status(record.get("remote_job") or {})
        log.info("task %s: %s (service status: %s)", args.task_id, record["state"], status)
        if record["state"] in FINAL_STATES:
            return record
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(record)
        time.sleep(delay if remaining is None else min(delay, remaining))
        delay = min(delay * 1.5, args.max_interval)


def wait_interrupted(task_id: str) -> str:
    """The line for an interrupted `wait`: the remote job is not cancelled."""
    return (
        f"interrupted waiting for task {task_id}; the batch job keeps running; "
        f"`mlbatch predict cancel {task_id}` stops it"
    )


def _ingest_request(path: str) -> dict[str, Any]:
    """The --then-ingest request, read and shape-checked before any waiting."""
    body = read_request_body(path, "--then-ingest")
    data_source = body.get("data_source") if isinstance(body, dict) else None
    if not isinstance(data_source, dict) or not isinstance(data_source.get("source"), list):
        raise UsageError(f"--then-ingest {path}: data_source.source must be a list")
    return body


def _then_ingest(
    args: argparse.Namespace, options: IngestOptions, body: dict[str, Any], record: dict[str, Any]
) -> int:
    from connectors.batch_predict.batch_actions import with_remote_job_sources
    from connectors.batch_predict.connector import ConnectorError

    try:
        body = with_remote_job_sources(body, record.get("remote_job") or {})
    except ConnectorError as error:
        raise UsageError(f"--then-ingest {args.then_ingest}: {error}") from None
    log.info("job completed; ingesting %s", body["data_source"]["source"])
    return ingest(options, body, {"batch_prediction_task_id": record["task_id"]}, debug=args.debug)


def _install_redaction(launcher: Launcher, args: argparse.Namespace) -> None:
    """Mask the connector's secrets in every log line of this command."""
    from connectors.batch_predict.connector import ConnectorError
    from connectors.batch_predict.job_calls import redactor_for
    from connectors.batch_predict.launcher import load_connector

    path = getattr(args, "connector", None)
    if path is None and getattr(args, "task_id", None):
        with contextlib.suppress(TaskNotFound, KeyError):
            path = launcher.store.get(args.task_id)["connector"]["path"]
    with contextlib.suppress(ConnectorError):
        if path:
            for handler in log.handlers:
                handler.addFilter(RedactingFilter(redactor_for(load_connector(path))))


def run_predict(args: argparse.Namespace, ingest_options: IngestOptions | None) -> int:
    """Run a `predict` command; `ingest_options` are those of `wait --then-ingest`.

    The connector modules load only here: `mlbatch ingest` builds this command's parser, not more."""
    from connectors.batch_predict.connector import ConnectorError
    from connectors.batch_predict.launcher import Launcher, load_connector
    from connectors.batch_predict.remote_call import RemoteCallError

    launcher = Launcher(TaskStore(), partial_is_failure=getattr(args, "partial_is_failure", False))
    _install_redaction(launcher, args)
    try:
        if args.predict_command == "submit":
            record = launcher.submit(
                load_connector(args.connector), args.connector, _parameters(args.parameters)
            )
            print_json(
                {
                    "task_id": record["task_id"],
                    "status": "CREATED" if record["state"] == "CREATED" else record["state"],
                    "remote_job": record.get("remote_job"),
                    **({"error": record["error"]} if "error" in record else {}),
                }
            )
            return EXIT_OK if record["state"] == "CREATED" else EXIT_FAILED
        if args.predict_command == "status":
            print_json(launcher.refresh(args.task_id, args.connector))
            return EXIT_OK
        if args.predict_command == "cancel":
            record = launcher.cancel(args.task_id, args.connector)
            print_json(record)
            return EXIT_OK if record["state"] in ("CANCELLING", "CANCELLED") else EXIT_FAILED
        if args.interval <= 0 or args.max_interval <= 0 or (args.timeout is not None and args.timeout <= 0):
            raise UsageError("--interval, --max-interval and --timeout must be positive")
        ingest_body = _ingest_request(args.then_ingest) if args.then_ingest else None
        try:
            record = _wait(launcher, args)
        except TimeoutError as timeout:
            print_json(timeout.args[0])
            log.error("task %s: still %s after %.0f s", args.task_id, timeout.args[0]["state"], args.timeout)
            return EXIT_TIMEOUT
        except KeyboardInterrupt:
            log.error("%s", wait_interrupted(args.task_id))
            return EXIT_INTERRUPTED
        if record["state"] != "COMPLETED":
            print_json(record)
            log.error("task %s ended %s", args.task_id, record["state"])
            return EXIT_FAILED
        if ingest_body is not None:
            return _then_ingest(args, ingest_options, ingest_body, record)
        print_json(record)
        return EXIT_OK
    except (ConnectorError, TaskNotFound) as error:
        raise UsageError(str(error)) from None
    except RemoteCallError as error:
        log.error("%s", error)
        return EXIT_FAILED

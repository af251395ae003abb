"""The `mlbatch` command line: runs ingestion jobs and shows their task records.

    mlbatch ingest REQUEST.json [--opensearch URL] [options] [Beam options]
    mlbatch task get TASK_ID
    mlbatch task list [--limit N]

`ingest` checks the request and the cluster before anything runs, records a BATCH_INGEST
task, runs the Beam pipeline in the foreground with progress on stderr, and prints the
final task record as JSON on stdout. Exit codes: 0 COMPLETED, 1 FAILED, 2 bad request or
usage, 3 COMPLETED_WITH_ERROR (some records went to the dead-letter queue).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from connectors.bulk_retry import BulkFailed
from connectors.opensearch import SIGV4_SERVICES, ClusterError, OpenSearchConfig
from connectors.redact import NOT_SECRET, RedactingFilter, Redactor, redact_credential
from connectors.sources import SourceAccess, SourceError
from connectors.task_store import TaskNotFound, TaskStore, mlbatch_home
from pipelines.plan import compile_plan
from pipelines.request import RequestError, parse_request

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WITH_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger("mlbatch")
_BEAM_STEP_SUFFIX = re.compile(r"\s*\[while running '.*'\]\s*$")


class UsageError(Exception):
    """A mistake in the command line or its files; printed as one line, exit 2."""


def _configure_logging(quiet: bool, debug: bool) -> logging.Handler:
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


def _read_json(path: str, what: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as error:
        raise UsageError(f"{what} {path}: cannot read ({error.strerror or error})") from None
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{what} {path}: not valid JSON ({error})") from None


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _summarize(counters: dict[str, int]) -> dict[str, Any]:
    counts: dict[str, Any] = {
        name: counters.get(name, 0)
        for name in (
            "read",
            "projected",
            "keys",
            "incomplete",
            "duplicates",
            "join_dropped",
            "merged_records",
            "distinct_ids",
            "indexed",
            "created",
            "updated",
            "skipped_existing",
            "invalid_vectors",
            "bulk_requests",
            "bulk_retries",
            "dlq",
        )
    }
    for prefix, key in (
        ("read.", "read_by_source"),
        ("accounted.", "accounted_by_source"),
        ("dlq.", "rejected_by_stage"),
        ("unmatched.", "unmatched_paths"),
    ):
        counts[key] = {
            name[len(prefix) :]: value for name, value in sorted(counters.items()) if name.startswith(prefix)
        }
    return counts


def _root_cause(error: BaseException) -> str:
    """One line for a failed run: our own error's message without Beam's step suffix."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ClusterError | SourceError | BulkFailed):
            return _BEAM_STEP_SUFFIX.sub("", str(seen))
        seen = seen.__cause__ or seen.__context__
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        for known in ("ClusterError: ", "SourceError: ", "BulkFailed: "):
            if known in line:
                return _BEAM_STEP_SUFFIX.sub("", line.split(known, 1)[1])
    return lines[-1] if lines else type(error).__name__


def _cluster_config(args: argparse.Namespace) -> OpenSearchConfig:
    return OpenSearchConfig.from_env(
        args.opensearch,
        args.user,
        aws_sigv4=args.aws_sigv4,
        region=args.region,
        verify_certs=not args.insecure,
        ca_certs=args.ca_certs,
        compress=args.compress,
    )


def _redactor(credential: dict[str, str], cluster: OpenSearchConfig) -> Redactor:
    return Redactor.of(
        [
            *(value for key, value in credential.items() if key not in NOT_SECRET),
            cluster.password,
            urlparse(cluster.url).password,
            os.environ.get("OPENAI_API_KEY"),
            os.environ.get("OPENSEARCH_PASSWORD"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            os.environ.get("AWS_SESSION_TOKEN"),
        ]
    )


def _ingest(args: argparse.Namespace, beam_args: list[str]) -> int:
    body = _read_json(args.request, "request")
    try:
        request = parse_request(body)
        plan = compile_plan(request, join=args.join)
    except RequestError as error:
        raise UsageError(str(error)) from None
    create_body = _read_json(args.create_index, "--create-index") if args.create_index else None

    cluster = _cluster_config(args)
    redactor = _redactor(request.credential, cluster)
    for handler in log.handlers:
        handler.addFilter(RedactingFilter(redactor))

    store = TaskStore()
    task = store.create(
        "BATCH_INGEST",
        index_name=request.index_name,
        data_source={"type": request.source_type, "source": list(request.sources)},
        credential=redact_credential(request.credential),
    )
    task_id = task["task_id"]
    dlq_dir = args.dlq or str(mlbatch_home() / "dlq" / task_id)
    log.info(
        "task %s: %d source(s) into index %r at %s",
        task_id,
        len(plan.sources),
        plan.index_name,
        cluster.display_url,
    )
    if request.connector_id:
        log.warning("connector_id %r is ignored: the request's credential is used", request.connector_id)

    def finish(state: str, counts: dict[str, Any] | None = None, **fields: Any) -> int:
        record = store.update(task_id, state=state, counts=counts or _summarize({}), **redactor.value(fields))
        _print_json(record)
        return {"COMPLETED": EXIT_OK, "COMPLETED_WITH_ERROR": EXIT_WITH_ERRORS}.get(state, EXIT_FAILED)

    from connectors.bulk_retry import RetryPolicy
    from connectors.opensearch import bulk_tuning, prepare_index
    from connectors.sources import expand_source
    from pipelines.batch_ingest import IngestJob, run_pipeline
    from pipelines.outcome import decide_outcome
    from transforms.bulk import OpenSearchWriteConfig

    access = SourceAccess(request.source_type, request.credential)
    try:
        files = tuple(tuple(expand_source(source.uri, access)) for source in plan.sources)
        index = prepare_index(cluster, plan.index_name, create_body)
    except (SourceError, ClusterError) as error:
        log.error("%s", error)
        return finish("FAILED", error=str(error))
    if index.created:
        log.info("created index %r", plan.index_name)
    for source, names in zip(plan.sources, files, strict=True):
        log.info("source[%d]: %d file(s) from %s", source.index, len(names), source.uri)
    for name in plan.field_order:
        if (
            name in index.properties
            and name not in index.knn_fields
            and index.properties[name].get("type")
            in (
                "float",
                "double",
                "half_float",
            )
        ):
            log.warning("field %r is mapped as %s, not knn_vector", name, index.properties[name]["type"])

    job = IngestJob(
        plan=plan,
        files_by_source=files,
        access=access,
        write=OpenSearchWriteConfig(
            cluster,
            plan.index_name,
            bulk_size=args.bulk_size,
            bulk_bytes=args.bulk_bytes,
            bulk_concurrency=args.bulk_concurrency,
            retry=RetryPolicy(args.max_retries, args.initial_backoff, args.max_backoff),
            action=args.action,
            knn_fields=index.knn_fields,
            source_count=len(plan.sources),
        ),
        dlq_dir=dlq_dir,
        task_id=task_id,
        redactor=redactor,
    )
    store.update(task_id, state="RUNNING")
    try:
        with bulk_tuning(cluster, plan.index_name) if args.bulk_tuning else contextlib.nullcontext():
            counters = run_pipeline(job, beam_args)
    except KeyboardInterrupt:
        log.error("ingestion interrupted")
        finish("FAILED", error="interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:  # the runner wraps worker errors; report the cause in one line
        cause = redactor.text(_root_cause(error))
        log.error("ingestion failed: %s", cause)
        code = finish("FAILED", error=cause)
        if args.debug:
            raise
        return code
    counts = _summarize(counters)
    log.info(
        "read %d record(s), indexed %d document(s), rejected %d",
        counts["read"],
        counts["indexed"],
        counts["dlq"],
    )
    outcome = decide_outcome(counters, len(plan.sources), plan.needs_join, args.max_error_ratio)
    extra: dict[str, Any] = {"dlq": dlq_dir} if counts["dlq"] else {}
    if outcome.error:
        log.warning("%s", outcome.error + (f"; see {dlq_dir}" if counts["dlq"] else ""))
        extra["error"] = outcome.error
    return finish(outcome.state, counts=counts, **extra)


def _task(args: argparse.Namespace) -> int:
    store = TaskStore()
    if args.task_command == "get":
        try:
            _print_json(store.get(args.task_id))
        except TaskNotFound as error:
            raise UsageError(str(error)) from None
    else:
        _print_json(store.list(args.limit))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlbatch", description="Offline ML batch ingestion into OpenSearch k-NN indexes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="run an ML Commons _batch_ingestion request as a Beam pipeline",
        description="Unknown options are passed to Apache Beam (e.g. --runner, --direct_running_mode).",
    )
    ingest.add_argument("request", help="the _batch_ingestion request body (JSON file)")
    ingest.add_argument(
        "--opensearch", help="cluster URL (default: $OPENSEARCH_URL, else http://localhost:9200)"
    )
    ingest.add_argument("--user", help="basic-auth user; the password comes from $OPENSEARCH_PASSWORD")
    ingest.add_argument("--insecure", action="store_true", help="do not verify the cluster's TLS certificate")
    ingest.add_argument("--ca-certs", help="CA bundle for the cluster's TLS certificate")
    ingest.add_argument(
        "--create-index", metavar="MAPPING.json", help="create the index with this body if missing"
    )
    ingest.add_argument(
        "--bulk-size", type=int, default=500, help="documents per _bulk request (default 500)"
    )
    ingest.add_argument(
        "--bulk-bytes", type=int, default=10 * 1024 * 1024, help="bytes per _bulk request (default 10 MiB)"
    )
    ingest.add_argument(
        "--join",
        choices=("outer", "inner"),
        default="outer",
        help="several sources: write every key (outer, default) or only keys in all sources (inner)",
    )
    ingest.add_argument(
        "--dlq", metavar="DIR", help="dead-letter directory (default $MLBATCH_HOME/dlq/<task_id>)"
    )
    ingest.add_argument(
        "--aws-sigv4",
        choices=SIGV4_SERVICES,
        help="sign requests with SigV4 for Amazon OpenSearch "
        "Service (es) or Serverless (aoss); credentials from the default AWS chain",
    )
    ingest.add_argument("--region", help="AWS region for --aws-sigv4 (default $AWS_REGION)")
    ingest.add_argument("--compress", action="store_true", help="gzip request bodies")
    ingest.add_argument(
        "--bulk-concurrency", type=int, default=2, help="_bulk requests in flight per worker (default 2)"
    )
    ingest.add_argument(
        "--max-retries", type=int, default=8, help="retries of a failed _bulk request or item (default 8)"
    )
    ingest.add_argument(
        "--initial-backoff", type=float, default=0.5, help="first retry delay ceiling, s (default 0.5)"
    )
    ingest.add_argument("--max-backoff", type=float, default=30.0, help="retry delay ceiling, s (default 30)")
    ingest.add_argument(
        "--action",
        choices=("index", "create"),
        default="index",
        help="index (default: a re-run overwrites) or create (skip ids that exist)",
    )
    ingest.add_argument(
        "--bulk-tuning",
        action="store_true",
        help="refresh_interval -1 and 0 replicas during the run, restored afterwards",
    )
    ingest.add_argument(
        "--max-error-ratio",
        type=float,
        metavar="R",
        help="FAILED instead of COMPLETED_WITH_ERROR when more than this share of records is rejected",
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ingest.add_argument("--debug", action="store_true", help="show tracebacks of failed runs")

    task = commands.add_parser("task", help="show task records")
    task_commands = task.add_subparsers(dest="task_command", required=True)
    get = task_commands.add_parser("get", help="print one task record")
    get.add_argument("task_id")
    listing = task_commands.add_parser("list", help="print the most recent task records")
    listing.add_argument("--limit", type=int, default=20)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _configure_logging(getattr(args, "quiet", False), getattr(args, "debug", False))
    if extra and args.command != "ingest":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "ingest":
        if min(args.bulk_size, args.bulk_bytes, args.bulk_concurrency) < 1:
            parser.error("--bulk-size, --bulk-bytes and --bulk-concurrency must be positive")
        if args.max_retries < 0 or args.initial_backoff < 0 or args.max_backoff < 0:
            parser.error("--max-retries, --initial-backoff and --max-backoff must not be negative")
        from pipelines.batch_ingest import unknown_beam_args

        unknown = unknown_beam_args(extra)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)} (neither mlbatch nor Beam options)")
    try:
        return _ingest(args, extra) if args.command == "ingest" else _task(args)
    except UsageError as error:
        print(f"mlbatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

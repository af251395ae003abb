"""`mlbatch ingest`: check the request and the cluster, run the Beam pipeline, record the task.

The request and the cluster are checked before anything runs; the task record is created
(BATCH_INGEST), the pipeline runs in the foreground with progress on stderr, the counters
are reconciled into the final state, and the record is printed as JSON on stdout.
Exit codes: 0 COMPLETED, 1 FAILED, 2 bad request or usage, 3 COMPLETED_WITH_ERROR, 130 interrupted
(Ctrl-C or SIGTERM; the task is FAILED with "interrupted"). A run that fails or is interrupted
records the counts this process reached (`transforms.progress`), and they are saved every few
seconds while it runs, so even a killed run's record keeps them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
from typing import Any
from urllib.parse import urlparse

from connectors.bulk_retry import (
    DEFAULT_BULK_CONCURRENCY,
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRY_TIME,
    BulkFailed,
)
from connectors.opensearch import DEFAULT_TIMEOUT, SIGV4_SERVICES, ClusterError, OpenSearchConfig
from connectors.redact import NOT_SECRET, RedactingFilter, Redactor, redact_credential
from connectors.sources import SourceAccess, SourceError
from connectors.task_store import TaskStore, mlbatch_home
from pipelines import task_lifecycle
from pipelines.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WITH_ERRORS,
    UsageError,
    log,
    print_json,
    read_json,
)
from pipelines.join_strategy import (
    DEFAULT_BROADCAST_MAX_BYTES,
    JoinStrategy,
    JoinStrategyError,
    choose_join_strategy,
    streamed_file,
)
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import IngestRequest, RequestError, parse_request
from transforms import progress
from transforms.document_ids import with_cluster_assigned_ids
from transforms.read_helper import HelperRead
from transforms.types import IngestPlan, SourcePlan

_EARLY_SIDE_FILES = 8
_BEAM_STEP_SUFFIX = re.compile(r"\s*\[while running '.*'\]\s*$")


def add_ingest_options(parser: argparse.ArgumentParser) -> None:
    """The options of an ingestion run (shared by `ingest` and `predict wait --then-ingest`)."""
    parser.add_argument(
        "--opensearch", help="cluster URL (default: $OPENSEARCH_URL, else http://localhost:9200)"
    )
    parser.add_argument("--user", help="basic-auth user; the password comes from $OPENSEARCH_PASSWORD")
    parser.add_argument("--insecure", action="store_true", help="do not verify the cluster's TLS certificate")
    parser.add_argument("--ca-certs", help="CA bundle for the cluster's TLS certificate")
    parser.add_argument(
        "--create-index", metavar="MAPPING.json", help="create the index with this body if missing"
    )
    parser.add_argument(
        "--bulk-size", type=int, default=500, help="documents per _bulk request (default 500)"
    )
    parser.add_argument(
        "--bulk-bytes", type=int, default=10 * 1024 * 1024, help="bytes per _bulk request (default 10 MiB)"
    )
    parser.add_argument(
        "--join",
        choices=("outer", "inner"),
        default="outer",
        help="several sources: write every key (outer, default) or only keys in all sources (inner)",
    )
    parser.add_argument(
        "--join-strategy",
        choices=("auto", "broadcast", "shuffle"),
        default="auto",
        help="several sources: stream one large file against the others held in memory (broadcast), "
        "or shuffle every record (shuffle); auto (default) broadcasts when it can",
    )
    parser.add_argument(
        "--broadcast-max-bytes",
        type=int,
        default=DEFAULT_BROADCAST_MAX_BYTES,
        help="auto: broadcast only when the sources held in memory are at most this many input bytes "
        f"(default {DEFAULT_BROADCAST_MAX_BYTES // 2**20} MiB)",
    )
    parser.add_argument(
        "--read-helper",
        choices=("auto", "on", "off"),
        default="auto",
        help="parse the large files in a helper process, beside the merge and the writes "
        "(auto, default: on with 2+ cores and the DirectRunner)",
    )
    parser.add_argument(
        "--dlq", metavar="DIR", help="dead-letter directory (default $MLBATCH_HOME/dlq/<task_id>)"
    )
    parser.add_argument(
        "--aws-sigv4",
        choices=SIGV4_SERVICES,
        help="sign requests with SigV4 for Amazon OpenSearch "
        "Service (es) or Serverless (aoss); credentials from the default AWS chain",
    )
    parser.add_argument("--region", help="AWS region for --aws-sigv4 (default $AWS_REGION)")
    parser.add_argument("--compress", action="store_true", help="gzip request bodies")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for each cluster request before retrying it (default {DEFAULT_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--bulk-concurrency",
        type=int,
        default=DEFAULT_BULK_CONCURRENCY,
        help=f"_bulk requests in flight per worker (default {DEFAULT_BULK_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-retry-time",
        type=float,
        default=DEFAULT_MAX_RETRY_TIME,
        metavar="S",
        help="keep retrying a failed _bulk request or item for up to S seconds per batch "
        f"(default {DEFAULT_MAX_RETRY_TIME:.0f}); 0: no retries",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        help="also stop after this many retries of a batch (default: no cap, only --max-retry-time)",
    )
    parser.add_argument(
        "--initial-backoff",
        type=float,
        default=DEFAULT_INITIAL_BACKOFF,
        help=f"first retry delay ceiling, s (default {DEFAULT_INITIAL_BACKOFF})",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=DEFAULT_MAX_BACKOFF,
        help=f"retry delay ceiling, s (default {DEFAULT_MAX_BACKOFF:.0f})",
    )
    parser.add_argument(
        "--cluster-ids",
        action="store_true",
        help="a source without an _id path: let the cluster assign ids (ML Commons' behaviour; a retry "
        "or re-run writes duplicates) instead of ids derived from each record's file and line",
    )
    parser.add_argument(
        "--action",
        choices=("index", "create"),
        default="index",
        help="index (default: a re-run overwrites) or create (skip ids that exist)",
    )
    parser.add_argument(
        "--bulk-tuning",
        action="store_true",
        help="refresh_interval -1 and 0 replicas during the run, restored afterwards",
    )
    parser.add_argument(
        "--max-error-ratio",
        type=float,
        metavar="R",
        help="FAILED instead of COMPLETED_WITH_ERROR when more than this share of records is rejected",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failed runs")


def check_ingest_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, beam_args: list[str]
) -> None:
    if min(args.bulk_size, args.bulk_bytes, args.bulk_concurrency) < 1:
        parser.error("--bulk-size, --bulk-bytes and --bulk-concurrency must be positive")
    numbers = (args.request_timeout, args.max_retry_time, args.initial_backoff, args.max_backoff)
    if not all(math.isfinite(value) for value in numbers):
        parser.error("--request-timeout, --max-retry-time and the backoffs must be finite numbers")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    if args.broadcast_max_bytes < 0:
        parser.error("--broadcast-max-bytes must not be negative")
    if min(args.max_retry_time, args.initial_backoff, args.max_backoff, args.max_retries or 0) < 0:
        parser.error(
            "--max-retry-time, --max-retries, --initial-backoff and --max-backoff must not be negative"
        )
    if args.bulk_tuning and args.aws_sigv4 == "aoss":
        parser.error("--bulk-tuning: OpenSearch Serverless has no index replica or refresh settings to tune")
    if not beam_args:
        return
    from pipelines.batch_ingest import unknown_beam_args

    unknown = unknown_beam_args(beam_args)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (neither mlbatch nor Beam options)")


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
            "bucket_groups",
            "distinct_buckets",
            "indexed",
            "created",
            "updated",
            "skipped_existing",
            "invalid_vectors",
            "bulk_requests",
            "bulk_retries",
            "bulk_splits",
            "dlq",
            "rejected_records",
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
        timeout=args.request_timeout,
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


def _beam_option(beam_args: list[str], name: str, default: str) -> str:
    """The last value given to Beam option `--name` (as `--name=value` or `--name value`)."""
    value = default
    for position, arg in enumerate(beam_args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and position + 1 < len(beam_args):
            value = beam_args[position + 1]
    return value


def _use_read_helper(choice: str, beam_args: list[str]) -> bool:
    """`auto`: on when the DirectRunner (one thread) runs on a machine with a core to spare."""
    if choice != "auto":
        return choice == "on"
    runner = _beam_option(beam_args, "runner", "DirectRunner").lower()
    return runner in ("directrunner", "direct") and (os.cpu_count() or 1) > 1


def _in_process_direct_runner(beam_args: list[str]) -> bool:
    """The DirectRunner in in_memory mode: its steps run in this process and can take early helpers."""
    runner = _beam_option(beam_args, "runner", "DirectRunner").lower()
    mode = _beam_option(beam_args, "direct_running_mode", "in_memory")
    return runner in ("directrunner", "direct") and mode == "in_memory"


def _early_reads(
    plan: IngestPlan, files: tuple[tuple[str, ...], ...], strategy: JoinStrategy
) -> list[tuple[SourcePlan, str]]:
    """The files whose read helpers start before Beam loads: the streamed file and, for a
    broadcast join, the small sources' files (read first, to be held in memory)."""
    streamed = streamed_file(strategy, files)
    if streamed is None:
        return []
    reads = [(plan.sources[streamed[0]], streamed[1])]
    if strategy.name == "broadcast":
        side = [
            (source, uri)
            for source in plan.sources
            if source.index != streamed[0]
            for uri in files[source.index]
        ]
        if len(side) <= _EARLY_SIDE_FILES:
            reads += side
    return reads


def _counts_so_far(beam_args: list[str]) -> dict[str, Any]:
    """What a run that has not finished reached, from this process's tallies (Beam's metrics are
    gone when a run fails): the whole job with the in-process DirectRunner, `partial` with runners
    whose steps run in other processes."""
    counts = _summarize(progress.snapshot())
    if not _in_process_direct_runner(beam_args):
        counts["partial"] = True
    return counts


def _ended_early(beam_args: list[str], dlq_dir: str, error: str) -> dict[str, Any]:
    """The fields of a task that failed or was interrupted during the run: the counts it reached,
    the dead-letter directory when it may hold entries, and the error."""
    counts = _counts_so_far(beam_args)
    dlq = {"dlq": dlq_dir} if counts["dlq"] or counts.get("partial") else {}
    return {"state": "FAILED", "counts": counts, **dlq, "error": error}


def _checkpoint(store: TaskStore, task_id: str, beam_args: list[str]) -> contextlib.AbstractContextManager:
    """Save the counts so far into the running task every few seconds (in-process runs only)."""
    if not _in_process_direct_runner(beam_args):
        return contextlib.nullcontext()
    return task_lifecycle.CountsCheckpoint(
        lambda counts: store.update(task_id, counts=counts), lambda: _counts_so_far(beam_args)
    )


def run_ingest(
    args: argparse.Namespace, beam_args: list[str], body: Any, extra_fields: dict[str, Any] | None = None
) -> int:
    """Run one ingestion job for the decoded request `body`; return the exit code."""
    try:
        request = parse_request(body)
        plan = compile_plan(request, join=args.join)
    except RequestError as error:
        raise UsageError(str(error)) from None
    create_body = read_json(args.create_index, "--create-index") if args.create_index else None

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
        **(extra_fields or {}),
    )
    task_id = task["task_id"]
    dlq_dir = args.dlq or str(mlbatch_home() / "dlq" / task_id)
    progress.restart_all()
    try:
        return _run_task(
            args, beam_args, request, plan, create_body, cluster, redactor, store, task_id, dlq_dir
        )
    except KeyboardInterrupt:  # from the first check to the final record: Ctrl-C or SIGTERM
        log.error("ingestion interrupted")
        print_json(store.update(task_id, **_ended_early(beam_args, dlq_dir, task_lifecycle.INTERRUPTED)))
        return EXIT_INTERRUPTED
    except Exception as error:  # our bug: the task still ends FAILED, with the cause in one line
        if store.get(task_id)["state"] not in ("CREATED", "RUNNING"):
            raise  # recorded already: --debug re-raises the run's own error for its traceback
        cause = redactor.text(f"internal error: {type(error).__name__}: {error}")
        log.error("ingestion failed: %s", cause)
        print_json(store.update(task_id, **_ended_early(beam_args, dlq_dir, cause)))
        if args.debug:
            raise
        return EXIT_FAILED


def _run_task(
    args: argparse.Namespace,
    beam_args: list[str],
    request: IngestRequest,
    plan: IngestPlan,
    create_body: Any,
    cluster: OpenSearchConfig,
    redactor: Redactor,
    store: TaskStore,
    task_id: str,
    dlq_dir: str,
) -> int:
    """Check the sources and the cluster, run the pipeline, record how task `task_id` ended."""
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
        record = store.update(
            task_id,
            drop=() if "dlq" in fields else ("dlq",),
            state=state,
            counts=counts or _summarize({}),
            **redactor.value(fields),
        )
        print_json(record)
        return {"COMPLETED": EXIT_OK, "COMPLETED_WITH_ERROR": EXIT_WITH_ERRORS}.get(state, EXIT_FAILED)

    from connectors.bulk_retry import RetryPolicy
    from connectors.opensearch import bulk_tuning, prepare_index
    from connectors.sources import expand_source, file_size
    from pipelines.outcome import decide_outcome

    access = SourceAccess(request.source_type, request.credential)
    try:
        files = tuple(tuple(expand_source(source.uri, access)) for source in plan.sources)
        could_broadcast = args.join_strategy != "shuffle" and any(len(names) == 1 for names in files)
        sizes = [
            [file_size(uri, access) if plan.needs_join and could_broadcast else 0 for uri in names]
            for names in files
        ]
        strategy = choose_join_strategy(sizes, args.join_strategy, args.broadcast_max_bytes)
        index = prepare_index(cluster, plan.index_name, create_body)
    except (SourceError, ClusterError, JoinStrategyError) as error:
        log.error("%s", error)
        return finish("FAILED", error=str(error))
    if index.created:
        log.info("created index %r", plan.index_name)
    for source, names in zip(plan.sources, files, strict=True):
        log.info("source[%d]: %d file(s) from %s", source.index, len(names), source.uri)
    if strategy.name != "none":
        log.info("%s join: %s", strategy.name, strategy.reason)
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

    checked_plan = with_vector_checks(plan, index.knn_fields)
    if args.cluster_ids and any(source.id_path is None for source in plan.sources):
        log.warning(
            "--cluster-ids: the cluster assigns document ids; a retried _bulk request or a re-run "
            "writes the same records again as duplicates"
        )
        checked_plan = with_cluster_assigned_ids(checked_plan)
    read_helper = _use_read_helper(args.read_helper, beam_args)
    try:
        if read_helper and _in_process_direct_runner(beam_args):  # parse now, while Beam loads
            for source, uri in _early_reads(checked_plan, files, strategy):
                HelperRead.start_early(source, access, uri)

        from pipelines.batch_ingest import IngestJob, run_pipeline
        from transforms.bulk import OpenSearchWriteConfig

        job = IngestJob(
            plan=checked_plan,
            files_by_source=files,
            access=access,
            write=OpenSearchWriteConfig(
                cluster,
                plan.index_name,
                bulk_size=args.bulk_size,
                bulk_bytes=args.bulk_bytes,
                bulk_concurrency=args.bulk_concurrency,
                retry=RetryPolicy(
                    args.max_retries, args.initial_backoff, args.max_backoff, args.max_retry_time
                ),
                action=args.action,
                knn_fields=index.knn_fields,
                source_count=len(plan.sources),
            ),
            dlq_dir=dlq_dir,
            task_id=task_id,
            redactor=redactor,
            join_strategy=strategy,
            read_helper=read_helper,
        )
        store.update(task_id, state="RUNNING", dlq=dlq_dir, counts=_counts_so_far(beam_args))
        with (
            _checkpoint(store, task_id, beam_args),
            bulk_tuning(cluster, plan.index_name) if args.bulk_tuning else contextlib.nullcontext(),
        ):
            counters = run_pipeline(job, beam_args)
    except Exception as error:  # the runner wraps worker errors; report the cause in one line
        if task_lifecycle.is_interrupt(error):
            raise KeyboardInterrupt from None
        cause = redactor.text(_root_cause(error))
        log.error("ingestion failed: %s", cause)
        print_json(store.update(task_id, **_ended_early(beam_args, dlq_dir, cause)))
        if args.debug:
            raise
        return EXIT_FAILED
    finally:
        HelperRead.discard_early()
    counts = _summarize(counters)
    log.info(
        "read %d record(s), indexed %d document(s), rejected %d",
        counts["read"],
        counts["indexed"],
        counts["dlq"],
    )
    shuffled = strategy.name == "shuffle"
    outcome = decide_outcome(counters, len(plan.sources), shuffled, args.max_error_ratio)
    extra: dict[str, Any] = {"dlq": dlq_dir} if counts["dlq"] else {}
    if strategy.name != "none":
        extra["join_strategy"] = strategy.name
    if outcome.error:
        log.warning("%s", outcome.error + (f"; see {dlq_dir}" if counts["dlq"] else ""))
        extra["error"] = outcome.error
    return finish(outcome.state, counts=counts, **extra)

"""The options of an ingestion run, typed and checked (the **run** step's input beside the request).

`IngestOptions` holds every option of `mlbatch ingest` (and of `predict wait --then-ingest`)
with its default, taken from the module that uses it; building one checks it, so the CLI and
any other caller of `pipelines.ingest_run.run_ingest` get the same checks. `add_ingest_options`
adds them to an argparse parser (leaving out the defaults, which live here only) and
`ingest_options_from` builds the options from its parsed arguments.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import get_args

from connectors.byte_ranges import DEFAULT_SPLIT_BYTES
from connectors.opensearch.bulk_retry import DEFAULT_BULK_CONCURRENCY
from connectors.opensearch.config import DEFAULT_TIMEOUT, SIGV4_SERVICES, OpenSearchConfig, cluster_config
from connectors.retry import DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_RETRY_TIME, RetryPolicy
from connectors.secret_refs import REF_FORMS, SecretRefError, parse_ref
from pipelines.join_strategy import DEFAULT_BROADCAST_MAX_BYTES, JoinStrategyName
from pipelines.runner_choice import ReadHelperChoice, RunnerChoice, unknown_beam_args
from transforms.bulk_body import DEFAULT_BULK_BYTES, DEFAULT_BULK_SIZE, BulkAction
from transforms.quantize import Quantization, QuantizeError, parse_quantize
from transforms.types import JoinPolicy


class IngestOptionsError(ValueError):
    """Options that cannot run together or out of range; the message names them."""


@dataclass(frozen=True)
class IngestOptions:
    """How one ingestion runs: the cluster, the writes and their retries, the join, Beam's options."""

    opensearch: str | None = None  # None: $OPENSEARCH_URL, else http://localhost:9200
    user: str | None = None
    insecure: bool = False
    ca_certs: str | None = None
    aws_sigv4: str | None = None
    region: str | None = None
    compress: bool = False
    request_timeout: float = DEFAULT_TIMEOUT
    create_index: str | None = None  # a mapping JSON file
    bulk_size: int = DEFAULT_BULK_SIZE
    bulk_bytes: int = DEFAULT_BULK_BYTES
    bulk_concurrency: int = DEFAULT_BULK_CONCURRENCY
    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    max_retries: int | None = None
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    cluster_ids: bool = False
    action: BulkAction = "index"
    bulk_tuning: bool = False
    join: JoinPolicy = "outer"
    join_strategy: JoinStrategyName = "auto"
    broadcast_max_bytes: int = DEFAULT_BROADCAST_MAX_BYTES
    split_bytes: int | None = None  # None: DEFAULT_SPLIT_BYTES, but whole files on the in-process runner
    read_helper: ReadHelperChoice = "auto"
    dlq: str | None = None  # None: $MLBATCH_HOME/dlq/<task_id>
    max_error_ratio: float | None = None
    worker_secrets: str | None = None  # None: in the graph in process, else a file under $MLBATCH_HOME
    local_root: str | None = None  # serve-api's --local-root: local sources only expand to files under it
    chunk_lists: bool = False  # LIST[].MEMBER targets build nested chunk lists (transforms.chunks)
    incremental: bool = False  # skip files the index's manifest records as ingested unchanged
    resume: str | None = None  # a task id: skip the files that task (run incrementally) finished
    quantize: str | None = None  # `byte` or `byte:MAX_ABS` (transforms.quantize)
    beam_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = options_problem(self)
        if problem:
            raise IngestOptionsError(problem)

    def cluster(self) -> OpenSearchConfig:
        """The cluster to write to, completed from the environment."""
        return cluster_config(self, compress=self.compress, timeout=self.request_timeout)

    def quantization(self) -> Quantization | None:
        return parse_quantize(self.quantize) if self.quantize is not None else None

    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.initial_backoff, self.max_backoff, self.max_retry_time)

    def split_bytes_on(self, runner: RunnerChoice) -> int:
        """`--split-bytes`; by default `DEFAULT_SPLIT_BYTES`, or 0 (whole files) on the in-process
        DirectRunner, whose one thread would read the ranges one after the other anyway."""
        if self.split_bytes is not None:
            return self.split_bytes
        return 0 if runner.in_process else DEFAULT_SPLIT_BYTES


def options_problem(options: IngestOptions) -> str | None:
    """What is wrong with `options`, in the CLI's words, or None."""
    if min(options.bulk_size, options.bulk_bytes, options.bulk_concurrency) < 1:
        return "--bulk-size, --bulk-bytes and --bulk-concurrency must be positive"
    numbers = (options.request_timeout, options.max_retry_time, options.initial_backoff, options.max_backoff)
    if not all(math.isfinite(value) for value in numbers):
        return "--request-timeout, --max-retry-time and the backoffs must be finite numbers"
    if options.request_timeout <= 0:
        return "--request-timeout must be positive"
    if options.broadcast_max_bytes < 0:
        return "--broadcast-max-bytes must not be negative"
    if options.split_bytes is not None and options.split_bytes < 0:
        return "--split-bytes must not be negative (0: never split files)"
    retrying = (options.max_retry_time, options.initial_backoff, options.max_backoff)
    if min(*retrying, options.max_retries or 0) < 0:
        return "--max-retry-time, --max-retries, --initial-backoff and --max-backoff must not be negative"
    if options.bulk_tuning and options.aws_sigv4 == "aoss":
        return "--bulk-tuning: OpenSearch Serverless has no index replica or refresh settings to tune"
    if options.cluster_ids and (options.incremental or options.resume):
        return "--incremental and --resume re-write a file's documents by their ids: not with --cluster-ids"
    if options.worker_secrets is not None:
        try:
            parse_ref(options.worker_secrets)
        except SecretRefError as error:
            return str(error)
    if options.quantize is not None:
        try:
            parse_quantize(options.quantize)
        except QuantizeError as error:
            return str(error)
    unknown = unknown_beam_args(options.beam_args) if options.beam_args else []
    if unknown:
        return f"unrecognized arguments: {' '.join(unknown)} (neither mlbatch nor Beam options)"
    return None


def ingest_options_from(args: argparse.Namespace, beam_args: Sequence[str]) -> IngestOptions:
    """The options given on a command line parsed with `add_ingest_options` (and the Beam
    options it left over); raises IngestOptionsError."""
    names = [option.name for option in fields(IngestOptions) if option.name in args]
    return IngestOptions(**{name: getattr(args, name) for name in names}, beam_args=tuple(beam_args))


def add_ingest_options(parser: argparse.ArgumentParser) -> None:
    """The options of an ingestion run (shared by `ingest` and `predict wait --then-ingest`);
    an option not given is left out of the parsed arguments, so `IngestOptions` supplies its default."""

    def option(*names: str, **settings: object) -> None:
        parser.add_argument(*names, default=argparse.SUPPRESS, **settings)

    def flag(name: str, help_text: str) -> None:
        option(name, action="store_true", help=help_text)

    option("--opensearch", help="cluster URL (default: $OPENSEARCH_URL, else http://localhost:9200)")
    option("--user", help="basic-auth user; the password comes from $OPENSEARCH_PASSWORD")
    flag("--insecure", "do not verify the cluster's TLS certificate")
    option("--ca-certs", help="CA bundle for the cluster's TLS certificate")
    option("--create-index", metavar="MAPPING.json", help="create the index with this body if missing")
    option("--bulk-size", type=int, help=f"documents per _bulk request (default {DEFAULT_BULK_SIZE})")
    option(
        "--bulk-bytes", type=int, help=f"bytes per _bulk request (default {DEFAULT_BULK_BYTES // 2**20} MiB)"
    )
    option(
        "--join",
        choices=get_args(JoinPolicy),
        help="several sources: write every key (outer, default) or only keys in all sources (inner)",
    )
    option(
        "--join-strategy",
        choices=get_args(JoinStrategyName),
        help="several sources: stream one large file against the others held in memory (broadcast), "
        "or shuffle every record (shuffle); auto (default) broadcasts when it can",
    )
    option(
        "--broadcast-max-bytes",
        type=int,
        help="auto: broadcast only when the sources held in memory are at most this many input bytes "
        f"(default {DEFAULT_BROADCAST_MAX_BYTES // 2**20} MiB)",
    )
    option(
        "--split-bytes",
        type=int,
        help="read uncompressed JSONL files larger than this in byte ranges of about this size, on any "
        f"worker (default {DEFAULT_SPLIT_BYTES // 2**20} MiB; the in-process DirectRunner reads files "
        "whole unless this is given); 0: read every file whole",
    )
    option(
        "--read-helper",
        choices=get_args(ReadHelperChoice),
        help="parse the large files in a helper process, beside the merge and the writes "
        "(auto, default: on with 2+ cores and the DirectRunner)",
    )
    option("--dlq", metavar="DIR", help="dead-letter directory (default $MLBATCH_HOME/dlq/<task_id>)")
    option(
        "--worker-secrets",
        metavar="REF",
        help=f"how workers outside this process get the run's secrets: {REF_FORMS} "
        "(default: a file under $MLBATCH_HOME when they share this machine's files)",
    )
    option(
        "--aws-sigv4",
        choices=SIGV4_SERVICES,
        help="sign requests with SigV4 for Amazon OpenSearch "
        "Service (es) or Serverless (aoss); credentials from the default AWS chain",
    )
    option(
        "--aws-region",
        dest="region",
        metavar="REGION",
        help="AWS region for --aws-sigv4 (default $AWS_REGION); Beam's own --region is left to Beam",
    )
    flag("--compress", "gzip request bodies")
    option(
        "--request-timeout",
        type=float,
        metavar="S",
        help=f"seconds to wait for each cluster request before retrying it (default {DEFAULT_TIMEOUT:.0f})",
    )
    option(
        "--bulk-concurrency",
        type=int,
        help=f"_bulk requests in flight per worker (default {DEFAULT_BULK_CONCURRENCY})",
    )
    option(
        "--max-retry-time",
        type=float,
        metavar="S",
        help="keep retrying a failed _bulk request or item for up to S seconds per batch "
        f"(default {DEFAULT_MAX_RETRY_TIME:.0f}); 0: no retries",
    )
    option(
        "--max-retries",
        type=int,
        help="also stop after this many retries of a batch (default: no cap, only --max-retry-time)",
    )
    option(
        "--initial-backoff",
        type=float,
        help=f"first retry delay ceiling, s (default {DEFAULT_INITIAL_BACKOFF})",
    )
    option("--max-backoff", type=float, help=f"retry delay ceiling, s (default {DEFAULT_MAX_BACKOFF:.0f})")
    flag(
        "--cluster-ids",
        "a source without an _id path: let the cluster assign ids (ML Commons' behaviour; a retry "
        "or re-run writes duplicates) instead of ids derived from each record's file and line",
    )
    option(
        "--action",
        choices=get_args(BulkAction),
        help="index (default: a re-run overwrites) or create (skip ids that exist)",
    )
    flag(
        "--incremental", "skip the files this index's manifest records as ingested unchanged; record the rest"
    )
    option(
        "--resume",
        metavar="TASK_ID",
        help="run again the request of an --incremental task that did not finish: only its unfinished files",
    )
    flag("--bulk-tuning", "refresh_interval -1 and 0 replicas during the run, restored afterwards")
    flag(
        "--chunk-lists",
        "read field_map targets LIST[].MEMBER as one member of a nested list of chunk objects "
        "(mlbatch's extension; without it they are refused)",
    )
    option(
        "--max-error-ratio",
        type=float,
        metavar="R",
        help="FAILED instead of COMPLETED_WITH_ERROR when more than this share of records is rejected",
    )
    option(
        "--quantize",
        metavar="byte[:MAX_ABS]",
        help="quantise float vectors into the index's byte knn_vector fields: q = round(clamp(x * 127 / "
        "MAX_ABS, -128, 127)), MAX_ABS 1.0 by default (normalised embeddings); see docs/vectors.md",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failed runs")

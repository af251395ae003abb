"""Check a run's sources and cluster before anything runs (the **plan** step's last part).

`check_run` lists each source's files, chooses the join strategy from their sizes
(`pipelines.join_strategy`), checks (or creates) the index, completes the plan with the
index's vector fields (`pipelines.plan.with_vector_checks`), with `--quantize` the byte fields it
fills (`transforms.quantize`) and, with `--cluster-ids`, ids the cluster assigns, and says what
each file is read as: whole, or in byte ranges (`pipelines.plan.split_reads`). What it finds is
logged; numeric fields the mapping does not declare `knn_vector` are warned of. It raises one of
`CHECK_ERRORS` when a source or the cluster is not usable, or `--quantize` has no field to fill.

`check_workers` runs earlier, before the task is created: it refuses what the runner's workers
could not reach (local paths for a runner whose workers are elsewhere, `pipelines.worker_reach`)
and chooses how they get the run's secrets (`pipelines.worker_secrets`); it raises one of
`WORKER_ERRORS`, a usage error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from connectors.byte_ranges import FileRange
from connectors.opensearch.config import ClusterError, OpenSearchConfig
from connectors.opensearch.index import IndexInfo, prepare_index
from connectors.opensearch.mapping import KnnField
from connectors.sources import SourceAccess, SourceError, expand_source
from pipelines.ingest_options import IngestOptions
from pipelines.join_strategy import JoinStrategy, JoinStrategyError, choose_join_strategy
from pipelines.plan import split_reads, with_vector_checks
from pipelines.request import IngestRequest
from pipelines.runner_choice import RunnerChoice
from pipelines.worker_reach import WorkerReachError, environment_type, reach_problem, workers_see_local_files
from pipelines.worker_secrets import WorkerSecrets, WorkerSecretsError
from transforms.document_ids import with_cluster_assigned_ids
from transforms.quantize import QuantizeError, quantized_fields, with_quantization
from transforms.types import IngestPlan

CHECK_ERRORS = (SourceError, ClusterError, JoinStrategyError, QuantizeError)
WORKER_ERRORS = (WorkerReachError, WorkerSecretsError)
_NUMERIC_TYPES = ("float", "double", "half_float")
log = logging.getLogger("mlbatch")


@dataclass(frozen=True)
class CheckedRun:
    """A plan ready to run: completed for the index, what its files are read as (whole, or in
    byte ranges), how its sources are joined, and each source's `(uri, size)` files."""

    plan: IngestPlan
    reads: tuple[tuple[FileRange, ...], ...]
    strategy: JoinStrategy
    knn_fields: dict[str, KnnField]
    files: tuple[tuple[tuple[str, int], ...], ...] = ()


def check_run(
    options: IngestOptions,
    plan: IngestPlan,
    access: SourceAccess,
    cluster: OpenSearchConfig,
    create_body: Any,
    split_bytes: int = 0,
) -> CheckedRun:
    """List the sources' files, choose the join strategy, check the index; complete the plan and
    split the files of over `split_bytes` (0: none) into byte ranges where it can."""
    files = [expand_source(source.uri, access) for source in plan.sources]
    sizes = [[size for _, size in listed] for listed in files]
    ordered = options.action == "create"
    strategy = choose_join_strategy(sizes, options.join_strategy, options.broadcast_max_bytes, ordered)
    index = prepare_index(cluster, plan.index_name, create_body)
    if index.created:
        log.info("created index %r", plan.index_name)
    for source, names in zip(plan.sources, files, strict=True):
        log.info("source[%d]: %d file(s) from %s", source.index, len(names), source.uri)
    if strategy.name != "none":
        log.info("%s join: %s", strategy.name, strategy.reason)
    for name, mapped_type in numeric_fields_not_knn(plan.field_order, index):
        log.warning("field %r is mapped as %s, not knn_vector", name, mapped_type)

    checked_plan = with_vector_checks(plan, index.knn_fields)
    quantization = options.quantization()
    if quantization is not None:
        checked_plan = with_quantization(checked_plan, quantization)
        names = ", ".join(repr(name) for name in quantized_fields(checked_plan, quantization.data_type))
        log.info(
            "--quantize: float vectors of %s to %s: %s", names, quantization.data_type, quantization.rule()
        )
    if options.cluster_ids and any(source.id_path is None for source in plan.sources):
        log.warning(
            "--cluster-ids: the cluster assigns document ids; a retried _bulk request or a re-run "
            "writes the same records again as duplicates"
        )
        checked_plan = with_cluster_assigned_ids(checked_plan)
    whole: dict[int, str] = {}
    if strategy.name == "broadcast" and options.action == "create" and strategy.streamed is not None:
        whole[strategy.streamed] = "--action create keeps an id's first write; ranges write in no set order"
    reads, notes = split_reads(checked_plan, files, split_bytes, whole)
    for note in notes:
        log.info("%s", note)
    for source, parts in zip(plan.sources, reads, strict=True):
        if len(parts) > len(files[source.index]):
            log.info("source[%d]: read as %d byte ranges", source.index, len(parts))
    listed = tuple(tuple(names) for names in files)
    return CheckedRun(checked_plan, reads, strategy, index.knn_fields, listed)


def check_workers(
    options: IngestOptions, request: IngestRequest, cluster: OpenSearchConfig, runner: RunnerChoice
) -> WorkerSecrets:
    """Refuse local paths the runner's workers cannot see; choose how they get the run's secrets."""
    environment = environment_type(options.beam_args)
    problem = reach_problem(runner.runner, request.source_type, request.sources, options.dlq, environment)
    if problem:
        raise WorkerReachError(problem)
    access = SourceAccess(request.source_type, request.credential)
    see_local = workers_see_local_files(runner.runner, environment)
    return WorkerSecrets.plan(options.worker_secrets, access, cluster, runner, see_local)


def numeric_fields_not_knn(field_names: Sequence[str], index: IndexInfo) -> list[tuple[str, str]]:
    """(field, mapped type) of the plan's fields the index maps as plain numbers, not `knn_vector`:
    a vector written there is stored as a list of numbers, not searchable by k-NN."""
    found = []
    for name in field_names:
        mapped_type = index.properties.get(name, {}).get("type")
        if mapped_type in _NUMERIC_TYPES and name not in index.knn_fields:
            found.append((name, mapped_type))
    return found

"""Run one ingestion and record it as a BATCH_INGEST task (the **run** step, from request to record).

`run_ingest(options, body)` parses the request and compiles its plan, creates the task record,
checks the sources and the cluster (`pipelines.ingest_checks`), runs the Beam pipeline
(`pipelines.ingest_graph`) with progress on stderr, and records how it ended
(`pipelines.report`): the final record, also when the run fails or is interrupted (Ctrl-C or
SIGTERM; the task is FAILED with "interrupted"). While the pipeline runs in this process its
counts are saved into the record every few seconds, so even a killed run's record keeps them.
Beam loads only once the checks passed and the read helpers of the largest files started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlparse

from connectors.opensearch.config import OpenSearchConfig
from connectors.opensearch.index import bulk_tuning
from connectors.redact import RedactingFilter, Redactor, credential_secrets, env_secrets, redact_credential
from connectors.sources import SourceAccess
from connectors.task_store import TaskStore, mlbatch_home, this_process
from pipelines import report, task_lifecycle
from pipelines.cli_common import UsageError, log, paused_gc, read_json
from pipelines.incremental_run import plan_incremental, task_fields
from pipelines.ingest_checks import CHECK_ERRORS, WORKER_ERRORS, CheckedRun, check_run, check_workers
from pipelines.ingest_options import IngestOptions
from pipelines.plan import compile_plan
from pipelines.request import IngestRequest, RequestError, parse_request
from pipelines.runner_choice import RunnerChoice, early_reads, runner_choice, use_read_helper
from pipelines.worker_packaging import staged_beam_args
from pipelines.worker_secrets import WorkerSecrets
from transforms import counters, progress
from transforms.read_helper import HelperRead
from transforms.types import IngestPlan


@dataclass(frozen=True)
class IngestResult:
    """The final task record of a run; `interrupted` when Ctrl-C or SIGTERM ended it, `error` the
    exception that failed it (for a caller that shows tracebacks)."""

    record: dict[str, Any]
    interrupted: bool = False
    error: Exception | None = None


@dataclass(frozen=True)
class _Task:
    """The task record of one run, and what recording its end needs."""

    store: TaskStore
    task_id: str
    dlq_dir: str
    redactor: Redactor
    runner: RunnerChoice
    workers: WorkerSecrets

    def update(self, **fields: Any) -> dict[str, Any]:
        return self.store.update(self.task_id, **fields)

    def finish(self, **fields: Any) -> dict[str, Any]:
        """The final record; the `dlq` a RUNNING task named goes when no entry was written."""
        drop = () if "dlq" in fields else ("dlq",)
        return self.store.update(self.task_id, drop=drop, **self.redactor.value(fields))

    def ended_early(self, error: str) -> dict[str, Any]:
        return self.update(**report.ended_early_fields(self.runner.in_process, self.dlq_dir, error))

    def checkpoint(self) -> contextlib.AbstractContextManager:
        """Save the counts so far into the running task every few seconds (in-process runs only)."""
        if not self.runner.in_process:
            return contextlib.nullcontext()
        return task_lifecycle.CountsCheckpoint(
            lambda counts: self.update(counts=counts), lambda: report.counts_so_far(in_process=True)
        )


def run_ingest(
    options: IngestOptions, body: Any, extra_fields: dict[str, Any] | None = None, task_id: str | None = None
) -> IngestResult:
    """Run one ingestion job for the decoded request `body`; `extra_fields` go into its task record.
    `task_id` names a CREATED task made for this run beforehand (by `mlbatch serve-api`), which
    this process takes over; by default a new task is created.

    Raises UsageError for a request that does not parse, an unreadable --create-index file, or a
    remote runner whose workers cannot get mlbatch (`pipelines.worker_packaging`)."""
    try:
        request = parse_request(body)
        plan = compile_plan(request, join=options.join, chunk_lists=options.chunk_lists)
    except RequestError as error:
        raise UsageError(str(error)) from None
    create_body = read_json(options.create_index, "--create-index") if options.create_index else None
    options = replace(options, beam_args=staged_beam_args(options.beam_args))

    cluster = options.cluster()
    runner = runner_choice(options.beam_args)
    try:
        workers = check_workers(options, request, cluster, runner)
    except WORKER_ERRORS as error:
        raise UsageError(str(error)) from None
    redactor = _redactor(request.credential, cluster)
    with masked_logs(redactor):
        store = TaskStore()
        fields = {
            "index_name": request.index_name,
            "data_source": {"type": request.source_type, "source": list(request.sources)},
            "credential": redact_credential(request.credential),
            **(extra_fields or {}),
            **task_fields(options, request, store),
        }
        if task_id is None:
            task_id = store.create("BATCH_INGEST", **fields)["task_id"]
        else:
            taken = _take_over(store, task_id, fields)
            if taken is not None:  # cancelled or ended while it waited: not run
                return IngestResult(taken)
        dlq_dir = options.dlq or str(mlbatch_home() / "dlq" / task_id)
        task = _Task(store, task_id, dlq_dir, redactor, runner, workers)
        progress.restart_all()
        try:
            return _run_task(options, request, plan, create_body, cluster, task)
        except KeyboardInterrupt:  # from the first check to the final record: Ctrl-C or SIGTERM
            log.error("ingestion interrupted")
            return IngestResult(task.ended_early(task_lifecycle.INTERRUPTED), interrupted=True)
        except Exception as error:  # our bug: the task still ends FAILED, with the cause in one line
            cause = redactor.text(f"internal error: {type(error).__name__}: {error}")
            log.error("ingestion failed: %s", cause)
            return IngestResult(task.ended_early(cause), error=error)
        except BaseException as error:  # the host stops the run (Airflow's task timeout): record it, go on
            log.error("ingestion stopped by %s", type(error).__name__)
            task.ended_early(f"stopped by {type(error).__name__}")
            raise


def _take_over(store: TaskStore, task_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """Make this process the owner of a task made beforehand, if it still waits (CREATED); else its
    record, which this run leaves as it is."""
    owner = this_process()
    record = store.update(task_id, only_if=lambda stored: stored["state"] == "CREATED", owner=owner, **fields)
    if record.get("owner") == owner:
        return None
    log.warning("task %s is %s: not run", task_id, record["state"])
    return record


@contextlib.contextmanager
def masked_logs(redactor: Redactor) -> Iterator[None]:
    """Mask the run's secrets in every record of the mlbatch logger, also in those it passes on to
    the handlers of a host process (Airflow's task log)."""
    masking = RedactingFilter(redactor)
    log.addFilter(masking)
    try:
        yield
    finally:
        log.removeFilter(masking)


def _redactor(credential: dict[str, str], cluster: OpenSearchConfig) -> Redactor:
    return Redactor.of(
        [
            *credential_secrets(credential),
            cluster.password,
            urlparse(cluster.url).password,
            unquote(urlparse(cluster.url).password or ""),
            *env_secrets(),
        ]
    )


def _run_task(
    options: IngestOptions,
    request: IngestRequest,
    plan: IngestPlan,
    create_body: Any,
    cluster: OpenSearchConfig,
    task: _Task,
) -> IngestResult:
    """Check the sources and the cluster, run the pipeline, record how the task ended."""
    log.info(
        "task %s: %d source(s) into index %r at %s",
        task.task_id,
        len(plan.sources),
        plan.index_name,
        cluster.display_url,
    )
    if request.connector_id:
        log.warning("connector_id %r is ignored: the request's credential is used", request.connector_id)
    access = SourceAccess(request.source_type, request.credential, local_root=options.local_root)
    try:
        checked = check_run(options, plan, access, cluster, create_body, options.split_bytes_on(task.runner))
    except CHECK_ERRORS as error:
        log.error("%s", error)
        return IngestResult(task.finish(state="FAILED", counts=counters.summarize({}), error=str(error)))
    read_helper = use_read_helper(options.read_helper, task.runner)
    by_unit = None
    try:
        if options.incremental or options.resume:  # one pipeline per unit not yet ingested
            by_unit = plan_incremental(options, request, checked, access, cluster, (task.store, task.task_id))
            progress.INPUT.plan(
                by_unit.files_to_read(checked.files), request.source_type, task.runner.in_process
            )
            job_counters = by_unit.run(
                lambda unit: _run_pipeline(
                    options, replace(checked, reads=unit.reads), access, cluster, task, read_helper
                )
            )
        else:
            progress.INPUT.plan(checked.files, request.source_type, live=task.runner.in_process)
            if read_helper and task.runner.in_process:  # parse now, while Beam loads
                for job in early_reads(checked.plan, checked.reads, checked.strategy, access, options.action):
                    HelperRead.start_early(job)
            job_counters = _run_pipeline(options, checked, access, cluster, task, read_helper)
    except counters.CountsUnknown as unknown:  # the run ended, but the runner cannot say what it did
        fields = report.counts_unknown_fields(
            unknown, task.runner.runner, options.beam_args, task.runner.in_process, task.dlq_dir
        )
        return IngestResult(task.finish(**fields))
    except Exception as error:  # the runner wraps worker errors; report the cause in one line
        if task_lifecycle.is_interrupt(error):
            raise KeyboardInterrupt from None
        cause = task.redactor.text(report.root_cause(error))
        log.error("ingestion failed: %s", cause)
        return IngestResult(task.ended_early(cause), error=error)
    finally:
        HelperRead.discard_early()
    fields = report.finished_fields(
        job_counters, len(plan.sources), checked.strategy, options.max_error_ratio, task.dlq_dir
    )
    if by_unit is not None:
        fields["counts"].update(by_unit.file_counts())
    quantization = options.quantization()
    if quantization is not None:
        fields["quantize"] = quantization.stated(counters.clamped_total(job_counters))
        log.info("--quantize: %d value(s) clamped to [-128, 127]", fields["quantize"]["clamped"])
    return IngestResult(task.finish(**fields))


def _run_pipeline(
    options: IngestOptions,
    checked: CheckedRun,
    access: SourceAccess,
    cluster: OpenSearchConfig,
    task: _Task,
    read_helper: bool,
) -> dict[str, int]:
    """Build the job, mark the task RUNNING, run the pipeline; return its counters."""
    with paused_gc():
        from pipelines.ingest_graph import IngestJob, run_pipeline  # loads Beam: only now
        from transforms.bulk import OpenSearchWriteConfig

    plan = checked.plan
    with task.workers.handed_over(task.task_id) as handover:
        job = IngestJob(
            plan=plan,
            reads_by_source=checked.reads,
            access=handover.access(access),
            write=OpenSearchWriteConfig(
                handover.cluster(cluster),
                plan.index_name,
                bulk_size=options.bulk_size,
                bulk_bytes=options.bulk_bytes,
                bulk_concurrency=options.bulk_concurrency,
                retry=options.retry(),
                action=options.action,
                knn_fields=checked.knn_fields,
                source_count=len(plan.sources),
            ),
            dlq_dir=task.dlq_dir,
            task_id=task.task_id,
            redactor=handover.redactor(task.redactor),
            join_strategy=checked.strategy,
            read_helper=read_helper,
        )
        counts = report.counts_so_far(task.runner.in_process)
        quantization = options.quantization()
        stated = {"quantize": quantization.stated()} if quantization is not None else {}
        task.update(state="RUNNING", dlq=task.dlq_dir, counts=counts, **stated, **handover.record_fields())
        with (
            task.checkpoint(),
            bulk_tuning(cluster, plan.index_name) if options.bulk_tuning else contextlib.nullcontext(),
        ):
            return run_pipeline(job, options.beam_args)

"""The batch ingestion Beam graph: read -> project + key -> join -> map -> batch -> write.

`build_pipeline` wires the transforms for a compiled `IngestPlan`; `run_pipeline` runs it on
the chosen runner (the project's own where it replaces Beam's: `pipelines.dask_runner` for
`--runner=DaskRunner`) and returns the job's counters. One source needs no shuffle; several are
joined on `_id`, by a broadcast join (the large source streamed, one whole file or several
units: files and byte ranges; the small sources in memory) or a CoGroupByKey shuffle join, as
`pipelines.join_strategy` chose. Documents reach the write step serialized already, in blocks
(`transforms.encoded`), except the few a split join settles at the end.
Rejected records from every step go to the dead-letter queue, written by a writer of that step's
own, fused into the step (on Beam's runners and on the project's Dask runner), so they are
written while the job runs and kept when it fails (see `transforms.dead_letters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import apache_beam as beam

from connectors.byte_ranges import FileRange
from connectors.redact import Redactor
from connectors.sources import SourceAccess
from pipelines.cli_common import paused_gc
from pipelines.join_strategy import JoinStrategy
from pipelines.runner_choice import beam_options, pipeline_runner, runner_choice
from transforms.buckets import BUCKETS
from transforms.bulk import OpenSearchWriteConfig, WriteToOpenSearch
from transforms.counters import job_counters
from transforms.dead_letters import WriteDeadLetters, close_open_files
from transforms.join import BroadcastJoin, CountDistinctBuckets, JoinSources
from transforms.read import ReadSource
from transforms.read_jobs import broadcast_job
from transforms.split_finish import FinishSplitJoin
from transforms.split_join import SplitBroadcastJoin
from transforms.types import DEAD_LETTERS, IngestPlan


@dataclass(frozen=True)
class IngestJob:
    """Everything one run needs: the plan, what its files are read as, and where things go."""

    plan: IngestPlan
    reads_by_source: tuple[tuple[FileRange, ...], ...]
    access: SourceAccess
    write: OpenSearchWriteConfig
    dlq_dir: str
    task_id: str
    redactor: Redactor
    join_strategy: JoinStrategy
    read_helper: bool = False


def build_pipeline(pipeline: beam.Pipeline, job: IngestJob) -> None:
    """Add the ingestion transforms for `job` to `pipeline`."""
    plan = job.plan
    strategy = job.join_strategy
    dead_letters = []
    settled = None
    if strategy.name == "broadcast":
        documents, settled = _broadcast_join(pipeline, job, dead_letters)
    elif strategy.name == "shuffle":
        documents = _shuffle_join(pipeline, job, dead_letters)
    else:
        outputs = pipeline | "Read source[0]" >> ReadSource(
            plan.sources[0],
            list(job.reads_by_source[0]),
            job.access,
            "documents",
            job.read_helper,
            job.write.action,
        )
        dead_letters.append(outputs[DEAD_LETTERS])
        documents = outputs.records
    written = documents | "Write" >> WriteToOpenSearch(job.write)
    dead_letters.append(written)
    if settled is not None:  # a streamed source read in several units: what the units could not know
        streamed = plan.sources[strategy.streamed]
        parts = list(job.reads_by_source[streamed.index])
        dead_letters.extend(
            settled | "Settled" >> FinishSplitJoin(plan, streamed, parts, job.access, job.write, written)
        )
    for position, rejected in enumerate(dead_letters):  # one writer per step, not after a Flatten
        rejected | f"DeadLetterQueue[{position}]" >> WriteDeadLetters(
            job.dlq_dir, job.task_id, job.redactor, job.access, step=str(position)
        )


def _shuffle_join(pipeline: beam.Pipeline, job: IngestJob, dead_letters: list) -> beam.PCollection:
    projected, buckets = {}, []
    for source, parts in zip(job.plan.sources, job.reads_by_source, strict=True):
        outputs = pipeline | f"Read source[{source.index}]" >> ReadSource(
            source, list(parts), job.access, "buckets", job.read_helper
        )
        projected[source.index] = outputs.records
        dead_letters.append(outputs[DEAD_LETTERS])
        buckets.append(outputs[BUCKETS])
    tuple(buckets) | "AllBuckets" >> beam.Flatten() | "CountDistinctBuckets" >> CountDistinctBuckets()
    joined = projected | "Join" >> JoinSources(job.plan, job.write.action)
    dead_letters.append(joined[DEAD_LETTERS])
    return joined.documents


def _broadcast_join(
    pipeline: beam.Pipeline, job: IngestJob, dead_letters: list
) -> tuple[beam.PCollection, dict[str, beam.PCollection] | None]:
    """The joined documents, and for a streamed source read in several units (files, byte
    ranges) the outputs of settling its units for `FinishSplitJoin` (else None)."""
    streamed = job.plan.sources[job.join_strategy.streamed]
    parts = job.reads_by_source[streamed.index]
    if len(parts) == 1:
        joined = pipeline | f"Join on source[{streamed.index}]" >> BroadcastJoin(
            broadcast_job(job.plan, job.reads_by_source, streamed.index, job.access, job.write.action),
            job.read_helper,
        )
        dead_letters.append(joined[DEAD_LETTERS])
        return joined.documents, None
    side = []
    for source, source_parts in zip(job.plan.sources, job.reads_by_source, strict=True):
        if source is streamed:
            continue
        outputs = pipeline | f"Read source[{source.index}]" >> ReadSource(
            source, list(source_parts), job.access, "batches", job.read_helper
        )
        side.append(outputs.records)
        dead_letters.append(outputs[DEAD_LETTERS])
    side_batches = tuple(side) | "SideSources" >> beam.Flatten()
    split = side_batches | f"Join on source[{streamed.index}]" >> SplitBroadcastJoin(
        job.plan, streamed, list(parts), job.access, job.read_helper, job.write.action
    )
    dead_letters.append(split.pop(DEAD_LETTERS))
    return split.pop("documents"), split


def run_pipeline(job: IngestJob, beam_args: Sequence[str]) -> dict[str, int]:
    """Run the pipeline to completion; return its counters by name.

    When the run fails or is interrupted, the dead-letter files of its unfinished bundles in
    this process are closed, so the records rejected so far are in the DLQ."""
    with paused_gc():
        runner = pipeline_runner(runner_choice(beam_args))
        pipeline = beam.Pipeline(runner=runner, options=beam_options(beam_args))
        build_pipeline(pipeline, job)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        close_open_files()
    return job_counters(result)

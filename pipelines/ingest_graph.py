"""The batch ingestion Beam pipeline: read -> project + key -> join -> map -> batch -> write.

`build_pipeline` wires the transforms for a compiled `IngestPlan`; `run_pipeline` runs it on
the chosen runner and returns the job's counters. One source needs no shuffle; several are
joined on `_id`, by a broadcast join (one large file streamed, the small sources in memory)
or a CoGroupByKey shuffle join, as `pipelines.join_strategy` chose. Rejected records from
every step go to the dead-letter queue, written by a writer fused into that step (so they are
written while the job runs, and kept when it fails; see `transforms.dead_letters`).

Runnable as a module with the same options as `mlbatch ingest`:

    python -m pipelines.batch_ingest --request r.json --opensearch URL [Beam options]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, _BeamArgumentParser

from connectors.redact import Redactor
from connectors.sources import SourceAccess
from pipelines.join_strategy import JoinStrategy
from transforms import progress
from transforms.buckets import BUCKETS
from transforms.bulk import OpenSearchWriteConfig, WriteToOpenSearch
from transforms.dead_letters import WriteDeadLetters, close_open_files
from transforms.join import BroadcastJoin, CountDistinctBuckets, JoinSources
from transforms.read import ReadSource
from transforms.types import DEAD_LETTERS, METRICS_NAMESPACE, IngestPlan

DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory")
log = logging.getLogger("mlbatch")


@dataclass(frozen=True)
class IngestJob:
    """Everything one run needs: the plan, its files, and where things go."""

    plan: IngestPlan
    files_by_source: tuple[tuple[str, ...], ...]
    access: SourceAccess
    write: OpenSearchWriteConfig
    dlq_dir: str
    task_id: str
    redactor: Redactor
    join_strategy: JoinStrategy
    read_helper: bool = False


def beam_options(beam_args: list[str]) -> PipelineOptions:
    """Pipeline options with the runner always chosen explicitly.

    With no runner named, Beam 2.77 tries to download its Prism runner binary at run time;
    we default to the DirectRunner in in_memory mode instead.
    """
    args = list(beam_args)
    if not any(arg.startswith("--runner") for arg in args):
        args.append(DEFAULT_BEAM_ARGS[0])
    if not any(arg.startswith("--direct_running_mode") for arg in args):
        args.append(DEFAULT_BEAM_ARGS[1])
    options = PipelineOptions(args)
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        log.warning(
            "direct_running_mode=multi_processing lost records and miscounted them in our runs "
            "(see README, Runners); this run is reconciled and fails if records go missing. "
            "Prefer in_memory locally, Dataflow or Flink at scale."
        )
    return options


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """The arguments no Beam pipeline option accepts (Beam would drop them with only a log line)."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    pending, seen = list(PipelineOptions.__subclasses__()), set()
    while pending:
        options_class = pending.pop()
        if options_class in seen:
            continue
        seen.add(options_class)
        pending.extend(options_class.__subclasses__())
        with contextlib.suppress(argparse.ArgumentError):
            options_class._add_argparse_args(parser)
    return parser.parse_known_args(beam_args)[1]


def build_pipeline(pipeline: beam.Pipeline, job: IngestJob) -> None:
    """Add the ingestion transforms for `job` to `pipeline`."""
    plan = job.plan
    strategy = job.join_strategy
    dead_letters = []
    if strategy.name == "broadcast":
        documents = _broadcast_join(pipeline, job, dead_letters)
    elif strategy.name == "shuffle":
        documents = _shuffle_join(pipeline, job, dead_letters)
    else:
        outputs = pipeline | "Read source[0]" >> ReadSource(
            plan.sources[0], list(job.files_by_source[0]), job.access, "documents", job.read_helper
        )
        dead_letters.append(outputs[DEAD_LETTERS])
        documents = outputs.records
    dead_letters.append(documents | "Write" >> WriteToOpenSearch(job.write))
    for position, rejected in enumerate(dead_letters):  # one writer per step, not after a Flatten
        rejected | f"DeadLetterQueue[{position}]" >> WriteDeadLetters(
            job.dlq_dir, job.task_id, job.redactor, job.access
        )


def _shuffle_join(pipeline: beam.Pipeline, job: IngestJob, dead_letters: list) -> beam.PCollection:
    projected, buckets = {}, []
    for source, files in zip(job.plan.sources, job.files_by_source, strict=True):
        outputs = pipeline | f"Read source[{source.index}]" >> ReadSource(
            source, list(files), job.access, "buckets", job.read_helper
        )
        projected[source.index] = outputs.records
        dead_letters.append(outputs[DEAD_LETTERS])
        buckets.append(outputs[BUCKETS])
    tuple(buckets) | "AllBuckets" >> beam.Flatten() | "CountDistinctBuckets" >> CountDistinctBuckets()
    joined = projected | "Join" >> JoinSources(job.plan)
    dead_letters.append(joined[DEAD_LETTERS])
    return joined.documents


def _broadcast_join(pipeline: beam.Pipeline, job: IngestJob, dead_letters: list) -> beam.PCollection:
    streamed = job.plan.sources[job.join_strategy.streamed]
    side = []
    for source, files in zip(job.plan.sources, job.files_by_source, strict=True):
        if source is streamed:
            continue
        outputs = pipeline | f"Read source[{source.index}]" >> ReadSource(
            source, list(files), job.access, "batches", job.read_helper
        )
        side.append(outputs.records)
        dead_letters.append(outputs[DEAD_LETTERS])
    side_batches = tuple(side) | "SideSources" >> beam.Flatten()
    (uri,) = job.files_by_source[streamed.index]
    joined = side_batches | f"Join on source[{streamed.index}]" >> BroadcastJoin(
        job.plan, streamed, uri, job.access, job.read_helper
    )
    dead_letters.append(joined[DEAD_LETTERS])
    return joined.documents


def run_pipeline(job: IngestJob, beam_args: list[str]) -> dict[str, int]:
    """Run the pipeline to completion; return its counters by name.

    When the run fails or is interrupted, the dead-letter files of its unfinished bundles in
    this process are closed, so the records rejected so far are in the DLQ."""
    pipeline = beam.Pipeline(options=beam_options(beam_args))
    build_pipeline(pipeline, job)
    progress.restart_all()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        close_open_files()
    counters: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + (value or 0)
    return counters


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.batch_ingest --request r.json ...`: the same job as `mlbatch ingest`."""
    from pipelines.cli import main as cli_main

    parser = argparse.ArgumentParser(prog="python -m pipelines.batch_ingest", add_help=False)
    parser.add_argument("--request", required=True, help="the _batch_ingestion request body (JSON file)")
    known, rest = parser.parse_known_args(argv)
    return cli_main(["ingest", known.request, *rest])


if __name__ == "__main__":
    sys.exit(main())

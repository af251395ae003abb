"""The pure parts around an ingestion run: its options, the runner they choose, the report, the exit code."""

from __future__ import annotations

import argparse

import pytest

from connectors.byte_ranges import FileRange
from connectors.opensearch.bulk_retry import DEFAULT_BULK_CONCURRENCY
from connectors.opensearch.config import DEFAULT_TIMEOUT, ClusterError
from connectors.opensearch.index import IndexInfo
from connectors.retry import DEFAULT_MAX_RETRY_TIME
from connectors.sources import SourceAccess, SourceError
from pipelines.ingest_checks import numeric_fields_not_knn
from pipelines.ingest_command import exit_code
from pipelines.ingest_options import (
    IngestOptions,
    IngestOptionsError,
    add_ingest_options,
    ingest_options_from,
)
from pipelines.ingest_run import IngestResult
from pipelines.join_strategy import JoinStrategy
from pipelines.report import root_cause
from pipelines.runner_choice import (
    EARLY_SIDE_FILES,
    RunnerChoice,
    early_reads,
    runner_choice,
    use_read_helper,
)
from transforms.bulk_body import DEFAULT_BULK_BYTES, DEFAULT_BULK_SIZE
from transforms.read_jobs import BroadcastJob, DocumentsJob, ProjectJob
from transforms.types import IngestPlan, SourcePlan

LOCAL = SourceAccess("local")


def parsed(*argv: str) -> IngestOptions:
    parser = argparse.ArgumentParser()
    add_ingest_options(parser)
    args, beam_args = parser.parse_known_args(argv)
    return ingest_options_from(args, beam_args)


def plan_of(source_count: int) -> IngestPlan:
    sources = tuple(SourcePlan(index, f"s{index}", None, ()) for index in range(source_count))
    return IngestPlan("i", "local", sources, ())


def test_options_not_given_take_the_defaults_of_the_modules_that_use_them():
    options = parsed()
    assert options == IngestOptions()
    assert (options.bulk_size, options.bulk_bytes, options.bulk_concurrency) == (
        DEFAULT_BULK_SIZE,
        DEFAULT_BULK_BYTES,
        DEFAULT_BULK_CONCURRENCY,
    )
    assert (options.request_timeout, options.max_retry_time) == (DEFAULT_TIMEOUT, DEFAULT_MAX_RETRY_TIME)


def test_given_options_and_beam_options_are_kept():
    options = parsed("--bulk-size=10", "--cluster-ids", "--join", "inner", "--direct_num_workers=2")
    assert (options.bulk_size, options.cluster_ids, options.join) == (10, True, "inner")
    assert options.beam_args == ("--direct_num_workers=2",)
    assert options.retry().max_retry_time == DEFAULT_MAX_RETRY_TIME


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bulk_concurrency": 0}, "--bulk-size, --bulk-bytes and --bulk-concurrency must be positive"),
        ({"request_timeout": 0}, "--request-timeout must be positive"),
        ({"broadcast_max_bytes": -1}, "--broadcast-max-bytes must not be negative"),
        (
            {"max_retries": -1},
            "--max-retry-time, --max-retries, --initial-backoff and --max-backoff must not",
        ),
        ({"bulk_tuning": True, "aws_sigv4": "aoss"}, "--bulk-tuning: OpenSearch Serverless has no index"),
        ({"beam_args": ("--runner=DirectRunner", "--nope=1")}, "unrecognized arguments: --nope=1 (neither"),
    ],
)
def test_options_that_cannot_run_are_refused_with_the_command_line_message(settings, message):
    with pytest.raises(IngestOptionsError) as refused:
        IngestOptions(**settings)
    assert str(refused.value).startswith(message)


def test_the_aws_region_for_sigv4_is_ours_and_beams_region_is_left_to_beam():
    options = parsed("--aws-sigv4", "es", "--aws-region", "eu-west-1", "--region", "us-central1")
    assert options.region == "eu-west-1" and options.cluster().region == "eu-west-1"
    assert options.beam_args == ("--region", "us-central1")


def test_the_runner_is_read_through_beam_options():
    assert runner_choice([]) == RunnerChoice("DirectRunner", "in_memory")
    assert runner_choice(["--runner", "DataflowRunner"]).runner == "DataflowRunner"
    assert not runner_choice(["--runner=DataflowRunner"]).in_process
    assert not runner_choice(["--direct_running_mode=multi_processing"]).in_process
    assert runner_choice(["--runner=direct", "--direct_num_workers=1"]).in_process


def test_the_read_helper_needs_a_spare_core_unless_asked():
    direct, dataflow = RunnerChoice(), RunnerChoice("DataflowRunner")
    assert use_read_helper("auto", direct, cores=2) and not use_read_helper("auto", direct, cores=1)
    assert not use_read_helper("auto", dataflow, cores=8) and use_read_helper("on", dataflow, cores=1)
    assert not use_read_helper("off", direct, cores=8)


def test_early_reads_are_the_whole_join_or_the_streamed_file_and_few_small_source_files():
    plan = plan_of(2)
    broadcast = JoinStrategy("broadcast", streamed=1)
    a, b, big = FileRange("a"), FileRange("b"), FileRange("big")

    def early(files, strategy, source_plan=plan):
        return early_reads(source_plan, files, strategy, LOCAL, "index")

    assert early([[a, b], [big]], broadcast) == [BroadcastJob(plan, 1, big, ((0, (a, b)),), "index", LOCAL)]
    assert early([[a], [b]], JoinStrategy("shuffle")) == []
    only = FileRange("only")
    assert early([[only]], JoinStrategy("none"), plan_of(1)) == [
        DocumentsJob(plan_of(1).sources[0], only, "index", LOCAL)
    ]
    ranges = [FileRange("big", 0, 10), FileRange("big", 10, 20)]
    assert early([[a], ranges], broadcast) == [
        ProjectJob(plan.sources[1], ranges[0], LOCAL),
        ProjectJob(plan.sources[0], a, LOCAL),
    ]
    many = [FileRange(f"f{n}") for n in range(EARLY_SIDE_FILES + 1)]
    assert early([many, ranges], broadcast) == [ProjectJob(plan.sources[1], ranges[0], LOCAL)]
    assert early([[a, b]], JoinStrategy("none"), plan_of(1)) == []


def test_the_root_cause_is_our_error_without_beam_wrapping():
    try:
        try:
            raise SourceError("a.jsonl: cannot read (truncated)")
        except SourceError as error:
            raise RuntimeError("step failed [while running 'Read source[0]']") from error
    except RuntimeError as wrapped:
        assert root_cause(wrapped) == "a.jsonl: cannot read (truncated)"
    as_text = RuntimeError("Traceback\n  ...\nClusterError: cannot reach x [while running 'Write/Bulk']\n")
    assert root_cause(as_text) == "cannot reach x"
    assert root_cause(RuntimeError("first\nlast\n")) == "last"
    assert root_cause(ClusterError("")) == "" and root_cause(ValueError()) == "ValueError"


def test_numbers_mapped_as_plain_floats_are_named():
    index = IndexInfo(
        created=False,
        properties={
            "v": {"type": "float"},
            "e": {"type": "knn_vector", "dimension": 2},
            "t": {"type": "text"},
        },
    )
    assert numeric_fields_not_knn(["v", "e", "t", "absent"], index) == [("v", "float")]


def test_exit_codes_follow_the_final_state():
    assert [exit_code(IngestResult({"state": state})) for state in ("COMPLETED", "COMPLETED_WITH_ERROR")] == [
        0,
        3,
    ]
    assert exit_code(IngestResult({"state": "FAILED"})) == 1
    assert exit_code(IngestResult({"state": "FAILED"}, interrupted=True)) == 130

"""A runner that cannot say what the job did ends the task in COUNTS_UNKNOWN (exit 4), never COMPLETED.

The rule (`transforms.counters.job_counters`): the job must be DONE when the runner returns, the
runner must have metrics, and it must report at least one mlbatch counter — reading a file adds
its source's read counter even when the file is empty, so a job that ran on a runner keeping
its counters always has some. The Dataflow dry run through the CLI is in `test_dataflow_ready`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from pipelines.cli_common import EXIT_COUNTS_UNKNOWN
from pipelines.ingest_command import exit_code
from pipelines.ingest_run import IngestResult
from pipelines.report import counts_unknown_fields
from tests.ingest_helpers import run_ingest
from transforms.counters import NAMESPACE, CountsUnknown, job_counters


class _Metrics:
    def __init__(self, counters: list[MetricResult]) -> None:
        self._counters = counters

    def query(self, _filter: object) -> dict[str, list[MetricResult]]:
        return {"counters": self._counters, "distributions": [], "gauges": []}


class _Result:
    """A pipeline result as a runner hands it back: its state, its metrics (None: it keeps none)."""

    def __init__(self, state: str, counters: dict[str, int] | None, job_id: str | None = None) -> None:
        self.state = state
        self._counters = counters
        if job_id is not None:
            self.job_id = lambda: job_id

    def metrics(self) -> _Metrics:
        if self._counters is None:
            raise NotImplementedError
        return _Metrics(
            [
                MetricResult(MetricKey(f"step{n}", MetricName(NAMESPACE, name)), value, value + 1)
                for n, (name, value) in enumerate(self._counters.items())
            ]
        )


def test_a_finished_job_s_counters_are_read_committed_first():
    assert job_counters(_Result("DONE", {"read": 3, "read.source[0]": 0})) == {"read": 3, "read.source[0]": 0}


def test_a_runner_without_metrics_leaves_the_counts_unknown():
    with pytest.raises(CountsUnknown, match="keeps no metrics"):
        job_counters(_Result("DONE", None))


def test_a_runner_that_reported_none_of_our_counters_leaves_the_counts_unknown():
    with pytest.raises(CountsUnknown, match="none of the job's counters"):
        job_counters(_Result("DONE", {}))


def test_a_job_still_running_when_the_runner_returned_leaves_the_counts_unknown_with_its_id():
    with pytest.raises(CountsUnknown, match="while the job is RUNNING") as raised:
        job_counters(_Result("RUNNING", {"read": 1}, job_id="2026-11-30_01_02_03-123"))
    assert raised.value.job_id == "2026-11-30_01_02_03-123"


def test_a_job_cancelled_on_the_runner_fails():
    with pytest.raises(RuntimeError, match="ended the job in state CANCELLED"):
        job_counters(_Result("CANCELLED", {"read": 1}))


def test_counts_unknown_names_the_runner_s_job_and_the_dead_letters():
    unknown = CountsUnknown("the runner returned while the job is RUNNING", "job-7")

    fields = counts_unknown_fields(
        unknown, "DataflowRunner", ["--runner=DataflowRunner"], False, "s3://b/dlq"
    )

    assert fields["state"] == "COUNTS_UNKNOWN" and fields["runner_job_id"] == "job-7"
    assert fields["dlq"] == "s3://b/dlq" and fields["counts"]["partial"] is True
    assert fields["error"] == (
        "DataflowRunner reported no counters (the runner returned while the job is RUNNING): what the run "
        "read, wrote and rejected is unknown here; see job job-7 in the runner's console, and dead letters "
        "in s3://b/dlq"
    )


def test_a_dry_run_says_nothing_was_read():
    fields = counts_unknown_fields(
        CountsUnknown("the runner keeps no metrics"), "DataflowRunner", ["--dry_run=True"], False, "/d"
    )
    assert fields["error"] == (
        "--dry_run: DataflowRunner translated the job and did not run it, so nothing was read or written"
    )
    assert "dlq" not in fields and "runner_job_id" not in fields


def test_counts_unknown_exits_4():
    assert exit_code(IngestResult({"state": "COUNTS_UNKNOWN"})) == EXIT_COUNTS_UNKNOWN == 4


@pytest.mark.integration
def test_an_empty_source_on_the_direct_runner_is_completed_not_unknown(osmem_url, capsys, tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    request = {
        "index_name": "empty",
        "field_map": {"x": "$.x"},
        "data_source": {"type": "local", "source": [str(empty)]},
    }
    index = {"mappings": {"properties": {"x": {"type": "keyword"}}}}

    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=index)

    assert code == 0 and record["state"] == "COMPLETED", record
    assert record["counts"]["read_by_source"] == {"source[0]": 0}

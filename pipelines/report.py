"""What the task record says of a run that ended (the **report** step).

- `finished_fields`: a run that finished: its counts, its state from `pipelines.outcome`
  (the reconciliation), the dead-letter directory when it holds entries, the join strategy
  and the outcome's error; it logs the run's last lines.
- `ended_early_fields`: a run that failed or was interrupted: the counts this process reached
  (`transforms.progress`; Beam's metrics are gone by then), flagged `partial` when the
  runner's steps ran elsewhere, and the error.
- `counts_unknown_fields`: a run whose runner ended without its counters
  (`transforms.counters.CountsUnknown`: a dry run, a runner without metrics, a job still under
  way when the runner returned): COUNTS_UNKNOWN, never COMPLETED with zeros, and where to look.
- `root_cause`: one line for a failed run: our own error's message without Beam's wrapping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from connectors.opensearch.bulk_retry import BulkFailed
from connectors.opensearch.config import ClusterError
from connectors.sources import SourceError
from pipelines.join_strategy import JoinStrategy
from pipelines.outcome import decide_outcome
from pipelines.task_lifecycle import cause_chain
from transforms import counters, progress

_OUR_ERRORS = (ClusterError, SourceError, BulkFailed)
_BEAM_STEP_SUFFIX = re.compile(r"\s*\[while running '.*'\]\s*$")
COUNTS_UNKNOWN = "COUNTS_UNKNOWN"
log = logging.getLogger("mlbatch")


def root_cause(error: BaseException) -> str:
    """Our own error's message in `error`'s cause chain (or, when a runner re-raised it as text,
    in its message), without Beam's step suffix; else the message's last line."""
    ours = next((seen for seen in cause_chain(error) if isinstance(seen, _OUR_ERRORS)), None)
    if ours is not None:
        return _BEAM_STEP_SUFFIX.sub("", str(ours))
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        for known in _OUR_ERRORS:
            marker = f"{known.__name__}: "
            if marker in line:
                return _BEAM_STEP_SUFFIX.sub("", line.split(marker, 1)[1])
    return lines[-1] if lines else type(error).__name__


def counts_so_far(in_process: bool) -> dict[str, Any]:
    """What a run that has not finished reached, from this process's tallies: the whole job
    when the runner's steps run in this process, else `partial`."""
    counts = counters.summarize(progress.snapshot())
    if not in_process:
        counts["partial"] = True
    return counts


def ended_early_fields(in_process: bool, dlq_dir: str, error: str) -> dict[str, Any]:
    """The fields of a task that failed or was interrupted during the run: the counts it reached,
    the dead-letter directory when it may hold entries, and the error."""
    counts = counts_so_far(in_process)
    dlq = {"dlq": dlq_dir} if counts["dlq"] or counts.get("partial") else {}
    return {"state": "FAILED", "counts": counts, **dlq, "error": error}


def finished_fields(
    job_counters: dict[str, int],
    source_count: int,
    strategy: JoinStrategy,
    max_error_ratio: float | None,
    dlq_dir: str,
) -> dict[str, Any]:
    """The fields of a task whose run finished, from the job's counters; logs what it did."""
    counts = counters.summarize(job_counters)
    log.info(
        "read %d record(s), indexed %d document(s), rejected %d",
        counts["read"],
        counts["indexed"],
        counts["dlq"],
    )
    outcome = decide_outcome(job_counters, source_count, strategy.name == "shuffle", max_error_ratio)
    fields: dict[str, Any] = {"state": outcome.state, "counts": counts}
    if counts["dlq"]:
        fields["dlq"] = dlq_dir
    if strategy.name != "none":
        fields["join_strategy"] = strategy.name
    if outcome.error:
        log.warning("%s", outcome.error + (f"; see {dlq_dir}" if counts["dlq"] else ""))
        fields["error"] = outcome.error
    return fields


def counts_unknown_fields(
    unknown: counters.CountsUnknown, runner: str, beam_args: Sequence[str], in_process: bool, dlq_dir: str
) -> dict[str, Any]:
    """The fields of a task whose runner ended without the job's counters: COUNTS_UNKNOWN, the
    counts this process saw, and where the truth is (the runner's job, the dead letters); logs it."""
    fields: dict[str, Any] = {"state": COUNTS_UNKNOWN, "counts": counts_so_far(in_process)}
    if _dry_run(beam_args):
        fields["error"] = (
            f"--dry_run: {runner} translated the job and did not run it, so nothing was read or written"
        )
    else:
        job = f"job {unknown.job_id}" if unknown.job_id else "the job"
        fields["error"] = (
            f"{runner} reported no counters ({unknown.reason}): what the run read, wrote and "
            f"rejected is unknown here; see {job} in the runner's console, and dead letters in {dlq_dir}"
        )
        fields["dlq"] = dlq_dir
    if unknown.job_id:
        fields["runner_job_id"] = unknown.job_id
    log.warning("%s", fields["error"])
    return fields


def _dry_run(beam_args: Sequence[str]) -> bool:
    """Whether Beam was asked to translate the job only (`--dry_run=True`)."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    return bool(PipelineOptions(list(beam_args)).view_as(TestOptions).dry_run)

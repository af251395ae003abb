"""Every counter a run keeps, by name, in one place (the **report** step reads them back).

Beam counters live in the `mlbatch` namespace. Plain names count over the whole job;
per-source and per-stage counters are a prefix plus the source or stage
(`read.source[0]`, `accounted.source[1]`, `rejected.source[1]`, `dlq.bulk`, `unmatched.title`).
Pure tallies say their counts as `{name: count}`; a DoFn adds them with a `CounterSet`.
`job_counters` reads a finished pipeline's counters back into a `{name: value}` dict, or raises
`CountsUnknown` when the runner cannot say them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAMESPACE = "mlbatch"

READ = "read"
PROJECTED = "projected"
INVALID_VECTORS = "invalid_vectors"
KEYS = "keys"
INCOMPLETE = "incomplete"
DUPLICATES = "duplicates"
JOIN_DROPPED = "join_dropped"
MERGED_RECORDS = "merged_records"
BUCKET_GROUPS = "bucket_groups"
DISTINCT_BUCKETS = "distinct_buckets"
INDEXED = "indexed"
CREATED = "created"
UPDATED = "updated"
SKIPPED_EXISTING = "skipped_existing"
BULK_REJECTED = "bulk_rejected"
BULK_REQUESTS = "bulk_requests"
BULK_RETRIES = "bulk_retries"
BULK_SPLITS = "bulk_splits"
DLQ = "dlq"
REJECTED_RECORDS = "rejected_records"
READ_BYTES = "read_bytes"  # bytes of plain JSONL lines read: progress only, not in the task record

READ_BY_SOURCE = "read."
ACCOUNTED_BY_SOURCE = "accounted."
DLQ_BY_STAGE = "dlq."
REJECTED_BY_SOURCE = "rejected."
UNMATCHED_BY_FIELD = "unmatched."
CLAMPED_BY_FIELD = "clamped."  # values `--quantize` clamped to the byte range, by field

# The counts a task record shows, in order, and the per-source / per-stage groups beside them.
SUMMARY = (
    READ,
    PROJECTED,
    KEYS,
    INCOMPLETE,
    DUPLICATES,
    JOIN_DROPPED,
    MERGED_RECORDS,
    BUCKET_GROUPS,
    DISTINCT_BUCKETS,
    INDEXED,
    CREATED,
    UPDATED,
    SKIPPED_EXISTING,
    INVALID_VECTORS,
    BULK_REQUESTS,
    BULK_RETRIES,
    BULK_SPLITS,
    DLQ,
    REJECTED_RECORDS,
)
SUMMARY_GROUPS = (
    (READ_BY_SOURCE, "read_by_source"),
    (ACCOUNTED_BY_SOURCE, "accounted_by_source"),
    (DLQ_BY_STAGE, "rejected_by_stage"),
    (REJECTED_BY_SOURCE, "rejected_by_source"),
    (UNMATCHED_BY_FIELD, "unmatched_paths"),
)


def source_name(source: int) -> str:
    return f"source[{source}]"


def read_by_source(source: int) -> str:
    """Records read from `source[N]`."""
    return READ_BY_SOURCE + source_name(source)


def accounted_by_source(source: int) -> str:
    """Records of `source[N]` with a final fate: written, skipped, dropped by the join, or in the DLQ."""
    return ACCOUNTED_BY_SOURCE + source_name(source)


def rejected_by_source(source: int) -> str:
    """Records of `source[N]` in dead letters."""
    return REJECTED_BY_SOURCE + source_name(source)


def dlq_by_stage(stage: str) -> str:
    return DLQ_BY_STAGE + stage


def unmatched_by_field(field: str) -> str:
    return UNMATCHED_BY_FIELD + field


def clamped_by_field(field: str) -> str:
    return CLAMPED_BY_FIELD + field


def clamped_total(counters: Mapping[str, int]) -> int:
    """The values `--quantize` clamped, over every field."""
    return sum(value for name, value in counters.items() if name.startswith(CLAMPED_BY_FIELD))


def counter(name: str) -> Any:
    """The Beam counter `name` in mlbatch's namespace (Beam loads only when a step asks)."""
    from apache_beam.metrics import Metrics

    return Metrics.counter(NAMESPACE, name)


class CounterSet:
    """Adds `{name: count}` tallies to the Beam counters, making each counter once (picklable, for DoFns).

    Every count given is added, zeros too: a counter added to once shows in the job's counters.
    """

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def add(self, counts: Mapping[str, int]) -> None:
        made = self._made
        for name, count in counts.items():
            found = made.get(name)
            if found is None:
                found = made[name] = counter(name)
            found.inc(count)


def summarize(counters: dict[str, int]) -> dict[str, Any]:
    """The `counts` of a task record from a run's counters (0 for counters never touched)."""
    counts: dict[str, Any] = {name: counters.get(name, 0) for name in SUMMARY}
    for prefix, key in SUMMARY_GROUPS:
        counts[key] = {
            name[len(prefix) :]: value for name, value in sorted(counters.items()) if name.startswith(prefix)
        }
    return counts


class CountsUnknown(Exception):
    """The runner ended the run without the job's counters: it returned while the job was still
    under way, it keeps no metrics, or it reported none of mlbatch's counters."""

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


def job_counters(result: Any) -> dict[str, int]:
    """`{name: value}` of a finished Beam pipeline result's mlbatch counters (committed values
    where the runner has them, else attempted).

    Raises CountsUnknown when the job is not DONE yet (a runner that returned without waiting),
    when the runner has no metrics (NotImplementedError), or when it reported no mlbatch counter
    at all: reading a file adds its source's read counter, zero included, so a run that read
    its sources and kept its counters always has some. A job that ended in another final state
    (failed, cancelled) raises RuntimeError.
    """
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.runner import PipelineState

    job_id = runner_job_id(result)
    state = str(result.state)
    if state != PipelineState.DONE:
        if PipelineState.is_terminal(state):
            raise RuntimeError(f"the runner ended the job in state {state}")
        raise CountsUnknown(f"the runner returned while the job is {state}", job_id)
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except NotImplementedError:
        raise CountsUnknown("the runner keeps no metrics", job_id) from None
    if not found:
        raise CountsUnknown("the runner reported none of the job's counters", job_id)
    counters: dict[str, int] = {}
    for each in found:
        value = each.committed if each.committed is not None else each.attempted
        counters[each.key.metric.name] = counters.get(each.key.metric.name, 0) + (value or 0)
    return counters


def runner_job_id(result: Any) -> str | None:
    """The runner's id of the job (Dataflow's results have one), or None."""
    job_id = getattr(result, "job_id", None)
    if not callable(job_id):
        return None
    try:
        return str(job_id() or "") or None
    except AttributeError:  # a result without a job (Dataflow's, when only a template was made)
        return None

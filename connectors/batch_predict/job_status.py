"""Map a remote batch job's status to an ML Commons task state (the batch-predict **poll** step, pure).

The status is read from `status`, `Status` or `TransformJobStatus` of the service's answer
(OpenAI / Cohere, Bedrock, SageMaker), case-insensitively:

| service status | task state |
|---|---|
| stopping, cancelling | CANCELLING |
| stopped, cancelled | CANCELLED |
| complete, completed, partiallyCompleted | COMPLETED (partiallyCompleted: warned, or FAILED on request) |
| expired, timeout | EXPIRED |
| failed | FAILED |
| anything else (validating, in_progress, InProgress, Submitted, …) | RUNNING |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUS_FIELDS = ("status", "Status", "TransformJobStatus")
TERMINAL_STATES = frozenset({"COMPLETED", "CANCELLED", "EXPIRED", "FAILED"})
_STATES = {
    "stopping": "CANCELLING",
    "cancelling": "CANCELLING",
    "stopped": "CANCELLED",
    "cancelled": "CANCELLED",
    "complete": "COMPLETED",
    "completed": "COMPLETED",
    "partiallycompleted": "COMPLETED",
    "expired": "EXPIRED",
    "timeout": "EXPIRED",
    "failed": "FAILED",
}
PARTIAL_WARNING = (
    "the service reports partiallyCompleted: some records were not processed; "
    "check the job's output and error files"
)


@dataclass(frozen=True)
class JobState:
    """The task state for one status answer, and a warning to record, if any."""

    state: str
    service_status: str | None
    warning: str | None = None


def service_status(remote_job: dict[str, Any]) -> str | None:
    """The status string the service reported, from the first status field present."""
    for name in STATUS_FIELDS:
        value = remote_job.get(name)
        if isinstance(value, str):
            return value
    return None


def map_status(remote_job: dict[str, Any], partial_is_failure: bool = False) -> JobState:
    """The task state for a status answer (`partial_is_failure` makes partiallyCompleted FAILED)."""
    status = service_status(remote_job)
    normalized = (status or "").lower()
    state = _STATES.get(normalized, "RUNNING")
    if normalized == "partiallycompleted":
        return JobState("FAILED" if partial_is_failure else "COMPLETED", status, PARTIAL_WARNING)
    return JobState(state, status)

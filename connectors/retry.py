"""One retry policy for every call mlbatch makes to another service (bulk writes, batch prediction).

`RetryPolicy` says how long to keep trying and how long to wait between tries (exponential
backoff with full jitter, budgeted in time and optionally in count); `is_retryable_status`
is the one rule for what is worth another try (429, 5xx, no HTTP answer at all);
`HttpStatusError` is the one error type for a call that failed with an HTTP status (or none).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_MAX_RETRY_TIME = 600.0  # seconds a batch keeps being retried, as Data Prepper's sink
DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0


class HttpStatusError(RuntimeError):
    """A call to another service failed; `status` is its HTTP status, None for timeouts and
    connection errors."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_retryable_status(status: int | None) -> bool:
    """429, 5xx and no HTTP answer at all (timeouts, resets) are worth another try."""
    return status is None or status == 429 or status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying and how long to wait: delays are uniform in
    [0, min(max_backoff, initial_backoff * 2**attempt)]; a batch is given up once it has been
    retried for `max_retry_time` seconds or `max_retries` times (each None: no limit)."""

    max_retries: int | None = None
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_retry_time: float | None = DEFAULT_MAX_RETRY_TIME

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * (2 ** min(attempt, 62)))
        return (rng or random).uniform(0, ceiling)

    def exhausted(self, attempt: int, elapsed: float) -> bool:
        """True once `attempt` retries or `elapsed` seconds of retrying are all the policy allows."""
        return (self.max_retries is not None and attempt >= self.max_retries) or (
            self.max_retry_time is not None and elapsed >= self.max_retry_time
        )

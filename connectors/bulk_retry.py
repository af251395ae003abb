"""What is retried, what is dead-lettered, what fails the job (the **write** step's policy).

One decision table, as Data Prepper's `BulkRetryStrategy`:
- a whole `_bulk` request that fails with 429, 5xx, a timeout or a connection error is sent
  again after an exponential backoff with full jitter; 401/403 and other 4xx fail the job;
- in a partial failure only the failed items are re-sent: 429 and 5xx items are retried,
  400/404/409 (and other 4xx) items are permanent and go to the dead-letter queue.
`send_with_retries` applies it to one batch given a `send` function, so it is tested without
a network and used unchanged by the Beam writer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

DEFAULT_BULK_CONCURRENCY = 4  # with 2, a run waited on the cluster for about a sixth of its time


class Decision(Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


class BulkRequestError(RuntimeError):
    """A whole `_bulk` request failed; `status` is None for timeouts and connection errors."""

    def __init__(self, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BulkFailed(RuntimeError):
    """The job cannot go on: the cluster refused or kept failing a `_bulk` request."""


def request_decision(status: int | None) -> Decision:
    """What to do when a whole `_bulk` request failed with `status` (None: no HTTP answer)."""
    if status is None or status == 429 or status >= 500:
        return Decision.RETRY
    return Decision.FAIL


def item_decision(status: int) -> Decision:
    """What to do with one failed bulk item."""
    if status == 429 or status >= 500:
        return Decision.RETRY
    return Decision.DEAD_LETTER


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: delays are uniform in [0, min(max, initial * 2**attempt)]."""

    max_retries: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * (2**attempt))
        return (rng or random).uniform(0, ceiling)


@dataclass
class BulkOutcome:
    """The per-item results of one batch after retries."""

    results: list[Any] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)
    retries: int = 0


def item_status(item: dict[str, Any]) -> int:
    return next(iter(item.values())).get("status", 500)


def item_reason(item: dict[str, Any]) -> str:
    """`HTTP <status> <error.type>: <error.reason> (caused by …)` for a failed item."""
    result = next(iter(item.values()))
    error = result.get("error") or {}
    if not isinstance(error, dict):
        return f"HTTP {result.get('status')} {error}"
    reason = f"HTTP {result.get('status')} {error.get('type', 'error')}: {error.get('reason', '')}"
    caused_by = error.get("caused_by")
    if isinstance(caused_by, dict) and caused_by.get("reason"):
        reason += f" (caused by {caused_by.get('type', 'error')}: {caused_by['reason']})"
    return reason


def send_with_retries(
    encoded: Sequence[bytes],
    send: Callable[[bytes], list[dict[str, Any]]],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> BulkOutcome:
    """Send the actions `encoded` (one bytes per document) until each has a final answer.

    `outcome.results[i]` is the successful item result of action i, or None when it failed;
    `outcome.failures` lists (i, status, reason) of permanent or retry-exhausted failures.
    Raises BulkFailed when a whole request fails permanently or past `policy.max_retries`.
    """
    outcome = BulkOutcome(results=[None] * len(encoded))
    pending = list(range(len(encoded)))
    attempt = 0
    while pending:
        try:
            items = send(b"".join(encoded[i] for i in pending))
        except BulkRequestError as error:
            if request_decision(error.status) is Decision.FAIL:
                raise BulkFailed(error.reason) from None
            if attempt >= policy.max_retries:
                raise BulkFailed(f"{error.reason} (gave up after {attempt} retries)") from None
        else:
            retry: list[int] = []
            for position, item in zip(pending, items, strict=True):
                status = item_status(item)
                if 200 <= status < 300:
                    outcome.results[position] = item
                elif item_decision(status) is Decision.RETRY and attempt < policy.max_retries:
                    retry.append(position)
                else:
                    suffix = (
                        f" (gave up after {attempt} retries)"
                        if item_decision(status) is Decision.RETRY
                        else ""
                    )
                    outcome.failures.append((position, status, item_reason(item) + suffix))
            pending = retry
            if not pending:
                break
        sleep(policy.delay(attempt, rng))
        attempt += 1
        outcome.retries += 1
    return outcome

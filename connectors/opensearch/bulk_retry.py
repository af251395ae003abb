"""What is retried, split, dead-lettered, or fails the job (the **write** step's policy).

One decision table, as Data Prepper's `BulkRetryStrategy`:
- a whole `_bulk` request that fails with 429, 5xx, a timeout or a connection error is sent
  again after an exponential backoff with full jitter, for up to `max_retry_time` seconds
  per batch (10 minutes by default; `max_retries` is an optional cap on the count);
- a whole request refused with 413 (body too large) or 400 (a document the cluster rejects
  before looking at items, such as an over-long `_id`) is split in halves, which are sent
  on their own, until the offending document stands alone and goes to the dead-letter queue
  with the cluster's reason (when document after document is refused alone for the same
  reason, the request itself is refused, and the job fails); after a 413 the body size is
  remembered (`WriterShared`) so the rest of the run cuts smaller bodies;
- 401/403 and other 4xx fail the job;
- in a partial failure only the failed items are re-sent: 429 and 5xx items are retried,
  400/404/409 (and other 4xx) items are permanent and go to the dead-letter queue.
`send_with_retries` applies it to one batch given a `send` function, so it is tested without
a network and used unchanged by the Beam writer.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from connectors.retry import HttpStatusError, RetryPolicy, is_retryable_status

DEFAULT_BULK_CONCURRENCY = 4  # with 2, a run waited on the cluster for about a sixth of its time
LONE_REFUSALS_TO_FAIL = 8  # documents refused alone in a row with the same 400: the request, not them


class Decision(Enum):
    RETRY = "retry"
    SPLIT = "split"
    DEAD_LETTER = "dead_letter"
    FAIL = "fail"


class BulkRequestError(HttpStatusError):
    """A whole `_bulk` request failed; `status` is None for timeouts and connection errors."""


class BulkFailed(RuntimeError):
    """The job cannot go on: the cluster refused or kept failing a `_bulk` request."""


def request_decision(status: int | None) -> Decision:
    """What to do when a whole `_bulk` request failed with `status` (None: no HTTP answer)."""
    if is_retryable_status(status):
        return Decision.RETRY
    if status in (400, 413):
        return Decision.SPLIT
    return Decision.FAIL


def item_decision(status: int) -> Decision:
    """What to do with one failed bulk item."""
    if is_retryable_status(status):
        return Decision.RETRY
    return Decision.DEAD_LETTER


class WriterShared:
    """What the concurrent sends of one writer share, across its batches: the largest body the
    cluster takes (lowered for good after a 413), how many documents in a row were refused
    alone for the same reason, a stop signal (set when the run ends early, so no sender keeps
    retrying), and a callback told of every retry (progress lines)."""

    def __init__(self, max_bytes: int, on_retry: Callable[[int], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.stop = threading.Event()
        self.on_retry = on_retry
        self._refusal: tuple[str, int] = ("", 0)
        self._lock = threading.Lock()

    def body_refused(self, size: int) -> None:
        """A body of `size` bytes was too large: later bodies stay at half of it at most."""
        with self._lock:
            self.max_bytes = max(1, min(self.max_bytes, size // 2))

    def refused_alone(self, reason: str) -> int:
        """One more document refused alone for `reason`; how many in a row, this one included."""
        with self._lock:
            previous, count = self._refusal
            self._refusal = (reason, count + 1 if previous == reason else 1)
            return self._refusal[1]

    def accepted(self) -> None:
        """The cluster answered a request item by item: a run of refusals is over."""
        with self._lock:
            self._refusal = ("", 0)


@dataclass
class BulkOutcome:
    """The per-item results of one batch after retries and splits."""

    results: list[Any] = field(default_factory=list)
    failures: list[tuple[int, int, str]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    splits: int = 0


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


def _gave_up(attempt: int, elapsed: float) -> str:
    return f" (gave up after {attempt} retries in {elapsed:.0f} s)"


def _lone_document_reason(error: BulkRequestError, size: int) -> str:
    if error.status == 413:
        return f"HTTP 413: the cluster refuses a _bulk body of {size} bytes holding only this document"
    return f"{error.reason} (the cluster refused a _bulk request holding only this document)"


class _BatchSender:
    """Sends the groups of one batch until each action has a final answer (see module docstring)."""

    def __init__(
        self,
        encoded: Sequence[bytes],
        send: Callable[[bytes], list[dict[str, Any]]],
        policy: RetryPolicy,
        shared: WriterShared,
        clock: Callable[[], float],
    ) -> None:
        self.encoded, self.send, self.policy, self.shared, self.clock = encoded, send, policy, shared, clock
        self.outcome = BulkOutcome(results=[None] * len(encoded))
        self.started = clock()

    def elapsed(self) -> float:
        """Seconds since the batch was first sent."""
        return self.clock() - self.started

    def exhausted(self, attempt: int) -> bool:
        return self.policy.exhausted(attempt, self.elapsed())

    def send_group(self, group: list[int], attempt: int, later: list[list[int]]) -> list[list[int]]:
        """Send one group; returns the halves to send next (after a split), and adds what must
        be retried after a backoff to `later`."""
        body = b"".join(self.encoded[i] for i in group)
        self.outcome.requests += 1
        try:
            items = self.send(body)
        except BulkRequestError as error:
            return self._request_failed(error, group, body, attempt, later)
        if len(items) != len(group):
            raise BulkFailed(f"the cluster answered {len(items)} items for a _bulk request of {len(group)}")
        self.shared.accepted()
        retry: list[int] = []
        for position, item in zip(group, items, strict=True):
            status = item_status(item)
            if 200 <= status < 300:
                self.outcome.results[position] = item
                continue
            retryable = item_decision(status) is Decision.RETRY
            if retryable and not self.exhausted(attempt):
                retry.append(position)
            else:
                suffix = _gave_up(attempt, self.elapsed()) if retryable else ""
                self.outcome.failures.append((position, status, item_reason(item) + suffix))
        if retry:
            later.append(retry)
        return []

    def _refused_alone(self, error: BulkRequestError) -> None:
        """Fail the job when document after document is refused alone for the same reason: the
        cluster refuses the request itself (a closed index, a proxy rule), not those documents."""
        if error.status != 400:
            return
        in_a_row = self.shared.refused_alone(error.reason)
        if in_a_row >= LONE_REFUSALS_TO_FAIL:
            raise BulkFailed(
                f"{error.reason} (the cluster refused {in_a_row} documents in a row, "
                "each sent alone, for the same reason)"
            )

    def _request_failed(
        self, error: BulkRequestError, group: list[int], body: bytes, attempt: int, later: list[list[int]]
    ) -> list[list[int]]:
        decision = request_decision(error.status)
        if decision is Decision.FAIL:
            raise BulkFailed(error.reason) from None
        if decision is Decision.SPLIT:
            if error.status == 413:
                self.shared.body_refused(len(body))
            if len(group) == 1:
                self._refused_alone(error)
                self.outcome.failures.append(
                    (group[0], error.status or 400, _lone_document_reason(error, len(body)))
                )
                return []
            self.outcome.splits += 1
            half = len(group) // 2
            return [group[:half], group[half:]]
        if self.exhausted(attempt):
            raise BulkFailed(error.reason + _gave_up(attempt, self.elapsed())) from None
        later.append(group)
        return []


def send_with_retries(
    encoded: Sequence[bytes],
    send: Callable[[bytes], list[dict[str, Any]]],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    shared: WriterShared | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BulkOutcome:
    """Send the actions `encoded` (one bytes per document) until each has a final answer.

    `outcome.results[i]` is the successful item result of action i, or None when it failed;
    `outcome.failures` lists (i, status, reason) of permanent or retry-exhausted failures.
    Raises BulkFailed when a whole request fails permanently, past the retry budget, or once
    `shared.stop` is set (the writer passes `sleep=shared.stop.wait`, so a stop ends a backoff).
    """
    shared = shared if shared is not None else WriterShared(sum(len(action) for action in encoded))
    sender = _BatchSender(encoded, send, policy, shared, clock)
    pending: deque[list[int]] = deque([list(range(len(encoded)))] if encoded else [])
    attempt = 0
    while pending:
        later: list[list[int]] = []
        while pending:
            halves = sender.send_group(pending.popleft(), attempt, later)
            pending.extendleft(reversed(halves))
        if not later:
            break
        wait = policy.delay(attempt, rng)
        if policy.max_retry_time is not None:
            wait = min(wait, max(0.0, policy.max_retry_time - sender.elapsed()))
        sleep(wait)
        if shared.stop.is_set():
            raise BulkFailed("the run is ending: retries stopped")
        attempt += 1
        sender.outcome.retries += len(later)
        if shared.on_retry is not None:
            shared.on_retry(len(later))
        pending.extend(later)
    return sender.outcome

from __future__ import annotations

import random
import time

import orjson
import pytest

from connectors.opensearch.bulk_retry import (
    BulkFailed,
    BulkRequestError,
    Decision,
    WriterShared,
    item_decision,
    item_reason,
    request_decision,
    send_with_retries,
)
from connectors.retry import RetryPolicy
from transforms.bulk_body import BulkBuffer, encode_action
from transforms.types import Document


def doc(doc_id, **fields) -> Document:
    return Document(doc_id, fields, ())


def test_index_action_carries_the_id_and_the_document_once():
    encoded = encode_action(doc('a"b', x=[1.5, 2.0]))
    action, source, tail = encoded.split(b"\n")
    assert orjson.loads(action) == {"index": {"_id": 'a"b'}}
    assert orjson.loads(source) == {"x": [1.5, 2.0]}
    assert tail == b""


def test_auto_id_and_create_actions():
    assert encode_action(doc(None, x=1)).startswith(b'{"index":{}}\n')
    assert encode_action(doc("7", x=1), "create").startswith(b'{"create":{"_id":"7"}}\n')


def fill(buffer: BulkBuffer, documents: list[Document]) -> list[int]:
    sizes = []
    for document in documents:
        encoded = encode_action(document)
        if buffer.would_overflow(encoded):
            sizes.append(len(buffer.take()[1]))
        buffer.add(document.doc_id, document.origins, encoded)
        if buffer.full:
            sizes.append(len(buffer.take()[1]))
    if len(buffer):
        sizes.append(len(buffer.take()[1]))
    return sizes


def test_bodies_are_cut_by_document_count():
    assert fill(BulkBuffer(max_docs=3), [doc(str(i), x=i) for i in range(7)]) == [3, 3, 1]


def test_bodies_are_cut_by_bytes_before_overflowing():
    documents = [doc(str(i), text="x" * 100) for i in range(5)]
    one = len(encode_action(documents[0]))
    assert fill(BulkBuffer(max_docs=100, max_bytes=2 * one + 10), documents) == [2, 2, 1]


def test_a_document_bigger_than_the_byte_limit_goes_alone():
    assert fill(BulkBuffer(max_docs=100, max_bytes=10), [doc("1", text="x" * 50), doc("2", y=1)]) == [1, 1]


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (None, Decision.RETRY),
        (429, Decision.RETRY),
        (500, Decision.RETRY),
        (502, Decision.RETRY),
        (503, Decision.RETRY),
        (504, Decision.RETRY),
        (400, Decision.SPLIT),
        (401, Decision.FAIL),
        (403, Decision.FAIL),
        (404, Decision.FAIL),
        (413, Decision.SPLIT),
    ],
)
def test_whole_request_decision_table(status, decision):
    assert request_decision(status) is decision


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (429, Decision.RETRY),
        (500, Decision.RETRY),
        (503, Decision.RETRY),
        (400, Decision.DEAD_LETTER),
        (404, Decision.DEAD_LETTER),
        (409, Decision.DEAD_LETTER),
    ],
)
def test_item_decision_table(status, decision):
    assert item_decision(status) is decision


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(max_retries=8, initial_backoff=0.5, max_backoff=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (7, 4.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays) and max(delays) > ceiling * 0.8


def ok(doc_id: str) -> dict:
    return {"index": {"_id": doc_id, "status": 201, "result": "created"}}


def failed(doc_id: str, status: int, kind: str = "x_exception") -> dict:
    return {"index": {"_id": doc_id, "status": status, "error": {"type": kind, "reason": "because"}}}


class ScriptedCluster:
    """Answers each _bulk body from a script; records what was sent."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.bodies: list[list[str]] = []

    def send(self, body: bytes) -> list[dict]:
        ids = [orjson.loads(line)["index"]["_id"] for line in body.splitlines()[0::2]]
        self.bodies.append(ids)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return [answer(doc_id) for doc_id in ids]


def encoded(*ids: str) -> list[bytes]:
    return [encode_action(doc(i, v=1)) for i in ids]


def test_partial_bulk_failure_resends_only_failed_items():
    first = {
        "a": ok,
        "b": lambda i: failed(i, 429),
        "c": lambda i: failed(i, 400, "mapper_parsing_exception"),
    }
    cluster = ScriptedCluster(lambda i: first[i](i), ok)
    sleeps: list[float] = []
    outcome = send_with_retries(encoded("a", "b", "c"), cluster.send, RetryPolicy(), sleeps.append)
    assert cluster.bodies == [["a", "b", "c"], ["b"]]
    assert [r is not None for r in outcome.results] == [True, True, False]
    assert outcome.failures == [(2, 400, "HTTP 400 mapper_parsing_exception: because")]
    assert outcome.retries == 1 and outcome.requests == 2 and len(sleeps) == 1


def test_whole_request_429_and_500_are_retried():
    cluster = ScriptedCluster(
        BulkRequestError(429, "busy"), BulkRequestError(500, "boom"), BulkRequestError(None, "t"), ok
    )
    outcome = send_with_retries(encoded("a"), cluster.send, RetryPolicy(), lambda _: None)
    assert outcome.retries == 3 and outcome.results[0] is not None


def test_auth_refused_fails_at_once():
    cluster = ScriptedCluster(BulkRequestError(401, "_bulk refused the credentials"))
    with pytest.raises(BulkFailed, match="refused the credentials"):
        send_with_retries(encoded("a"), cluster.send, RetryPolicy(), lambda _: None)


def test_retries_are_bounded():
    cluster = ScriptedCluster(*[BulkRequestError(503, "unavailable")] * 3)
    with pytest.raises(BulkFailed, match="gave up after 2 retries"):
        send_with_retries(encoded("a"), cluster.send, RetryPolicy(max_retries=2), lambda _: None)
    items = ScriptedCluster(*[lambda i: failed(i, 429)] * 3)
    clock = FakeClock()
    outcome = send_with_retries(
        encoded("a"), items.send, RetryPolicy(2, initial_backoff=0.1), clock.sleep, clock=clock.now
    )
    assert outcome.failures == [(0, 429, "HTTP 429 x_exception: because (gave up after 2 retries in 0 s)")]


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.time += seconds


def test_the_retry_budget_is_time_not_a_count():
    clock = FakeClock()
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, max_retry_time=60.0)
    flaky = ScriptedCluster(*[BulkRequestError(503, "unavailable")] * 12, ok)
    outcome = send_with_retries(
        encoded("a"), flaky.send, policy, clock.sleep, random.Random(3), clock=clock.now
    )
    assert outcome.results[0] is not None and outcome.retries == 12
    down = ScriptedCluster(*[BulkRequestError(503, "unavailable")] * 1000)
    clock = FakeClock()
    with pytest.raises(BulkFailed, match=r"gave up after \d+ retries in 60 s"):
        send_with_retries(encoded("a"), down.send, policy, clock.sleep, random.Random(3), clock=clock.now)
    assert clock.time == pytest.approx(60.0)


def test_no_retries_at_all_with_a_zero_budget():
    cluster = ScriptedCluster(BulkRequestError(503, "unavailable"))
    with pytest.raises(BulkFailed, match="gave up after 0 retries"):
        send_with_retries(encoded("a"), cluster.send, RetryPolicy(max_retry_time=0), lambda _: None)


class SizeLimitedCluster:
    """Refuses bodies over `limit` bytes with 413 and a whole request holding a `bad` id with 400."""

    def __init__(self, limit: int, bad: frozenset[str] = frozenset()) -> None:
        self.limit, self.bad = limit, bad
        self.sizes: list[int] = []

    def send(self, body: bytes) -> list[dict]:
        self.sizes.append(len(body))
        if len(body) > self.limit:
            raise BulkRequestError(413, "HTTP 413 request entity too large")
        ids = [orjson.loads(line)["index"]["_id"] for line in body.splitlines()[0::2]]
        if self.bad & set(ids):
            raise BulkRequestError(400, "HTTP 400 action_request_validation_exception: id is too long")
        return [ok(doc_id) for doc_id in ids]


def test_a_413_splits_the_body_and_the_limit_is_remembered():
    actions = encoded(*[str(i) for i in range(16)])
    one = len(actions[0])
    cluster = SizeLimitedCluster(limit=4 * one)
    shared = WriterShared(16 * one)
    outcome = send_with_retries(actions, cluster.send, RetryPolicy(), lambda _: None, shared=shared)
    assert all(result is not None for result in outcome.results) and not outcome.failures
    refused = [size for size in cluster.sizes if size > cluster.limit]
    assert len(refused) == outcome.splits >= 3
    assert shared.max_bytes == min(refused) // 2 < cluster.limit


def test_a_document_larger_than_the_limit_alone_is_a_dead_letter():
    actions = [*encoded("a"), encode_action(doc("big", text="x" * 500)), *encoded("b")]
    cluster = SizeLimitedCluster(limit=200)
    outcome = send_with_retries(
        actions, cluster.send, RetryPolicy(), lambda _: None, shared=WriterShared(10**6)
    )
    assert [result is not None for result in outcome.results] == [True, False, True]
    ((position, status, reason),) = outcome.failures
    assert (position, status) == (1, 413) and "refuses a _bulk body of" in reason


def test_a_whole_request_400_is_split_until_the_offender_stands_alone():
    ids = [str(i) for i in range(9)]
    cluster = SizeLimitedCluster(limit=10**9, bad=frozenset({"6"}))
    outcome = send_with_retries(encoded(*ids), cluster.send, RetryPolicy(), lambda _: None)
    assert [i for i, result in enumerate(outcome.results) if result is None] == [6]
    ((position, status, reason),) = outcome.failures
    assert (position, status) == (6, 400) and "id is too long" in reason
    assert outcome.requests < 2 * len(ids)


def test_a_cluster_that_refuses_every_request_with_400_fails_the_job_quickly():
    cluster = SizeLimitedCluster(limit=10**9, bad=frozenset(str(i) for i in range(500)))
    with pytest.raises(BulkFailed, match="refused 8 documents in a row, each sent alone"):
        send_with_retries(encoded(*[str(i) for i in range(500)]), cluster.send, RetryPolicy(), lambda _: None)
    assert len(cluster.sizes) < 40


def test_documents_refused_alone_are_counted_across_batches_of_one_writer():
    cluster = SizeLimitedCluster(limit=10**9, bad=frozenset(str(i) for i in range(100)))
    shared = WriterShared(10**6)
    for batch in range(2):
        ids = [str(batch * 5 + i) for i in range(5)]
        if batch == 0:
            outcome = send_with_retries(
                encoded(*ids), cluster.send, RetryPolicy(), lambda _: None, shared=shared
            )
            assert len(outcome.failures) == 5
        else:
            with pytest.raises(BulkFailed, match="refused 8 documents in a row"):
                send_with_retries(encoded(*ids), cluster.send, RetryPolicy(), lambda _: None, shared=shared)


def test_a_stop_ends_a_backoff_at_once_and_retries_are_reported_as_they_happen():
    reported: list[int] = []
    shared = WriterShared(10**6, on_retry=reported.append)
    cluster = ScriptedCluster(BulkRequestError(503, "unavailable"), BulkRequestError(503, "unavailable"), ok)
    send_with_retries(encoded("a"), cluster.send, RetryPolicy(), lambda _: None, shared=shared)
    assert reported == [1, 1]
    shared.stop.set()
    down = ScriptedCluster(*[BulkRequestError(503, "unavailable")] * 5)
    started = time.monotonic()
    with pytest.raises(BulkFailed, match="retries stopped"):
        send_with_retries(
            encoded("a"), down.send, RetryPolicy(initial_backoff=60), shared.stop.wait, shared=shared
        )
    assert time.monotonic() - started < 5


def test_item_reason_reports_type_reason_and_cause():
    bad = {
        "index": {
            "_id": "2",
            "status": 400,
            "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse field [v]",
                "caused_by": {"type": "illegal_argument_exception", "reason": "Vector dimension mismatch"},
            },
        }
    }
    assert item_reason(bad) == (
        "HTTP 400 mapper_parsing_exception: failed to parse field [v] "
        "(caused by illegal_argument_exception: Vector dimension mismatch)"
    )

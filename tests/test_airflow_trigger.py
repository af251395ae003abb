"""`MLBatchJobTrigger` against real HTTP: jobs submitted with the `openai_batch` blueprint to the
local batch services, polled by the trigger's `run` on an asyncio loop until its one event
(COMPLETED, FAILED, EXPIRED, a connector error), its serialized kwargs (round trip, no secret),
`on_kill` cancelling the remote job, and a slow poll never blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from email.message import Message

import pytest

pytest.importorskip("airflow")
pytestmark = [pytest.mark.airflow, pytest.mark.integration]

from airflow.sdk.module_loading import import_string  # noqa: E402
from airflow.sdk.serde import deserialize, serialize  # noqa: E402
from airflow.triggers.base import TriggerEvent  # noqa: E402

from connectors.batch_predict.job_calls import MAX_POLL_FAILURES  # noqa: E402
from connectors.local.http_server import Reply  # noqa: E402
from pipelines.airflow_provider.triggers import MLBatchJobTrigger  # noqa: E402
from tests.airflow_jobs import (  # noqa: E402
    API_KEY,
    CONN_ID,
    RUN_LIMIT,
    run_trigger,
    service_calls,
    start_services,
    submitted,
    use_connection,
)
from tests.batch_services import BatchServices  # noqa: E402


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServices]:
    use_connection(monkeypatch, password=API_KEY)
    server = start_services()
    yield server
    server.close()


def trigger_for(record: dict, **options) -> MLBatchJobTrigger:
    return MLBatchJobTrigger(
        connector="openai_batch", record=record, conn_id=CONN_ID, poll_interval=0.05, **options
    )


def final_record(trigger: MLBatchJobTrigger) -> dict:
    events = run_trigger(trigger)
    assert len(events) == 1, events
    return events[0].payload["record"]


def test_a_completed_job_fires_one_event_with_the_output_file(services):
    record = final_record(trigger_for(submitted(services)))
    job = next(iter(services.jobs.values()))
    assert record["state"] == "COMPLETED"
    assert record["remote_job"]["status"] == "completed"
    assert record["remote_job"]["output_file_id"] == job["output_file_id"] in services.files
    assert record["poll_failures"] == 0 and "error" not in record
    assert len(service_calls(services, "GET", job["id"])) == job["polls"] == 3


@pytest.mark.parametrize(
    ("progress", "state"),
    [(("validating", "in_progress", "failed"), "FAILED"), (("validating", "expired"), "EXPIRED")],
)
def test_a_job_that_ends_failed_or_expired_fires_that_state(services, progress, state):
    services.progress["batch"] = progress
    record = final_record(trigger_for(submitted(services)))
    assert record["state"] == state
    assert record["remote_job"]["status"] == progress[-1]


def test_a_connector_that_cannot_be_read_fires_failed_with_the_message(services):
    trigger = MLBatchJobTrigger(connector="no_such_blueprint", record=submitted(services), conn_id=CONN_ID)
    record = final_record(trigger)
    assert record["state"] == "FAILED"
    assert "no such file or packaged blueprint" in record["error"]


def test_a_connection_without_credential_fires_failed_naming_it(services, monkeypatch):
    record = submitted(services)
    use_connection(monkeypatch, "empty_conn")
    record = final_record(MLBatchJobTrigger(connector="openai_batch", record=record, conn_id="empty_conn"))
    assert record["state"] == "FAILED" and "'empty_conn'" in record["error"]


def test_a_status_action_that_cannot_be_rendered_fires_failed(services):
    record = {**submitted(services), "remote_job": {"status": "validating"}}  # no job id to poll
    record = final_record(trigger_for(record))
    assert record["state"] == "FAILED" and "id" in record["error"]
    assert service_calls(services, "GET", "") == []


def test_polls_refused_with_a_wrong_key_end_unreachable_without_the_key(services, monkeypatch):
    record = submitted(services)
    use_connection(monkeypatch, password="sk-wrong-key-987654")
    record = final_record(trigger_for(record))
    assert record["state"] == "UNREACHABLE" and record["poll_failures"] == MAX_POLL_FAILURES + 1
    assert "401" in record["error"] and "sk-wrong-key-987654" not in json.dumps(record)


def test_serialize_round_trips_and_holds_no_secret(services):
    trigger = trigger_for(submitted(services), partial_is_failure=True)
    classpath, kwargs = trigger.serialize()
    stored = json.dumps(serialize(kwargs))  # as the triggerer's table keeps them
    assert API_KEY not in stored and API_KEY not in repr(kwargs)
    rebuilt = import_string(classpath)(**deserialize(json.loads(stored)))
    assert isinstance(rebuilt, MLBatchJobTrigger)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["conn_id"] == CONN_ID and kwargs["partial_is_failure"] is True
    assert final_record(rebuilt)["state"] == "COMPLETED"


async def first_event(trigger: MLBatchJobTrigger) -> TriggerEvent:
    return await anext(trigger.run())


async def killed_while_running(trigger: MLBatchJobTrigger) -> None:
    """The triggerer's user-kill path: the running trigger is cancelled, then `on_kill` awaited."""
    running = asyncio.create_task(first_event(trigger))
    while trigger.record["state"] != "RUNNING":
        await asyncio.sleep(0.01)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await trigger.on_kill()


def test_on_kill_cancels_the_remote_job(services):
    services.progress["batch"] = ("validating",) + ("in_progress",) * 1000
    trigger = trigger_for(submitted(services))
    asyncio.run(asyncio.wait_for(killed_while_running(trigger), RUN_LIMIT))
    job = next(iter(services.jobs.values()))
    assert service_calls(services, "POST", f"/v1/batches/{job['id']}/cancel") != []
    assert job["status"] == "cancelling" and trigger.record["state"] == "CANCELLING"
    record = final_record(trigger)  # the next poll shows the service's cancelled
    assert record["state"] == "CANCELLED" and job["status"] == "cancelled"


def test_a_watching_trigger_never_cancels_on_kill(services):
    """The sensor's trigger (`cancel_on_kill=False`) leaves a job it did not submit running."""
    services.progress["batch"] = ("validating",) + ("in_progress",) * 1000
    trigger = trigger_for(submitted(services), cancel_on_kill=False)
    asyncio.run(asyncio.wait_for(killed_while_running(trigger), RUN_LIMIT))
    job = next(iter(services.jobs.values()))
    assert service_calls(services, "POST", f"/v1/batches/{job['id']}/cancel") == []
    assert job["status"] == "in_progress" and trigger.record["state"] == "RUNNING"


def test_on_kill_after_the_job_ended_sends_nothing(services):
    trigger = trigger_for(submitted(services))
    assert final_record(trigger)["state"] == "COMPLETED"
    asyncio.run(trigger.on_kill())
    assert service_calls(services, "POST", "/cancel") == []


def test_a_failing_cancel_is_logged_not_raised(services, capsys):
    trigger = trigger_for({**submitted(services), "remote_job": {"id": "batch_gone"}})
    asyncio.run(trigger.on_kill())
    assert trigger.record["state"] == "CREATED"
    logged = capsys.readouterr().out  # Airflow's structlog writes to stdout
    assert "cancel failed" in logged and "batch_gone/cancel answered HTTP 404" in logged


def test_a_slow_status_answer_does_not_block_the_event_loop(services):
    entered, release = threading.Event(), threading.Event()
    timed_out: list[bool] = []

    def slow_status(method: str, path: str, headers: Message, body: bytes) -> Reply:
        if method == "GET" and not release.is_set():
            entered.set()
            timed_out.append(not release.wait(RUN_LIMIT / 2))
        return BatchServices.handle(services, method, path, headers, body)

    services.handle = slow_status  # type: ignore[method-assign]
    trigger = trigger_for(submitted(services))

    async def tick_then_release() -> int:
        ticks = 0
        while not entered.is_set() or ticks < 20:
            await asyncio.sleep(0.005)
            ticks += entered.is_set()
        release.set()
        return ticks

    async def both() -> tuple[TriggerEvent, int]:
        return await asyncio.gather(first_event(trigger), tick_then_release())

    event, ticks = asyncio.run(asyncio.wait_for(both(), RUN_LIMIT))
    assert timed_out == [False] and ticks == 20
    assert event.payload["record"]["state"] == "COMPLETED"

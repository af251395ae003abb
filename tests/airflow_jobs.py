"""What the Airflow provider's unit tests share: the local OpenAI batch service with an uploaded
input file, a connection given as an `AIRFLOW_CONN_*` variable, a submitted job's task record,
a trigger run to its end, and a task instance that records its XCom pushes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.triggers.base import BaseTrigger, TriggerEvent

from connectors.batch_predict.job_calls import BatchJob
from pipelines.airflow_provider.hooks import MLBatchHook
from tests.batch_services import BatchServices
from tests.data import jsonl

API_KEY = "sk-provider-test-0123456789"
CONN_ID = "mlbatch_unit"
INPUT_FILE = "file-unit-input"
RUN_LIMIT = 20.0  # seconds a trigger may run in a test before it counts as hung


def use_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str = CONN_ID, **fields: Any) -> None:
    """The connection `conn_id` as Airflow reads it from the environment (JSON form)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields}))


def start_services() -> BatchServices:
    """The batch services holding one uploaded batch input file, `INPUT_FILE`."""
    services = BatchServices(api_key=API_KEY)
    line = {
        "custom_id": "doc-1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": ["a question?"]},
    }
    services.files[INPUT_FILE] = jsonl([line])
    return services


def parameters(services: BatchServices) -> dict[str, str]:
    return {"base_url": services.openai_url, "input_file_id": INPUT_FILE}


def submitted(services: BatchServices, conn_id: str = CONN_ID) -> dict[str, Any]:
    """The task record of a job submitted with the `openai_batch` blueprint and `conn_id`'s key."""
    job = BatchJob(MLBatchHook(conn_id).connector("openai_batch"))
    record = job.new_record(parameters(services))
    record = job.submit(parameters(services)).applied(record)
    assert record["state"] == "CREATED" and record["remote_job"]["id"] in services.jobs, record
    return record


async def events_of(trigger: BaseTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def run_trigger(trigger: BaseTrigger) -> list[TriggerEvent]:
    """Every event the trigger fires before its `run` returns (bounded by `RUN_LIMIT`)."""
    return asyncio.run(asyncio.wait_for(events_of(trigger), RUN_LIMIT))


def service_calls(services: BatchServices, method: str, suffix: str) -> list[str]:
    return [path for sent, path, _ in services.requests if sent == method and path.endswith(suffix)]


class RecordingTI:
    """The `ti` of a task context: XCom pushes are recorded."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))

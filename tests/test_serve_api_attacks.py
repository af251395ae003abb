"""`mlbatch serve-api` against an unlucky user or an attacker: bodies built to burn the CPU, a restart
with the wrong master key, a batch job its connector cannot poll. Each test names what went wrong."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from connectors.local.http_server import JsonHttpServer, Reply, decoded_body
from connectors.ml_store import MlStore
from connectors.secret_box import SecretBox
from connectors.task_store import TaskStore
from pipelines.ingest_options import IngestOptions
from pipelines.rest_api.context import ApiSettings
from pipelines.rest_api.service import MlService

pytestmark = pytest.mark.integration
LOCAL_ENDPOINTS = (r"^http://127\.0\.0\.1:\d+/.*$",)

ML = "/_plugins/_ml"
SECRET = "conn-Secret-QQ-9876"


def service_at(home: Path, key: bytes) -> MlService:
    settings = ApiSettings(
        IngestOptions(opensearch="http://127.0.0.1:9"), poll_interval=3600, trusted_endpoints=LOCAL_ENDPOINTS
    )
    return MlService(settings, TaskStore(home / "tasks.db"), MlStore(SecretBox(key), home / "ml.db"))


def answer(service: MlService, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    raw = b"" if body is None else json.dumps(body).encode()
    status, payload, *_ = service.handle(method, path, {}, raw)
    return status, payload


def test_gzip_body_of_many_empty_members_is_inflated_in_linear_time() -> None:
    """150 000 empty gzip members (3 MB, within the body cap) took ~6 s of one handler thread
    (quadratic copying of the rest of the body after each member); 10 MiB of them ~80 s."""
    body = gzip.compress(b"") * 150_000
    started = time.monotonic()
    assert decoded_body(body, "gzip", 10 * 2**20) == b""
    assert time.monotonic() - started < 2.0


def test_gzip_members_still_inflate_to_their_concatenation() -> None:
    body = b"".join(gzip.compress(part) for part in (b'{"a": ', b"1", b"}"))
    assert decoded_body(body, "gzip", 100) == b'{"a": 1}'


CONNECTOR = {
    "name": "c",
    "protocol": "http",
    "parameters": {},
    "credential": {"key": SECRET},
    "actions": [
        {"action_type": "batch_predict", "method": "POST", "url": "http://127.0.0.1:9/v1/batches"},
    ],
}


def test_wrong_master_key_after_restart_is_named_in_the_answer(tmp_path: Path) -> None:
    """Restarted with another master key, `_batch_ingestion` with a stored connector answered
    500 "internal error: SecretBoxError": the caller cannot tell that the key is wrong."""
    first = service_at(tmp_path, Fernet.generate_key())
    try:
        status, created = answer(first, "POST", f"{ML}/connectors/_create", CONNECTOR)
        assert status == 200
    finally:
        first.close()
    restarted = service_at(tmp_path, Fernet.generate_key())
    body = {
        "index_name": "i",
        "field_map": {"_id": "$.id"},
        "connector_id": created["connector_id"],
        "data_source": {"type": "s3", "source": ["s3://bucket/key.jsonl"]},
    }
    try:
        status, payload = answer(restarted, "POST", f"{ML}/_batch_ingestion", body)
    finally:
        restarted.close()
    assert status == 500
    assert "master key" in payload["error"]["reason"]
    assert SECRET not in json.dumps(payload)


def fake_batch_service(calls: list[str]) -> JsonHttpServer:
    """A remote batch service: every call answers a completed job `job-1`."""

    def handle(method: str, path: str, headers: Message, body: bytes) -> Reply:
        calls.append(f"{method} {path}")
        return 200, {"id": "job-1", "status": "completed"}

    return JsonHttpServer(handle).start()


@pytest.fixture
def remote() -> Iterator[tuple[JsonHttpServer, list[str]]]:
    calls: list[str] = []
    server = fake_batch_service(calls)
    try:
        yield server, calls
    finally:
        server.close()


def batch_task(service: MlService, actions: list[dict[str, Any]]) -> str:
    connector = {**CONNECTOR, "actions": actions}
    status, created = answer(service, "POST", f"{ML}/connectors/_create", connector)
    assert status == 200, created
    model = {"function_name": "remote", "name": "m", "connector_id": created["connector_id"]}
    status, registered = answer(service, "POST", f"{ML}/models/_register", model)
    assert status == 200, registered
    status, submitted = answer(service, "POST", f"{ML}/models/{registered['model_id']}/_batch_predict", {})
    assert status == 200, submitted
    return submitted["task_id"]


def test_a_job_that_cannot_be_polled_neither_breaks_get_nor_starves_the_poller(
    tmp_path: Path, remote: tuple[JsonHttpServer, list[str]]
) -> None:
    """A job whose status call cannot be made (its status URL names a parameter never given) made GET
    of its task raise ConnectorError (500 "internal error: ConnectorError"), and every poll round
    stopped at it, so the jobs of other models listed after it were never polled. A connector whose
    status action cannot even be derived (a host that is not SageMaker, OpenAI, Cohere or Bedrock)
    is refused before its job is submitted."""
    server, calls = remote
    service = service_at(tmp_path, Fernet.generate_key())
    try:
        pollable = batch_task(
            service,
            [
                {
                    "action_type": "batch_predict",
                    "method": "POST",
                    "url": f"{server.url}/batches",
                    "request_body": "{}",
                },
                {
                    "action_type": "batch_predict_status",
                    "method": "GET",
                    "url": f"{server.url}/batches/${{parameters.id}}",
                },
            ],
        )
        unpollable = batch_task(
            service,
            [
                {
                    "action_type": "batch_predict",
                    "method": "POST",
                    "url": f"{server.url}/batches",
                    "request_body": "{}",
                },
                {
                    "action_type": "batch_predict_status",
                    "method": "GET",
                    "url": f"{server.url}/batches/${{parameters.never_given}}",
                },
            ],
        )
        no_status = {
            **CONNECTOR,
            "actions": [{"action_type": "batch_predict", "method": "POST", "url": f"{server.url}/b"}],
        }
        status, created = answer(service, "POST", f"{ML}/connectors/_create", no_status)
        model = {"function_name": "remote", "name": "n", "connector_id": created["connector_id"]}
        registered = answer(service, "POST", f"{ML}/models/_register", model)[1]
        refused_status, refused = answer(
            service, "POST", f"{ML}/models/{registered['model_id']}/_batch_predict", {}
        )
        service.context.predictions.poll_once()
        assert answer(service, "GET", f"{ML}/tasks/{pollable}")[1]["state"] == "COMPLETED"
        status, payload = answer(service, "GET", f"{ML}/tasks/{unpollable}")
    finally:
        service.close()
    assert "GET /batches/job-1" in calls
    assert status == 500
    assert refused_status == 400 and "batch_predict_status" in refused["error"]["reason"]
    assert "POST /b" not in calls
    assert payload["error"]["type"] == "unsupported_operation_exception"
    assert "batch_predict_status" in payload["error"]["reason"]

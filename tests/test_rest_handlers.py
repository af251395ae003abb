"""The REST handlers of `mlbatch serve-api` in process (`MlService.handle`), without HTTP: connectors,
models, tasks, search, `_batch_ingestion` checks and queueing, batch prediction against the local
OpenAI Batch API, and restart handling. No ingestion runs here (no worker threads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.ml_store import MlStore
from connectors.secret_box import SecretBox, load_master_key
from connectors.task_store import SERVICE_DIED, SERVICE_ROLE, TaskStore, this_process
from pipelines.ingest_options import IngestOptions
from pipelines.rest_api.confinement import ML_COMMONS_TRUSTED_ENDPOINTS
from pipelines.rest_api.context import ApiSettings
from pipelines.rest_api.service import MlService
from tests.batch_services import BatchServices

KEY = "sk-handlers-0123456789"
BLUEPRINT = Path("connectors/batch_predict/blueprints/openai_batch.json")


@pytest.fixture
def service(mlbatch_home, tmp_path):
    settings = ApiSettings(
        IngestOptions(opensearch="http://127.0.0.1:9", local_root=str(tmp_path)),
        max_running=0,
        max_queued=2,
        trusted_endpoints=(*ML_COMMONS_TRUSTED_ENDPOINTS, r"^http://127\.0\.0\.1:\d+/.*$"),
    )
    made = MlService(settings, TaskStore(), MlStore(SecretBox(load_master_key(mlbatch_home))))
    yield made
    made.close()


def call(service: MlService, method: str, path: str, body: object = None) -> tuple[int, dict]:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    status, payload, *_ = service.handle(method, path, {}, raw)
    return status, payload


def reason(payload: dict) -> str:
    return payload["error"]["reason"]


def connector(base_url: str = "https://api.openai.com/v1") -> dict:
    body = json.loads(BLUEPRINT.read_text())
    body["parameters"]["base_url"] = base_url
    body["credential"] = {"openAI_key": KEY}
    return body


def test_connectors_are_stored_without_their_credential_and_checked_as_ml_commons(service, mlbatch_home):
    status, created = call(service, "POST", "/_plugins/_ml/connectors/_create", connector())
    assert status == 200 and set(created) == {"connector_id"}
    status, shown = call(service, "GET", f"/_plugins/_ml/connectors/{created['connector_id']}")
    assert status == 200 and "credential" not in shown and shown["protocol"] == "http"
    assert KEY not in json.dumps(shown) and KEY.encode() not in (mlbatch_home / "ml.db").read_bytes()
    for body, message in (
        ({"protocol": "http", "actions": []}, "Connector name is null"),
        ({"name": "c", "actions": []}, "Connector protocol is null"),
        (
            {"name": "c", "protocol": "ftp"},
            "Unsupported connector protocol. Please use one of [aws_sigv4, http]",
        ),
    ):
        status, refused = call(service, "POST", "/_plugins/_ml/connectors/_create", body)
        assert (status, reason(refused)) == (400, message)
    status, refused = call(service, "POST", "/_plugins/_ml/connectors/_create", b"")
    assert status == 400


def test_models_register_deploy_and_guard_their_connector(service):
    _, created = call(service, "POST", "/_plugins/_ml/connectors/_create", connector())
    connector_id = created["connector_id"]
    status, missing = call(
        service,
        "POST",
        "/_plugins/_ml/models/_register",
        {"name": "m", "function_name": "remote", "connector_id": "x"},
    )
    assert (status, reason(missing)) == (404, "Failed to find connector:x")
    status, model = call(
        service,
        "POST",
        "/_plugins/_ml/models/_register",
        {"name": "m", "function_name": "remote", "connector_id": connector_id},
    )
    assert status == 200 and model["status"] == "CREATED" and set(model) == {"task_id", "status", "model_id"}
    assert call(service, "GET", f"/_plugins/_ml/tasks/{model['task_id']}")[1]["state"] == "COMPLETED"
    status, in_use = call(service, "DELETE", f"/_plugins/_ml/connectors/{connector_id}")
    assert status == 409 and reason(in_use) == (
        "1 models are still using this connector, please delete or update the models first: "
        f"[{model['model_id']}]"
    )
    status, deployed = call(service, "POST", f"/_plugins/_ml/models/{model['model_id']}/_deploy")
    assert deployed["task_type"] == "DEPLOY_MODEL" and deployed["status"] == "COMPLETED"
    assert call(service, "GET", f"/_plugins/_ml/models/{model['model_id']}")[1]["model_state"] == "DEPLOYED"
    assert call(service, "DELETE", f"/_plugins/_ml/models/{model['model_id']}")[0] == 400
    call(service, "POST", f"/_plugins/_ml/models/{model['model_id']}/_undeploy")
    assert call(service, "DELETE", f"/_plugins/_ml/models/{model['model_id']}")[1]["result"] == "deleted"
    assert call(service, "DELETE", f"/_plugins/_ml/connectors/{connector_id}")[1]["result"] == "deleted"
    assert call(service, "GET", f"/_plugins/_ml/connectors/{connector_id}")[0] == 404


def test_an_inline_connector_keeps_its_credential_sealed_and_deploy_true_deploys(service):
    body = {"name": "inline", "function_name": "remote", "connector": connector()}
    status, payload, *_ = service.handle(
        "POST", "/_plugins/_ml/models/_register", {"deploy": "true"}, json.dumps(body).encode()
    )
    shown = call(service, "GET", f"/_plugins/_ml/models/{payload['model_id']}")[1]
    assert shown["model_state"] == "DEPLOYED" and shown["connector"]["name"] == "OpenAI batch embeddings"
    assert "credential" not in shown["connector"]
    assert service.context.objects.credential("model", payload["model_id"]) == {"openAI_key": KEY}


def test_ingestion_bodies_are_checked_then_queued_up_to_the_limit(service, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "v": [1.0]}\n')
    body = {
        "index_name": "i",
        "field_map": {"_id": "$.id", "v": "$.v"},
        "data_source": {"type": "local", "source": [str(path)]},
    }
    status, refused = call(
        service, "POST", "/_plugins/_ml/_batch_ingestion", {**body, "field_map": {"_id": "$["}}
    )
    assert status == 400 and refused["error"]["type"] == "illegal_argument_exception"
    answers = [call(service, "POST", "/_plugins/_ml/_batch_ingestion", body) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert reason(answers[2][1]).startswith("Exceeded maximum limit for BATCH_INGEST tasks")
    first = answers[0][1]["task_id"]
    record = call(service, "GET", f"/_plugins/_ml/tasks/{first}")[1]
    assert (record["state"], record["is_async"], "owner" in record) == ("CREATED", True, False)
    assert call(service, "POST", f"/_plugins/_ml/tasks/{first}/_cancel")[1] == {"status": "OK"}
    assert call(service, "GET", f"/_plugins/_ml/tasks/{first}")[1]["state"] == "CANCELLED"
    second = answers[1][1]["task_id"]
    assert call(service, "DELETE", f"/_plugins/_ml/tasks/{second}")[1]["result"] == "deleted"
    status, gone = call(service, "GET", f"/_plugins/_ml/tasks/{second}")
    assert (status, reason(gone)) == (404, "Failed to find task")
    status, gone = call(service, "POST", f"/_plugins/_ml/tasks/{second}/_cancel")
    assert (status, reason(gone)) == (404, "Fail to find task")


def test_search_needs_a_body_and_finds_by_query(service):
    service.context.tasks.create("BATCH_INGEST", state="COMPLETED", owner=None)
    service.context.tasks.create("REGISTER_MODEL", state="COMPLETED", owner=None)
    status, refused = call(service, "POST", "/_plugins/_ml/tasks/_search")
    assert (status, refused["error"]["type"]) == (400, "parse_exception")
    status, found = service.handle(
        "GET",
        "/_plugins/_ml/tasks/_search",
        {"source": '{"query": {"term": {"task_type": "BATCH_INGEST"}}}'},
        b"",
    )
    assert status == 200 and found["hits"]["total"]["value"] == 1
    assert found["hits"]["hits"][0]["_source"]["task_type"] == "BATCH_INGEST"


def test_start_fails_the_tasks_a_dead_service_left(service, tmp_path):
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_owner = {**this_process(SERVICE_ROLE), "pid": int(gone.stdout), "start_time": 1}
    left = service.context.tasks.create("BATCH_INGEST", owner=dead_owner)
    service.start()
    record = call(service, "GET", f"/_plugins/_ml/tasks/{left['task_id']}")[1]
    assert (record["state"], record["error"]) == ("FAILED", SERVICE_DIED)


@pytest.mark.integration
def test_batch_predict_polls_and_cancels_through_the_models_connector(service):
    services = BatchServices(KEY)
    try:
        services.files["file-in"] = b'{"custom_id": "a", "body": {"input": "x"}}\n'
        _, created = call(service, "POST", "/_plugins/_ml/connectors/_create", connector(services.openai_url))
        _, model = call(
            service,
            "POST",
            "/_plugins/_ml/models/_register",
            {"name": "m", "function_name": "remote", "connector_id": created["connector_id"]},
        )
        path = f"/_plugins/_ml/models/{model['model_id']}/_batch_predict"
        status, submitted = call(service, "POST", path, {"parameters": {"input_file_id": "file-in"}})
        assert status == 200 and submitted["remote_job"]["status"] == "validating"
        record = call(service, "GET", f"/_plugins/_ml/tasks/{submitted['task_id']}")[1]
        assert record["state"] == "RUNNING" and record["remote_job"]["status"] == "in_progress"
        status, cancelled = call(service, "POST", f"/_plugins/_ml/tasks/{submitted['task_id']}/_cancel")
        assert (status, cancelled) == (200, {"status": "OK"})
        service.context.predictions.poll_once()
        assert service.context.tasks.get(submitted["task_id"])["state"] == "CANCELLED"
        status, refused = call(service, "POST", path, {"parameters": {"input_file_id": "file-missing"}})
        assert status == 404 and reason(refused).startswith("Unable to create batch transform job: ")
        assert "input_file_id not found" in reason(refused)
        assert KEY not in json.dumps([submitted, record, refused, service.context.tasks.list(None)])
    finally:
        services.close()

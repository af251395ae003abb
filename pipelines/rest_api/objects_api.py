"""Connectors, remote models and `_batch_predict` in `mlbatch serve-api` (the REST face of the object store).

    POST   /_plugins/_ml/connectors/_create          → {"connector_id"}
    GET    /_plugins/_ml/connectors/{id}             → the connector, without its credential
    DELETE /_plugins/_ml/connectors/{id}             → OpenSearch's delete answer (409 while models use it)
    POST   /_plugins/_ml/models/_register            → {"task_id", "status": "CREATED", "model_id"}
    POST   /_plugins/_ml/models/{id}/_deploy         → {"task_id", "task_type": "DEPLOY_MODEL", "status"}
    POST   /_plugins/_ml/models/{id}/_undeploy       → the model undeployed
    GET    /_plugins/_ml/models/{id}                 → the model (its inline connector without credential)
    DELETE /_plugins/_ml/models/{id}                 → OpenSearch's delete answer (not while deployed)
    POST   /_plugins/_ml/models/{id}/_batch_predict  → {"task_id", "status": "CREATED", "remote_job"}

Only remote models exist here (`function_name: remote`): registering one is immediate, its
REGISTER_MODEL and DEPLOY_MODEL tasks are recorded COMPLETED. Credentials are sealed in the
object store (`connectors.ml_store`) and only read back to call the service.
"""

from __future__ import annotations

from typing import Any

from connectors.batch_predict.connector import PROTOCOLS, ConnectorError, parse_connector
from connectors.ml_store import ObjectInUse, ObjectNotFound
from connectors.task_store import SERVICE_ROLE, this_process
from pipelines.rest_api.api_errors import STATUS, ApiError, bad_request, conflict, json_object, not_found
from pipelines.rest_api.confinement import untrusted_message, untrusted_url
from pipelines.rest_api.context import ApiContext
from pipelines.rest_api.replies import deleted_answer

CONNECTOR_INDEX = ".plugins-ml-connector"
MODEL_INDEX = ".plugins-ml-model"
DEPLOYED = "DEPLOYED"
WORKER_NODE = "mlbatch"  # the one "node" of this service, where ML Commons names cluster nodes


def json_body(raw: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object; an empty one is a 400 naming `what`."""
    if not raw.strip():
        raise bad_request(f"{what}: the request body is empty")
    return json_object(raw, what)


def checked_connector(
    body: Any, where: str, trusted_endpoints: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A connector body checked as ML Commons checks it (its URLs too), split into its record and
    its credential."""
    if not isinstance(body, dict):
        raise bad_request(f"{where}connector: must be a JSON object")
    for field, message in (("name", "Connector name is null"), ("protocol", "Connector protocol is null")):
        if body.get(field) is None:
            raise bad_request(message)
    if body["protocol"] not in PROTOCOLS:
        supported = ", ".join(sorted(PROTOCOLS))
        raise bad_request(f"Unsupported connector protocol. Please use one of [{supported}]")
    try:
        connector = parse_connector(body, require_batch=False)
    except ConnectorError as error:
        raise bad_request(f"{where}{error}") from None
    untrusted = untrusted_url(connector, {}, trusted_endpoints)
    if untrusted is not None:
        raise bad_request(untrusted_message(untrusted))
    record = {key: value for key, value in body.items() if key != "credential"}
    return record, dict(body.get("credential") or {})


def _stored(service: ApiContext, kind: str, object_id: str) -> dict[str, Any]:
    try:
        return service.objects.get(kind, object_id)
    except ObjectNotFound as missing:
        raise not_found(str(missing)) from None


def create_connector(service: ApiContext, raw: bytes) -> tuple[int, dict[str, Any]]:
    record, credential = checked_connector(
        json_body(raw, "connector"), "", service.settings.trusted_endpoints
    )
    connector_id, _ = service.objects.create("connector", record, credential)
    return 200, {"connector_id": connector_id}


def get_connector(service: ApiContext, connector_id: str) -> tuple[int, dict[str, Any]]:
    return 200, _stored(service, "connector", connector_id)


def delete_connector(service: ApiContext, connector_id: str) -> tuple[int, dict[str, Any]]:
    try:
        service.objects.delete("connector", connector_id)
    except ObjectNotFound as missing:
        raise not_found(str(missing)) from None
    except ObjectInUse as used:
        raise conflict(str(used)) from None
    return 200, deleted_answer(CONNECTOR_INDEX, connector_id)


def _finished_task(service: ApiContext, task_type: str, model_id: str, is_async: bool) -> dict[str, Any]:
    """A REGISTER_MODEL or DEPLOY_MODEL task, done at once as ML Commons does it for remote models."""
    task = service.tasks.create(task_type, owner=this_process(SERVICE_ROLE), model_id=model_id)
    return service.tasks.update(
        task["task_id"],
        state="COMPLETED",
        function_name="REMOTE",
        worker_node=[WORKER_NODE],
        is_async=is_async,
    )


def register_model(service: ApiContext, raw: bytes, deploy: bool) -> tuple[int, dict[str, Any]]:
    """Register a remote model (`?deploy=true`: and deploy it)."""
    body = json_body(raw, "model")
    if str(body.get("function_name", "")).lower() != "remote":
        raise bad_request(
            'function_name: only remote models can be registered here ("function_name": "remote")'
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("model name is null")
    fields = {key: body[key] for key in ("description", "model_group_id", "version") if key in body}
    record: dict[str, Any] = {"name": name, "algorithm": "REMOTE", "model_state": "REGISTERED", **fields}
    credential = None
    if isinstance(body.get("connector_id"), str) and body["connector_id"]:
        record["connector_id"] = body["connector_id"]
    elif isinstance(body.get("connector"), dict):
        record["connector"], credential = checked_connector(
            body["connector"], "connector.", service.settings.trusted_endpoints
        )
    else:
        raise bad_request("A remote model needs a connector_id or an inline connector")
    if deploy:
        record["model_state"] = DEPLOYED
    try:
        model_id, _ = service.objects.create("model", record, credential)
    except ObjectNotFound:
        raise not_found(f"Failed to find connector:{record['connector_id']}") from None
    task = _finished_task(service, "REGISTER_MODEL", model_id, is_async=False)
    return 200, {"task_id": task["task_id"], "status": "CREATED", "model_id": model_id}


def deploy_model(service: ApiContext, model_id: str, deploy: bool) -> tuple[int, dict[str, Any]]:
    _stored(service, "model", model_id)
    state = DEPLOYED if deploy else "UNDEPLOYED"
    service.objects.update("model", model_id, model_state=state)
    if not deploy:
        return 200, {WORKER_NODE: {"stats": {model_id: "undeployed"}}}
    task = _finished_task(service, "DEPLOY_MODEL", model_id, is_async=True)
    return 200, {"task_id": task["task_id"], "task_type": "DEPLOY_MODEL", "status": "COMPLETED"}


def get_model(service: ApiContext, model_id: str) -> tuple[int, dict[str, Any]]:
    return 200, _stored(service, "model", model_id)


def delete_model(service: ApiContext, model_id: str) -> tuple[int, dict[str, Any]]:
    if _stored(service, "model", model_id).get("model_state") == DEPLOYED:
        raise ApiError(
            400,
            STATUS,
            "Model cannot be deleted in deploying or deployed state. Try undeploy model first then delete",
        )
    service.objects.delete("model", model_id)
    return 200, deleted_answer(MODEL_INDEX, model_id)


def batch_predict(service: ApiContext, model_id: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    body = json_body(raw, "batch predict")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request("parameters: must be an object")
    record = service.predictions.submit(model_id, parameters)
    if record["state"] == "FAILED":
        reason = f"Unable to create batch transform job: {record.get('error')}"
        raise ApiError(404, "resource_not_found_exception", reason)
    remote_job = record.get("remote_job", {})
    return 200, {"task_id": record["task_id"], "status": "CREATED", "remote_job": remote_job}

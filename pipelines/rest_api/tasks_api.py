"""`_batch_ingestion` and the tasks endpoints of `mlbatch serve-api` (the REST face of the task store).

    POST   /_plugins/_ml/_batch_ingestion          → {"task_id", "task_type": "BATCH_INGEST", "status"}
    GET    /_plugins/_ml/tasks/{task_id}           → the task record (ML Commons' shape, plus our counts)
    DELETE /_plugins/_ml/tasks/{task_id}           → OpenSearch's delete answer; not while it runs
    GET|POST /_plugins/_ml/tasks/_search           → an OpenSearch search answer over the task records
    POST   /_plugins/_ml/tasks/{task_id}/_cancel   → stops an ingestion or cancels a remote batch job

A `_batch_ingestion` body is checked as `mlbatch ingest` checks it (ML Commons' messages, 400)
before a task exists; its `connector_id` is resolved to the stored connector's credential
(`ApiContext.connector_credential`). The task is then queued
(`pipelines.rest_api.ingest_queue`) and the answer returns at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from connectors.redact import redact_credential
from connectors.task_store import OWNED_STATES, SERVICE_ROLE, TaskNotFound, this_process
from pipelines.plan import compile_plan
from pipelines.request import RequestError, decode_body, parse_request
from pipelines.rest_api.api_errors import ApiError, as_object, bad_request, not_found
from pipelines.rest_api.context import ApiContext
from pipelines.rest_api.ingest_queue import QueueFull
from pipelines.rest_api.replies import deleted_answer, public_record
from pipelines.rest_api.task_query import QueryError, search_tasks

TASK_INDEX = ".plugins-ml-task"
TASK_NOT_FOUND = "Fail to find task"


def task_record(service: ApiContext, task_id: str) -> dict[str, Any]:
    try:
        return service.tasks.get(task_id)
    except TaskNotFound:
        raise not_found(TASK_NOT_FOUND) from None


def batch_ingest(service: ApiContext, raw: bytes) -> tuple[int, dict[str, Any]]:
    try:
        body = as_object(decode_body(raw), "Batch Ingestion request")
    except RequestError as error:
        raise bad_request(str(error)) from None
    connector_id = body.get("connector_id")
    if isinstance(connector_id, str) and connector_id:
        body = {**body, "credential": service.connector_credential(connector_id)}
        body.pop("connector_id")
    try:
        request = parse_request(body)
        compile_plan(request, join=service.settings.options.join)
    except RequestError as error:
        raise bad_request(str(error)) from None
    record = service.tasks.create(
        "BATCH_INGEST",
        owner=this_process(SERVICE_ROLE),
        index_name=request.index_name,
        data_source={"type": request.source_type, "source": list(request.sources)},
        credential=redact_credential(request.credential),
        **({"connector_id": connector_id} if isinstance(connector_id, str) and connector_id else {}),
    )
    try:
        service.ingestions.submit(record["task_id"], body)
    except QueueFull as full:
        service.tasks.delete(record["task_id"])
        raise ApiError(429, "rejected_execution_exception", f"{full}; try again later") from None
    return 200, {"task_id": record["task_id"], "task_type": "BATCH_INGEST", "status": "CREATED"}


def get_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    return 200, public_record(task_record(service, task_id))


def delete_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    record = task_record(service, task_id)
    if record["state"] in OWNED_STATES or service.ingestions.holds(task_id):
        raise bad_request("Task cannot be deleted in running state. Try after sometime")
    try:
        service.tasks.delete(task_id)
    except TaskNotFound:
        raise not_found(TASK_NOT_FOUND) from None
    return 200, deleted_answer(TASK_INDEX, task_id)


def search(service: ApiContext, raw: bytes, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "parse_exception", f"request body is not valid JSON: {error}") from None
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "parse_exception", "request body must be a JSON object")
    records = [public_record(record) for record in service.tasks.list(limit=None)]
    try:
        return 200, search_tasks(records, body, params)
    except QueryError as error:
        raise ApiError(400, error.kind, str(error)) from None


def cancel_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    """An ingestion waiting or running here stops and becomes CANCELLED; a batch prediction's
    remote job is cancelled with the connector's cancel action (the answer as ML Commons gives it)."""
    record = task_record(service, task_id)
    if record.get("task_type") == "BATCH_PREDICTION":
        return service.predictions.cancel(record)
    if not service.ingestions.cancel(task_id, service.settings.cancel_wait):
        raise bad_request(
            f"task {task_id} is {record['state']}: only a waiting or running task can be cancelled"
        )
    return 200, {"status": "OK", "task": public_record(task_record(service, task_id))}

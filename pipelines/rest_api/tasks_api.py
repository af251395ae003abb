"""`_batch_ingestion` and the tasks endpoints of `mlbatch serve-api` (the REST face of the task store).

    POST   /_plugins/_ml/_batch_ingestion          → {"task_id", "task_type": "BATCH_INGEST", "status"}
    GET    /_plugins/_ml/tasks/{task_id}           → the task record (ML Commons' shape, plus our counts)
    DELETE /_plugins/_ml/tasks/{task_id}           → OpenSearch's delete answer; not while it runs
    GET|POST /_plugins/_ml/tasks/_search           → an OpenSearch search answer over the task records
    POST   /_plugins/_ml/tasks/{task_id}/_cancel   → stops an ingestion or cancels a remote batch job

A `_batch_ingestion` body is checked as `mlbatch ingest` checks it (ML Commons' messages, 400)
before a task exists; its `connector_id` is resolved to the stored connector's credential
(`_connector_credential`). The task is then queued
(`pipelines.rest_api.ingest_queue`) and the answer returns at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from connectors.ml_store import ObjectNotFound
from connectors.redact import redact_credential
from connectors.secret_box import SecretBoxError
from connectors.task_store import OWNED_STATES, SERVICE_ROLE, TaskNotFound, this_process
from pipelines.plan import compile_plan
from pipelines.request import (
    EMPTY_BODY,
    EMPTY_DATA_SOURCE,
    MISSING_TYPE_OR_SOURCE,
    RequestError,
    decode_body,
    parse_request,
)
from pipelines.rest_api.api_errors import (
    STATUS,
    ApiError,
    as_object,
    bad_request,
    internal_error,
    json_object,
    not_found,
)
from pipelines.rest_api.confinement import confined_sources
from pipelines.rest_api.context import ApiContext
from pipelines.rest_api.ingest_queue import QueueFull
from pipelines.rest_api.replies import deleted_answer, public_record
from pipelines.rest_api.task_query import QueryError, search_tasks
from pipelines.stored_connectors import uses_stored_connector, with_connector_credential

TASK_INDEX = ".plugins-ml-task"
QUEUE_FULL = (
    "Exceeded maximum limit for BATCH_INGEST tasks. To increase the limit, start mlbatch serve-api "
    "with a larger --max-queued (or --max-running)."
)
TASK_NOT_FOUND = "Failed to find task"
CANCEL_NOT_FOUND = "Fail to find task"  # ML Commons' cancel words it so
RUNNING_NOT_DELETED = "Task cannot be deleted in running state. Try after some time."
NO_BATCH_JOB = "The task ID you provided does not have any associated batch job"
NO_SEARCH_BODY = "request body or source parameter is required"
WRAPPED = "IllegalArgumentException in the batch ingestion input: "
# ML Commons' transport layer refuses these (400 status_exception, the message prefixed with WRAPPED); its
# REST layer the rest (400 illegal_argument_exception); an empty body is its IOException (500).
TRANSPORT_LAYER_PREFIXES = (EMPTY_DATA_SOURCE, MISSING_TYPE_OR_SOURCE, "The following batch ingest input S3")


def request_refusal(error: RequestError) -> ApiError:
    """A refused `_batch_ingestion` body as ML Commons answers it (our own checks: 400 illegal argument)."""
    message = str(error)
    if message == EMPTY_BODY:
        return ApiError(500, "i_o_exception", message)
    if message.startswith(TRANSPORT_LAYER_PREFIXES):
        return ApiError(400, STATUS, WRAPPED + message)
    return bad_request(message)


def task_record(service: ApiContext, task_id: str, missing: str = TASK_NOT_FOUND) -> dict[str, Any]:
    try:
        return service.tasks.get(task_id)
    except TaskNotFound:
        raise not_found(missing) from None


def batch_ingest(service: ApiContext, raw: bytes) -> tuple[int, dict[str, Any]]:
    try:
        body = as_object(decode_body(raw), "Batch Ingestion request")
    except RequestError as error:
        raise request_refusal(error) from None
    connector_id = body.get("connector_id") if uses_stored_connector(body) else None
    body = with_connector_credential(body, lambda name: _connector_credential(service, name))
    try:
        request = parse_request(body)
        options = service.settings.options
        compile_plan(request, join=options.join, chunk_lists=options.chunk_lists)
    except RequestError as error:
        raise request_refusal(error) from None
    if request.source_type == "local":
        try:
            sources = confined_sources(request.sources, service.settings.options.local_root)
        except ValueError as outside:
            raise bad_request(str(outside)) from None
        body = {**body, "data_source": {**body["data_source"], "source": sources}}
        request = replace(request, sources=tuple(sources))
    record = service.tasks.create(
        "BATCH_INGEST",
        owner=this_process(SERVICE_ROLE),
        index_name=request.index_name,
        data_source={"type": request.source_type, "source": list(request.sources)},
        credential=redact_credential(request.credential),
        is_async=True,
        **({"connector_id": connector_id} if connector_id else {}),
    )
    try:
        service.ingestions.submit(record["task_id"], body)
    except QueueFull:
        service.tasks.delete(record["task_id"])
        raise ApiError(429, STATUS, QUEUE_FULL) from None
    return 200, {"task_id": record["task_id"], "task_type": "BATCH_INGEST", "status": "CREATED"}


def _connector_credential(service: ApiContext, connector_id: str) -> dict[str, str]:
    """The stored connector's credential: ML Commons' 400 when there is no such connector, a 500
    naming the problem when the master key cannot open it."""
    try:
        return service.objects.credential("connector", connector_id)
    except SecretBoxError as error:
        raise internal_error(str(error)) from None
    except ObjectNotFound:
        raise ApiError(
            400,
            STATUS,
            "Fail to fetch credentials from the connector in the batch ingestion input: "
            f"Failed to find connector:{connector_id}",
        ) from None


def get_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    """The task; a batch prediction still waiting on its job is polled first, as ML Commons does."""
    record = task_record(service, task_id)
    if service.predictions.waiting(record):
        record = service.predictions.refresh(record)
    return 200, public_record(record)


def delete_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    """Delete a task that is not running; one still waiting in the queue is taken off it first."""
    if task_record(service, task_id)["state"] == "RUNNING":
        raise ApiError(500, "exception", RUNNING_NOT_DELETED)
    stopped = service.ingestions.cancel(task_id, service.settings.cancel_wait)  # it waited, or just started
    if stopped and task_record(service, task_id)["state"] in OWNED_STATES:  # still stopping: keep its record
        raise ApiError(500, "exception", RUNNING_NOT_DELETED)
    try:
        service.tasks.delete(task_id)
    except TaskNotFound:
        raise not_found(TASK_NOT_FOUND) from None
    return 200, deleted_answer(TASK_INDEX, task_id)


def _search_body(raw: bytes, params: Mapping[str, str]) -> dict[str, Any]:
    """The query: the body, else the `source` parameter (ML Commons requires one of them)."""
    text = raw if raw.strip() else params.get("source", "").encode()
    if not text.strip():
        raise ApiError(400, "parse_exception", NO_SEARCH_BODY)
    return json_object(text, "tasks/_search")


def search(service: ApiContext, raw: bytes, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    body = _search_body(raw, params)
    records = [public_record(record) for record in service.tasks.list(limit=None)]
    try:
        return 200, search_tasks(records, body, params)
    except QueryError as error:
        raise ApiError(400, error.kind, str(error)) from None


def cancel_task(service: ApiContext, task_id: str) -> tuple[int, dict[str, Any]]:
    """A batch prediction's remote job is cancelled with the connector's cancel action; an ingestion
    waiting or running here (our addition to ML Commons) stops and becomes CANCELLED."""
    record = task_record(service, task_id, CANCEL_NOT_FOUND)
    if record.get("task_type") == "BATCH_PREDICTION":
        return service.predictions.cancel(record)
    if record.get("task_type") != "BATCH_INGEST":
        raise bad_request(NO_BATCH_JOB)
    if not service.ingestions.cancel(task_id, service.settings.cancel_wait):
        state = record["state"]
        raise bad_request(f"task {task_id} is {state}: only a waiting or running ingestion can be cancelled")
    return 200, {"status": "OK"}

"""The ML Commons API behind `mlbatch serve-api`: its stores, its background work, and one handler
per endpoint (routes in `pipelines.rest_api.routes`).

`MlService.handle(method, path, query, body)` answers one request: the handlers of
`pipelines.rest_api.tasks_api` (ingestion and tasks) and `pipelines.rest_api.objects_api`
(connectors, models, batch prediction), every refusal as ML Commons' error body. Its
background work is the ingestion queue (`pipelines.rest_api.ingest_queue`) and the batch
prediction poller (`pipelines.rest_api.predictions`); `start` first fails the tasks a previous
service process left CREATED or RUNNING, `close` stops both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from connectors.local.http_server import Reply
from connectors.ml_store import MlStore
from connectors.task_store import TaskStore
from pipelines.rest_api import objects_api, tasks_api
from pipelines.rest_api.api_errors import ApiError
from pipelines.rest_api.context import ApiContext, ApiSettings
from pipelines.rest_api.ingest_queue import IngestQueue
from pipelines.rest_api.predictions import Predictions
from pipelines.rest_api.routes import route

log = logging.getLogger("mlbatch")
Handler = Callable[[ApiContext, Mapping[str, str], Mapping[str, str], bytes], Reply]


_HANDLERS: dict[str, Handler] = {
    "batch_ingest": lambda service, ids, query, raw: tasks_api.batch_ingest(service, raw),
    "search_tasks": lambda service, ids, query, raw: tasks_api.search(service, raw, query),
    "get_task": lambda service, ids, query, raw: tasks_api.get_task(service, ids["task_id"]),
    "delete_task": lambda service, ids, query, raw: tasks_api.delete_task(service, ids["task_id"]),
    "cancel_task": lambda service, ids, query, raw: tasks_api.cancel_task(service, ids["task_id"]),
    "create_connector": lambda service, ids, query, raw: objects_api.create_connector(service, raw),
    "get_connector": lambda service, ids, query, raw: objects_api.get_connector(service, ids["connector_id"]),
    "delete_connector": lambda service, ids, query, raw: objects_api.delete_connector(
        service, ids["connector_id"]
    ),
    "register_model": lambda service, ids, query, raw: objects_api.register_model(
        service, raw, query.get("deploy") == "true"
    ),
    "get_model": lambda service, ids, query, raw: objects_api.get_model(service, ids["model_id"]),
    "delete_model": lambda service, ids, query, raw: objects_api.delete_model(service, ids["model_id"]),
    "deploy_model": lambda service, ids, query, raw: objects_api.deploy_model(service, ids["model_id"], True),
    "undeploy_model": lambda service, ids, query, raw: objects_api.deploy_model(
        service, ids["model_id"], False
    ),
    "batch_predict": lambda service, ids, query, raw: objects_api.batch_predict(
        service, ids["model_id"], raw
    ),
}


class MlService:
    """The stores and background work of one `serve-api` process, and its request handler."""

    def __init__(self, settings: ApiSettings, tasks: TaskStore, objects: MlStore) -> None:
        self.context = ApiContext(
            settings,
            tasks,
            objects,
            IngestQueue(tasks, settings.options, settings.max_running, settings.max_queued),
            Predictions(tasks, objects, settings.poll_interval, settings.trusted_endpoints),
        )

    def start(self) -> None:
        """Fail what a previous service process left unfinished, then start polling batch jobs."""
        for task_id in self.context.tasks.settle_orphans():
            log.warning("task %s: FAILED, the process running it is gone", task_id)
        self.context.predictions.start()

    def close(self) -> None:
        """Stop polling, stop the ingestions (running: interrupted, waiting: failed)."""
        self.context.predictions.close()
        self.context.ingestions.close()

    def handle(self, method: str, path: str, query: Mapping[str, str], raw: bytes) -> Reply:
        """The answer to one request (ML Commons' error body for a refusal)."""
        try:
            found = route(method, path)
            return _HANDLERS[found.handler](self.context, found.ids, query, raw)
        except ApiError as error:
            return error.reply()

    def describe(self) -> dict[str, Any]:
        """What `serve-api` announces on start (no secret)."""
        settings = self.context.settings
        return {
            "max_running": settings.max_running,
            "max_queued": settings.max_queued,
            "tasks": str(self.context.tasks.path),
            "objects": str(self.context.objects.path),
        }

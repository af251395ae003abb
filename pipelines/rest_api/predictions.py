"""Batch prediction behind `POST /_plugins/_ml/models/{id}/_batch_predict` (the launcher, as a service).

`Predictions.submit` sends the model's connector's `batch_predict` action and records a
BATCH_PREDICTION task with the job's answer as `remote_job` (the same `BatchJob` calls as
`mlbatch predict`); a background thread then polls every waiting job with the connector's
status action every `poll_interval` seconds and records its state, and `cancel` calls the
cancel action. The connector — a stored one the model names, or the model's own — is read
with its credential from the object store at each call, so no record ever holds a secret.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from connectors.batch_predict.batch_actions import job_action, remote_job_parameters
from connectors.batch_predict.connector import Connector, ConnectorError, parse_connector
from connectors.batch_predict.job_calls import FINAL_STATES, TASK_TYPE, BatchJob, RecordChange
from connectors.batch_predict.job_status import TERMINAL_STATES
from connectors.batch_predict.remote_call import RemoteCallError
from connectors.ml_store import MlStore, ObjectNotFound
from connectors.secret_box import SecretBoxError
from connectors.task_store import SERVICE_ROLE, TaskNotFound, TaskStore, this_process
from pipelines.rest_api.api_errors import ApiError, bad_request, internal_error, not_found
from pipelines.rest_api.confinement import untrusted_message, untrusted_url

log = logging.getLogger("mlbatch")
CANCEL_FAILED = "Couldn't cancel the transform job. Please try again"


def model_connector(objects: MlStore, model_id: str, require_batch: bool = True) -> Connector:
    """The connector of a remote model, with its credential (ApiError when there is none)."""
    try:
        model = objects.get("model", model_id)
        if model.get("connector_id"):
            body = objects.get("connector", model["connector_id"])
            credential = objects.credential("connector", model["connector_id"])
        else:
            body, credential = model.get("connector") or {}, objects.credential("model", model_id)
    except ObjectNotFound as missing:
        raise not_found(str(missing)) from None
    except SecretBoxError as error:
        raise internal_error(str(error)) from None
    try:
        return parse_connector({**body, "credential": credential}, require_batch=require_batch)
    except ConnectorError as error:
        raise bad_request(f"model {model_id}: {error}") from None


class Predictions:
    """Submit, poll and cancel the remote batch jobs of registered models."""

    def __init__(
        self, tasks: TaskStore, objects: MlStore, poll_interval: float, trusted_endpoints: tuple[str, ...]
    ) -> None:
        self._tasks, self._objects, self._interval = tasks, objects, poll_interval
        self._trusted = trusted_endpoints
        self._unpollable: set[str] = set()  # tasks whose poll failed on our side: warned about once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="mlbatch-batch-poll", daemon=True)

    def _apply(self, task_id: str, change: RecordChange) -> dict[str, Any]:
        return self._tasks.update(task_id, drop=change.drop, **change.fields)

    def submit(self, model_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Start the model's batch job; the task record (FAILED with the service's error if refused).
        ApiError (400) before anything is sent when the connector's URLs, filled with these
        parameters, are not trusted, or when the job could never be polled (no status action)."""
        connector = model_connector(self._objects, model_id)
        untrusted = untrusted_url(connector, parameters, self._trusted)
        if untrusted is not None:
            raise bad_request(untrusted_message(untrusted))
        try:
            job_action(connector, "batch_predict_status")
        except ConnectorError as error:
            raise bad_request(str(error)) from None
        job = BatchJob(connector)
        task = self._tasks.create(
            TASK_TYPE,
            owner=this_process(SERVICE_ROLE),
            model_id=model_id,
            input_type="REMOTE",
            is_async=True,
            **job.new_record_fields(parameters),
        )
        change = job.submit(parameters)
        if "state" not in change.fields and not change.fields.get("remote_job"):
            change = RecordChange({"state": "FAILED", "error": "the service answered without a job"})
        return self._apply(task["task_id"], change)

    @staticmethod
    def waiting(record: dict[str, Any]) -> bool:
        """A batch prediction of a registered model whose job has not ended."""
        return (
            record.get("task_type") == TASK_TYPE
            and record.get("state") not in FINAL_STATES
            and bool(record.get("model_id"))
            and bool(record.get("remote_job"))
        )

    def refresh(self, record: dict[str, Any]) -> dict[str, Any]:
        """Poll one job once and record its state. A job whose model or connector is gone or wrong
        becomes FAILED; ApiError (500) when the service cannot poll it now (a master key that opens
        nothing, a connector without a status action, as ML Commons' UnsupportedOperationException)."""
        try:
            job = self._job_of(record)
        except ApiError as error:
            if error.status >= 500:
                raise
            return self._tasks.update(record["task_id"], state="FAILED", error=f"cannot poll: {error.reason}")
        try:
            change = job.poll(record)
        except ConnectorError as error:
            raise ApiError(500, "unsupported_operation_exception", str(error)) from None
        return self._apply(record["task_id"], change)

    def _job_of(self, record: dict[str, Any]) -> BatchJob:
        """The calls of a task's job, its URLs checked again with the job's parameters (the
        request's and the service's answer's: the status and cancel calls are filled with both)."""
        connector = model_connector(self._objects, record["model_id"])
        parameters = {**record.get("parameters", {}), **remote_job_parameters(record.get("remote_job") or {})}
        untrusted = untrusted_url(connector, parameters, self._trusted)
        if untrusted is not None:
            raise bad_request(untrusted_message(untrusted))
        return BatchJob(connector)

    def cancel(self, record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Call the job's cancel action; ML Commons' answer (`{"status": "OK"}`)."""
        if record["state"] in TERMINAL_STATES or "remote_job" not in record:
            raise bad_request(
                f"task {record['task_id']} is {record['state']}: there is no running job to cancel"
            )
        job = self._job_of(record)
        try:
            change = job.cancel(record)
        except (ConnectorError, RemoteCallError) as error:
            raise internal_error(f"{CANCEL_FAILED}: {error}") from None
        self._apply(record["task_id"], change)
        return 200, {"status": "OK"}

    def poll_once(self) -> None:
        """Poll every job of this service's models that has not ended."""
        for record in self._tasks.list(limit=None):
            if self.waiting(record):
                try:
                    self.refresh(record)
                except TaskNotFound:  # deleted meanwhile
                    continue
                except ApiError as error:  # this job cannot be polled now; the others can
                    if record["task_id"] not in self._unpollable:
                        self._unpollable.add(record["task_id"])
                        log.warning("task %s: cannot poll its batch job: %s", record["task_id"], error.reason)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception as error:  # a busy store: the next round polls again
                log.warning("polling batch jobs failed: %s: %s", type(error).__name__, error)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

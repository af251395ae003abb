"""`MLBatchPredictOperator`: submit a batch job from an ML Commons connector and wait for it.

The operator renders the connector's `batch_predict` action with the (templated) parameters and
submits it once. By default it then defers to `MLBatchJobTrigger`, which polls the job in the
triggerer while no worker slot is held; with `deferrable=False` it polls in the worker. Either
way the final BATCH_PREDICTION task record is the task's return value (XCom `return_value`),
and its `remote_job` — the service's job with `output_file_id`, `OutputDataConfig` and the
like — is pushed as XCom `remote_job` for `MLBatchIngestOperator`. A job that ends FAILED,
EXPIRED, CANCELLED or UNREACHABLE fails the task. `on_kill` (the worker-side kill of a task
polling in the worker) cancels the remote job, as soon as it is submitted when the kill came
during the submit call; the trigger does the same when a user kills a deferred task.
"""

from __future__ import annotations

import ast
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from logging import Logger
from typing import Any

import orjson
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from connectors.batch_predict.connector import ConnectorError
from connectors.batch_predict.job_calls import FINAL_STATES, BatchJob
from connectors.batch_predict.job_status import TERMINAL_STATES, service_status
from connectors.batch_predict.remote_call import RemoteCallError
from pipelines.airflow_provider.hooks import ConnectorSource, MLBatchHook
from pipelines.airflow_provider.triggers import MLBatchJobTrigger

REMOTE_JOB_KEY = "remote_job"


def job_fields(value: Any, name: str) -> Any:
    """A job given as a dict, or as the text a template renders it to (JSON or a Python dict's repr)."""
    if not isinstance(value, str):
        return value
    with contextlib.suppress(ValueError, SyntaxError):
        return json.loads(value)
    with contextlib.suppress(ValueError, SyntaxError):
        return ast.literal_eval(value)
    raise AirflowFailException(f"mlbatch: {name} is text that is neither JSON nor a dict: {value[:80]!r}")


def finished(context: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """Push the job's `remote_job`; the record when the job COMPLETED, else AirflowException."""
    context["ti"].xcom_push(key=REMOTE_JOB_KEY, value=record.get("remote_job"))
    if record["state"] == "COMPLETED":
        return record
    remote_job = record.get("remote_job") or {}
    status = service_status(remote_job)
    detail = f": {record['error']}" if record.get("error") else ""
    if remote_job.get("errors"):  # the service's own reasons (OpenAI: {"data": [{"line", "message"}]})
        detail += f"; the service says: {orjson.dumps(remote_job['errors']).decode()[:500]}"
    raise AirflowException(
        f"batch job task {record['task_id']} ended {record['state']} (service status: {status}){detail}"
    )


def polled(job: BatchJob, record: dict[str, Any], log: Logger) -> dict[str, Any]:
    """`record` after one status poll in the worker (a connector problem is an AirflowException)."""
    try:
        record = job.poll(record).applied(record)
    except ConnectorError as error:
        raise AirflowException(f"batch job task {record['task_id']}: {error}") from None
    log.info("mlbatch task %s: %s", record["task_id"], record["state"])
    return record


class MLBatchPredictOperator(BaseOperator):
    """Submit a remote batch job (OpenAI, SageMaker, Bedrock, Cohere, …) and wait until it ends.

    :param connector: the connector JSON as a dict, a JSON file path, or a packaged blueprint's
        name (`openai_batch`, `sagemaker_batch_transform`, `bedrock_batch_inference`, `cohere_embed_job`)
    :param parameters: request parameters merged over the connector's (`input_file_id`, …)
    :param conn_id: Airflow connection holding the connector's `credential` (an `aws` connection
        for `aws_sigv4` connectors; else its password, or its extra `{"credential": {...}}`)
    :param deferrable: wait in the triggerer (default) instead of a worker slot
    :param poll_interval: seconds between status polls
    :param timeout: seconds to wait for the job before the task fails (None: no limit)
    :param partial_is_failure: treat a `partiallyCompleted` job as FAILED
    """

    template_fields: Sequence[str] = ("connector", "parameters", "conn_id")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        connector: ConnectorSource,
        parameters: dict[str, Any] | None = None,
        conn_id: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        partial_is_failure: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connector = connector
        self.parameters = parameters or {}
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.partial_is_failure = partial_is_failure
        self._job: BatchJob | None = None
        self._record: dict[str, Any] | None = None
        self._killed = False

    def _batch_job(self) -> BatchJob:
        return MLBatchHook(self.conn_id).batch_job(self.connector, self.partial_is_failure)

    def execute(self, context: Any) -> dict[str, Any]:
        job = self._batch_job()
        record = job.new_record(self.parameters)
        record = job.submit(self.parameters).applied(record)
        if record["state"] == "FAILED":
            raise AirflowException(f"batch job submit failed: {record['error']}")
        self._job, self._record = job, record
        if self._killed:  # SIGTERM came during the submit call, before the job had an id
            self.on_kill()
            record = self._record
        self.log.info(
            "mlbatch task %s: submitted, remote job %s", record["task_id"], record.get("remote_job")
        )
        context["ti"].xcom_push(key=REMOTE_JOB_KEY, value=record.get("remote_job"))
        if self.deferrable:
            self.defer(
                trigger=MLBatchJobTrigger(
                    connector=self.connector,
                    record=record,
                    conn_id=self.conn_id,
                    poll_interval=self.poll_interval,
                    partial_is_failure=self.partial_is_failure,
                ),
                method_name="execute_complete",
                timeout=None if self.timeout is None else timedelta(seconds=self.timeout),
            )
        return finished(context, self._wait_here(job, record))

    def _wait_here(self, job: BatchJob, record: dict[str, Any]) -> dict[str, Any]:
        """Poll in the worker (deferrable=False) until a final state or the timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while record["state"] not in FINAL_STATES:
            if deadline is not None and time.monotonic() >= deadline:
                raise AirflowException(
                    f"batch job task {record['task_id']}: still {record['state']} after {self.timeout} s"
                )
            time.sleep(self.poll_interval)
            record = self._record = polled(job, record, self.log)
        return record

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the final record decides the task's outcome."""
        return finished(context, event["record"])

    def on_kill(self) -> None:
        """The task was killed in the worker: cancel the remote job, or once it is submitted.

        Airflow 3 calls this from its SIGTERM handler and then lets `execute` go on (the
        supervisor sends SIGKILL later), so a kill during the submit call is remembered."""
        self._killed = True
        if self._job is None or self._record is None or self._record["state"] in TERMINAL_STATES:
            return
        try:
            self._record = self._job.cancel(self._record).applied(self._record)
        except (ConnectorError, RemoteCallError) as error:
            self.log.warning("mlbatch task %s: cancel failed: %s", self._record["task_id"], error)
            return
        self.log.info("mlbatch task %s: cancel sent, now %s", self._record["task_id"], self._record["state"])

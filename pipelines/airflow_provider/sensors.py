"""`MLBatchTaskSensor`: wait for a batch job submitted elsewhere (another DAG, `mlbatch predict
submit`, the service's own console) until it ends.

Given the connector and the job (`remote_job`: the service's answer or just its id fields, such
as `{"id": "batch_…"}` for OpenAI or `{"TransformJobName": …}` for SageMaker), it polls the
connector's status action: deferred to `MLBatchJobTrigger` by default, or by `poke` in the
worker with `deferrable=False`. COMPLETED succeeds with the final task record as the return
value and `remote_job` in XCom; FAILED, EXPIRED, CANCELLED and UNREACHABLE fail the task.
Killing the sensor never cancels the job: it belongs to whoever submitted it. In `reschedule`
mode each poke starts afresh, so failed polls are not counted across pokes (the sensor's own
`timeout` ends a wait on an unreachable service).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException

from connectors.batch_predict.job_calls import FINAL_STATES, BatchJob
from pipelines.airflow_provider.hooks import ConnectorSource, MLBatchHook
from pipelines.airflow_provider.predict import finished, job_fields, polled
from pipelines.airflow_provider.triggers import MLBatchJobTrigger


class MLBatchTaskSensor(BaseSensorOperator):
    """Wait for a remote batch job to end.

    :param connector: the connector JSON (dict, file path or packaged blueprint name)
    :param remote_job: the job as the service describes it (at least its id field)
    :param conn_id: Airflow connection holding the connector's credential
    :param parameters: request parameters the status action needs beyond the job's own fields
    :param deferrable: wait in the triggerer (default)
    :param partial_is_failure: treat a `partiallyCompleted` job as FAILED
    """

    template_fields: Sequence[str] = ("connector", "remote_job", "parameters", "conn_id")

    def __init__(
        self,
        *,
        connector: ConnectorSource,
        remote_job: dict[str, Any],
        conn_id: str | None = None,
        parameters: dict[str, Any] | None = None,
        deferrable: bool = True,
        partial_is_failure: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connector = connector
        self.remote_job = remote_job
        self.conn_id = conn_id
        self.parameters = parameters or {}
        self.deferrable = deferrable
        self.partial_is_failure = partial_is_failure
        self._record: dict[str, Any] | None = None

    def _job(self) -> BatchJob:
        return MLBatchHook(self.conn_id).batch_job(self.connector, self.partial_is_failure)

    def _watched(self, job: BatchJob) -> dict[str, Any]:
        """The task record of the watched job: RUNNING, with the given `remote_job`."""
        if self._record is None:
            self.remote_job = job_fields(self.remote_job, "remote_job")
            if not isinstance(self.remote_job, dict) or not self.remote_job:
                raise AirflowException(
                    'mlbatch sensor: remote_job must be the job\'s fields, e.g. {"id": ...}'
                )
            record = job.new_record(self.parameters)
            self._record = {**record, "state": "RUNNING", "remote_job": dict(self.remote_job)}
        return self._record

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        job = self._job()
        self.defer(
            trigger=MLBatchJobTrigger(
                connector=self.connector,
                record=self._watched(job),
                conn_id=self.conn_id,
                poll_interval=self.poke_interval,
                partial_is_failure=self.partial_is_failure,
                cancel_on_kill=False,  # the job belongs to whoever submitted it
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Any) -> PokeReturnValue | bool:
        job = self._job()
        record = self._record = polled(job, self._watched(job), self.log)
        if record["state"] not in FINAL_STATES:
            return False
        return PokeReturnValue(is_done=True, xcom_value=finished(context, record))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        return finished(context, event["record"])

"""The trigger of the mlbatch provider: waits on a remote batch job without holding a worker slot.

`MLBatchJobTrigger` runs in Airflow's triggerer. It polls the connector's status action (given,
or derived from its `batch_predict` URL) every `poll_interval` seconds, the blocking HTTP or
SigV4 call on a thread so the triggerer's event loop never waits on it, and fires one event with
the final task record when the job reaches a final state (COMPLETED, FAILED, CANCELLED, EXPIRED,
or UNREACHABLE after repeated failed polls). Its keyword arguments — the connector as the DAG
gave it, the connection id, the task record — hold no credential the DAG file did not: the
credential is read from the connection when the trigger starts. When a user marks the waiting
task failed or clears it, `on_kill` cancels the remote job — unless `cancel_on_kill` is off, as
for a sensor watching a job it did not submit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from connectors.batch_predict.connector import ConnectorError
from connectors.batch_predict.job_calls import FINAL_STATES, BatchJob, RecordChange
from connectors.batch_predict.job_status import service_status
from connectors.batch_predict.remote_call import RemoteCallError
from pipelines.airflow_provider.connections import ConnectionSettingsError
from pipelines.airflow_provider.hooks import ConnectorSource, MLBatchHook

CLASSPATH = "pipelines.airflow_provider.triggers.MLBatchJobTrigger"


def failed(record: dict[str, Any], error: str) -> dict[str, Any]:
    return RecordChange({"state": "FAILED", "error": error}).applied(record)


class MLBatchJobTrigger(BaseTrigger):
    """Poll one batch job until it ends; the event's payload is `{"record": <final task record>}`."""

    def __init__(
        self,
        connector: ConnectorSource,
        record: dict[str, Any],
        conn_id: str | None = None,
        poll_interval: float = 30.0,
        partial_is_failure: bool = False,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.connector = connector
        self.record = record
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.partial_is_failure = partial_is_failure
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "connector": self.connector,
            "record": self.record,
            "conn_id": self.conn_id,
            "poll_interval": self.poll_interval,
            "partial_is_failure": self.partial_is_failure,
            "cancel_on_kill": self.cancel_on_kill,
        }

    async def _job(self) -> BatchJob:
        connector = await MLBatchHook(self.conn_id).aconnector(self.connector)
        return BatchJob(connector, self.partial_is_failure)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            job = await self._job()
        except (ConnectorError, ConnectionSettingsError) as error:
            yield TriggerEvent({"record": failed(self.record, str(error))})
            return
        while True:
            try:
                change = await asyncio.to_thread(job.poll, self.record)
            except ConnectorError as error:
                yield TriggerEvent({"record": failed(self.record, str(error))})
                return
            self.record = change.applied(self.record)
            status = service_status(self.record.get("remote_job") or {})
            self.log.info(
                "mlbatch task %s: %s (service status: %s)",
                self.record["task_id"],
                self.record["state"],
                status,
            )
            if self.record["state"] in FINAL_STATES:
                yield TriggerEvent({"record": self.record})
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The user killed the waiting task: cancel the remote job (unless it only watches the job)."""
        if not self.cancel_on_kill or self.record["state"] in FINAL_STATES:
            return
        try:
            job = await self._job()
            change = await asyncio.to_thread(job.cancel, self.record)
        except (ConnectorError, ConnectionSettingsError, RemoteCallError) as error:
            self.log.warning("mlbatch task %s: cancel failed: %s", self.record["task_id"], error)
            return
        self.record = change.applied(self.record)
        self.log.info("mlbatch task %s: cancel sent, now %s", self.record["task_id"], self.record["state"])

"""Submit, poll and cancel remote batch jobs as BATCH_PREDICTION tasks in the task store (batch predict).

`submit` records the answer of the connector's `batch_predict` action as the task's
`remote_job`; from then on the task waits on the remote job and no local process owns it
(see `connectors.task_store`). `refresh` polls the status action (given or derived) and
`cancel` calls the cancel action; the calls themselves are `connectors.batch_predict.job_calls`.
Records never hold credentials: the connector is kept by path and re-read when the job is polled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connectors.batch_predict.connector import Connector, ConnectorError, parse_connector
from connectors.batch_predict.job_calls import TASK_TYPE, BatchJob, RecordChange
from connectors.batch_predict.job_status import TERMINAL_STATES
from connectors.task_store import TaskStore

SUBMIT_INTERRUPTED = "interrupted while submitting; the service may have started the job"


def load_connector(path: str | Path) -> Connector:
    """Read and check a connector JSON file (ConnectorError naming the problem)."""
    try:
        body = orjson.loads(Path(path).read_bytes())
    except OSError as error:
        raise ConnectorError(f"connector {path}: cannot read ({error.strerror or error})") from None
    except orjson.JSONDecodeError as error:
        raise ConnectorError(f"connector {path}: not valid JSON ({error})") from None
    return parse_connector(body)


@dataclass
class Launcher:
    """The batch-predict operations over one task store."""

    store: TaskStore
    partial_is_failure: bool = False

    def _apply(self, task_id: str, change: RecordChange) -> dict[str, Any]:
        return self.store.update(task_id, drop=change.drop, **change.fields)

    def submit(self, connector: Connector, connector_path: str, parameters: dict[str, Any]) -> dict[str, Any]:
        job = BatchJob(connector)
        fields = job.new_record_fields(parameters)
        fields["connector"]["path"] = str(Path(connector_path).resolve())
        task = self.store.create(TASK_TYPE, **fields)
        try:
            change = job.submit(parameters)
        except KeyboardInterrupt:
            self.store.update(task["task_id"], state="FAILED", error=SUBMIT_INTERRUPTED)
            raise
        return self._apply(task["task_id"], change)

    def _prediction(self, task_id: str, connector_path: str | None) -> tuple[dict[str, Any], BatchJob]:
        record = self.store.get(task_id)
        if record.get("task_type") != TASK_TYPE:
            raise ConnectorError(
                f"task {task_id} is a {record.get('task_type')} task, not a batch prediction"
            )
        connector = load_connector(connector_path or record["connector"]["path"])
        return record, BatchJob(connector, self.partial_is_failure)

    def refresh(self, task_id: str, connector_path: str | None = None) -> dict[str, Any]:
        """Poll the service once and record the job's state."""
        record, job = self._prediction(task_id, connector_path)
        return self._apply(task_id, job.poll(record))

    def cancel(self, task_id: str, connector_path: str | None = None) -> dict[str, Any]:
        """Ask the service to stop the job; the state follows its answer (CANCELLING when it says nothing)."""
        record, job = self._prediction(task_id, connector_path)
        if record["state"] in TERMINAL_STATES:
            return record
        return self._apply(task_id, job.cancel(record))

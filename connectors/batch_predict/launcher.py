"""Submit, poll and cancel remote batch jobs as BATCH_PREDICTION tasks (the batch-predict flow).

`submit` renders the connector's `batch_predict` action with the merged parameters, sends it
once and records the answer as the task's `remote_job`; from then on the task waits on the
remote job and no local process owns it (see `connectors.task_store`). `refresh` calls the
status action (given or derived), merges the answer into `remote_job` and maps it to a task
state; after
`MAX_POLL_FAILURES` failed polls in a row the task is UNREACHABLE. `cancel` calls the cancel
action and records CANCELLING or CANCELLED from the answer. Records never hold credentials:
the connector is kept by path and re-read when the job is polled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from connectors.batch_predict.batch_actions import job_action, remote_job_parameters
from connectors.batch_predict.connector import Connector, ConnectorError, parse_connector
from connectors.batch_predict.job_status import TERMINAL_STATES, map_status, service_status
from connectors.batch_predict.remote_call import RemoteCallError, call, render_action
from connectors.batch_predict.templating import merge_parameters
from connectors.redact import Redactor, credential_secrets
from connectors.retry import RetryPolicy
from connectors.task_store import TaskStore

TASK_TYPE = "BATCH_PREDICTION"
MAX_POLL_FAILURES = 10
SUBMIT_INTERRUPTED = "interrupted while submitting; the service may have started the job"
STATUS_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.5, max_backoff=5.0)
log = logging.getLogger("mlbatch")


def load_connector(path: str | Path) -> Connector:
    """Read and check a connector JSON file (ConnectorError naming the problem)."""
    try:
        body = orjson.loads(Path(path).read_bytes())
    except OSError as error:
        raise ConnectorError(f"connector {path}: cannot read ({error.strerror or error})") from None
    except orjson.JSONDecodeError as error:
        raise ConnectorError(f"connector {path}: not valid JSON ({error})") from None
    return parse_connector(body)


def redactor_for(connector: Connector) -> Redactor:
    return Redactor.of(credential_secrets(connector.credential))


@contextmanager
def _redacted(redactor: Redactor) -> Iterator[None]:
    """Re-raise remote and connector errors with the connector's secrets masked."""
    try:
        yield
    except RemoteCallError as error:
        raise RemoteCallError(error.status, redactor.text(str(error))) from None
    except ConnectorError as error:
        raise ConnectorError(redactor.text(str(error))) from None


@dataclass
class Launcher:
    """The batch-predict operations over one task store."""

    store: TaskStore
    partial_is_failure: bool = False

    def submit(self, connector: Connector, connector_path: str, parameters: dict[str, Any]) -> dict[str, Any]:
        redactor = redactor_for(connector)
        task = self.store.create(
            TASK_TYPE,
            function_name="REMOTE",
            connector={
                "name": connector.name,
                "protocol": connector.protocol,
                "path": str(Path(connector_path).resolve()),
            },
            parameters=redactor.value(parameters),
        )
        action = connector.action("batch_predict")
        assert action is not None  # parse_connector guarantees it
        try:
            with _redacted(redactor):
                request = render_action(connector, action, merge_parameters(connector.parameters, parameters))
                answer = call(connector, request)
        except (ConnectorError, RemoteCallError) as error:
            return self.store.update(task["task_id"], state="FAILED", error=str(error))
        except KeyboardInterrupt:
            self.store.update(task["task_id"], state="FAILED", error=SUBMIT_INTERRUPTED)
            raise
        log.info("submitted the batch job: %s", redactor.text(orjson.dumps(answer).decode())[:300])
        return self.store.update(task["task_id"], drop=("owner",), remote_job=redactor.value(answer))

    def _job_parameters(self, connector: Connector, record: dict[str, Any]) -> dict[str, str]:
        request = {**record.get("parameters", {}), **remote_job_parameters(record.get("remote_job") or {})}
        return merge_parameters(connector.parameters, request)

    def _prediction(self, task_id: str, connector_path: str | None) -> tuple[dict[str, Any], Connector]:
        record = self.store.get(task_id)
        if record.get("task_type") != TASK_TYPE:
            raise ConnectorError(
                f"task {task_id} is a {record.get('task_type')} task, not a batch prediction"
            )
        return record, load_connector(connector_path or record["connector"]["path"])

    def refresh(self, task_id: str, connector_path: str | None = None) -> dict[str, Any]:
        """Poll the service once and record the job's state."""
        record, connector = self._prediction(task_id, connector_path)
        redactor = redactor_for(connector)
        action = job_action(connector, "batch_predict_status")
        try:
            with _redacted(redactor):
                request = render_action(connector, action, self._job_parameters(connector, record))
                answer = call(connector, request, retry=STATUS_RETRY)
        except RemoteCallError as error:
            failures = record.get("poll_failures", 0) + 1
            state = "UNREACHABLE" if failures > MAX_POLL_FAILURES else record["state"]
            log.warning("status poll %d failed: %s", failures, error)
            return self.store.update(task_id, state=state, poll_failures=failures, error=str(error))
        remote_job = redactor.value({**(record.get("remote_job") or {}), **answer})
        mapped = map_status(remote_job, self.partial_is_failure)
        fields: dict[str, Any] = {"state": mapped.state, "remote_job": remote_job, "poll_failures": 0}
        if mapped.warning:
            fields["warning"] = mapped.warning
        return self.store.update(task_id, drop=("error",), **fields)

    def cancel(self, task_id: str, connector_path: str | None = None) -> dict[str, Any]:
        """Ask the service to stop the job; the state follows its answer (CANCELLING when it says nothing)."""
        record, connector = self._prediction(task_id, connector_path)
        if record["state"] in TERMINAL_STATES:
            return record
        redactor = redactor_for(connector)
        action = job_action(connector, "cancel_batch_predict")
        with _redacted(redactor):
            request = render_action(connector, action, self._job_parameters(connector, record))
            answer = call(connector, request, retry=STATUS_RETRY)
        remote_job = redactor.value({**(record.get("remote_job") or {}), **answer})
        state = map_status(answer).state if service_status(answer) else "CANCELLING"
        return self.store.update(
            task_id, state="CANCELLING" if state == "RUNNING" else state, remote_job=remote_job
        )

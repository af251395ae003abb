"""One remote batch job's three calls — submit, poll, cancel — as changes to its task record.

`BatchJob` renders the connector's `batch_predict`, status and cancel actions with the merged
parameters, sends them, and says how the task record changes: the fields to set and the
fields to drop. It keeps no state, so the same code serves the CLI's SQLite task store
(`connectors.batch_predict.launcher`) and an Airflow trigger whose record travels in XCom
(`pipelines.airflow_provider`). Every answer and error is redacted with the connector's
credentials before it leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.batch_predict.batch_actions import job_action, remote_job_parameters
from connectors.batch_predict.connector import Connector, ConnectorError
from connectors.batch_predict.job_status import TERMINAL_STATES, map_status, service_status
from connectors.batch_predict.remote_call import RemoteCallError, call, render_action
from connectors.batch_predict.templating import merge_parameters
from connectors.redact import Redactor, credential_secrets
from connectors.retry import RetryPolicy
from connectors.task_store import new_task_id, now_millis

TASK_TYPE = "BATCH_PREDICTION"
MAX_POLL_FAILURES = 10
FINAL_STATES = TERMINAL_STATES | {"UNREACHABLE"}  # no more polling after these
STATUS_RETRY = RetryPolicy(max_retries=3, initial_backoff=0.5, max_backoff=5.0)
log = logging.getLogger("mlbatch")


@dataclass(frozen=True)
class RecordChange:
    """What one call changes in a task record: fields set, fields removed."""

    fields: dict[str, Any]
    drop: tuple[str, ...] = ()

    def applied(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """`record` with this change, stamped now (for records kept outside the task store)."""
        changed = {**record, **self.fields, "last_update_time": now_millis()}
        for name in self.drop:
            changed.pop(name, None)
        return changed


def redactor_for(connector: Connector) -> Redactor:
    return Redactor.of(credential_secrets(connector.credential))


@contextmanager
def redacted_errors(redactor: Redactor) -> Iterator[None]:
    """Re-raise remote and connector errors with the connector's secrets masked."""
    try:
        yield
    except RemoteCallError as error:
        raise RemoteCallError(error.status, redactor.text(str(error))) from None
    except ConnectorError as error:
        raise ConnectorError(redactor.text(str(error))) from None


@dataclass(frozen=True)
class BatchJob:
    """The calls of one connector's batch job; `partial_is_failure` makes partiallyCompleted FAILED."""

    connector: Connector
    partial_is_failure: bool = False
    redactor: Redactor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "redactor", redactor_for(self.connector))

    def new_record_fields(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of a new BATCH_PREDICTION task for this connector (no credentials)."""
        return {
            "function_name": "REMOTE",
            "connector": {"name": self.connector.name, "protocol": self.connector.protocol},
            "parameters": self.redactor.value(dict(parameters)),
        }

    def new_record(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """A CREATED task record kept by the caller (an Airflow task's XCom), not by the task store."""
        stamp = now_millis()
        return {
            "task_id": new_task_id(),
            "task_type": TASK_TYPE,
            "state": "CREATED",
            "create_time": stamp,
            "last_update_time": stamp,
            **self.new_record_fields(parameters),
        }

    def submit(self, parameters: Mapping[str, Any]) -> RecordChange:
        """Send the `batch_predict` action once: the job's answer becomes `remote_job`, or the task FAILED."""
        action = self.connector.action("batch_predict")
        assert action is not None  # parse_connector guarantees it
        try:
            with redacted_errors(self.redactor):
                request = render_action(
                    self.connector, action, merge_parameters(self.connector.parameters, dict(parameters))
                )
                answer = call(self.connector, request)
        except (ConnectorError, RemoteCallError) as error:
            return RecordChange({"state": "FAILED", "error": str(error)})
        log.info("submitted the batch job: %s", self.redactor.text(orjson.dumps(answer).decode())[:300])
        return RecordChange({"remote_job": self.redactor.value(answer)}, drop=("owner",))

    def _job_parameters(self, record: Mapping[str, Any]) -> dict[str, str]:
        request = {**record.get("parameters", {}), **remote_job_parameters(record.get("remote_job") or {})}
        return merge_parameters(self.connector.parameters, request)

    def poll(self, record: Mapping[str, Any]) -> RecordChange:
        """Call the status action once and map the answer to a task state. A failed call keeps the
        state and counts the failure; after `MAX_POLL_FAILURES` in a row the task is UNREACHABLE."""
        action = job_action(self.connector, "batch_predict_status")
        try:
            with redacted_errors(self.redactor):
                request = render_action(self.connector, action, self._job_parameters(record))
                answer = call(self.connector, request, retry=STATUS_RETRY)
        except RemoteCallError as error:
            failures = record.get("poll_failures", 0) + 1
            state = "UNREACHABLE" if failures > MAX_POLL_FAILURES else record["state"]
            log.warning("status poll %d failed: %s", failures, error)
            return RecordChange({"state": state, "poll_failures": failures, "error": str(error)})
        remote_job = self.redactor.value({**(record.get("remote_job") or {}), **answer})
        mapped = map_status(remote_job, self.partial_is_failure)
        fields: dict[str, Any] = {"state": mapped.state, "remote_job": remote_job, "poll_failures": 0}
        if mapped.warning:
            fields["warning"] = mapped.warning
        return RecordChange(fields, drop=("error",))

    def cancel(self, record: Mapping[str, Any]) -> RecordChange:
        """Call the cancel action; the state follows its answer (CANCELLING when it says nothing)."""
        action = job_action(self.connector, "cancel_batch_predict")
        with redacted_errors(self.redactor):
            request = render_action(self.connector, action, self._job_parameters(record))
            answer = call(self.connector, request, retry=STATUS_RETRY)
        remote_job = self.redactor.value({**(record.get("remote_job") or {}), **answer})
        state = map_status(answer).state if service_status(answer) else "CANCELLING"
        state = "CANCELLING" if state == "RUNNING" else state
        return RecordChange({"state": state, "remote_job": remote_job})

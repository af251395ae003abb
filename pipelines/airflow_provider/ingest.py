"""`MLBatchIngestOperator`: run an ML Commons `_batch_ingestion` request from an Airflow task.

The request (a dict or a JSON file path, templated) gets its `${remote_job.x}` sources filled
from the `remote_job` XCom of a `MLBatchPredictOperator` task (`remote_job_from`) or from a
given `remote_job`; its `credential` from a source connection (`source_conn_id`), and the
cluster from an OpenSearch or HTTP connection (`opensearch_conn_id`, basic auth in the
connection; SigV4 with `aws_sigv4` in its extra and the keys of `cluster_aws_conn_id`). The run
is `pipelines.ingest_run.run_ingest`, the same as `mlbatch ingest`: `runner` and
`pipeline_options` go to Beam (the DirectRunner in the worker, Dask or Dataflow for scale),
`ingest_options` set any `IngestOptions` field (`create_index`, `bulk_size`, `dlq`, …). The
final BATCH_INGEST task record is the return value; FAILED (or COMPLETED_WITH_ERROR with
`fail_on_errors`) fails the task after pushing the record as XCom `task_record`. SIGTERM (the
task killed from Airflow) interrupts the run as it does `mlbatch ingest`: the task record ends
FAILED "interrupted" with the counts reached, and the dead letters so far are on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from connectors.batch_predict.batch_actions import with_remote_job_sources
from connectors.batch_predict.connector import ConnectorError
from pipelines.airflow_provider.connections import ConnectionSettingsError
from pipelines.airflow_provider.hooks import MLBatchHook
from pipelines.airflow_provider.predict import REMOTE_JOB_KEY, job_fields
from pipelines.cli_common import UsageError, read_request_body
from pipelines.ingest_options import IngestOptions, IngestOptionsError
from pipelines.ingest_run import run_ingest
from pipelines.request import RequestError, decode_body
from pipelines.task_lifecycle import interrupts_raise

RECORD_KEY = "task_record"
_REMOTE_JOB_MARK = "${remote_job."


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in os.environ for the block (boto3's default chain reads them), then restored."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def waits_on_remote_job(body: Mapping[str, Any]) -> bool:
    sources = (
        body.get("data_source", {}).get("source", []) if isinstance(body.get("data_source"), dict) else []
    )
    return any(isinstance(source, str) and _REMOTE_JOB_MARK in source for source in sources)


class MLBatchIngestOperator(BaseOperator):
    """Ingest batch-job output files into an OpenSearch k-NN index with mlbatch's Beam pipeline.

    :param request: the `_batch_ingestion` body as a dict, JSON text, or a path to its JSON file
    :param opensearch_conn_id: the cluster (`opensearch` or `http` connection)
    :param source_conn_id: connection holding the request's `credential` (aws, or openAI_key as password)
    :param cluster_aws_conn_id: AWS connection whose keys sign requests to the cluster (SigV4)
    :param remote_job_from: task id of the `MLBatchPredictOperator` whose `remote_job` fills `${remote_job.x}`
    :param remote_job: the finished job itself, instead of `remote_job_from`
    :param runner: Beam runner (`DirectRunner`, `DaskRunner`, `DataflowRunner`, …)
    :param pipeline_options: further Beam options, e.g. `["--dask_client_address=tcp://…"]`
    :param ingest_options: `IngestOptions` fields, e.g. `{"create_index": "mapping.json"}`
    :param fail_on_errors: fail the task when some documents were rejected (COMPLETED_WITH_ERROR)
    """

    template_fields: Sequence[str] = ("request", "remote_job", "pipeline_options", "ingest_options")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        request: dict[str, Any] | str,
        opensearch_conn_id: str = "opensearch_default",
        source_conn_id: str | None = None,
        cluster_aws_conn_id: str | None = None,
        remote_job_from: str | None = None,
        remote_job: dict[str, Any] | None = None,
        runner: str = "DirectRunner",
        pipeline_options: list[str] | None = None,
        ingest_options: dict[str, Any] | None = None,
        fail_on_errors: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.opensearch_conn_id = opensearch_conn_id
        self.source_conn_id = source_conn_id
        self.cluster_aws_conn_id = cluster_aws_conn_id
        self.remote_job_from = remote_job_from
        self.remote_job = remote_job
        self.runner = runner
        self.pipeline_options = pipeline_options or []
        self.ingest_options = ingest_options or {}
        self.fail_on_errors = fail_on_errors

    def _request_body(self) -> Any:
        """The request as given: a dict, JSON text (a rendered template), or a file path."""
        if isinstance(self.request, Mapping):
            return dict(self.request)
        if self.request.lstrip().startswith("{"):
            try:
                return decode_body(self.request.encode())
            except RequestError as error:
                raise UsageError(f"request: {error}") from None
        return read_request_body(self.request, "request")

    def _body(self, context: Any) -> dict[str, Any]:
        body = self._request_body()
        if not isinstance(body, dict) or not isinstance(body.get("data_source"), dict):
            raise AirflowFailException("mlbatch request: data_source must be an object")
        remote_job = job_fields(self.remote_job, "remote_job")
        if remote_job is None and self.remote_job_from:
            remote_job = context["ti"].xcom_pull(task_ids=self.remote_job_from, key=REMOTE_JOB_KEY)
        if waits_on_remote_job(body):
            if not isinstance(remote_job, dict):
                raise AirflowFailException(
                    "mlbatch request: its sources name ${remote_job.…} but no finished job was given "
                    "(set remote_job_from to the predict task's id, or remote_job)"
                )
            body = with_remote_job_sources(body, remote_job)
        if self.source_conn_id:
            source_type = str(body["data_source"].get("type", ""))
            body["credential"] = {
                **(body.get("credential") or {}),
                **MLBatchHook.request_credential(self.source_conn_id, source_type),
            }
        return body

    def _options(self) -> IngestOptions:
        beam_args = (f"--runner={self.runner}", *self.pipeline_options)
        return IngestOptions(
            **MLBatchHook.cluster(self.opensearch_conn_id), **self.ingest_options, beam_args=beam_args
        )

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            body, options = self._body(context), self._options()
            signing = (
                MLBatchHook.aws_environment(self.cluster_aws_conn_id) if self.cluster_aws_conn_id else {}
            )
        except (
            ConnectorError,
            ConnectionSettingsError,
            IngestOptionsError,
            UsageError,
            TypeError,
            AirflowNotFoundException,  # no such connection
        ) as error:
            raise AirflowFailException(f"mlbatch ingest: {error}") from None
        run_by = {"airflow": {"dag_id": self.dag_id, "task_id": self.task_id, "run_id": context["run_id"]}}
        try:
            with environment(signing), interrupts_raise():
                result = run_ingest(options, body, run_by)
        except UsageError as error:
            raise AirflowFailException(f"mlbatch ingest: {error}") from None
        record = result.record
        context["ti"].xcom_push(key=RECORD_KEY, value=record)
        if result.interrupted:
            raise AirflowException(f"ingestion task {record['task_id']} was interrupted")
        state = record["state"]
        if state == "COMPLETED" or (state == "COMPLETED_WITH_ERROR" and not self.fail_on_errors):
            self.log.info(
                "mlbatch ingestion task %s: %s, counts %s", record["task_id"], state, record.get("counts")
            )
            return record
        message = f"ingestion task {record['task_id']} ended {state}: {record.get('error', '')}"
        if state == "COMPLETED_WITH_ERROR":  # a retry would reject the same records again
            raise AirflowFailException(f"{message} (fail_on_errors; dead letters in {record.get('dlq')})")
        raise AirflowException(message)

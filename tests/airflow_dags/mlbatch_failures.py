"""DAGs of tests/test_airflow_failures.py: the mlbatch operators' unhappy paths on real Airflow.

- `mlbatch_job_waits`: one deferrable predict task (the job is watched by the trigger);
- `mlbatch_job_polls_in_worker`: the same with `deferrable=False` (the worker polls; `on_kill` cancels);
- `mlbatch_ingest_errors`: a request naming a source it does not have, and a file with one
  dead-lettered record ingested with and without `fail_on_errors`;
- `mlbatch_ingest_slow`: one document per bulk request, for a SIGTERM in the middle of a run.

Connections `mlbatch_openai` (its extra's `base_url` is the batch service) and
`mlbatch_opensearch` come from the environment; files and ids from the run conf.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from pipelines.airflow_provider.ingest import MLBatchIngestOperator
from pipelines.airflow_provider.predict import MLBatchPredictOperator

START = datetime(2026, 1, 1)
PREDICT_ARGS: dict[str, Any] = {
    "connector": "openai_batch",
    "conn_id": "mlbatch_openai",
    "parameters": {
        "input_file_id": "{{ params.input_file_id }}",
        "base_url": "{{ conn.mlbatch_openai.extra_dejson.base_url }}",
    },
    "poll_interval": 0.2,
}
INGEST_ARGS: dict[str, Any] = {
    "opensearch_conn_id": "mlbatch_opensearch",
    "ingest_options": {"create_index": "{{ params.mapping }}"},
}
FIELD_MAP = {"chapter": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"}


def ingest_request(index_name: str, field_map: dict[str, str]) -> dict[str, Any]:
    return {
        "index_name": index_name,
        "field_map": field_map,
        "data_source": {"type": "local", "source": ["{{ params.source }}"]},
    }


with DAG("mlbatch_job_waits", schedule=None, start_date=START, params={"input_file_id": Param("")}) as waits:
    MLBatchPredictOperator(task_id="predict", **PREDICT_ARGS)

with DAG(
    "mlbatch_job_polls_in_worker", schedule=None, start_date=START, params={"input_file_id": Param("")}
) as polls:
    MLBatchPredictOperator(task_id="predict", deferrable=False, **PREDICT_ARGS)

with DAG(
    "mlbatch_ingest_errors",
    schedule=None,
    start_date=START,
    params={"source": Param(""), "mapping": Param("")},
) as ingest_errors:
    MLBatchIngestOperator(
        task_id="bad_field",
        request=ingest_request("bad-field", {**FIELD_MAP, "chapter": "source[5].$.content[0]"}),
        retries=2,
        retry_delay=timedelta(seconds=0),
        **INGEST_ARGS,
    )
    MLBatchIngestOperator(
        task_id="strict",
        request=ingest_request("strict", FIELD_MAP),
        fail_on_errors=True,
        retries=2,
        retry_delay=timedelta(seconds=0),
        **INGEST_ARGS,
    )
    MLBatchIngestOperator(task_id="lenient", request=ingest_request("lenient", FIELD_MAP), **INGEST_ARGS)

with DAG(
    "mlbatch_ingest_slow",
    schedule=None,
    start_date=START,
    params={"source": Param(""), "mapping": Param("")},
) as ingest_slow:
    MLBatchIngestOperator(
        task_id="ingest",
        request=ingest_request("slow", FIELD_MAP),
        opensearch_conn_id="mlbatch_opensearch",
        ingest_options={"create_index": "{{ params.mapping }}", "bulk_size": 1, "bulk_concurrency": 1},
    )

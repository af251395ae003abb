"""`mlbatch_predict_and_ingest`: a batch embedding job, a deferred wait, ingestion, a k-NN check.

predict (OpenAI Batch API connector; waits in the triggerer) → ingest (the job's output file
joined with its input file by `custom_id` into a k-NN index) → knn_check (the index holds the
documents, and a document's own vector finds it first).

Runs against OpenAI, or offline against the services of `./run_local.sh` (`mlbatch
serve-embeddings`, `mlbatch serve-index`) by setting only connections and environment:
- connection `mlbatch_openai`: the API key as password; extra `{"base_url": ".../v1"}` for a
  service other than OpenAI (then also `OPENAI_BASE_URL` for reading its files);
- connection `mlbatch_opensearch`: the cluster (type `opensearch` or `http`);
- run conf `input_file_id`: an uploaded batch input file (purpose `batch`), and optionally
  `index_name` and `index_mapping` (a mapping JSON file: the index is created from it; its
  vector field is `text_embedding`);
- `MLBATCH_POLL_INTERVAL`: seconds between status polls (default 30).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Param, task

from pipelines.airflow_provider.hooks import MLBatchHook
from pipelines.airflow_provider.ingest import MLBatchIngestOperator
from pipelines.airflow_provider.predict import MLBatchPredictOperator
from pipelines.ingest_options import IngestOptions

OPENAI_CONN = "mlbatch_openai"
OPENSEARCH_CONN = "mlbatch_opensearch"
VECTOR_FIELD = "text_embedding"
BASE_URL = "{{ conn.mlbatch_openai.extra_dejson.get('base_url', 'https://api.openai.com/v1') }}"
REQUEST = {
    "index_name": "{{ params.index_name }}",
    "field_map": {
        "text": "source[1].$.body.input[0]",
        VECTOR_FIELD: "source[0].$.response.body.data[0].embedding",
        "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
    },
    "ingest_fields": ["source[1].$.custom_id"],
    "data_source": {
        "type": "openAI",
        "source": ["${remote_job.output_file_id}", "${remote_job.input_file_id}"],
    },
}


def knn_self_check(client: Any, index: str, field: str, indexed: int) -> dict[str, Any]:
    """The index holds at least `indexed` documents, and one document's own vector finds it first."""
    client.indices.refresh(index=index)
    count = client.count(index=index)["count"]
    if count < indexed:
        raise ValueError(f"index {index} holds {count} documents, the ingestion indexed {indexed}")
    sample = client.search(index=index, body={"size": 1, "query": {"match_all": {}}})["hits"]["hits"][0]
    query = {"size": 3, "query": {"knn": {field: {"vector": sample["_source"][field], "k": 3}}}}
    hits = client.search(index=index, body=query)["hits"]["hits"]
    best = hits[0]["_score"] if hits else None
    if not any(hit["_id"] == sample["_id"] and hit["_score"] >= best - 1e-6 for hit in hits):
        raise ValueError(f"k-NN search for document {sample['_id']}'s own vector did not find it first")
    return {"index": index, "count": count, "nearest": [hit["_id"] for hit in hits]}


with DAG(
    dag_id="mlbatch_predict_and_ingest",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["mlbatch", "example"],
    params={
        "input_file_id": Param(type="string", description="the uploaded batch input file"),
        "index_name": Param("mlbatch-airflow", type="string"),
        "index_mapping": Param("", type="string", description="a mapping JSON file; empty: the index exists"),
    },
) as dag:
    predict = MLBatchPredictOperator(
        task_id="predict",
        connector="openai_batch",
        conn_id=OPENAI_CONN,
        parameters={
            "input_file_id": "{{ params.input_file_id }}",
            "base_url": BASE_URL,
        },
        poll_interval=float(os.environ.get("MLBATCH_POLL_INTERVAL", "30")),
    )
    ingest = MLBatchIngestOperator(
        task_id="ingest",
        request=REQUEST,
        remote_job_from="predict",
        source_conn_id=OPENAI_CONN,
        opensearch_conn_id=OPENSEARCH_CONN,
        ingest_options={"create_index": "{{ params.index_mapping }}"},
    )

    @task
    def knn_check(record: dict[str, Any]) -> dict[str, Any]:
        client = IngestOptions(**MLBatchHook.cluster(OPENSEARCH_CONN)).cluster().client()
        return knn_self_check(client, record["index_name"], VECTOR_FIELD, record["counts"]["indexed"])

    predict >> ingest
    knn_check(ingest.output)

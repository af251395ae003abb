"""The seed's single-file SageMaker request, verbatim, from an S3 bucket on the moto server."""

from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data import SAGEMAKER_REQUEST, jsonl, knn_index_body, sagemaker_lines
from tests.ingest_helpers import indexed_documents, run_ingest

pytestmark = pytest.mark.integration

DIM = 384


def test_sagemaker_seed_request_ingests_every_line_from_s3(s3, osmem_url, capsys, tmp_path):
    lines = sagemaker_lines(12, DIM)
    s3.create_bucket(Bucket="offlinebatch")
    s3.put_object(Bucket="offlinebatch", Key="output/sagemaker_batch.json.out", Body=jsonl(lines))
    index = knn_index_body(["chapter_embedding", "title_embedding"], DIM)

    code, record = run_ingest(capsys, tmp_path, SAGEMAKER_REQUEST, osmem_url, index_body=index)

    assert code == 0, record
    assert record["state"] == "COMPLETED" and record["task_type"] == "BATCH_INGEST"
    assert record["counts"]["read"] == 12 and record["counts"]["indexed"] == 12
    assert record["credential"] == {
        "region": "us-east-1",
        "access_key": "***",
        "secret_key": "***",
        "session_token": "***",
    }
    docs = indexed_documents(osmem_url, "my-nlp-index")
    assert set(docs) == {str(line["id"]) for line in lines}
    first = docs["1"]
    assert set(first) == {"chapter", "title", "chapter_embedding", "title_embedding", "id"}
    assert first["chapter"] == "this is chapter 1" and first["title"] == "title 1" and first["id"] == 1
    assert first["chapter_embedding"] == lines[0]["SageMakerOutput"][0]
    assert first["title_embedding"] == lines[0]["SageMakerOutput"][1]


def test_s3_prefix_reads_every_object_including_gzip_and_parquet(s3, osmem_url, capsys, tmp_path):
    lines = sagemaker_lines(8, 4)
    s3.create_bucket(Bucket="batch")
    s3.put_object(Bucket="batch", Key="out/part-0.jsonl", Body=jsonl(lines[:3]))
    s3.put_object(Bucket="batch", Key="out/part-1.jsonl.gz", Body=gzip.compress(jsonl(lines[3:6])))
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(lines[6:]), parquet)
    s3.put_object(Bucket="batch", Key="out/part-2.parquet", Body=parquet.getvalue())
    s3.put_object(Bucket="batch", Key="other/ignored.jsonl", Body=b'{"id": 99}\n')
    request = {
        **SAGEMAKER_REQUEST,
        "index_name": "prefix-index",
        "data_source": {"type": "s3", "source": ["s3://batch/out/"]},
    }

    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body([], 4))

    assert code == 0, record
    docs = indexed_documents(osmem_url, "prefix-index")
    assert set(docs) == {str(i) for i in range(1, 9)}
    assert docs["8"]["chapter_embedding"] == lines[7]["SageMakerOutput"][0]


def test_missing_s3_object_fails_the_task_with_one_line(s3, osmem_url, capsys, tmp_path):
    s3.create_bucket(Bucket="offlinebatch")
    code, record = run_ingest(
        capsys, tmp_path, SAGEMAKER_REQUEST, osmem_url, index_body=knn_index_body([], 4)
    )
    assert code == 1
    assert record["state"] == "FAILED"
    assert record["error"] == "s3://offlinebatch/output/sagemaker_batch.json.out: no such object"

"""`mlbatch serve-api` driven only over REST by opensearch-py, as ML Commons users drive a cluster:
connector → remote model → `_batch_predict` on the real local embedding service → `_batch_ingestion`
with the connector's credential → documents searchable in the local index server. Then the seed
documents' two curl bodies, sent byte for byte."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import openai
import pytest
from opensearchpy import OpenSearch

from connectors.local.embedding_server import EmbeddingService
from connectors.local.index_server import LocalIndexServer
from scripts.demo_corpus import batch_line, module_sources, passages
from tests.api_helpers import serve_api, wait_for_task
from tests.batch_services import BatchServices
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body, openai_batch_files, sagemaker_lines
from tests.ingest_helpers import indexed_documents

pytestmark = pytest.mark.integration

SECRET = "sk-serve-api-0123456789"
BLUEPRINT = Path("connectors/batch_predict/blueprints/openai_batch.json")
SEEDS = Path(__file__).resolve().parent / "seeds"


@pytest.fixture
def index_server(tmp_path):
    server = LocalIndexServer(directory=tmp_path / "indexes").start()
    yield server
    server.close()


def test_predict_then_ingest_over_rest_only(index_server, tmp_path, mlbatch_home):
    embeddings = EmbeddingService(api_key=SECRET).start()
    try:
        lines = [batch_line(name, text) for name, text in passages(module_sources(["argparse", "json"]))][:40]
        (tmp_path / "input.jsonl").write_bytes(jsonl(lines))
        uploaded = openai.OpenAI(api_key=SECRET, base_url=embeddings.url).files.create(
            file=(tmp_path / "input.jsonl").open("rb"), purpose="batch"
        )
        env = {"OPENAI_BASE_URL": embeddings.url}
        trusted = ("--trusted-connector-endpoints", r"^http://127\.0\.0\.1:\d+/.*$")
        with serve_api("--opensearch", index_server.url, "--poll-interval", "0.2", *trusted, env=env) as api:
            ml = api.client().plugins.ml
            connector = json.loads(BLUEPRINT.read_text())
            connector["parameters"]["base_url"] = embeddings.url
            connector["credential"] = {"openAI_key": SECRET}
            connector_id = ml.create_connector(body=connector)["connector_id"]
            shown = api.client().transport.perform_request("GET", f"/_plugins/_ml/connectors/{connector_id}")
            assert shown["name"] == connector["name"] and "credential" not in shown

            model = ml.register_model(
                body={"name": "MiniLM batch", "function_name": "remote", "connector_id": connector_id}
            )
            assert model["status"] == "CREATED"
            assert ml.get_task(task_id=model["task_id"])["state"] == "COMPLETED"
            deployed = ml.deploy_model(model_id=model["model_id"])
            assert deployed["status"] == "COMPLETED"
            assert ml.get_model(model_id=model["model_id"])["model_state"] == "DEPLOYED"

            submitted = api.client().transport.perform_request(
                "POST",
                f"/_plugins/_ml/models/{model['model_id']}/_batch_predict",
                body={"parameters": {"input_file_id": uploaded.id}},
            )
            assert submitted["status"] == "CREATED"
            prediction = wait_for_task(api.client(), submitted["task_id"])
            assert prediction["state"] == "COMPLETED", prediction
            assert (
                prediction["task_type"] == "BATCH_PREDICTION" and prediction["model_id"] == model["model_id"]
            )
            remote_job = prediction["remote_job"]

            OpenSearch(hosts=[index_server.url]).indices.create(
                index="mlbatch-stdlib", body=json.loads(Path("samples/stdlib-index.json").read_text())
            )
            request = json.loads(Path("samples/stdlib-request.json").read_text())
            del request["credential"]
            request["connector_id"] = connector_id
            request["data_source"]["source"] = [remote_job["output_file_id"], remote_job["input_file_id"]]
            accepted = api.client().transport.perform_request(
                "POST", "/_plugins/_ml/_batch_ingestion", body=request
            )
            assert set(accepted) == {"task_id", "task_type", "status"}
            assert (accepted["task_type"], accepted["status"]) == ("BATCH_INGEST", "CREATED")
            ingestion = wait_for_task(api.client(), accepted["task_id"])
            assert ingestion["state"] == "COMPLETED", ingestion
            assert ingestion["counts"]["indexed"] == len(lines)
            assert ingestion["connector_id"] == connector_id

            found = ml.search_tasks(body={"query": {"term": {"task_type": "BATCH_INGEST"}}})
            assert [hit["_id"] for hit in found["hits"]["hits"]] == [accepted["task_id"]]
            every = ml.search_tasks(body={"query": {"match_all": {}}, "size": 100})
            assert every["hits"]["total"]["value"] == 4  # register, deploy, predict, ingest
            answers = json.dumps([shown, prediction, ingestion, found, every])
        log = api.log
    finally:
        embeddings.close()

    docs = indexed_documents(index_server.url, "mlbatch-stdlib")
    assert set(docs) == {line["custom_id"] for line in lines}
    assert all(len(doc["text_embedding"]) == 384 for doc in docs.values())
    assert "POST /_plugins/_ml/_batch_ingestion 200" in log
    for place in (
        answers,
        log,
        *(path.read_bytes().decode(errors="replace") for path in mlbatch_home.glob("*.db")),
    ):
        assert SECRET not in place


def _post_raw(url: str, path: str, body: bytes) -> dict:
    request = urllib.request.Request(
        url + path, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_the_seed_curl_bodies_byte_for_byte(s3, osmem_url):
    """Both `_batch_ingestion` bodies of the seed document, as its curl examples send them: the
    SageMaker one from S3 (moto), the OpenAI one from three files whose ids the seed names, behind a
    files service that takes the seed's placeholder key."""
    s3.create_bucket(Bucket="offlinebatch")
    sagemaker = sagemaker_lines(6, 384)
    s3.put_object(Bucket="offlinebatch", Key="output/sagemaker_batch.json.out", Body=jsonl(sagemaker))
    files = BatchServices(OPENAI_REQUEST["credential"]["openAI_key"])
    outputs, inputs, metadata = openai_batch_files(5, 384)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    files.files.update({output_id: jsonl(outputs), input_id: jsonl(inputs), other_id: jsonl(metadata)})
    cluster = OpenSearch(hosts=[osmem_url])
    cluster.indices.create(
        index="my-nlp-index", body=knn_index_body(["chapter_embedding", "title_embedding"], 384)
    )
    cluster.indices.create(
        index="my-nlp-index-openai", body=knn_index_body(["question_embedding", "answer_embedding"], 384)
    )
    try:
        with serve_api("--opensearch", osmem_url, env={"OPENAI_BASE_URL": files.openai_url}) as api:
            records = []
            for name in ("batch_ingestion_sagemaker.json", "batch_ingestion_openai.json"):
                accepted = _post_raw(api.url, "/_plugins/_ml/_batch_ingestion", (SEEDS / name).read_bytes())
                assert (accepted["task_type"], accepted["status"]) == ("BATCH_INGEST", "CREATED")
                records.append(wait_for_task(api.client(), accepted["task_id"]))
    finally:
        files.close()
    assert [record["state"] for record in records] == ["COMPLETED", "COMPLETED"], records
    assert records[0]["counts"]["indexed"] == 6 and records[1]["counts"]["indexed"] == 5
    assert len(indexed_documents(osmem_url, "my-nlp-index-openai")) == 5
    assert records[0]["credential"]["secret_key"] == "***"

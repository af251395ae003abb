"""The batch-predict launcher through real local servers: moto (SageMaker, SigV4) and local batch APIs."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import openai
import pytest

from pipelines.cli import main
from tests.batch_services import fake_embedding
from tests.conftest import OPENAI_TEST_KEY
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body
from tests.ingest_helpers import indexed_documents

BLUEPRINTS = Path(__file__).resolve().parents[1] / "connectors" / "batch_predict" / "blueprints"
AWS_KEYS = {"access_key": "AKIATESTLAUNCHER", "secret_key": "launcher-secret-key-123"}


def blueprint(tmp_path: Path, name: str, credential: dict | None = None, **parameters) -> str:
    connector = json.loads((BLUEPRINTS / name).read_text())
    connector["parameters"].update(parameters)
    if credential is not None:
        connector["credential"] = credential
    path = tmp_path / name
    path.write_text(json.dumps(connector))
    return str(path)


def cli(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def submit(capsys, connector: str, **parameters) -> dict:
    code, answer = cli(
        capsys, "predict", "submit", "--connector", connector, "--parameters", json.dumps(parameters)
    )
    assert code == 0 and answer["status"] == "CREATED", answer
    return answer


@pytest.fixture
def services(openai_files):
    return openai_files


@pytest.mark.integration
def test_openai_flow_end_to_end_upload_submit_wait_then_ingest(services, osmem_url, capsys, tmp_path):
    texts = {f"doc-{i}": (f"question {i}?", f"answer {i}.") for i in range(1, 7)}
    lines = [
        {
            "custom_id": key,
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": list(pair)},
        }
        for key, pair in texts.items()
    ]
    client = openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=services.openai_url)
    input_file = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    connector = blueprint(
        tmp_path, "openai_batch.json", {"openAI_key": OPENAI_TEST_KEY}, base_url=services.openai_url
    )
    submitted = submit(capsys, connector, input_file_id=input_file.id)
    assert submitted["remote_job"]["status"] == "validating"
    request = {
        "field_map": OPENAI_REQUEST["field_map"],
        "index_name": "openai-batch",
        "credential": {"openAI_key": OPENAI_TEST_KEY},
        "data_source": {"type": "openAI", "source": ["${remote_job.output_file_id}", input_file.id]},
    }
    (tmp_path / "ingest.json").write_text(json.dumps(request))
    (tmp_path / "index.json").write_text(
        json.dumps(knn_index_body(["question_embedding", "answer_embedding"], 8))
    )

    code, record = cli(
        capsys,
        "predict",
        "wait",
        submitted["task_id"],
        "--interval",
        "0.05",
        "--then-ingest",
        str(tmp_path / "ingest.json"),
        "--opensearch",
        osmem_url,
        "--create-index",
        str(tmp_path / "index.json"),
    )

    assert code == 0, record
    assert record["task_type"] == "BATCH_INGEST" and record["state"] == "COMPLETED"
    assert record["batch_prediction_task_id"] == submitted["task_id"]
    assert record["data_source"]["source"][0].startswith("file-")
    docs = indexed_documents(osmem_url, "openai-batch")
    assert set(docs) == set(texts)
    assert docs["doc-3"]["question"] == "question 3?"
    assert docs["doc-3"]["answer_embedding"] == fake_embedding("answer 3.", 8)
    code, task = cli(capsys, "task", "get", submitted["task_id"])
    assert task["task_type"] == "BATCH_PREDICTION" and task["function_name"] == "REMOTE"
    assert task["state"] == "COMPLETED" and task["remote_job"]["status"] == "completed"
    assert {"task_id", "state", "remote_job", "create_time", "last_update_time"} <= set(task)
    assert OPENAI_TEST_KEY not in json.dumps(task)


@pytest.mark.integration
def test_sagemaker_through_moto_with_real_sigv4(s3, moto_server, capsys, tmp_path):
    boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    ).create_model(
        ModelName="embedder",
        PrimaryContainer={"Image": "embedder:1"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
    )
    connector = blueprint(tmp_path, "sagemaker_batch_transform.json", AWS_KEYS, endpoint=moto_server.url)
    submitted = submit(
        capsys,
        connector,
        ModelName="embedder",
        TransformJobName="embed-job-1",
        input_s3_uri="s3://batch/in/",
        output_s3_uri="s3://batch/out/",
    )
    assert submitted["remote_job"]["TransformJobArn"].endswith("transform-job/embed-job-1")

    code, cancelled = cli(capsys, "predict", "cancel", submitted["task_id"])
    assert code == 1 and cancelled == {}

    code, status = cli(capsys, "predict", "status", submitted["task_id"])
    assert code == 0 and status["state"] == "COMPLETED"
    assert status["remote_job"]["TransformJobStatus"] == "Completed"
    assert status["remote_job"]["TransformOutput"]["S3OutputPath"] == "s3://batch/out/"
    assert AWS_KEYS["secret_key"] not in json.dumps(status)


@pytest.mark.integration
def test_sagemaker_in_progress_then_stopping_then_stopped(services, capsys, tmp_path):
    connector = blueprint(tmp_path, "sagemaker_batch_transform.json", AWS_KEYS, endpoint=services.url)
    submitted = submit(
        capsys,
        connector,
        ModelName="m",
        TransformJobName="job-2",
        input_s3_uri="s3://b/in/",
        output_s3_uri="s3://b/out/",
    )
    task_id = submitted["task_id"]
    assert cli(capsys, "predict", "status", task_id)[1]["state"] == "RUNNING"
    code, cancelling = cli(capsys, "predict", "cancel", task_id)
    assert code == 0 and cancelling["state"] == "CANCELLING"
    assert cli(capsys, "predict", "status", task_id)[1]["state"] == "CANCELLED"
    assert cli(capsys, "predict", "wait", task_id, "--interval", "0.01")[0] == 1


@pytest.mark.integration
def test_bedrock_job_waits_to_completion_with_sigv4_and_encoded_arn(services, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMTHECHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret-456")
    connector = blueprint(tmp_path, "bedrock_batch_inference.json", endpoint=services.url)
    submitted = submit(
        capsys,
        connector,
        job_name="nightly",
        input_s3_uri="s3://b/in/",
        output_s3_uri="s3://b/out/",
        role_arn="arn:aws:iam::123456789012:role/bedrock",
    )
    code, record = cli(capsys, "predict", "wait", submitted["task_id"], "--interval", "0.01")
    assert code == 0 and record["state"] == "COMPLETED"
    assert record["remote_job"]["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] == "s3://b/out/"
    polled = [path for method, path, auth in services.requests if method == "GET"]
    assert polled and all("model-invocation-job/arn:aws:bedrock" in path and "%2F" in path for path in polled)
    assert all("AKIAFROMTHECHAIN" in auth for method, path, auth in services.requests)


@pytest.mark.integration
def test_bedrock_partially_completed_is_a_warning_or_a_failure(services, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMTHECHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "chain-secret-456")
    services.progress["bedrock"] = ("Submitted", "PartiallyCompleted")
    connector = blueprint(tmp_path, "bedrock_batch_inference.json", endpoint=services.url)
    params = {"job_name": "j", "input_s3_uri": "s3://b/i/", "output_s3_uri": "s3://b/o/", "role_arn": "r"}
    first = submit(capsys, connector, **params)
    code, record = cli(capsys, "predict", "wait", first["task_id"], "--interval", "0.01")
    assert code == 0 and record["state"] == "COMPLETED" and "partiallyCompleted" in record["warning"]
    second = submit(capsys, connector, **params)
    code, record = cli(
        capsys, "predict", "wait", second["task_id"], "--interval", "0.01", "--partial-is-failure"
    )
    assert code == 1 and record["state"] == "FAILED"


@pytest.mark.integration
def test_cohere_embed_job_completes_and_cancels(services, capsys, tmp_path):
    connector = blueprint(
        tmp_path, "cohere_embed_job.json", {"cohere_key": OPENAI_TEST_KEY}, base_url=f"{services.url}/v1"
    )
    done = submit(capsys, connector, dataset_id="docs-1")
    assert done["remote_job"]["job_id"].startswith("embed_")
    code, record = cli(capsys, "predict", "wait", done["task_id"], "--interval", "0.01")
    assert code == 0 and record["remote_job"]["output_dataset_id"] == "docs-1-embeddings"
    stopped = submit(capsys, connector, dataset_id="docs-2")
    assert cli(capsys, "predict", "cancel", stopped["task_id"])[1]["state"] == "CANCELLING"
    assert cli(capsys, "predict", "status", stopped["task_id"])[1]["state"] == "CANCELLED"


@pytest.mark.integration
def test_wait_times_out_with_exit_124(services, capsys, tmp_path):
    services.progress["embed"] = ("processing",) * 50 + ("complete",)
    connector = blueprint(
        tmp_path, "cohere_embed_job.json", {"cohere_key": OPENAI_TEST_KEY}, base_url=f"{services.url}/v1"
    )
    submitted = submit(capsys, connector, dataset_id="slow")
    code, record = cli(
        capsys, "predict", "wait", submitted["task_id"], "--interval", "0.05", "--timeout", "0.3"
    )
    assert code == 124 and record["state"] == "RUNNING"


@pytest.mark.integration
def test_unfilled_parameters_fail_the_submit_with_ml_commons_message(services, capsys, tmp_path):
    connector = blueprint(
        tmp_path, "openai_batch.json", {"openAI_key": OPENAI_TEST_KEY}, base_url=services.openai_url
    )
    code, answer = cli(capsys, "predict", "submit", "--connector", connector)
    assert code == 1 and answer["status"] == "FAILED"
    assert answer["error"] == "Some parameter placeholder not filled in payload: input_file_id"


def test_bad_connector_file_is_a_usage_error(capsys, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"protocol": "http", "actions": []}))
    assert main(["predict", "submit", "--connector", str(tmp_path / "c.json")]) == 2
    assert "actions: must be a non-empty list" in capsys.readouterr().err


def test_every_blueprint_is_a_valid_connector():
    from connectors.batch_predict.launcher import load_connector

    names = sorted(path.name for path in BLUEPRINTS.glob("*.json"))
    assert names == [
        "bedrock_batch_inference.json",
        "cohere_embed_job.json",
        "openai_batch.json",
        "sagemaker_batch_transform.json",
    ]
    for name in names:
        connector = load_connector(BLUEPRINTS / name)
        assert {a.action_type for a in connector.actions} == {
            "batch_predict",
            "batch_predict_status",
            "cancel_batch_predict",
        }


def test_too_many_failed_polls_make_the_task_unreachable(capsys, tmp_path):
    from connectors.task_store import TaskStore
    from tests.servers import free_port

    connector = blueprint(
        tmp_path,
        "cohere_embed_job.json",
        {"cohere_key": OPENAI_TEST_KEY},
        base_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    store = TaskStore()
    task = store.create(
        "BATCH_PREDICTION",
        function_name="REMOTE",
        connector={"path": connector},
        parameters={},
        remote_job={"job_id": "embed_1"},
        poll_failures=10,
    )
    code, record = cli(capsys, "predict", "wait", task["task_id"], "--interval", "0.01")
    assert code == 1 and record["state"] == "UNREACHABLE" and record["poll_failures"] == 11
    assert "ConnectionError" in record["error"]


@pytest.mark.integration
def test_status_and_cancel_derived_from_the_batch_predict_url_against_a_service(services, capsys, tmp_path):
    connector = json.loads((BLUEPRINTS / "openai_batch.json").read_text())
    connector["actions"] = connector["actions"][:1]
    connector["parameters"]["base_url"] = f"{services.url}/openai/v1"
    connector["credential"] = {"openAI_key": OPENAI_TEST_KEY}
    (tmp_path / "c.json").write_text(json.dumps(connector))
    services.files["file-in"] = jsonl([{"custom_id": "a", "body": {"model": "m", "input": ["x"]}}])
    first = submit(capsys, str(tmp_path / "c.json"), input_file_id="file-in")
    assert cli(capsys, "predict", "wait", first["task_id"], "--interval", "0.01")[1]["state"] == "COMPLETED"
    second = submit(capsys, str(tmp_path / "c.json"), input_file_id="file-in")
    assert cli(capsys, "predict", "cancel", second["task_id"])[1]["state"] == "CANCELLING"
    assert ("GET", f"/openai/v1/batches/{first['remote_job']['id']}") in [
        (m, p) for m, p, _ in services.requests
    ]


def test_connector_secrets_never_reach_the_output_of_failed_calls(capsys, tmp_path):
    from tests.servers import free_port

    connector = json.loads((BLUEPRINTS / "openai_batch.json").read_text())
    connector["credential"] = {"openAI_key": "sk-never-print-me-0042"}
    connector["parameters"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    connector["actions"][2]["url"] += "?key=${credential.openAI_key}"
    (tmp_path / "c.json").write_text(json.dumps(connector))
    from connectors.task_store import TaskStore

    task = TaskStore().create(
        "BATCH_PREDICTION",
        function_name="REMOTE",
        state="RUNNING",
        connector={"path": str(tmp_path / "c.json")},
        parameters={},
        remote_job={"id": "b1"},
    )
    capsys.readouterr()
    assert main(["predict", "cancel", task["task_id"]]) == 1
    code = main(
        [
            "predict",
            "submit",
            "--connector",
            str(tmp_path / "c.json"),
            "--parameters",
            '{"input_file_id": "f"}',
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "sk-never-print-me-0042" not in captured.out + captured.err
    assert "key=***" in captured.err


@pytest.mark.integration
def test_predict_commands_refuse_other_tasks_and_bad_options(services, osmem_url, capsys, tmp_path):
    from connectors.task_store import TaskStore

    ingest_task = TaskStore().create("BATCH_INGEST")
    assert main(["predict", "status", ingest_task["task_id"]]) == 2
    assert "is a BATCH_INGEST task, not a batch prediction" in capsys.readouterr().err
    connector = blueprint(
        tmp_path, "cohere_embed_job.json", {"cohere_key": OPENAI_TEST_KEY}, base_url=f"{services.url}/v1"
    )
    task_id = submit(capsys, connector, dataset_id="d")["task_id"]
    assert main(["predict", "wait", task_id, "--interval", "-1"]) == 2
    (tmp_path / "bad.json").write_text(json.dumps({"data_source": "nope"}))
    assert main(["predict", "wait", task_id, "--then-ingest", str(tmp_path / "bad.json")]) == 2
    assert "data_source.source must be a list" in capsys.readouterr().err
    assert cli(capsys, "task", "get", task_id)[1]["state"] == "CREATED"

"""ML Commons connector rules through `mlbatch predict submit` / `status`, against a real HTTP
server on 127.0.0.1 that records every request it gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from connectors.local.http_server import JsonHttpServer, Reply

pytestmark = pytest.mark.integration

MLBATCH = Path(sys.executable).with_name("mlbatch")
SECRET = "sk-compat-secret-0123456789"


class RecordingService:
    """SageMaker-shaped job API on URL paths: Create/Describe/StopTransformJob under /sagemaker/."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._http = JsonHttpServer(self.handle)
        self.url = self._http.url
        self._http.start()

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        self.requests.append((method, path, {name.lower(): value for name, value in headers.items()}, body))
        operation = path.rsplit("/", 1)[-1]
        if operation == "CreateTransformJob":
            return 200, {"TransformJobArn": "arn:aws:sagemaker:us-east-1:1:transform-job/job-7"}
        if operation == "DescribeTransformJob":
            name = json.loads(body)["TransformJobName"]
            return 200, {"TransformJobName": name, "TransformJobStatus": "InProgress"}
        return 404, {"message": f"no route {method} {path}"}

    def close(self) -> None:
        self._http.close()


@pytest.fixture
def service() -> Iterator[RecordingService]:
    server = RecordingService()
    yield server
    server.close()


def connector_file(tmp_path: Path, service: RecordingService, **changes) -> str:
    body = {
        "name": "compat",
        "protocol": "http",
        "parameters": {"endpoint": f"{service.url}/sagemaker/CreateTransformJob"},
        "credential": {"api_key": SECRET},
        "actions": [
            {
                "action_type": "batch_predict",
                "method": "POST",
                "url": "${parameters.endpoint}",
                "headers": {"X-Api-Key": "${credential.api_key}"},
                "request_body": '{ "TransformJobName": "${parameters.TransformJobName}" }',
            }
        ],
    }
    body.update(changes)
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(body))
    return str(path)


def mlbatch(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "MLBATCH_HOME": str(tmp_path / "home")}
    result = subprocess.run([str(MLBATCH), *args], capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def submit(tmp_path: Path, connector: str, parameters: dict) -> tuple[int, dict, str]:
    return mlbatch(
        tmp_path, "predict", "submit", "--connector", connector, "--parameters", json.dumps(parameters)
    )


def test_status_is_derived_from_the_filled_batch_predict_url(service, tmp_path):
    code, answer, _ = submit(tmp_path, connector_file(tmp_path, service), {"TransformJobName": "job-7"})
    assert code == 0 and answer["status"] == "CREATED", answer
    code, record, stderr = mlbatch(tmp_path, "predict", "status", answer["task_id"])
    assert code == 0, stderr
    assert record["state"] == "RUNNING" and record["remote_job"]["TransformJobStatus"] == "InProgress"
    assert [(method, path) for method, path, _, _ in service.requests] == [
        ("POST", "/sagemaker/CreateTransformJob"),
        ("POST", "/sagemaker/DescribeTransformJob"),
    ]
    assert json.loads(service.requests[1][3]) == {"TransformJobName": "job-7"}
    assert service.requests[1][2]["x-api-key"] == SECRET


def test_no_escape_params_reach_the_service_unescaped(service, tmp_path):
    connector = connector_file(tmp_path, service)
    body = json.loads(Path(connector).read_text())
    body["actions"][0]["request_body"] = '{ "TransformJobName": "job-7", ${parameters.extra} }'
    Path(connector).write_text(json.dumps(body))
    parameters = {"extra": '"BatchStrategy": "MultiRecord"', "no_escape_params": "extra"}
    code, answer, stderr = submit(tmp_path, connector, parameters)
    assert code == 0, (answer, stderr)
    assert json.loads(service.requests[0][3]) == {"TransformJobName": "job-7", "BatchStrategy": "MultiRecord"}


def test_unfilled_credential_in_the_body_is_never_sent(service, tmp_path):
    connector = connector_file(tmp_path, service)
    body = json.loads(Path(connector).read_text())
    body["actions"][0]["request_body"] = '{ "TransformJobName": "x", "key": "${credential.other_key}" }'
    Path(connector).write_text(json.dumps(body))
    code, answer, stderr = submit(tmp_path, connector, {})
    assert code == 1 and answer["status"] == "FAILED"
    assert answer["error"] == (
        "Some credential placeholder not filled in payload: ${credential.other_key} "
        "(the connector's credential has no such key)"
    )
    assert service.requests == []
    assert SECRET not in json.dumps(answer) + stderr


def test_aws_sigv4_region_and_service_name_from_the_credential(service, tmp_path):
    credential = {
        "access_key": "AKIACOMPATTEST",
        "secret_key": SECRET,
        "region": "eu-west-1",
        "service_name": "sagemaker",
    }
    connector = connector_file(tmp_path, service, protocol="aws_sigv4", credential=credential)
    body = json.loads(Path(connector).read_text())
    body["actions"][0]["headers"] = {}
    Path(connector).write_text(json.dumps(body))
    code, answer, stderr = submit(tmp_path, connector, {"TransformJobName": "job-7"})
    assert code == 0, (answer, stderr)
    authorization = service.requests[0][2]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIACOMPATTEST/")
    assert "/eu-west-1/sagemaker/aws4_request" in authorization

"""`mlbatch serve-embeddings` under attack: the key kept out of `ps`, garbage uploads and batch
requests answered 400, batches of bad lines ending `failed` (never stuck in progress).

Requests go over real sockets to a real service on 127.0.0.1 (started by the `mlbatch` command
where the command line is what is tested); every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.local.embedding_server import EmbeddingService
from tests.servers import serve_command

pytestmark = pytest.mark.integration

MLBATCH = Path(sys.executable).with_name("mlbatch")
TIMEOUT = 5.0
KEY = "sk-local-9f8e7d6c5b4a"
BOUNDARY = "----mlbatch-boundary"


def call(url: str, method: str, path: str, body: bytes | None = None, key: str = KEY, **headers: str):
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    connection = http.client.HTTPConnection(host_port, timeout=TIMEOUT)
    try:
        connection.request(
            method,
            path,
            body=body,
            headers={
                "Authorization": f"Bearer {key}",
                **{k.replace("_", "-"): v for k, v in headers.items()},
            },
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def multipart(content: bytes | None) -> bytes:
    """A multipart/form-data upload with a `purpose` field and, unless None, a `file` part."""
    purpose = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode()
    if content is None:
        return purpose + f"--{BOUNDARY}--\r\n".encode()
    file_head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return purpose + file_head.encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def service():
    service = EmbeddingService(api_key=KEY, embed=lambda texts: [[float(len(t)), 1.0] for t in texts]).start()
    yield service
    service.close()


@pytest.mark.parametrize("source", ["environment", "file"])
def test_the_key_comes_from_the_environment_or_a_file_and_stays_out_of_ps(tmp_path, source):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    args, env = (["--api-key-file", str(key_file)], {}) if source == "file" else ([], {})
    if source == "environment":
        env["MLBATCH_EMBEDDINGS_API_KEY"] = KEY
    process, url = serve_command("serve-embeddings", args, env)
    try:
        assert KEY not in Path(f"/proc/{process.pid}/cmdline").read_text()
        status, answer = call(url, "GET", "/v1/batches/batch_none")
        assert status == 404 and answer["error"]["message"] == "No such Batch object"
        status, answer = call(url, "GET", "/v1/batches/batch_none", key="local")
        assert status == 401 and KEY not in json.dumps(answer)
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
    assert KEY not in process.stderr.read()


def test_an_unreadable_or_empty_key_file_is_a_usage_error(tmp_path):
    (tmp_path / "empty").write_text("\n")
    for path, message in [(tmp_path / "missing", "cannot read"), (tmp_path / "empty", "the file is empty")]:
        result = subprocess.run(
            [str(MLBATCH), "serve-embeddings", "--api-key-file", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize(
    "content_type, body",
    [
        (f"multipart/form-data; boundary={BOUNDARY}", b"garbage, no parts at all"),
        ("multipart/form-data", b"--x\r\n\r\nno boundary parameter\r\n--x--\r\n"),
        ("application/json", b'{"file": "not multipart"}'),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart(None)),
    ],
)
def test_an_upload_that_is_not_a_multipart_file_is_answered_400(service, content_type, body):
    status, answer = call(service.url, "POST", "/v1/files", body, Content_Type=content_type)
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"
    assert not service.files


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"input_file_id": ["x"], "endpoint": "/v1/embeddings"}']
)
def test_an_invalid_batch_request_is_answered_400(service, body):
    status, answer = call(service.url, "POST", "/v1/batches", body, Content_Type="application/json")
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"


def test_a_batch_of_bad_lines_fails_with_one_error_per_line(service):
    good = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "hello"}}
    lines = [json.dumps(good), "not json", json.dumps({"custom_id": "b", "body": {"input": 5}})]
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    upload = multipart("\n".join(lines).encode() + b"\n")
    status, stored = call(service.url, "POST", "/v1/files", upload, Content_Type=content_type)
    assert (
        status == 200
        and stored["bytes"] == len(upload) - len(multipart(b""))
        and stored["purpose"] == "batch"
    )
    file_id = stored["id"]
    request = {"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    batch = call(service.url, "POST", "/v1/batches", json.dumps(request).encode())[1]
    deadline = time.monotonic() + TIMEOUT
    while batch["status"] in ("validating", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.05)
        batch = call(service.url, "GET", f"/v1/batches/{batch['id']}")[1]
    assert batch["status"] == "failed"
    assert [error["line"] for error in batch["errors"]["data"]] == [2, 3]

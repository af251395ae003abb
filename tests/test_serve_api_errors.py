"""`mlbatch serve-api` refusing what it should, as ML Commons refuses it: bad bodies, unknown ids,
unknown paths, oversize bodies, callers without credentials, a listening address without them."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch
from opensearchpy.exceptions import AuthenticationException, NotFoundError, TransportError

from connectors.local.index_server import LocalIndexServer
from pipelines.request import EMPTY_BODY, MISSING_INDEX_NAME
from tests.api_helpers import serve_api, wait_for_task
from tests.data import knn_index_body

pytestmark = pytest.mark.integration

PASSWORD = "pw-Secret-4711"
TOKEN = "tok-0123456789abcdef"


def call(
    url: str, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict, Any]:
    """(status, JSON body, headers) of one request, errors included."""
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with serve_api(
        "--opensearch", "http://127.0.0.1:9", "--max-body-mb", "1", env={"MLBATCH_HOME": str(home)}
    ) as api:
        yield api


def error_of(answer: dict) -> tuple[str, str]:
    return answer["error"]["type"], answer["error"]["reason"]


@pytest.mark.parametrize(
    ("body", "status", "kind", "reason"),
    [
        (b"", 500, "i_o_exception", EMPTY_BODY),
        (b"  \n", 500, "i_o_exception", EMPTY_BODY),
        (
            b'{"field_map": {"_id": "$.id"}, "data_source": {"type": "s3", "source": ["s3://b/k"]}}',
            400,
            "illegal_argument_exception",
            MISSING_INDEX_NAME,
        ),
        (
            b'{"index_name": "i", "field_map": {"_id": "$.id"}, '
            b'"data_source": {"type": "s3", "source": ["x"]}}',
            400,
            "status_exception",
            "IllegalArgumentException in the batch ingestion input: The following batch ingest input S3 URIs",
        ),
        (b"{not json", 400, "illegal_argument_exception", "request body: not valid JSON"),
        (
            b"[1, 2]",
            400,
            "illegal_argument_exception",
            "Batch Ingestion request: the body must be a JSON object",
        ),
    ],
)
def test_bad_batch_ingestion_bodies_get_ml_commons_messages_and_codes(api, body, status, kind, reason):
    """ML Commons answers an empty body with its IOException (500), the checks of its REST layer with
    400 illegal_argument_exception, those of its transport layer with 400 status_exception, prefixed."""
    answered, answer, _ = call(api.url, "POST", "/_plugins/_ml/_batch_ingestion", body)
    assert answered == status and answer["status"] == status
    assert error_of(answer)[0] == kind and error_of(answer)[1].startswith(reason)


def test_unknown_ids_are_404(api):
    client = api.client()
    with pytest.raises(NotFoundError) as missing:
        client.plugins.ml.get_task(task_id="no-such-task")
    assert missing.value.info["error"]["reason"] == "Failed to find task"
    for method, path in (
        ("DELETE", "/_plugins/_ml/tasks/nope"),
        ("POST", "/_plugins/_ml/tasks/nope/_cancel"),
        ("GET", "/_plugins/_ml/connectors/nope"),
        ("GET", "/_plugins/_ml/models/nope"),
        ("POST", "/_plugins/_ml/models/nope/_deploy"),
    ):
        status, answer, _ = call(api.url, method, path)
        assert status == 404, (method, path, answer)
    status, answer, _ = call(
        api.url, "POST", "/_plugins/_ml/models/nope/_batch_predict", b'{"parameters": {}}'
    )
    assert status == 404 and "Failed to find model" in error_of(answer)[1]
    body = json.dumps(
        {
            "index_name": "i",
            "field_map": {"_id": "$.id"},
            "connector_id": "nope",
            "data_source": {"type": "s3", "source": ["s3://b/k"]},
        }
    ).encode()
    status, answer, _ = call(api.url, "POST", "/_plugins/_ml/_batch_ingestion", body)
    assert status == 400 and error_of(answer) == (
        "status_exception",
        "Fail to fetch credentials from the connector in the batch ingestion input: "
        "Failed to find connector:nope",
    )


def test_unknown_paths_and_methods(api):
    status, answer, _ = call(api.url, "GET", "/_plugins/_ml/nothing")
    assert status == 400 and "no handler found for uri [/_plugins/_ml/nothing]" in error_of(answer)[1]
    status, answer, _ = call(api.url, "PUT", "/_plugins/_ml/_batch_ingestion", b"{}")
    assert status == 405 and "allowed: [POST]" in error_of(answer)[1]


def test_oversize_bodies_are_413(api):
    """Announced over the 1 MiB cap: answered from the headers alone (sending the body would race
    the server's close); a small gzip body that inflates beyond the cap: refused while inflating."""
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(api.url).netloc, timeout=30)
    try:
        connection.putrequest("POST", "/_plugins/_ml/_batch_ingestion")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(2 * 2**20))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["status"] == 413
    finally:
        connection.close()
    bomb = gzip.compress(b" " * (2 * 2**20))
    assert len(bomb) < 2**20
    status, answer, _ = call(
        api.url, "POST", "/_plugins/_ml/_batch_ingestion", bomb, **{"Content-Encoding": "gzip"}
    )
    assert status == 413 and answer["status"] == 413


def test_models_and_connectors_are_checked(api):
    client = api.client()
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.create_connector(body={"name": "x", "protocol": "ftp", "actions": []})
    assert refused.value.status_code == 400 and "protocol" in refused.value.info["error"]["reason"]
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.register_model(body={"name": "m", "function_name": "remote"})
    assert refused.value.status_code == 400
    connector = json.loads(Path("connectors/batch_predict/blueprints/openai_batch.json").read_text())
    connector_id = client.plugins.ml.create_connector(body=connector)["connector_id"]
    model = client.plugins.ml.register_model(
        body={"name": "m", "function_name": "remote", "connector_id": connector_id}
    )
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.delete_connector(connector_id=connector_id)
    assert refused.value.status_code == 409 and model["model_id"] in refused.value.info["error"]["reason"]
    client.plugins.ml.deploy_model(model_id=model["model_id"])
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.delete_model(model_id=model["model_id"])
    assert refused.value.status_code == 400
    client.plugins.ml.undeploy_model(model_id=model["model_id"])
    assert client.plugins.ml.delete_model(model_id=model["model_id"])["result"] == "deleted"
    assert client.plugins.ml.delete_connector(connector_id=connector_id)["result"] == "deleted"
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.search_tasks(body={"query": {"fuzzy": {"state": "x"}}})
    assert refused.value.status_code == 400
    with pytest.raises(TransportError) as refused:
        client.plugins.ml.search_tasks()
    assert refused.value.info["error"]["reason"] == "request body or source parameter is required"


def _auth_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "auth"
    path.write_text(f"# who may call\nalice:{PASSWORD}\nbearer {TOKEN}\n")
    path.chmod(mode)
    return path


def test_auth_file_users_and_tokens_and_nothing_else(tmp_path):
    with serve_api("--auth-file", str(_auth_file(tmp_path)), "--opensearch", "http://127.0.0.1:9") as api:
        status, answer, headers = call(api.url, "GET", "/_plugins/_ml/tasks/x")
        assert status == 401 and error_of(answer)[0] == "security_exception"
        assert headers.get("WWW-Authenticate", "").startswith("Basic")
        wrong = base64.b64encode(b"alice:nope").decode()
        status, answer, _ = call(api.url, "GET", "/_plugins/_ml/tasks/x", Authorization=f"Basic {wrong}")
        assert status == 401
        status, _, _ = call(api.url, "GET", "/_plugins/_ml/tasks/x", Authorization=f"Bearer {TOKEN}x")
        assert status == 401
        status, _, _ = call(api.url, "GET", "/_plugins/_ml/tasks/x", Authorization=f"Bearer {TOKEN}")
        assert status == 404
        with pytest.raises(AuthenticationException):
            api.client().plugins.ml.search_tasks(body={"query": {"match_all": {}}})
        client = OpenSearch(hosts=[api.url], http_auth=("alice", PASSWORD))
        assert (
            client.plugins.ml.search_tasks(body={"query": {"match_all": {}}})["hits"]["total"]["value"] == 0
        )
    assert PASSWORD not in api.log and TOKEN not in api.log and " 401 " in api.log


def _mlbatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("mlbatch")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )


def test_listening_beyond_loopback_needs_an_auth_file_kept_private(tmp_path):
    refused = _mlbatch("serve-api", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "--auth-file" in refused.stderr and refused.stdout == ""
    readable = _mlbatch("serve-api", "--auth-file", str(_auth_file(tmp_path, 0o644)))
    assert readable.returncode == 2 and "chmod 600" in readable.stderr
    assert PASSWORD not in readable.stderr


def test_callers_reach_no_local_file_and_no_untrusted_url_by_default(api, tmp_path):
    """Without --local-root a caller cannot make the service read its own files (master key, auth
    file); connectors may only call the trusted endpoints (ML Commons' list by default)."""
    body = {
        "index_name": "i",
        "field_map": {"_id": "$.id", "v": "$.v"},
        "data_source": {"type": "local", "source": [str(tmp_path / "x.jsonl")]},
    }
    status, answer, _ = call(api.url, "POST", "/_plugins/_ml/_batch_ingestion", json.dumps(body).encode())
    assert status == 400 and "--local-root" in error_of(answer)[1]
    connector = json.loads(Path("connectors/batch_predict/blueprints/openai_batch.json").read_text())
    connector["parameters"]["base_url"] = "http://169.254.169.254/latest"
    status, answer, _ = call(
        api.url, "POST", "/_plugins/_ml/connectors/_create", json.dumps(connector).encode()
    )
    assert status == 400 and error_of(answer)[1] == (
        "Connector URL is not matching the trusted connector endpoint regex, "
        "URL is: http://169.254.169.254/latest/batches"
    )


def test_local_sources_stay_under_the_local_root(tmp_path):
    """Paths outside are refused at once; a glob or a directory that reaches outside through a
    symbolic link fails its task when the worker expands it, before anything is read."""
    inside, outside = tmp_path / "root", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.jsonl").write_text('{"id": "s", "v": [1.0]}\n')
    (inside / "link").symlink_to(outside)
    (inside / "sub").mkdir()
    (inside / "sub" / "s.jsonl").symlink_to(outside / "secret.jsonl")
    cluster = LocalIndexServer(directory=tmp_path / "indexes").start()
    try:
        OpenSearch(hosts=[cluster.url]).indices.create(index="i", body=knn_index_body(["v"], 1))
        with serve_api("--opensearch", cluster.url, "--local-root", str(inside)) as api:

            def submit(source: str) -> tuple[int, dict]:
                body = {
                    "index_name": "i",
                    "field_map": {"_id": "$.id", "v": "$.v"},
                    "data_source": {"type": "local", "source": [source]},
                }
                status, answer, _ = call(
                    api.url, "POST", "/_plugins/_ml/_batch_ingestion", json.dumps(body).encode()
                )
                return status, answer

            for source in ("/etc/hosts", "../x.jsonl", "link/secret.jsonl", str(inside / ".." / "outside")):
                status, answer = submit(source)
                assert status == 400 and "is outside --local-root" in error_of(answer)[1], source
            for source in ("lin?/secret.jsonl", "l*/*.jsonl", "**/*.jsonl", "sub"):
                status, answer = submit(source)
                assert status == 200, answer
                record = wait_for_task(api.client(), answer["task_id"], timeout=60)
                assert record["state"] == "FAILED" and "is outside --local-root" in record["error"], record
            assert OpenSearch(hosts=[cluster.url]).count(index="i")["count"] == 0
    finally:
        cluster.close()


def test_a_relative_local_source_is_taken_from_the_local_root(tmp_path):
    with serve_api("--opensearch", "http://127.0.0.1:9", "--local-root", str(tmp_path)) as api:
        body = {
            "index_name": "i",
            "field_map": {"_id": "$.id", "v": "$.v"},
            "data_source": {"type": "local", "source": ["data.jsonl"]},
        }
        status, answer, _ = call(api.url, "POST", "/_plugins/_ml/_batch_ingestion", json.dumps(body).encode())
        assert status == 200
        record = api.client().plugins.ml.get_task(task_id=answer["task_id"])
        assert record["data_source"]["source"] == [str(tmp_path / "data.jsonl")]


def test_an_unusable_home_is_one_line_not_a_traceback(monkeypatch):
    monkeypatch.setenv("MLBATCH_HOME", "/proc/mlbatch-cannot-be-here")
    refused = _mlbatch("serve-api")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cannot keep its stores in /proc/mlbatch-cannot-be-here" in refused.stderr

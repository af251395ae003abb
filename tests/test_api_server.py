"""`ApiServer`, the HTTP front of `mlbatch serve-api`, around a fake service: a caller without
credentials gets 401 whatever the method, size or encoding of the request; every answer (waitress's
own 400 and 413 and a handler's 500 included) gets exactly one access-log line, and no line holds
the `Authorization` value, a query string value or body text."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from connectors.local.http_server import JsonHttpServer, Reply
from pipelines.rest_api.auth import load_auth_file
from pipelines.rest_api.server import ApiServer
from tests.conftest import LoggedLines

pytestmark = pytest.mark.integration

TOKEN = "tok-ApiServer-0123456789"
WRONG_TOKEN = "tok-Wrong-9876543210"
QUERY_SECRET = "qs-Secret-5150"
BODY_SECRET = "body-Secret-8086"
CAP = 10 * 2**20
ACCESS_LINE = re.compile(r"(\S+) (\S+) (\S+) (\d{3}) \d+ ms")
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class FakeService:
    """Answers /ok with 200, /boom by raising, anything else with 404; records what reached it."""

    calls: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def handle(self, method: str, path: str, query: Mapping[str, str], raw: bytes) -> Reply:
        self.calls.append((method, path, dict(query), raw))
        if path == "/boom":
            raise RuntimeError("the handler broke")
        if path == "/ok":
            return 200, {"bytes": len(raw)}
        return 404, {"error": {"type": "resource_not_found_exception"}, "status": 404}


@dataclass
class Running:
    server: ApiServer
    service: FakeService
    address: tuple[str, int]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Running]:
    auth_file = tmp_path / "auth"
    auth_file.write_text(f"bearer {TOKEN}\n")
    auth_file.chmod(0o600)
    service = FakeService()
    server = ApiServer(service, credentials=load_auth_file(auth_file), max_body_bytes=CAP).start()
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    try:
        yield Running(server, service, (host, int(port)))
    finally:
        server.close()


@pytest.fixture
def access(logged: LoggedLines, caplog: pytest.LogCaptureFixture) -> Iterator[LoggedLines]:
    """The mlbatch logger's messages, INFO included."""
    with caplog.at_level(logging.INFO, logger="mlbatch"):
        yield logged


def send(
    address: tuple[str, int], method: str, target: str, body: bytes = b"", **headers: str
) -> tuple[int, dict, http.client.HTTPMessage]:
    """(status, JSON body, headers) of one request; with `Content-Length` given, only the headers go."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read()), answer.headers
    finally:
        connection.close()


def send_raw(address: tuple[str, int], data: bytes) -> int:
    """The status of the answer to bytes sent as they are."""
    with socket.create_connection(address, timeout=30) as raw:
        raw.sendall(data)
        received = b""
        while b"\r\n" not in received and (chunk := raw.recv(4096)):
            received += chunk
    return int(received.split(b" ", 2)[1])


def gzip_bomb() -> bytes:
    """5 MiB of gzip that would inflate to 5 GiB."""
    member = gzip.compress(bytes(64 * 2**20), compresslevel=9)
    return member * (5 * 2**20 // len(member))


def test_callers_without_credentials_get_401_whatever_the_method_size_or_encoding(api: Running) -> None:
    bomb = gzip_bomb()
    assert 4 * 2**20 < len(bomb) < CAP
    requests = [
        ("POST", "/ok", bomb, {"Content-Encoding": "gzip"}),
        ("PATCH", "/ok", b"{}", {}),
        ("POST", "/ok", b"not gzip at all", {"Content-Encoding": "gzip"}),
        ("POST", "/ok", b"{}", {"Content-Encoding": "br"}),
    ]
    for method, path, body, headers in requests:
        for authorization in ({}, {"Authorization": f"Bearer {WRONG_TOKEN}"}):
            status, answer, answered = send(api.address, method, path, body, **headers, **authorization)
            assert status == 401 and answer["error"]["type"] == "security_exception", (method, headers)
            assert answered["WWW-Authenticate"].startswith("Basic")
    answers = [
        send(api.address, method, path, body, **headers, **AUTHORIZED)[0]
        for method, path, body, headers in requests
    ]
    assert answers == [413, 405, 400, 400]
    gzipped = {"Content-Encoding": "gzip", **AUTHORIZED}
    assert api.service.calls == []
    status, _, _ = send(api.address, "POST", "/ok", gzip.compress(b"{}"), **gzipped)
    assert status == 200
    assert api.service.calls == [("POST", "/ok", {}, b"{}")]


def test_every_answer_gets_exactly_one_access_log_line_without_secrets(
    api: Running, access: LoggedLines, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"text": BODY_SECRET}).encode()
    gzipped, too_long = {"Content-Encoding": "gzip", **AUTHORIZED}, {"Content-Length": str(CAP + 1)}
    wrong = {"Authorization": f"Bearer {WRONG_TOKEN}"}
    cases: list[tuple[str, Callable[[], int]]] = [
        ("GET /ok 200", lambda: send(api.address, "GET", f"/ok?key={QUERY_SECRET}", **AUTHORIZED)[0]),
        ("- - 400", lambda: send_raw(api.address, f"not a request line {QUERY_SECRET}\r\n\r\n".encode())),
        ("POST /ok 400", lambda: send(api.address, "POST", "/ok", b"\x1f\x8b" + body, **gzipped)[0]),
        ("GET /ok 401", lambda: send(api.address, "GET", f"/ok?key={QUERY_SECRET}", **wrong)[0]),
        ("PUT /missing 404", lambda: send(api.address, "PUT", "/missing", body, **AUTHORIZED)[0]),
        ("PATCH /ok 405", lambda: send(api.address, "PATCH", "/ok", body, **AUTHORIZED)[0]),
        (
            "POST /ok 413",
            lambda: send(api.address, "POST", f"/ok?key={QUERY_SECRET}", **too_long, **AUTHORIZED)[0],
        ),
        (
            "POST /boom 500",
            lambda: send(api.address, "POST", f"/boom?key={QUERY_SECRET}", body, **AUTHORIZED)[0],
        ),
    ]
    seen: list[str] = []
    for expected, request in cases:
        access.lines.clear()
        assert request() == int(expected.rsplit(" ", 1)[1]), expected
        lines = [match for line in access.lines if (match := ACCESS_LINE.fullmatch(line))]
        assert len(lines) == 1, (expected, access.lines)
        client, method, path, status = lines[0].groups()
        assert client == "127.0.0.1" and f"{method} {path} {status}" == expected
        seen += access.lines
    assert "RuntimeError: the handler broke" in caplog.text
    for secret in (TOKEN, WRONG_TOKEN, QUERY_SECRET, BODY_SECRET, "key="):
        assert secret not in caplog.text and not any(secret in line for line in seen), secret


def test_a_server_needs_a_handler_or_a_dispatch() -> None:
    with pytest.raises(TypeError, match="handler function or a dispatch"):
        JsonHttpServer()

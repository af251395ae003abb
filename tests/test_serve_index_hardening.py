"""`mlbatch serve-index` under attack: index names that escape the data directory, malformed HTTP,
oversized and chunked bodies, stalled connections, an unbounded write log, byte and binary vectors.

Every request goes over a real socket to a real server on 127.0.0.1; every answer must be an
HTTP answer (never a closed connection or a hung thread), and every wait is bounded.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import threading
import time

import pytest

from connectors.local.index_server import LocalIndexServer
from tests.servers import serve_command

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


@pytest.fixture
def server(tmp_path):
    server = LocalIndexServer(tmp_path / "data", max_body_bytes=2**20, channel_timeout=1.0).start()
    yield server
    server.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def send_raw(port: int, data: bytes) -> tuple[int, dict]:
    """Send bytes as they are; the status and JSON answer (fails on a closed connection or a hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")


def call(url: str, method: str, path: str, body: bytes | str | dict | None = None, **headers: str):
    """One request with the path sent as is (no normalisation); (status, JSON answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=TIMEOUT)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request(
            method, path, body=data, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def knn_index(url: str, name: str = "vectors", **field: object) -> None:
    spec = {"type": "knn_vector", "dimension": 3, **field}
    status, _ = call(url, "PUT", f"/{name}", {"mappings": {"properties": {"v": spec}}})
    assert status == 200


def bulk_body(rows: dict[str, object]) -> bytes:
    return "".join(
        json.dumps({"index": {"_id": doc_id}}) + "\n" + json.dumps({"v": vector}) + "\n"
        for doc_id, vector in rows.items()
    ).encode()


# -- item 1: index names ------------------------------------------------------------------------

ESCAPES = ["/..", "/.", "/%2e%2e", "/%2E", "/..%2f..", "/%2e%2e%2f%2e%2e", "/a%2F..%2F..%2Fhome"]


def test_names_that_leave_the_data_directory_are_refused_and_nothing_is_deleted(tmp_path):
    """The command as users run it (its `--max-body-mb` too), attacked with `..` and `.` as index names."""
    home = tmp_path / "home"
    data_dir = home / "index-service"
    home.mkdir()
    (home / "tasks.db").write_bytes(b"task store")
    args = ["--data-dir", str(data_dir), "--max-body-mb", "1"]
    process, url = serve_command("serve-index", args, {"MLBATCH_HOME": str(home)}, subprocess.DEVNULL)
    try:
        assert call(url, "PUT", "/keep", {})[0] == 200
        for path in ESCAPES:
            for method in ("PUT", "DELETE"):
                status, answer = call(url, method, path, {} if method == "PUT" else None)
                assert status == 400, (method, path, answer)
                assert answer["error"]["type"] == "invalid_index_name_exception"
                assert answer["error"]["reason"].startswith("Invalid index name [")
        assert (home / "tasks.db").read_bytes() == b"task store"
        assert (data_dir / "keep" / "meta.json").is_file()
        assert not (home / "meta.json").exists() and not (data_dir / "meta.json").exists()
        assert call(url, "GET", "/keep")[0] == 200
        too_long = b"POST /keep/_bulk HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2**20 + 1)
        assert send_raw(port_of(url), too_long)[0] == 413
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)


@pytest.mark.parametrize(
    "name, why",
    [
        ("UPPER", "must be lowercase"),
        ("a%20b", "must not contain"),
        ("a%2Fb", "must not contain '/'"),
        ("a*b", "must not contain '*'"),
        ("_hidden", "must not start with"),
        ("-dash", "must not start with"),
        ("x" * 256, "at most 255 bytes"),
    ],
)
def test_invalid_names_are_refused_in_every_route(server, name, why):
    for method, suffix, body in [
        ("PUT", "", {}),
        ("HEAD", "", None),
        ("GET", "", None),
        ("DELETE", "", None),
        ("GET", "/_mapping", None),
        ("POST", "/_bulk", b'{"index": {}}\n{}\n'),
        ("POST", "/_search", {}),
        ("GET", "/_doc/1", None),
    ]:
        status, answer = call(server.url, method, f"/{name}{suffix}", body)
        assert status == 400, (method, suffix)
        if method != "HEAD":
            assert answer["error"]["type"] == "invalid_index_name_exception"
            assert why in answer["error"]["reason"]
    assert not any((server.store.directory).iterdir())


def test_a_path_that_is_not_percent_encoded_utf8_is_a_400(server):
    status, answer = call(server.url, "PUT", "/%ff%fe", {})
    assert status == 400 and "percent-encoded UTF-8" in answer["error"]["reason"]


# -- item 11: HTTP robustness -------------------------------------------------------------------


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b" "])
def test_a_bad_content_length_is_answered_400(server, length):
    request = b"PUT /index HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}"
    status, answer = send_raw(port_of(server.url), request)
    assert status == 400 and answer["status"] == 400 and "Content-Length" in answer["error"]["reason"]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'[{"index": {"_id": "1"}}]\n{"v": [1, 2, 3]}\n', "Malformed action/metadata line [1]"),
        (b'{"index": {"_id": "1"}}\n', "has no document line"),
        (b'{"index": {"_id": "1"}, "delete": {}}\n{}\n', "Malformed action/metadata line [1]"),
        (b'{"explode": {}}\n{}\n', "Malformed action/metadata line [1]"),
        (b'{"index": []}\n{}\n', "Malformed action/metadata line [1]"),
        (b'{"index": {}}\n{"v": [1, 2, 3]}\n{"index": {}}\n', "line [3]"),
        (b"not json\n{}\n", "line [1] of the _bulk body is not valid JSON"),
        (b"\n\n", "no requests added"),
    ],
)
def test_a_malformed_bulk_body_is_answered_400(server, body, reason):
    knn_index(server.url)
    status, answer = call(server.url, "POST", "/vectors/_bulk", body)
    assert status == 400 and reason in answer["error"]["reason"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/other", b"[]"),
        ("POST", "/vectors/_search", b'{"query": {"term": 5}}'),
        ("POST", "/vectors/_search", b'{"query": {"knn": {"v": {"vector": [1, 2, 3], "k": 0}}}}'),
        ("POST", "/vectors/_count", b'{"query": {"bool": 5}}'),
        ("PUT", "/vectors/_settings", b'{"index": 5}'),
    ],
)
def test_a_malformed_request_body_is_answered_400(server, method, path, body):
    knn_index(server.url)
    call(server.url, "POST", "/vectors/_bulk", bulk_body({"a": [1, 2, 3]}))
    status, answer = call(server.url, method, path, body)
    assert status == 400 and answer["status"] == 400 and answer["error"]["reason"]


def test_an_item_whose_document_is_not_an_object_fails_alone(server):
    knn_index(server.url)
    body = b'{"index": {"_id": "a"}}\n[1]\n{"update": {"_id": "b"}}\n{"script": {}}\n' + bulk_body(
        {"c": [1, 2, 3]}
    )
    status, answer = call(server.url, "POST", "/vectors/_bulk", body)
    assert status == 200 and answer["errors"]
    assert [next(iter(item.values()))["status"] for item in answer["items"]] == [400, 400, 201]


def test_a_gzip_body_is_inflated_and_a_bad_one_is_answered_400(server):
    knn_index(server.url)
    good = gzip.compress(bulk_body({"a": [1, 2, 3]}))
    status, answer = call(server.url, "POST", "/vectors/_bulk", good, Content_Encoding="gzip")
    assert status == 200 and not answer["errors"]
    for bad in (b"not gzip at all", good[:-9]):
        status, answer = call(server.url, "POST", "/vectors/_bulk", bad, Content_Encoding="gzip")
        assert status == 400 and "gzip" in answer["error"]["reason"]


def test_chunked_bodies_are_read(server):
    mapping = json.dumps({"mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 3}}}}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server.url), timeout=TIMEOUT)
    connection.request("PUT", "/chunked", body=iter([mapping[:10], mapping[10:]]), encode_chunked=True)
    assert connection.getresponse().read() and True
    body = bulk_body({"a": [1, 2, 3], "b": [4, 5, 6]})
    connection.request("POST", "/chunked/_bulk", body=iter([body[:7], body[7:]]), encode_chunked=True)
    assert not json.loads(connection.getresponse().read())["errors"]
    connection.close()
    assert (
        call(server.url, "GET", "/chunked/_mapping")[1]["chunked"]["mappings"]["properties"]["v"]["dimension"]
        == 3
    )
    assert call(server.url, "GET", "/chunked/_count")[1]["count"] == 2


def test_bodies_over_the_limit_are_answered_413(server):
    knn_index(server.url)
    port = port_of(server.url)
    headers = b"POST /vectors/_bulk HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2**20 + 1)
    status, answer = send_raw(port, headers)  # answered as soon as the headers announce too much
    assert status == 413 and answer["status"] == 413
    chunk = b"x" * 2**16
    chunked = (
        b"POST /vectors/_bulk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 17
    )
    assert send_raw(port, chunked)[0] == 413
    rows = bulk_body({str(i): [1, 2, 3] for i in range(60_000)})
    assert len(rows) > 2**20
    status, answer = call(server.url, "POST", "/vectors/_bulk", gzip.compress(rows), Content_Encoding="gzip")
    assert status == 413 and "inflates" in answer["error"]["reason"]
    assert call(server.url, "GET", "/vectors/_count")[1]["count"] == 0


def test_stalled_connections_hold_no_thread_and_are_closed(server):
    port = port_of(server.url)
    before = threading.active_count()
    stalled = []
    try:
        for number in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            partial = (
                b"GET / HTTP/1.1\r\nHost: x\r\n"
                if number % 2
                else b"PUT /i HTTP/1.1\r\nContent-Length: 99\r\n\r\n{"
            )
            sock.sendall(partial)
            stalled.append(sock)
        started = time.monotonic()
        assert call(server.url, "GET", "/")[0] == 200
        assert time.monotonic() - started < 1.0
        assert threading.active_count() <= before + 1
        for sock in stalled[:20]:
            assert sock.recv(100) == b""  # closed by the server after its 1 s timeout
    finally:
        for sock in stalled:
            sock.close()


def test_rewriting_the_same_ids_does_not_grow_the_log(server, tmp_path):
    knn_index(server.url)
    rows = {str(i): [i, i, i] for i in range(20)}
    log_file = tmp_path / "data" / "vectors" / "docs.jsonl"
    call(server.url, "POST", "/vectors/_bulk", bulk_body(rows))
    once = log_file.stat().st_size
    for round_ in range(30):
        call(server.url, "POST", "/vectors/_bulk", bulk_body({k: [round_, 0, 0] for k in rows}))
        assert log_file.stat().st_size <= 2 * once + 100
    call(server.url, "POST", "/vectors/_bulk", b'{"delete": {"_id": "0"}}\n')
    server.close()
    reopened = LocalIndexServer(tmp_path / "data").start()
    try:
        assert call(reopened.url, "GET", "/vectors/_count")[1]["count"] == 19
        assert call(reopened.url, "GET", "/vectors/_doc/1")[1]["_source"] == {"v": [29, 0, 0]}
    finally:
        reopened.close()


# -- item 13: byte and binary vectors -----------------------------------------------------------


def test_byte_vectors_are_integers_in_the_byte_range(server):
    knn_index(server.url, data_type="byte", method={"name": "hnsw", "space_type": "l2", "engine": "lucene"})
    body = bulk_body(
        {"ok": [-128, 0, 127], "float": [0.5, 1, 2], "range": [128, 0, 0], "short": [1, 2], "b": [1, 1, 1]}
    )
    items = call(server.url, "POST", "/vectors/_bulk", body)[1]["items"]
    results = {item["index"]["_id"]: item["index"] for item in items}
    assert results["ok"]["status"] == 201 and results["b"]["status"] == 201
    assert "floats instead of byte integers" in results["float"]["error"]["reason"]
    assert "not within in the byte range [-128, 127]" in results["range"]["error"]["reason"]
    assert "Vector dimension mismatch. Expected: 3, Given: 2" in results["short"]["error"]["reason"]
    query = {"query": {"knn": {"v": {"vector": [1, 1, 2], "k": 2}}}}
    hits = call(server.url, "POST", "/vectors/_search", query)[1]["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["b", "ok"]
    assert hits[0]["_score"] == pytest.approx(1 / (1 + 1))
    status, answer = call(
        server.url, "POST", "/vectors/_search", {"query": {"knn": {"v": {"vector": [1.5, 0, 0]}}}}
    )
    assert status == 400 and "floats instead of byte integers" in answer["error"]["reason"]


def test_binary_vectors_have_dimension_over_eight_elements_and_are_searched_by_hamming(server):
    knn_index(
        server.url,
        dimension=16,
        data_type="binary",
        method={"name": "hnsw", "space_type": "hamming", "engine": "faiss"},
    )
    rows = {"same": [7, -1], "one_bit": [6, -1], "far": [-8, 0], "long": [1] * 16, "wide": [300, 0]}
    items = call(server.url, "POST", "/vectors/_bulk", bulk_body(rows))[1]["items"]
    results = {item["index"]["_id"]: item["index"] for item in items}
    assert [results[k]["status"] for k in ("same", "one_bit", "far")] == [201, 201, 201]
    assert (
        "The dimension of the binary vector must be 8 times the length of the provided vector. "
        "Expected: 16, Given: 128" in results["long"]["error"]["reason"]
    )
    assert "byte range" in results["wide"]["error"]["reason"]
    query = {"query": {"knn": {"v": {"vector": [7, -1], "k": 3}}}}
    hits = call(server.url, "POST", "/vectors/_search", query)[1]["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["same", "one_bit", "far"]
    assert [hit["_score"] for hit in hits] == pytest.approx([1.0, 1 / 2, 1 / (1 + 16)])


def test_a_binary_field_with_a_float_space_is_refused_at_search(server):
    knn_index(server.url, dimension=8, data_type="binary", method={"name": "hnsw", "space_type": "l2"})
    assert not call(server.url, "POST", "/vectors/_bulk", bulk_body({"a": [1]}))[1]["errors"]
    status, answer = call(server.url, "POST", "/vectors/_search", {"query": {"knn": {"v": {"vector": [1]}}}})
    assert status == 400 and "binary vectors use [hamming]" in answer["error"]["reason"]


def test_deeply_nested_json_is_a_400_and_an_unknown_method_a_405(server):
    status, answer = call(server.url, "PUT", "/deep", b"[" * 100000)
    assert status == 400, answer
    status, answer = call(server.url, "FOO", "/")
    assert status == 405 and answer["error"]["type"] == "method_not_allowed_exception"


def test_a_server_has_one_serving_loop(server):
    """Two loops on one server read the same sockets and mix request bytes (the benchmark's null
    sink did so when run as a command: large `_bulk` bodies arrived reordered)."""
    refused: list[BaseException] = []

    def second_loop() -> None:
        try:
            server.serve_forever()
        except RuntimeError as error:
            refused.append(error)

    thread = threading.Thread(target=second_loop, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "a second serving loop started"
    assert "already being served" in str(refused[0])
    status, _ = call(server.url, "GET", "/")
    assert status == 200

"""`mlbatch search` takes the cluster options `mlbatch ingest` takes: SigV4 (`--aws-sigv4`,
`--aws-region`) and TLS (`--insecure`, `--ca-certs`), run against a real server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from connectors.opensearch.config import cluster_config
from pipelines.cli import build_parser, main
from tests.fault_server import FaultServer


@pytest.fixture
def cluster():
    server = FaultServer().start()
    server.handle(
        "PUT",
        "/docs",
        {},
        json.dumps({"mappings": {"properties": {"v": {"type": "knn_vector", "dimension": 3}}}}).encode(),
    )
    server.handle("POST", "/docs/_bulk", {}, b'{"index": {"_id": "a"}}\n{"v": [0, 0, 1]}\n')
    yield server
    server.close()


@pytest.mark.integration
def test_search_signs_its_requests_with_sigv4(cluster, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example-key")
    argv = ["search", "--vector", "[0, 0, 1]", "--index", "docs", "--opensearch", cluster.url, "--json"]
    assert main([*argv, "--aws-sigv4", "es", "--aws-region", "eu-west-3"]) == 0
    assert [hit["_id"] for hit in json.loads(capsys.readouterr().out)] == ["a"]
    signed = [auth for auth in cluster.authorizations if auth]
    assert signed and all(
        auth.startswith("AWS4-HMAC-SHA256") and "/eu-west-3/es/aws4_request" in auth for auth in signed
    )


@pytest.mark.integration
def test_search_without_a_region_for_sigv4_fails_with_one_line(cluster, monkeypatch, capsys):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    argv = ["search", "--vector", "[0, 0, 1]", "--index", "docs", "--opensearch", cluster.url]
    assert main([*argv, "--aws-sigv4", "es"]) == 1
    error = capsys.readouterr().err
    assert "needs a region" in error and "Traceback" not in error


def test_search_takes_the_tls_options():
    args = build_parser().parse_args(
        [
            "search",
            "q",
            "--index",
            "i",
            "--opensearch",
            "https://h:9200",
            "--insecure",
            "--ca-certs",
            "/ca.pem",
        ]
    )
    config = cluster_config(args)
    assert (config.url, config.verify_certs, config.ca_certs) == ("https://h:9200", False, "/ca.pem")

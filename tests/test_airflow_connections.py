"""Airflow connections read as mlbatch settings (`pipelines.airflow_provider.connections`): the
cluster URL with its auth and TLS fields, AWS keys, a connector's and a request's credential.

A small dataclass stands in for a connection; the tests with `airflow.sdk.Connection` (skipped
without Airflow) build them from JSON and URIs as `AIRFLOW_CONN_*` variables give them, so the
attribute names are Airflow's own. The built URL is checked through `OpenSearchConfig` and a
local server that records the basic auth it receives.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest

from connectors.local.http_server import JsonHttpServer, Reply
from connectors.opensearch.config import PASSWORD_SECRET, OpenSearchConfig
from connectors.secret_refs import SecretRef
from pipelines.airflow_provider.connections import (
    ConnectionSettingsError,
    aws_environment,
    aws_keys,
    cluster_settings,
    connector_credential,
    is_aws,
    request_credential,
)

HARD_PASSWORD = "p@ss:w/rd %#?&"


@dataclass
class Conn:
    """What the connections module reads of an Airflow connection."""

    conn_id: str = "test_conn"
    conn_type: str | None = "http"
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra


AWS = Conn(
    conn_type="aws",
    login="AKIAEXAMPLE",
    password="secret/key+1",
    extra={"aws_session_token": "token-1", "region_name": "eu-west-1"},
)
AWS_KEYS = {
    "access_key": "AKIAEXAMPLE",
    "secret_key": "secret/key+1",
    "session_token": "token-1",
    "region": "eu-west-1",
}


def url(**fields: Any) -> str:
    return cluster_settings(Conn(**fields))["opensearch"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"host": "search.local"}, "http://search.local"),
        ({"host": "search.local", "port": 9200}, "http://search.local:9200"),
        ({"host": "https://search.local/"}, "https://search.local"),
        ({"host": "https://search.local", "port": 9200}, "https://search.local:9200"),
        ({"host": "http://search.local:9201", "port": 9200}, "http://search.local:9201"),
        ({"host": "search.local/prefix", "port": 9200}, "http://search.local:9200/prefix"),
        ({"host": "[::1]", "port": 9200}, "http://[::1]:9200"),
        ({"host": "[::1]:9201", "port": 9200}, "http://[::1]:9201"),
    ],
)
def test_cluster_url_from_host_with_and_without_scheme_and_port(fields, expected):
    assert url(**fields) == expected


@pytest.mark.parametrize(
    ("fields", "scheme"),
    [
        ({"schema": "https"}, "https"),
        ({"schema": "http", "port": 443}, "http"),
        ({"extra": {"use_ssl": True}}, "https"),
        ({"extra": {"use_ssl": "true"}}, "https"),
        ({"extra": {"use_ssl": "False"}, "port": 443}, "http"),
        ({"port": 443}, "https"),
        ({"port": 9200}, "http"),
        ({"schema": "default_db", "port": 443}, "https"),
        ({"schema": "http", "host": "https://search.local"}, "https"),
    ],
)
def test_https_from_schema_use_ssl_or_port_443(fields, scheme):
    fields = {"host": "search.local", **fields}
    assert url(**fields).startswith(f"{scheme}://")


def test_login_and_password_are_percent_encoded_into_the_user_info():
    built = url(host="search.local", port=9200, login="ad:min@corp", password=HARD_PASSWORD)
    assert built == "http://ad%3Amin%40corp:p%40ss%3Aw%2Frd%20%25%23%3F%26@search.local:9200"


def test_a_login_without_password_is_basic_auth_with_an_empty_password_a_password_alone_nothing():
    assert url(host="search.local", password="orphan-secret") == "http://search.local"
    assert url(host="search.local", login="reader") == "http://reader:@search.local"
    assert OpenSearchConfig(url=url(host="search.local", login="reader")).client().transport.hosts == [
        {"host": "search.local", "http_auth": "reader:"}
    ]


@pytest.mark.parametrize(
    ("extra", "insecure"),
    [({"verify_certs": v}, True) for v in (False, "false", "False", "0", "no")]
    + [({}, None), ({"verify_certs": True}, None), ({"verify_certs": "true"}, None)],
)
def test_verify_certs_false_is_insecure_verifying_is_the_default(extra, insecure):
    assert cluster_settings(Conn(host="search.local", extra=extra)).get("insecure") is insecure


def test_ca_certs_sigv4_and_region_from_the_extra():
    settings = cluster_settings(
        Conn(
            host="https://vpc-x.us-east-1.es.amazonaws.com",
            extra={"ca_certs": "/etc/ca.pem", "aws_sigv4": "es", "region": "us-east-1"},
        )
    )
    assert settings == {
        "opensearch": "https://vpc-x.us-east-1.es.amazonaws.com",
        "ca_certs": "/etc/ca.pem",
        "aws_sigv4": "es",
        "region": "us-east-1",
    }
    assert cluster_settings(Conn(host="h", extra={"region_name": "eu-west-1"}))["region"] == "eu-west-1"


@pytest.mark.parametrize("host", [None, ""])
def test_no_host_names_the_connection(host):
    with pytest.raises(ConnectionSettingsError, match="'my_cluster'.*no host"):
        cluster_settings(Conn(conn_id="my_cluster", host=host))


def test_aws_keys_from_login_password_and_extra():
    assert aws_keys(AWS) == AWS_KEYS
    assert aws_environment(AWS) == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret/key+1",
        "AWS_SESSION_TOKEN": "token-1",
        "AWS_REGION": "eu-west-1",
    }


def test_aws_keys_from_the_extra_only_those_set():
    keys = {"aws_access_key_id": "AKIAEXTRA", "aws_secret_access_key": "extra-secret", "region": "us-west-2"}
    assert aws_keys(Conn(conn_type="aws", extra=keys)) == {
        "access_key": "AKIAEXTRA",
        "secret_key": "extra-secret",
        "region": "us-west-2",
    }
    assert aws_environment(Conn(conn_type="aws")) == {}


def test_aws_connection_types():
    kinds = ("aws", "AWS", "amazon", "http", None)
    assert [is_aws(Conn(conn_type=kind)) for kind in kinds] == [True, True, True, False, False]


def test_connector_credential_of_an_aws_connection_is_its_keys():
    assert connector_credential(AWS, ["openAI_key"]) == AWS_KEYS


def test_connector_credential_from_the_extra_credential_object_first():
    conn = Conn(password="ignored-password", extra={"credential": {"api_key": "k-1", "org": "o-1"}})
    assert connector_credential(conn, ["openAI_key"]) == {"api_key": "k-1", "org": "o-1"}


@pytest.mark.parametrize("credential", [{"api_key": 1}, ["k-1"], "k-1", {"nested": {"a": "b"}}])
def test_an_extra_credential_that_is_not_an_object_of_strings_is_refused(credential):
    with pytest.raises(ConnectionSettingsError, match="'openai_conn'.*object of strings"):
        connector_credential(Conn(conn_id="openai_conn", extra={"credential": credential}), ["k"])


def test_the_password_fills_every_declared_credential_name():
    conn = Conn(password="sk-live-123")
    assert connector_credential(conn, ["openAI_key"]) == {"openAI_key": "sk-live-123"}
    assert connector_credential(conn, iter(["key_a", "key_b"])) == {
        "key_a": "sk-live-123",
        "key_b": "sk-live-123",
    }


@pytest.mark.parametrize(("password", "declared"), [("sk-live-123", []), (None, ["openAI_key"]), ("", ["k"])])
def test_nothing_usable_is_an_error_naming_the_connection(password, declared):
    with pytest.raises(ConnectionSettingsError, match="'openai_conn'.*password.*credential") as caught:
        connector_credential(Conn(conn_id="openai_conn", password=password), declared)
    assert "sk-live-123" not in str(caught.value)


@pytest.mark.parametrize("source_type", ["openAI", "openai", "OPENAI"])
def test_request_credential_openai_password_is_the_openai_key(source_type):
    assert request_credential(Conn(password="sk-req-1"), source_type) == {"openAI_key": "sk-req-1"}


def test_request_credential_of_aws_and_extra_connections():
    assert request_credential(AWS, "s3") == AWS_KEYS
    extra = Conn(password="pw", extra={"credential": {"openAI_key": "sk-extra"}})
    assert request_credential(extra, "openAI") == {"openAI_key": "sk-extra"}


@pytest.mark.parametrize(("password", "source_type"), [("pw", "s3"), (None, "openAI")])
def test_request_credential_without_a_usable_one_names_connection_and_source(password, source_type):
    with pytest.raises(
        ConnectionSettingsError, match=f"'src_conn'.*no credential for a {source_type} source"
    ):
        request_credential(Conn(conn_id="src_conn", password=password), source_type)


def test_the_built_url_gives_opensearch_config_the_decoded_user_and_password():
    built = url(host="search.local", port=9200, schema="https", login="ad:min@corp", password=HARD_PASSWORD)
    config = OpenSearchConfig(url=built)
    assert config.display_url == "https://ad%3Amin%40corp:***@search.local:9200"
    assert HARD_PASSWORD not in config.display_url and "p%40ss" not in config.display_url
    assert config.worker_secrets() == {PASSWORD_SECRET: HARD_PASSWORD}
    on_workers = config.for_workers(SecretRef(kind="env", names=(PASSWORD_SECRET,)))
    assert (on_workers.user, on_workers.password, on_workers.url) == (
        "ad:min@corp",
        None,
        "https://search.local:9200",
    )
    assert config.client().transport.hosts == [
        {"host": "search.local", "port": 9200, "use_ssl": True, "http_auth": f"ad:min@corp:{HARD_PASSWORD}"}
    ]


@pytest.mark.integration
def test_the_built_url_sends_the_right_basic_auth_to_a_cluster():
    seen: list[str] = []

    def handle(method: str, path: str, headers: Message, body: bytes) -> Reply:
        seen.append(headers.get("Authorization", ""))
        return 200, {"name": "local", "version": {"number": "2.19.0", "distribution": "opensearch"}}

    server = JsonHttpServer(handle).start()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        built = url(host=host, port=int(port), login="ad:min@corp", password=HARD_PASSWORD)
        assert OpenSearchConfig(url=built).client(max_retries=0).info()["version"]["number"] == "2.19.0"
    finally:
        server.close()
    assert [base64.b64decode(value.removeprefix("Basic ")).decode() for value in seen] == [
        f"ad:min@corp:{HARD_PASSWORD}"
    ]


def test_real_airflow_connections_from_json_and_uri():
    sdk = pytest.importorskip("airflow.sdk")
    extra = {"use_ssl": True, "verify_certs": False, "ca_certs": "/etc/ca.pem"}
    fields = {
        "host": "search.local",
        "port": 9200,
        "login": "admin",
        "password": HARD_PASSWORD,
        "extra": extra,
    }
    from_json = sdk.Connection.from_json(json.dumps({"conn_type": "opensearch", **fields}), conn_id="os_json")
    assert cluster_settings(from_json) == {
        "opensearch": "https://admin:p%40ss%3Aw%2Frd%20%25%23%3F%26@search.local:9200",
        "insecure": True,
        "ca_certs": "/etc/ca.pem",
    }
    from_uri = sdk.Connection.from_uri(
        "opensearch://admin:p%40ss%3Aw%2Frd@search.local:9200/https", conn_id="os"
    )
    assert cluster_settings(from_uri) == {"opensearch": "https://admin:p%40ss%3Aw%2Frd@search.local:9200"}
    https_uri = sdk.Connection.from_uri("https://admin:pw@search.local:9200", conn_id="https_uri")
    assert cluster_settings(https_uri) == {"opensearch": "https://admin:pw@search.local:9200"}  # never http
    ipv6_uri = sdk.Connection.from_uri("http://admin:pw@[fe80::1]:9200", conn_id="ipv6_uri")
    assert cluster_settings(ipv6_uri) == {"opensearch": "http://admin:pw@[fe80::1]:9200"}
    assert OpenSearchConfig(
        url=url(host="h", login="admin", password=from_uri.password)
    ).worker_secrets() == {PASSWORD_SECRET: "p@ss:w/rd"}
    aws_uri = "aws://AKIAEXAMPLE:secret%2Fkey%2B1@/?region_name=eu-west-1&aws_session_token=token-1"
    assert aws_keys(sdk.Connection.from_uri(aws_uri, conn_id="aws_uri")) == AWS_KEYS
    openai = sdk.Connection.from_json(
        json.dumps({"conn_type": "http", "password": "sk-json-1"}), conn_id="oa"
    )
    assert connector_credential(openai, ["openAI_key"]) == {"openAI_key": "sk-json-1"}
    assert request_credential(openai, "openAI") == {"openAI_key": "sk-json-1"}
    with pytest.raises(ConnectionSettingsError, match="'oa'.*no host"):
        cluster_settings(openai)


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        (Conn(conn_type="https", host="search", port=9200), "https://search:9200"),
        (Conn(conn_type="HTTPS", host="search", port=9200), "https://search:9200"),
        (Conn(conn_type="opensearch", host="search", schema="HTTPS"), "https://search"),
        (Conn(conn_type="opensearch", host="HTTPS://search/p", port=9200), "https://search:9200/p"),
        (Conn(conn_type="http", host="::1", port=9200), "http://[::1]:9200"),
        (Conn(conn_type="http", host="fe80::1"), "http://[fe80::1]"),
    ],
)
def test_the_scheme_follows_the_connection_type_and_ipv6_hosts_get_brackets(conn, expected):
    assert cluster_settings(conn)["opensearch"] == expected

"""Airflow connections read as mlbatch settings (pure: no Airflow import, any object with a
connection's attributes will do).

Credentials live in Airflow connections, never in DAG files; these functions turn one into:
- `cluster_settings`: the `IngestOptions` cluster fields of an OpenSearch connection (the
  OpenSearch provider's `opensearch` type, or `http`): URL with basic auth, TLS, SigV4;
- `connector_credential`: a batch-predict connector's `credential` (an `aws` connection gives
  `access_key` / `secret_key` / `session_token`, any other its extra's `credential` object or
  its password under each credential name the connector declares);
- `request_credential`: the `credential` of a `_batch_ingestion` request, the same way
  (`openAI_key` for an openAI source, the AWS keys and `region` for an s3 source);
- `aws_environment`: the variables boto3's default chain reads, for SigV4 to the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

AWS_TYPES = ("aws", "amazon")


class ConnectionSettingsError(ValueError):
    """A connection that cannot give what is asked of it; the message names the connection and field."""


class ConnectionLike(Protocol):
    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    schema: str | None
    login: str | None
    password: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _scheme(conn: ConnectionLike) -> str:
    """https or http: the connection's schema; else https for type `https` (what a URI
    `AIRFLOW_CONN_X='https://…'` gives: no schema), or `use_ssl`, or port 443; else http (type
    `http` is Airflow's HTTP connection, which says nothing of TLS)."""
    extra = conn.extra_dejson
    if (conn.schema or "").lower() in ("http", "https"):
        return (conn.schema or "").lower()
    if (conn.conn_type or "").lower() == "https":
        return "https"
    if "use_ssl" in extra:
        return "https" if _flag(extra["use_ssl"]) else "http"
    return "https" if conn.port == 443 else "http"


def cluster_settings(conn: ConnectionLike) -> dict[str, Any]:
    """The cluster fields of `IngestOptions` (`opensearch`, `insecure`, `ca_certs`, `aws_sigv4`,
    `region`) for an OpenSearch or HTTP connection. Basic auth goes into the URL's user info,
    which mlbatch masks everywhere it shows a URL and hands to workers as a secret."""
    if not conn.host:
        raise ConnectionSettingsError(f"connection {conn.conn_id!r}: no host")
    extra = conn.extra_dejson
    host = conn.host.rstrip("/")
    if "://" in host:
        scheme, _, host = host.partition("://")
        scheme = scheme.lower()
    else:
        scheme = _scheme(conn)
    name = host.split("/", 1)[0]
    if name.count(":") > 1 and not name.startswith("["):  # IPv6, its brackets taken off by Airflow
        host = f"[{name}]{host[len(name) :]}"
    if conn.port and ":" not in host.split("/", 1)[0].rpartition("]")[2]:  # "[::1]" has no port yet
        first, slash, rest = host.partition("/")
        host = f"{first}:{conn.port}{slash}{rest}"
    userinfo = ""
    if conn.login:  # always with a colon: opensearch-py cannot read a user info without a password
        userinfo = f"{quote(conn.login, safe='')}:{quote(conn.password or '', safe='')}@"
    settings: dict[str, Any] = {"opensearch": f"{scheme}://{userinfo}{host}"}
    if "verify_certs" in extra and not _flag(extra["verify_certs"]):
        settings["insecure"] = True
    if extra.get("ca_certs"):
        settings["ca_certs"] = str(extra["ca_certs"])
    if extra.get("aws_sigv4"):
        settings["aws_sigv4"] = str(extra["aws_sigv4"])
    if extra.get("region") or extra.get("region_name"):
        settings["region"] = str(extra.get("region") or extra.get("region_name"))
    return settings


def is_aws(conn: ConnectionLike) -> bool:
    return (conn.conn_type or "").lower() in AWS_TYPES


def aws_keys(conn: ConnectionLike) -> dict[str, str]:
    """ML Commons' credential names for an AWS connection's keys and region (only those set)."""
    extra = conn.extra_dejson
    found = {
        "access_key": conn.login or extra.get("aws_access_key_id"),
        "secret_key": conn.password or extra.get("aws_secret_access_key"),
        "session_token": extra.get("aws_session_token"),
        "region": extra.get("region_name") or extra.get("region"),
    }
    return {name: str(value) for name, value in found.items() if value}


def aws_environment(conn: ConnectionLike) -> dict[str, str]:
    """The environment variables boto3's default chain reads, for an AWS connection."""
    names = {
        "access_key": "AWS_ACCESS_KEY_ID",
        "secret_key": "AWS_SECRET_ACCESS_KEY",
        "session_token": "AWS_SESSION_TOKEN",
        "region": "AWS_REGION",
    }
    return {names[name]: value for name, value in aws_keys(conn).items()}


def _extra_credential(conn: ConnectionLike) -> dict[str, str] | None:
    credential = conn.extra_dejson.get("credential")
    if credential is None:
        return None
    if not isinstance(credential, Mapping) or not all(isinstance(v, str) for v in credential.values()):
        raise ConnectionSettingsError(
            f"connection {conn.conn_id!r}: extra 'credential' must be an object of strings"
        )
    return dict(credential)


def connector_credential(conn: ConnectionLike, declared: Iterable[str]) -> dict[str, str]:
    """A connector's `credential` from a connection; `declared` are the names the connector's own
    `credential` lists (their values in the DAG file are placeholders)."""
    if is_aws(conn):
        return aws_keys(conn)
    credential = _extra_credential(conn)
    if credential is not None:
        return credential
    names = list(declared)
    if conn.password and names:
        return dict.fromkeys(names, conn.password)
    raise ConnectionSettingsError(
        f"connection {conn.conn_id!r}: give the credential as the password (the connector must name its "
        'keys, e.g. "credential": {"openAI_key": ""}) or as an extra {"credential": {...}}'
    )


def request_credential(conn: ConnectionLike, source_type: str) -> dict[str, str]:
    """A `_batch_ingestion` request's `credential` from a connection, for its source type."""
    if is_aws(conn):
        return aws_keys(conn)
    credential = _extra_credential(conn)
    if credential is not None:
        return credential
    if source_type.lower() == "openai" and conn.password:
        return {"openAI_key": conn.password}
    raise ConnectionSettingsError(
        f"connection {conn.conn_id!r}: no credential for a {source_type} source (an aws connection, "
        'a password for openAI_key, or an extra {"credential": {...}})'
    )

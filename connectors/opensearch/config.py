"""How mlbatch reaches an OpenSearch cluster (the **write** edge's connection settings).

`OpenSearchConfig` is what users set (URL, basic auth or SigV4 for Amazon OpenSearch
Service / Serverless, TLS, gzip bodies, a request timeout) and builds opensearch-py clients;
`cluster_config` builds one from the cluster options every command takes; `describe` turns
an opensearch-py error into one line; `ClusterError` is the one error a run reports when
the cluster cannot be used. The bulk writer carries its config inside the job graph, so for
workers that are not the launching process `for_workers` swaps the password (also one in the
URL) for a `connectors.secret_refs.SecretRef` they resolve when they build their client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import SerializationError, TransportError
from opensearchpy.serializer import JSONSerializer

from connectors.secret_refs import SecretRef

DEFAULT_URL = "http://localhost:9200"
DEFAULT_TIMEOUT = 60.0
SIGV4_SERVICES = ("es", "aoss")
PASSWORD_SECRET = "opensearch.password"


class ClusterError(RuntimeError):
    """The cluster cannot be used for this job; the message says why in one line."""


@dataclass(frozen=True)
class OpenSearchConfig:
    """Where and how to reach the cluster."""

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    aws_sigv4: str | None = None
    region: str | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    compress: bool = False
    timeout: float = DEFAULT_TIMEOUT
    secrets: SecretRef | None = None  # on workers: where the password comes from

    @classmethod
    def from_env(cls, url: str | None = None, user: str | None = None, **kwargs: Any) -> OpenSearchConfig:
        return cls(
            url=url or os.environ.get("OPENSEARCH_URL") or DEFAULT_URL,
            user=user,
            password=os.environ.get("OPENSEARCH_PASSWORD") if user else None,
            **kwargs,
        )

    @property
    def display_url(self) -> str:
        """The URL with any password in it masked, for messages and records."""
        parsed = urlparse(self.url)
        if parsed.password is None:
            return self.url
        return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()

    def worker_secrets(self) -> dict[str, str]:
        """The password the workers need, by name: the URL's, else `password`."""
        password = urlparse(self.url).password
        password = unquote(password) if password is not None else self.password
        return {PASSWORD_SECRET: password} if password else {}

    def for_workers(self, ref: SecretRef) -> OpenSearchConfig:
        """This config without its password (the URL's user becomes `user`): workers resolve it from `ref`."""
        parsed = urlparse(self.url)
        if parsed.username is None and parsed.password is None:
            return replace(self, password=None, secrets=ref)
        host = parsed.netloc.rpartition("@")[2]
        return replace(
            self,
            url=parsed._replace(netloc=host).geturl(),
            user=unquote(parsed.username or ""),
            password=None,
            secrets=ref,
        )

    def _password(self) -> str:
        if self.secrets is None:
            return self.password or ""
        return self.secrets.values().get(PASSWORD_SECRET, "")

    def _sigv4_options(self) -> dict[str, Any]:
        import boto3
        from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ClusterError("--aws-sigv4 needs a region: pass --aws-region or set AWS_REGION")
        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ClusterError("--aws-sigv4: no AWS credentials found in the default chain")
        return {
            "http_auth": AWSV4SignerAuth(credentials, region, self.aws_sigv4),
            "connection_class": RequestsHttpConnection,
        }

    def client(self, max_retries: int = 3) -> OpenSearch:
        """An opensearch-py client; `max_retries=0` leaves retries to the caller."""
        options: dict[str, Any] = {
            "hosts": [self.url],
            "timeout": self.timeout,
            "max_retries": max_retries,
            "retry_on_timeout": max_retries > 0,
            "http_compress": self.compress,
            "serializer": OrjsonSerializer(),
        }
        if self.url.startswith("https://"):
            options["verify_certs"] = self.verify_certs
            if self.ca_certs:
                options["ca_certs"] = self.ca_certs
            if not self.verify_certs:
                options["ssl_show_warn"] = False
        if self.aws_sigv4:
            options.update(self._sigv4_options())
        elif self.user:
            options["http_auth"] = (self.user, self._password())
        return OpenSearch(**options)


class ClusterOptions(Protocol):
    """The cluster options every command takes (`--opensearch`, `--user`, `--aws-sigv4`, `--aws-region`,
    `--insecure`, `--ca-certs`): parsed arguments or a typed options object."""

    @property
    def opensearch(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def aws_sigv4(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def ca_certs(self) -> str | None: ...


def cluster_config(cluster: ClusterOptions, **settings: Any) -> OpenSearchConfig:
    """The cluster `cluster` names, completed from the environment; `settings` sets the other fields
    (`compress`, `timeout`)."""
    return OpenSearchConfig.from_env(
        cluster.opensearch,
        cluster.user,
        aws_sigv4=cluster.aws_sigv4,
        region=cluster.region,
        verify_certs=not cluster.insecure,
        ca_certs=cluster.ca_certs,
        **settings,
    )


class OrjsonSerializer(JSONSerializer):
    """opensearch-py's JSON serializer, parsing answers with orjson: a 500-item `_bulk` answer is
    parsed on a sender thread while the pipeline thread waits for the GIL."""

    def loads(self, s: str) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError as error:
            raise SerializationError(s, error) from None


def describe(error: Exception) -> str:
    """One line for an opensearch-py error: `HTTP <status> <reason>` or the connection problem."""
    if isinstance(error, TransportError) and isinstance(error.status_code, int):
        info = error.info if isinstance(error.info, dict) else {}
        detail = info.get("error")
        reason = detail.get("reason") if isinstance(detail, dict) else detail
        return f"HTTP {error.status_code} {reason or error.error}"
    return str(error) or type(error).__name__


def refused_credentials(error: TransportError) -> bool:
    """True when the cluster answered 401 or 403."""
    return isinstance(error.status_code, int) and error.status_code in (401, 403)

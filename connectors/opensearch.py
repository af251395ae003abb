"""The OpenSearch cluster at the **write** edge: connection settings, index checks and `_bulk` calls.

`OpenSearchConfig` is what users set (URL, basic auth, TLS); `BulkClient` owns one
opensearch-py client per worker and sends pre-serialized bulk bodies to `POST /{index}/_bulk`,
returning the per-item results. Whole-request failures (429, 502-504, timeouts, connection
errors) are retried by opensearch-py's transport.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError

DEFAULT_URL = "http://localhost:9200"
RETRY_STATUSES = (429, 502, 503, 504)


class ClusterError(RuntimeError):
    """The cluster cannot be used for this job; the message says why in one line."""


@dataclass(frozen=True)
class OpenSearchConfig:
    """Where and how to reach the cluster."""

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: float = 60.0
    max_retries: int = 8

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

    def client(self) -> OpenSearch:
        options: dict[str, Any] = {
            "hosts": [self.url],
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "retry_on_timeout": True,
            "retry_on_status": RETRY_STATUSES,
            "http_compress": False,
        }
        if self.url.startswith("https://"):
            options["verify_certs"] = self.verify_certs
            if self.ca_certs:
                options["ca_certs"] = self.ca_certs
            if not self.verify_certs:
                options["ssl_show_warn"] = False
        if self.user:
            options["http_auth"] = (self.user, self.password or "")
        return OpenSearch(**options)


def _describe(error: Exception) -> str:
    if isinstance(error, TransportError) and isinstance(error.status_code, int):
        info = error.info if isinstance(error.info, dict) else {}
        reason = info.get("error", {}).get("reason") if isinstance(info.get("error"), dict) else None
        return f"HTTP {error.status_code} {reason or error.error}"
    return str(error) or type(error).__name__


def prepare_index(config: OpenSearchConfig, index_name: str, create_body: dict[str, Any] | None) -> bool:
    """Check the cluster answers and the index exists, creating it from `create_body` if given.

    Returns True when the index was created. Raises ClusterError with a one-line cause.
    """
    client = config.client()
    try:
        client.info()
    except (OpenSearchConnectionError, TransportError) as error:
        raise ClusterError(f"cannot reach OpenSearch at {config.display_url}: {_describe(error)}") from None
    try:
        if client.indices.exists(index=index_name):
            return False
        if create_body is None:
            raise ClusterError(
                f"index {index_name!r} does not exist at {config.display_url}; create it first "
                "or pass --create-index MAPPING.json"
            )
        client.indices.create(index=index_name, body=create_body)
    except TransportError as error:
        raise ClusterError(f"index {index_name!r}: {_describe(error)}") from None
    return True


class BulkClient:
    """Sends serialized `_bulk` bodies for one index; one per worker."""

    def __init__(self, config: OpenSearchConfig, index_name: str) -> None:
        self._client = config.client()
        self._index_name = index_name

    def send(self, body: bytes) -> list[dict[str, Any]]:
        """Per-item results (`{"index": {...}}` objects) in request order."""
        try:
            response = self._client.bulk(body=body, index=self._index_name)
        except (OpenSearchConnectionError, TransportError) as error:
            raise ClusterError(f"_bulk to {self._index_name!r} failed: {_describe(error)}") from None
        if isinstance(response, (bytes, str)):
            response = orjson.loads(response)
        return response["items"]

    def close(self) -> None:
        self._client.close()

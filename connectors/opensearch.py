"""The OpenSearch cluster at the **write** edge: connection settings, index checks and `_bulk` calls.

`OpenSearchConfig` is what users set (URL, basic auth or SigV4 for Amazon OpenSearch
Service / Serverless, TLS, gzip bodies); `prepare_index` checks the cluster and the index
before the run and returns the index's k-NN vector fields; `BulkClient` owns one
opensearch-py client per worker and sends one pre-serialized body, raising
`BulkRequestError` so that `connectors.bulk_retry` decides about retries;
`bulk_tuning` sets and restores the bulk-time index settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlparse

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import SerializationError, TransportError
from opensearchpy.serializer import JSONSerializer

from connectors.bulk_retry import BulkRequestError

DEFAULT_URL = "http://localhost:9200"
DEFAULT_TIMEOUT = 60.0
SIGV4_SERVICES = ("es", "aoss")
TUNED_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0}
log = logging.getLogger("mlbatch")


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

    def _sigv4_options(self) -> dict[str, Any]:
        import boto3
        from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ClusterError("--aws-sigv4 needs a region: pass --region or set AWS_REGION")
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
            options["http_auth"] = (self.user, self.password or "")
        return OpenSearch(**options)


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


def _refused(error: TransportError) -> bool:
    return isinstance(error.status_code, int) and error.status_code in (401, 403)


class KnnField(NamedTuple):
    """What a `knn_vector` mapping says about its vectors: `dimension` (bits for `binary`) and
    `data_type` (`float`, `byte` or `binary`)."""

    dimension: int | None
    data_type: str = "float"


def knn_vector_fields(properties: dict[str, Any], prefix: str = "") -> dict[str, KnnField]:
    """`{field path: KnnField}` of every `knn_vector` field in a mapping's properties."""
    found: dict[str, KnnField] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if spec.get("type") == "knn_vector":
            dimension = spec.get("dimension")
            data_type = str(spec.get("data_type") or "float").lower()
            found[path] = KnnField(int(dimension) if dimension is not None else None, data_type)
        if isinstance(spec.get("properties"), dict):
            found.update(knn_vector_fields(spec["properties"], f"{path}."))
    return found


@dataclass(frozen=True)
class IndexInfo:
    """What the run needs to know about the target index."""

    created: bool
    properties: dict[str, Any]

    @property
    def knn_fields(self) -> dict[str, KnnField]:
        return knn_vector_fields(self.properties)


def prepare_index(config: OpenSearchConfig, index_name: str, create_body: dict[str, Any] | None) -> IndexInfo:
    """Check the cluster answers and the index exists (creating it from `create_body` if given).

    Returns the index's mapping properties. Raises ClusterError with a one-line cause.
    """
    client = config.client()
    try:
        if config.aws_sigv4 != "aoss":  # Serverless has no `GET /`; the index calls below check it
            client.info()
        created = False
        if not client.indices.exists(index=index_name):
            if create_body is None:
                raise ClusterError(
                    f"index {index_name!r} does not exist at {config.display_url}; create it first "
                    "or pass --create-index MAPPING.json"
                )
            client.indices.create(index=index_name, body=create_body)
            created = True
        mapping = client.indices.get_mapping(index=index_name)
    except OpenSearchConnectionError as error:
        raise ClusterError(f"cannot reach OpenSearch at {config.display_url}: {describe(error)}") from None
    except TransportError as error:
        if _refused(error):
            raise ClusterError(
                f"OpenSearch at {config.display_url} refused the credentials: {describe(error)}"
            ) from None
        raise ClusterError(f"index {index_name!r}: {describe(error)}") from None
    properties = next(iter(mapping.values()), {}).get("mappings", {}).get("properties", {})
    return IndexInfo(created, properties)


def index_settings(answer: Any, index_name: str) -> dict[str, Any]:
    """The `index` settings of `GET <index>/_settings`'s answer; ClusterError for another shape."""
    entry = answer.get(index_name) if isinstance(answer, dict) else None
    if entry is None and isinstance(answer, dict) and len(answer) == 1:
        entry = next(iter(answer.values()))
    settings = entry.get("settings") if isinstance(entry, dict) else None
    index = settings.get("index") if isinstance(settings, dict) else None
    if not isinstance(index, dict):
        shown = orjson.dumps(answer).decode()[:120] if isinstance(answer, dict | list) else repr(answer)[:120]
        raise ClusterError(
            f"index {index_name!r}: cannot apply --bulk-tuning: the cluster answered GET _settings with "
            f"an unexpected shape: {shown}"
        )
    return index


@contextmanager
def bulk_tuning(config: OpenSearchConfig, index_name: str) -> Iterator[None]:
    """`refresh_interval: -1` and `number_of_replicas: 0` for the run; restored after it, failed or not."""
    client = config.client()
    try:
        settings = index_settings(client.indices.get_settings(index=index_name), index_name)
        previous = {name: settings.get(name) for name in TUNED_SETTINGS}
        if all(str(previous[name]) == str(value) for name, value in TUNED_SETTINGS.items()):
            previous = dict.fromkeys(TUNED_SETTINGS)
            log.warning(
                "index %r already has %s (a run that was killed?); the defaults are restored afterwards",
                index_name,
                TUNED_SETTINGS,
            )
        client.indices.put_settings(index=index_name, body={"index": TUNED_SETTINGS})
    except (TransportError, OpenSearchConnectionError) as error:
        raise ClusterError(f"index {index_name!r}: cannot apply --bulk-tuning: {describe(error)}") from None
    log.info("bulk tuning on %r: %s (was %s)", index_name, TUNED_SETTINGS, previous)
    try:
        yield
    finally:
        try:
            client.indices.put_settings(index=index_name, body={"index": previous})
            log.info("restored %r settings: %s", index_name, previous)
        except (TransportError, OpenSearchConnectionError) as error:
            log.error("could not restore %r settings %s: %s", index_name, previous, describe(error))


class BulkClient:
    """Sends serialized `_bulk` bodies for one index; one per worker, no retries of its own."""

    def __init__(self, config: OpenSearchConfig, index_name: str) -> None:
        self._client = config.client(max_retries=0)
        self._index_name = index_name

    def send(self, body: bytes) -> list[dict[str, Any]]:
        """Per-item results in request order; BulkRequestError when the request as a whole failed."""
        try:
            response = self._client.bulk(body=body, index=self._index_name)
        except OpenSearchConnectionError as error:
            raise BulkRequestError(None, f"_bulk to {self._index_name!r} failed: {describe(error)}") from None
        except TransportError as error:
            status = error.status_code if isinstance(error.status_code, int) else None
            prefix = "refused the credentials" if _refused(error) else "failed"
            raise BulkRequestError(
                status, f"_bulk to {self._index_name!r} {prefix}: {describe(error)}"
            ) from None
        if isinstance(response, bytes | str):
            response = orjson.loads(response)
        return response["items"]

    def close(self) -> None:
        self._client.close()

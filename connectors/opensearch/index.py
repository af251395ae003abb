"""The target index before and during a run: existence check and creation, its mapping, and
the bulk-time settings (`--bulk-tuning`) set and restored around the run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError

from connectors.opensearch.config import ClusterError, OpenSearchConfig, describe, refused_credentials
from connectors.opensearch.mapping import KnnField, knn_vector_fields

TUNED_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0}
log = logging.getLogger("mlbatch")


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
        if refused_credentials(error):
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

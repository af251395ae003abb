"""Sends one pre-serialized `_bulk` body to the cluster (the **write** step's client).

One `BulkClient` per worker owns an opensearch-py client with no retries of its own: a
request that fails as a whole raises `BulkRequestError` so that
`connectors.opensearch.bulk_retry` decides what happens next.
"""

from __future__ import annotations

from typing import Any

import orjson
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError

from connectors.opensearch.bulk_retry import BulkRequestError
from connectors.opensearch.config import OpenSearchConfig, describe, refused_credentials


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
            prefix = "refused the credentials" if refused_credentials(error) else "failed"
            raise BulkRequestError(
                status, f"_bulk to {self._index_name!r} {prefix}: {describe(error)}"
            ) from None
        if isinstance(response, bytes | str):
            response = orjson.loads(response)
        return response["items"]

    def close(self) -> None:
        self._client.close()

"""A `_batch_ingestion` body's `connector_id`, resolved to the credential of the connector stored by
`mlbatch serve-api` (`connectors.ml_store`), as ML Commons fetches it from its connector index.

As in ML Commons, the connector's credential is used only when the body has no `credential` of its
own; the body then goes on without `connector_id`. `mlbatch ingest` reads the store under
`$MLBATCH_HOME` (`stored_credential`); the service passes its open store's lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.task_store import mlbatch_home


class StoredConnectorError(LookupError):
    """The connector a body names cannot be read; the message says why."""


def uses_stored_connector(body: Any) -> bool:
    """Whether the body names a connector for its credential (and gives none itself)."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("connector_id"), str)
        and bool(body["connector_id"].strip())
        and not body.get("credential")
    )


def with_connector_credential(body: Any, credential_of: Callable[[str], dict[str, str]]) -> Any:
    """The body with its `connector_id` replaced by that connector's credential, when it uses one."""
    if not uses_stored_connector(body):
        return body
    resolved = {key: value for key, value in body.items() if key != "connector_id"}
    resolved["credential"] = credential_of(body["connector_id"])
    return resolved


def stored_credential(connector_id: str) -> dict[str, str]:
    """The credential of a connector in `$MLBATCH_HOME/ml.db` (StoredConnectorError if none)."""
    from connectors.ml_store import MlStore, ObjectNotFound
    from connectors.secret_box import SecretBox, SecretBoxError, load_master_key

    path = mlbatch_home() / "ml.db"
    if not path.exists():
        raise StoredConnectorError(
            f"connector_id {connector_id}: no connectors are stored in {path.parent} (serve-api's "
            "POST /_plugins/_ml/connectors/_create stores them); or put the credential in the request"
        )
    try:
        box = SecretBox(load_master_key(path.parent, create=False))
        return MlStore(box, path).credential("connector", connector_id)
    except (ObjectNotFound, SecretBoxError) as error:
        raise StoredConnectorError(f"connector_id {connector_id}: {error}") from None

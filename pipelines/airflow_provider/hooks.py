"""The hook of the mlbatch provider: Airflow connections in, mlbatch's typed settings out.

`MLBatchHook` reads a connector (a dict, a JSON file, or the name of a packaged blueprint such
as `openai_batch`) and fills its `credential` from an Airflow connection, synchronously in an
operator or asynchronously in a trigger; it builds the cluster fields of `IngestOptions` from
an OpenSearch or HTTP connection, and a request's `credential` from a source connection. The
conversions themselves are `pipelines.airflow_provider.connections` (pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException

from connectors.batch_predict.connector import Connector, ConnectorError, parse_connector
from connectors.batch_predict.job_calls import BatchJob
from pipelines.airflow_provider.connections import (
    ConnectionSettingsError,
    aws_environment,
    cluster_settings,
    connector_credential,
    request_credential,
)

ConnectorSource = Mapping[str, Any] | str


def connector_body(source: ConnectorSource) -> dict[str, Any]:
    """The connector JSON of a dict, a file path, or a packaged blueprint's name."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if "/" not in source and path.suffix != ".json":
        blueprint = files("connectors.batch_predict") / "blueprints" / f"{source}.json"
        if not blueprint.is_file():
            raise ConnectorError(f"connector {source!r}: no such file or packaged blueprint")
        return orjson.loads(blueprint.read_bytes())
    try:
        return orjson.loads(path.read_bytes())
    except OSError as error:
        raise ConnectorError(f"connector {source}: cannot read ({error.strerror or error})") from None
    except orjson.JSONDecodeError as error:
        raise ConnectorError(f"connector {source}: not valid JSON ({error})") from None


def with_credential(body: Mapping[str, Any], credential: Mapping[str, str] | None) -> Connector:
    """The checked connector, its `credential` replaced when one is given."""
    filled = dict(body)
    if credential is not None:
        filled["credential"] = dict(credential)
    return parse_connector(filled)


def _declared(body: Mapping[str, Any]) -> list[str]:
    credential = body.get("credential")
    return list(credential) if isinstance(credential, Mapping) else []


class MLBatchHook(BaseHook):
    """Connections for the mlbatch operators: `conn_id` holds the connector's credential."""

    conn_name_attr = "conn_id"
    hook_name = "mlbatch"

    def __init__(self, conn_id: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id

    def connector(self, source: ConnectorSource) -> Connector:
        body = connector_body(source)
        if self.conn_id is None:
            return with_credential(body, None)
        conn = self.get_connection(self.conn_id)
        return with_credential(body, connector_credential(conn, _declared(body)))

    def batch_job(self, source: ConnectorSource, partial_is_failure: bool = False) -> BatchJob:
        """The connector's job calls; a bad connector or connection is an AirflowException naming it."""
        try:
            return BatchJob(self.connector(source), partial_is_failure)
        except (ConnectorError, ConnectionSettingsError) as error:
            raise AirflowException(f"mlbatch connector: {error}") from None

    async def aconnector(self, source: ConnectorSource) -> Connector:
        """`connector` for the triggerer's event loop."""
        body = connector_body(source)
        if self.conn_id is None:
            return with_credential(body, None)
        conn = await self.aget_connection(self.conn_id)
        return with_credential(body, connector_credential(conn, _declared(body)))

    @classmethod
    def cluster(cls, conn_id: str) -> dict[str, Any]:
        """The `IngestOptions` cluster fields of an OpenSearch or HTTP connection."""
        return cluster_settings(cls.get_connection(conn_id))

    @classmethod
    def request_credential(cls, conn_id: str, source_type: str) -> dict[str, str]:
        return request_credential(cls.get_connection(conn_id), source_type)

    @classmethod
    def aws_environment(cls, conn_id: str) -> dict[str, str]:
        return aws_environment(cls.get_connection(conn_id))

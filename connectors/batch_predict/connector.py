"""ML Commons connector JSON, parsed and checked (the batch-predict **plan** step, pure).

A connector names a protocol (`http` or `aws_sigv4`), default `parameters`, a `credential`
and `actions`, each with `action_type`, `method`, `url`, `headers` and `request_body`
templates. `parse_connector` returns a `Connector` or raises `ConnectorError` naming the
field; secrets stay out of every repr. Fields ML Commons' connector parser skips are
skipped (with a warning unless ML Commons writes them itself, such as `created_time` in a
connector read back from a cluster). An `aws_sigv4` connector takes `service_name` and
`region` from its parameters, else from its credential, as ML Commons' `AwsConnector` does
(with its messages "Missing service name" / "Missing region"); its keys may be left out for
the default AWS chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from transforms.echo import echo

PROTOCOLS = ("http", "aws_sigv4")
ACTION_TYPES = ("predict", "batch_predict", "batch_predict_status", "cancel_batch_predict")
METHODS = ("GET", "POST", "PUT", "DELETE")
KNOWN_FIELDS = (
    "name",
    "description",
    "version",
    "protocol",
    "parameters",
    "credential",
    "actions",
    "client_config",
    "backend_roles",
    "access",
    "add_all_backend_roles",
    "connector_id",
    "created_time",
    "last_updated_time",
    "owner",
    "tenant_id",
    "provisioned_by",
)
log = logging.getLogger("mlbatch")


class ConnectorError(ValueError):
    """The connector JSON is wrong; the message names the field."""


@dataclass(frozen=True)
class ConnectorAction:
    action_type: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None
    pre_process_function: str | None = None
    post_process_function: str | None = None


@dataclass(frozen=True)
class Connector:
    name: str
    protocol: str
    parameters: dict[str, Any]
    credential: dict[str, str] = field(repr=False)
    actions: tuple[ConnectorAction, ...]
    description: str = ""
    version: str = "1"

    def action(self, action_type: str) -> ConnectorAction | None:
        return next((action for action in self.actions if action.action_type == action_type), None)

    def aws_setting(self, name: str) -> str | None:
        """`service_name` or `region` of an `aws_sigv4` connector: parameters first, then credential."""
        return aws_setting(self.parameters, self.credential, name)


def aws_setting(parameters: dict[str, Any], credential: dict[str, str], name: str) -> str | None:
    """A SigV4 setting from the connector's parameters, else its credential (ML Commons' order)."""
    value = parameters.get(name)
    if isinstance(value, str) and value:
        return value
    return credential.get(name) or None


def _parse_action(raw: Any, where: str) -> ConnectorAction:
    if not isinstance(raw, dict):
        raise ConnectorError(f"{where}: must be an object")
    action_type = raw.get("action_type")
    if not isinstance(action_type, str) or action_type.lower() not in ACTION_TYPES:
        raise ConnectorError(f"{where}.action_type: {action_type!r} is not one of {', '.join(ACTION_TYPES)}")
    method = raw.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ConnectorError(f"{where}.method: {method!r} is not one of {', '.join(METHODS)}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ConnectorError(f"{where}.url: missing")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConnectorError(f"{where}.headers: must be an object of string values")
    body = raw.get("request_body")
    if body is not None and not isinstance(body, str):
        raise ConnectorError(f"{where}.request_body: must be a string (a JSON template)")
    return ConnectorAction(
        action_type.lower(),
        method.upper(),
        url,
        dict(headers),
        body,
        raw.get("pre_process_function"),
        raw.get("post_process_function"),
    )


def parse_connector(body: Any, require_batch: bool = True) -> Connector:
    """Check a decoded connector JSON and return it typed; raise ConnectorError on the first problem.
    With `require_batch` (for launching a batch job) it must have a `batch_predict` action."""
    if not isinstance(body, dict):
        raise ConnectorError("connector: must be a JSON object")
    unknown = sorted(set(body) - set(KNOWN_FIELDS))
    if unknown:
        log.warning("connector: ignoring unknown field(s) %s", ", ".join(echo(name) for name in unknown[:3]))
    protocol = body.get("protocol")
    if protocol not in PROTOCOLS:
        raise ConnectorError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConnectorError("parameters: must be an object")
    credential = body.get("credential") or {}
    if not isinstance(credential, dict) or not all(isinstance(v, str) for v in credential.values()):
        raise ConnectorError("credential: must be an object of string values")
    raw_actions = body.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        raise ConnectorError("actions: must be a non-empty list")
    actions = tuple(_parse_action(raw, f"actions[{n}]") for n, raw in enumerate(raw_actions))
    if require_batch and not any(action.action_type == "batch_predict" for action in actions):
        raise ConnectorError("actions: no batch_predict action; a batch connector needs one")
    if protocol == "aws_sigv4":
        for name, message in (("service_name", "Missing service name"), ("region", "Missing region")):
            if aws_setting(parameters, credential, name) is None:
                raise ConnectorError(message)
    return Connector(
        name=str(body.get("name") or "connector"),
        protocol=protocol,
        parameters=dict(parameters),
        credential=dict(credential),
        actions=actions,
        description=str(body.get("description") or ""),
        version=str(body.get("version") or "1"),
    )

"""What callers of `mlbatch serve-api` may make it reach (pure): local files only under `--local-root`,
connector URLs only matching the trusted endpoint patterns, as ML Commons' setting
`plugins.ml_commons.trusted_connector_endpoints_regex` allows them (its defaults are ours).

An API caller is not the operator: without these limits a `_batch_ingestion` of
`"type": "local"` would read any file the service can (its master key included) into an index
the caller searches, and a connector could call any URL, the answer coming back as `remote_job`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.batch_predict.batch_actions import job_action
from connectors.batch_predict.connector import Connector, ConnectorAction, ConnectorError
from connectors.batch_predict.templating import fill_known, merge_parameters
from connectors.sources import resolved_under
from transforms.echo import cut

# ML Commons' defaults, with its `.*` inside host names narrowed to host characters: `.*` also
# matched `x@evil.example/a.amazonaws.com` (userinfo) and `evil.example/a.amazonaws.com` (a path).
_REGION = r"[a-z0-9.-]*[a-z0-9-]"
ML_COMMONS_TRUSTED_ENDPOINTS = (
    rf"^https://runtime\.sagemaker\.{_REGION}\.amazonaws\.com/.*$",
    rf"^https://api\.sagemaker\.{_REGION}\.amazonaws\.com/.*$",
    r"^https://api\.openai\.com/.*$",
    r"^https://api\.cohere\.ai/.*$",
    rf"^https://bedrock-runtime\.{_REGION}\.amazonaws\.com/.*$",
    rf"^https://bedrock-agent-runtime\.{_REGION}\.amazonaws\.com/.*$",
    rf"^https://bedrock\.{_REGION}\.amazonaws\.com/.*$",
    r"^https://api\.deepseek\.com/.*$",
    r"^https://generativelanguage\.googleapis\.com/.*$",
)
UNTRUSTED_URL = "Connector URL is not matching the trusted connector endpoint regex, URL is: "
NO_LOCAL_ROOT = (
    'data_source.type "local": mlbatch serve-api reads no local files unless it was started with '
    "--local-root DIR"
)


def _actions(connector: Connector) -> list[ConnectorAction]:
    """The connector's actions and the status and cancel actions derived for it."""
    actions = list(connector.actions)
    for action_type in ("batch_predict_status", "cancel_batch_predict"):
        if connector.action(action_type) is None:
            with contextlib.suppress(ConnectorError):  # none to derive: nothing will call it
                actions.append(job_action(connector, action_type))
    return actions


def untrusted_url(connector: Connector, parameters: Mapping[str, Any], patterns: Iterable[str]) -> str | None:
    """The first URL `connector` would call — its actions and the derived status and cancel
    actions, `${parameters.x}` filled from the connector's and these parameters — that no pattern
    matches whole, or that names a user (`user@host`); None when all are trusted."""
    merged = merge_parameters(connector.parameters, dict(parameters))
    compiled = [re.compile(pattern) for pattern in patterns]
    for action in _actions(connector):
        url = fill_known(action.url, merged)
        if "@" in urlsplit(url).netloc or not any(pattern.fullmatch(url) for pattern in compiled):
            return url
    return None


def untrusted_message(url: str) -> str:
    return UNTRUSTED_URL + cut(url, 200)


def confined_sources(sources: Iterable[str], root: str | None) -> list[str]:
    """Local sources as absolute paths under `root` (relative ones are taken from it); ValueError
    naming the first one outside it (`..` and symbolic links resolved), or when there is no root."""
    if root is None:
        raise ValueError(NO_LOCAL_ROOT)
    base = os.path.realpath(root)
    confined = []
    for source in sources:
        resolved = resolved_under(Path(base) / source, base)
        if resolved is None:
            raise ValueError(f"data_source.source: {cut(source, 200)} is outside --local-root {base}")
        confined.append(resolved)
    return confined

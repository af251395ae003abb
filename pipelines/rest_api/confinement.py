"""What callers of `mlbatch serve-api` may make it reach (pure): local files only under `--local-root`,
connector URLs only matching the trusted endpoint patterns, as ML Commons' setting
`plugins.ml_commons.trusted_connector_endpoints_regex` allows them (its defaults are ours).

An API caller is not the operator: without these limits a `_batch_ingestion` of
`"type": "local"` would read any file the service can (its master key included) into an index
the caller searches, and a connector could call any URL, the answer coming back as `remote_job`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from connectors.batch_predict.connector import Connector
from connectors.batch_predict.templating import fill_known, merge_parameters
from transforms.echo import cut

ML_COMMONS_TRUSTED_ENDPOINTS = (
    r"^https://runtime\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$",
    r"^https://api\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$",
    r"^https://api\.openai\.com/.*$",
    r"^https://api\.cohere\.ai/.*$",
    r"^https://bedrock-runtime\..*[a-z0-9-]\.amazonaws\.com/.*$",
    r"^https://bedrock-agent-runtime\..*[a-z0-9-]\.amazonaws\.com/.*$",
    r"^https://bedrock\..*[a-z0-9-]\.amazonaws\.com/.*$",
    r"^https://api\.deepseek\.com/.*$",
    r"^https://generativelanguage\.googleapis\.com/.*$",
)
UNTRUSTED_URL = "Connector URL is not matching the trusted connector endpoint regex, URL is: "
NO_LOCAL_ROOT = (
    'data_source.type "local": mlbatch serve-api reads no local files unless it was started with '
    "--local-root DIR"
)


def untrusted_url(connector: Connector, parameters: Mapping[str, Any], patterns: Iterable[str]) -> str | None:
    """The first action URL of `connector`, its `${parameters.x}` filled from the connector's and
    these request parameters, that no pattern matches whole; None when all are trusted."""
    merged = merge_parameters(connector.parameters, dict(parameters))
    compiled = [re.compile(pattern) for pattern in patterns]
    for action in connector.actions:
        url = fill_known(action.url, merged)
        if not any(pattern.fullmatch(url) for pattern in compiled):
            return url
    return None


def untrusted_message(url: str) -> str:
    return UNTRUSTED_URL + cut(url, 200)


def confined_sources(sources: Iterable[str], root: Path | None) -> list[str]:
    """Local sources as absolute paths under `root` (relative ones are taken from it); ValueError
    naming the first one outside it (`..` and symbolic links resolved), or when there is no root."""
    if root is None:
        raise ValueError(NO_LOCAL_ROOT)
    base = Path(os.path.realpath(root))
    confined = []
    for source in sources:
        resolved = Path(os.path.realpath(base / source))
        if not resolved.is_relative_to(base):
            raise ValueError(f"data_source.source: {cut(source, 200)} is outside --local-root {base}")
        confined.append(str(resolved))
    return confined

"""Which ML Commons endpoint a request names (pure): `route(method, path)` → handler name + path ids.

Paths are matched segment by segment, each percent-decoded first (as OpenSearch decodes them), so
`%5Fsearch` is `_search` and an id may hold an encoded `/`. An unknown path is OpenSearch's 400
"no handler found for uri [...] and method [...]"; a known path with another method is its 405
"Incorrect HTTP method for uri [...] and method [...], allowed: [...]".
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from pipelines.rest_api.api_errors import ApiError
from transforms.echo import cut

_TABLE: tuple[tuple[str, str, str], ...] = (
    ("POST", "/_batch_ingestion", "batch_ingest"),
    ("GET", "/tasks/_search", "search_tasks"),
    ("POST", "/tasks/_search", "search_tasks"),
    ("GET", "/tasks/{task_id}", "get_task"),
    ("DELETE", "/tasks/{task_id}", "delete_task"),
    ("POST", "/tasks/{task_id}/_cancel", "cancel_task"),
    ("POST", "/connectors/_create", "create_connector"),
    ("GET", "/connectors/{connector_id}", "get_connector"),
    ("DELETE", "/connectors/{connector_id}", "delete_connector"),
    ("POST", "/models/_register", "register_model"),
    ("GET", "/models/{model_id}", "get_model"),
    ("DELETE", "/models/{model_id}", "delete_model"),
    ("POST", "/models/{model_id}/_deploy", "deploy_model"),
    ("POST", "/models/{model_id}/_undeploy", "undeploy_model"),
    ("POST", "/models/{model_id}/_batch_predict", "batch_predict"),
)


@dataclass(frozen=True)
class Route:
    handler: str
    ids: dict[str, str]


def _segments(template: str) -> tuple[str, ...]:
    return ("_plugins", "_ml", *template.strip("/").split("/"))


_COMPILED = tuple((method, _segments(template), handler) for method, template, handler in _TABLE)


def _ids(template: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """The ids a path's decoded segments give the template's `{name}`s; None if it does not fit."""
    if len(template) != len(segments):
        return None
    ids = {}
    for expected, segment in zip(template, segments, strict=True):
        if expected.startswith("{"):
            if not segment:
                return None
            ids[expected[1:-1]] = segment
        elif expected != segment:
            return None
    return ids


def route(method: str, path: str) -> Route:
    """The handler of `method path` with its decoded ids (ApiError 400/405 when there is none).
    A literal segment (`_search`, `_create`, `_register`) wins over an id in the same place."""
    segments = [unquote(segment) for segment in path.split("/")[1:]]
    if len(segments) > 1 and segments[-1] == "":  # a trailing slash
        segments.pop()
    allowed = []
    for route_method, template, handler in _COMPILED:
        ids = _ids(template, segments)
        if ids is None:
            continue
        if route_method == method or (method == "HEAD" and route_method == "GET"):
            return Route(handler, ids)
        allowed.append(route_method)
    shown = cut(path, 200)
    if allowed:
        raise ApiError(
            405,
            "method_not_allowed_exception",
            f"Incorrect HTTP method for uri [{shown}] and method [{method}], allowed: [{', '.join(allowed)}]",
        )
    raise ApiError(
        400, "illegal_argument_exception", f"no handler found for uri [{shown}] and method [{method}]"
    )

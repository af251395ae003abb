"""Fill connector templates the way ML Commons does (the batch-predict **render** step, pure).

- Parameters are strings: a non-string value (object, list, number, null) is inserted as its
  JSON text, so `"TransformInput": ${parameters.TransformInput}` yields an object.
- Request parameters overlay connector parameters and are JSON-escaped unless they already
  are a JSON object or array, or are named in the request parameter `no_escape_params`
  (comma-separated names), so a string can sit between quotes in a JSON body.
- `${parameters.x}` and `${credential.x}` are filled in urls, headers and bodies;
  `${parameters.x:-default}` falls back to `default`; a quoted `"${parameters.x:-null}"` becomes
  a bare JSON `null`; values are filled recursively; `$${...}` is a literal `${...}`.
- A body with a placeholder left over fails with ML Commons' message
  "Some parameter placeholder not filled in payload: a, b"; a `${credential.x}` left over
  fails too (ML Commons would send it as it is), naming the placeholder, never a value.
- `fill_known` fills only the parameters it is given and leaves every other placeholder for
  later (the status and cancel actions derived from `batch_predict`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.batch_predict.connector import ConnectorError
from transforms.echo import cut

_PLACEHOLDER = re.compile(r"(\$?)\$\{(parameters|credential)\.([^}:]+)(?::-([^}]*))?\}")
_NULL_DEFAULT = re.compile(r"\"\$\{parameters\.(\w+):-null\}\"")
_UNFILLED = re.compile(r"\$\{parameters\.([^}]+)\}")
_UNFILLED_CREDENTIAL = re.compile(r"\$\{credential\.([^}]+)\}")
_MAX_DEPTH = 10
_LITERAL = "\x00{"
NO_ESCAPE_PARAMS = "no_escape_params"


def parameter_text(value: Any) -> str:
    """A parameter value as the string that gets substituted (non-strings as JSON text)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def is_json_container(text: str) -> bool:
    """True when `text` parses as a JSON object or array (those are inserted unescaped)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def escape_json_string(text: str) -> str:
    """`text` escaped to sit between double quotes in JSON (quotes, backslashes, controls, non-ASCII)."""
    return json.dumps(text, ensure_ascii=True)[1:-1]


def no_escape_names(request_parameters: dict[str, Any]) -> frozenset[str]:
    """The request parameters named in `no_escape_params` ("a, b"), which are inserted unescaped."""
    names = request_parameters.get(NO_ESCAPE_PARAMS)
    if not isinstance(names, str):
        return frozenset()
    return frozenset(name.strip() for name in names.split(","))


def merge_parameters(
    connector_parameters: dict[str, Any], request_parameters: dict[str, Any]
) -> dict[str, str]:
    """Connector parameters overlaid by the request's; request strings escaped unless already JSON
    or named in `no_escape_params`."""
    merged = {name: parameter_text(value) for name, value in connector_parameters.items()}
    unescaped = no_escape_names(request_parameters)
    for name, value in request_parameters.items():
        text = parameter_text(value)
        keep = not isinstance(value, str) or name in unescaped or is_json_container(text)
        merged[name] = text if keep else escape_json_string(text)
    return merged


def fill(template: str, parameters: dict[str, str], credential: dict[str, str]) -> str:
    """`template` with every known placeholder filled, defaults applied, values filled recursively."""
    return _fill_marked(template, parameters, credential).replace(_LITERAL, "${")


def _fill_marked(template: str, parameters: dict[str, str], credential: dict[str, str]) -> str:
    """Like `fill`, but `$${` literals are left as a marker, so leftovers can be told from them."""
    text = _NULL_DEFAULT.sub(lambda m: m.group(0) if m.group(1) in parameters else "null", template)
    return _fill(text, parameters, credential, 0)


def _fill(text: str, parameters: dict[str, str], credential: dict[str, str], depth: int) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return _LITERAL + match.group(0)[3:]
        source = parameters if match.group(2) == "parameters" else credential
        value = source.get(match.group(3))
        if value is None:
            return match.group(4) if match.group(4) is not None else match.group(0)
        return _fill(value, parameters, credential, depth + 1) if depth < _MAX_DEPTH else value

    return _PLACEHOLDER.sub(substitute, text)


def fill_known(template: str, parameters: dict[str, str]) -> str:
    """`template` with the `${parameters.x}` placeholders named in `parameters` filled (values
    recursively, as `fill`); every other placeholder, default and `$${` literal is left as it is."""
    return _fill_known(template, parameters, 0)


def _fill_known(text: str, parameters: dict[str, str], depth: int) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = parameters.get(match.group(3))
        if match.group(1) or match.group(2) != "parameters" or match.group(4) is not None or value is None:
            return match.group(0)
        return _fill_known(value, parameters, depth + 1) if depth < _MAX_DEPTH else value

    return _PLACEHOLDER.sub(substitute, text)


def unfilled_parameters(text: str) -> list[str]:
    """Names of `${parameters.x}` placeholders left in `text`, in order (duplicates kept)."""
    return _UNFILLED.findall(text)


def _names(names: list[str]) -> str:
    return ", ".join(cut(name) for name in names)


def render_body(template: str, parameters: dict[str, str], credential: dict[str, str]) -> str:
    """The request body, checked: no placeholder left and valid JSON, else ConnectorError.

    The error never quotes the filled body, which may hold credentials.
    """
    marked = _fill_marked(template, parameters, credential)
    missing = unfilled_parameters(marked)
    if missing:
        raise ConnectorError("Some parameter placeholder not filled in payload: " + _names(missing))
    missing = _UNFILLED_CREDENTIAL.findall(marked)
    if missing:
        raise ConnectorError(
            "Some credential placeholder not filled in payload: "
            + ", ".join(f"${{credential.{cut(name)}}}" for name in missing)
            + " (the connector's credential has no such key)"
        )
    payload = marked.replace(_LITERAL, "${")
    try:
        json.loads(payload)
    except ValueError as error:
        raise ConnectorError(
            f"Invalid payload: the filled request_body is not valid JSON ({error})"
        ) from None
    return payload


def render_text(template: str, parameters: dict[str, str], credential: dict[str, str], where: str) -> str:
    """A url or header value with every placeholder filled, else ConnectorError naming `where`."""
    marked = _fill_marked(template, parameters, credential)
    missing = unfilled_parameters(marked) + _UNFILLED_CREDENTIAL.findall(marked)
    if missing:
        raise ConnectorError(f"{where} contains unresolved placeholder(s): {_names(missing)}")
    return marked.replace(_LITERAL, "${")

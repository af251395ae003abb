"""Reading a request to the local index server (the stand-in for the **write** edge's cluster).

Pure functions from what arrives over HTTP to what the router and the store act on: the
percent-decoded path segments, the index name checked as OpenSearch checks it, a JSON
request body, and the actions of an NDJSON `_bulk` body.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from connectors.index_names import index_name_problem
from connectors.local.http_server import Reply

BULK_ACTIONS = ("index", "create", "update", "delete")

BulkAction = tuple[str, dict[str, Any], Any]


class BulkFormatError(ValueError):
    """A `_bulk` body that is not NDJSON action (and document) lines; answered with a 400."""


def path_parts(path: str) -> list[str]:
    """The non-empty segments of a request path, each percent-decoded (UTF-8) as OpenSearch does."""
    try:
        return [unquote(part, errors="strict") for part in path.split("/") if part]
    except UnicodeDecodeError:
        raise ValueError(f"the path [{path}] is not valid percent-encoded UTF-8") from None


def invalid_index_name(name: str) -> Reply | None:
    """OpenSearch's `invalid_index_name_exception` answer for `name`, or None when it is valid."""
    problem = index_name_problem(name)
    if problem is None:
        return None
    reason = f"Invalid index name [{name}], {problem.removeprefix('it ')}"
    cause = {"type": "invalid_index_name_exception", "reason": reason, "index": name, "index_uuid": "_na_"}
    return 400, {"error": {"root_cause": [cause], **cause}, "status": 400}


def request_object(body: bytes) -> dict[str, Any]:
    """The JSON object a request body holds ({} for none); ValueError for anything else."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as error:
        raise ValueError(f"the request body is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError("the request body must be a JSON object")
    return value


def _json_line(line: bytes, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        raise BulkFormatError(f"line [{number}] of the _bulk body is not valid JSON ({error})") from None


def bulk_actions(body: bytes) -> list[BulkAction]:
    """(action name, action metadata, document or None) for each action of an NDJSON `_bulk` body."""
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    actions = []
    position = 0
    while position < len(lines):
        number, line = lines[position]
        action = _json_line(line, number)
        if not isinstance(action, dict) or len(action) != 1:
            raise BulkFormatError(
                f"Malformed action/metadata line [{number}], expected an object with one action"
                f" but found [{json.dumps(action)[:80]}]"
            )
        ((name, meta),) = action.items()
        if name not in BULK_ACTIONS or not isinstance(meta, dict):
            raise BulkFormatError(
                f"Malformed action/metadata line [{number}], expected field [create], [delete], [index]"
                f" or [update] with an object but found [{name}]"
            )
        document = None
        if name != "delete":
            if position + 1 >= len(lines):
                raise BulkFormatError(f"the [{name}] action on line [{number}] has no document line after it")
            document = _json_line(lines[position + 1][1], lines[position + 1][0])
        position += 1 if name == "delete" else 2
        actions.append((name, meta, document))
    return actions

"""User values as they appear in error messages: on one line and cut short (pure).

A request or connector may hold values of any size and any characters; a message that
quotes one shows at most `LIMIT` characters of it, with control and separator characters
escaped by `repr`, and an ellipsis where it was cut.
"""

from __future__ import annotations

from typing import Any

LIMIT = 80
ELLIPSIS = "…"
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}


def echo(value: Any, limit: int = LIMIT) -> str:
    """`value` quoted for a message: `repr` of a string, JSON-ish text otherwise, at most `limit` chars."""
    if isinstance(value, str):
        text = repr(value[: limit + 1])
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = repr(value) if isinstance(value, float) or value.bit_length() < 256 else "a large number"
    else:
        text = json_type(value)
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def cut(text: str, limit: int = LIMIT) -> str:
    """Unquoted text (an error from a library, which may quote user values) on one line and at
    most `limit` characters: non-printable characters become spaces."""
    flat = "".join(char if char.isprintable() else " " for char in text[: limit + 1])
    return flat if len(flat) <= limit else flat[: limit - 1] + ELLIPSIS


def label(name: str, limit: int = LIMIT) -> str:
    """A field name as part of a dotted location (`field_map.<name>`): as is when short and
    printable, else quoted and cut by `echo`."""
    return name if len(name) <= limit and name.isprintable() and name.strip() == name else echo(name, limit)


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, for 'must be a string, not a list' messages."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)

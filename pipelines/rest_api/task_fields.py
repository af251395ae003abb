"""The values of a task document as `tasks/_search` reads them, and how they meet a query's values.

Pure, no I/O. A `TaskDoc` is a task's id, its position in the store and its `_source`;
`field_values` follows a dotted path into it (arrays flattened, `_id` the task id), and the helpers
compare a stored value with a query's as OpenSearch's field types do: a keyword compares as text, a
number field reads a string as a number or an ISO-8601 date in epoch milliseconds (as `create_time`
is a date), a boolean reads `"true"`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class TaskDoc:
    """What a query sees of one task: its id, its position in the store and its `_source`."""

    task_id: str
    seq_no: int
    source: dict[str, Any]


def field_name(name: str) -> str:
    """A query's field name as the document holds it: without a `.keyword` suffix."""
    return name.removesuffix(".keyword")


def _flat(values: list[Any]) -> list[Any]:
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


def field_values(doc: TaskDoc, field: str) -> list[Any]:
    """The non-null values at a dotted path, arrays flattened (`_id` is the task id)."""
    if field == "_id":
        return [doc.task_id]
    found: list[Any] = [doc.source]
    for part in field.split("."):
        found = [value[part] for value in _flat(found) if isinstance(value, dict) and part in value]
    return [value for value in _flat(found) if value is not None]


def is_number(value: Any) -> bool:
    """An int or a float, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: Any) -> float | None:
    """A number, or a string read as one or as an ISO-8601 date in epoch milliseconds."""
    if is_number(value):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000


def as_text(value: Any) -> str:
    """A query value as a keyword field holds it (`true`, not `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def same_value(value: Any, wanted: Any, fold: bool) -> bool:
    """Whether a stored value equals a `term`'s, read as the stored value's type (`fold`: any case)."""
    if isinstance(value, bool):
        return wanted is value or wanted == str(value).lower()
    if is_number(value):
        return not isinstance(wanted, bool) and as_number(wanted) == value
    if isinstance(value, str):
        return value.casefold() == as_text(wanted).casefold() if fold else value == as_text(wanted)
    return False


def text_words(value: Any) -> list[str]:
    """The lower-cased words of a value, as the standard analyzer cuts them."""
    return [word.lower() for word in _WORD.findall(as_text(value))]

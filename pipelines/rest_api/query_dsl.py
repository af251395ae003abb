"""The query DSL subset `tasks/_search` reads, compiled to predicates over task documents.

Pure, no I/O. `compile_query(query)` reads one query clause of `match_all`, `match_none`, `term`,
`terms`, `match`, `match_phrase`, `bool`, `range`, `exists`, `ids` or `prefix` and returns a
predicate over `TaskDoc`s; fields and values are read by `task_fields`. `match` is a case-insensitive
match of any word (all words with `"operator": "and"`); `bool` follows OpenSearch's
`minimum_should_match` rules. Anything else is a `QueryError` carrying the OpenSearch error type
(`parsing_exception`, `illegal_argument_exception`, ...) a client expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelines.rest_api.task_fields import (
    TaskDoc,
    as_number,
    as_text,
    field_name,
    field_values,
    is_number,
    same_value,
    text_words,
)

_LEAF_OPTIONS = frozenset({"boost", "_name"})


class QueryError(ValueError):
    """A search refused, with the OpenSearch error type (`kind`) and reason a client sees."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Matcher = Callable[[TaskDoc], bool]


def _parsing(message: str) -> QueryError:
    return QueryError("parsing_exception", message)


def _scalar(kind: str, field: str, value: Any) -> Any:
    if isinstance(value, str | bool) or is_number(value):
        return value
    raise _parsing(f"[{kind}] query on [{field}] needs a string, number or boolean value")


def _object(kind: str, body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _parsing(f"[{kind}] query malformed, no start_object after query name")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _parsing(f"[{kind}] query does not support [{unknown[0]}]")
    return body


def _one_field(kind: str, body: Any, value_key: str, options: frozenset[str]) -> tuple[str, Any, dict]:
    """(field, value, options) of a query written `{field: value}` or `{field: {value_key: value}}`."""
    if not isinstance(body, dict) or len(body) != 1:
        raise _parsing(f"[{kind}] query must name exactly one field")
    ((field, spec),) = body.items()
    if not isinstance(spec, dict):
        return field_name(field), _scalar(kind, field, spec), {}
    _object(kind, spec, options | {value_key})
    if value_key not in spec:
        raise _parsing(f"[{kind}] query on [{field}] has no [{value_key}]")
    return field_name(field), _scalar(kind, field, spec[value_key]), spec


def _match_all(body: Any) -> Matcher:
    _object("match_all", body, _LEAF_OPTIONS)
    return lambda doc: True


def _match_none(body: Any) -> Matcher:
    _object("match_none", body, _LEAF_OPTIONS)
    return lambda doc: False


def _term(body: Any) -> Matcher:
    field, wanted, options = _one_field("term", body, "value", _LEAF_OPTIONS | {"case_insensitive"})
    fold = options.get("case_insensitive") is True
    return lambda doc: any(same_value(value, wanted, fold) for value in field_values(doc, field))


def _terms(body: Any) -> Matcher:
    fields = [key for key in body if key not in _LEAF_OPTIONS] if isinstance(body, dict) else []
    if len(fields) != 1:
        raise _parsing("[terms] query must name exactly one field")
    if not isinstance(body[fields[0]], list):
        raise _parsing(f"[terms] query on [{fields[0]}] needs a list of values")
    wanted = [_scalar("terms", fields[0], value) for value in body[fields[0]]]
    field = field_name(fields[0])
    return lambda doc: any(same_value(v, w, False) for v in field_values(doc, field) for w in wanted)


def _match(body: Any) -> Matcher:
    field, text, options = _one_field("match", body, "query", _LEAF_OPTIONS | {"operator"})
    operator = str(options.get("operator", "or")).lower()
    if operator not in ("or", "and"):
        raise _parsing(f"[match] query on [{field}]: [operator] is [or] or [and], not [{operator}]")
    words, need = set(text_words(text)), all if operator == "and" else any

    def matched(doc: TaskDoc) -> bool:
        values = field_values(doc, field)
        tokens = {word for value in values if isinstance(value, str) for word in text_words(value)}
        texts_match = bool(words) and need(word in tokens for word in words)
        return texts_match or any(
            same_value(value, text, False) for value in values if not isinstance(value, str)
        )

    return matched


def _match_phrase(body: Any) -> Matcher:
    field, text, _ = _one_field("match_phrase", body, "query", _LEAF_OPTIONS)
    words = text_words(text)

    def has_phrase(value: Any) -> bool:
        if not isinstance(value, str):
            return same_value(value, text, False)
        tokens = text_words(value)
        return bool(words) and any(tokens[i : i + len(words)] == words for i in range(len(tokens)))

    return lambda doc: any(has_phrase(value) for value in field_values(doc, field))


def _prefix(body: Any) -> Matcher:
    field, start, options = _one_field("prefix", body, "value", _LEAF_OPTIONS | {"case_insensitive"})
    fold = options.get("case_insensitive") is True
    start = as_text(start).casefold() if fold else as_text(start)
    return lambda doc: any(
        isinstance(value, str) and (value.casefold() if fold else value).startswith(start)
        for value in field_values(doc, field)
    )


def _exists(body: Any) -> Matcher:
    spec = _object("exists", body, _LEAF_OPTIONS | {"field"})
    if not isinstance(spec.get("field"), str):
        raise _parsing("[exists] must be provided with a [field]")
    field = field_name(spec["field"])
    return lambda doc: any(value != {} for value in field_values(doc, field))


def _ids(body: Any) -> Matcher:
    values = _object("ids", body, _LEAF_OPTIONS | {"values"}).get("values")
    if not isinstance(values, list):
        raise _parsing("[ids] query needs [values], a list of task ids")
    wanted = {as_text(_scalar("ids", "_id", value)) for value in values}
    return lambda doc: doc.task_id in wanted


def _compare(value: Any, bound: Any, field: str) -> int | None:
    """How `value` compares with a range bound (-1, 0, 1), None when it is not comparable."""
    if isinstance(value, str):
        other: Any = as_text(bound)
    elif is_number(value):
        other = as_number(bound)
        if other is None:
            raise QueryError(
                "parse_exception",
                f"failed to parse [{bound}] for the range on [{field}]: give a number or an ISO-8601 date",
            )
    else:
        return None
    return (value > other) - (value < other)


_RANGE_TESTS: dict[str, Callable[[int], bool]] = {
    "gt": lambda c: c > 0,
    "gte": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "lte": lambda c: c <= 0,
}


def _range(body: Any) -> Matcher:
    if not isinstance(body, dict) or len(body) != 1:
        raise _parsing("[range] query must name exactly one field")
    ((name, spec),) = body.items()
    bounds = _object("range", spec, _LEAF_OPTIONS | set(_RANGE_TESTS))
    tests = [
        (_RANGE_TESTS[op], _scalar("range", name, bound))
        for op, bound in bounds.items()
        if op in _RANGE_TESTS
    ]
    field = field_name(name)

    def within(value: Any) -> bool:
        for test, bound in tests:
            compared = _compare(value, bound, field)
            if compared is None or not test(compared):
                return False
        return True

    return lambda doc: any(within(value) for value in field_values(doc, field))


def _clauses(spec: dict[str, Any], occur: str) -> list[Matcher]:
    clauses = spec.get(occur, [])
    clauses = clauses if isinstance(clauses, list) else [clauses]
    return [compile_query(clause) for clause in clauses]


def minimum_should_match(spec: Any, optional: int) -> int:
    """How many of `optional` should clauses must match, read as OpenSearch reads
    `minimum_should_match`: `2`, `-1` (all but one), `"75%"`, `"-25%"`."""
    try:
        text = str(spec).strip()
        if isinstance(spec, bool) or "<" in text:
            raise ValueError(text)
        if text.endswith("%"):
            share = optional * int(text[:-1]) / 100
            needed = optional + int(share) if share < 0 else int(share)
        else:
            count = int(text)
            needed = optional + count if count < 0 else count
    except ValueError:
        raise QueryError(
            "illegal_argument_exception", f"[minimum_should_match] cannot be read from [{spec}]"
        ) from None
    return max(needed, 0)


def _bool(body: Any) -> Matcher:
    occurs = ("must", "filter", "should", "must_not")
    spec = _object("bool", body, _LEAF_OPTIONS | {*occurs, "minimum_should_match", "adjust_pure_negative"})
    required = _clauses(spec, "must") + _clauses(spec, "filter")
    should, must_not = _clauses(spec, "should"), _clauses(spec, "must_not")
    wanted = spec.get("minimum_should_match")
    needed = (
        minimum_should_match(wanted, len(should))
        if wanted is not None
        else int(bool(should and not required))
    )
    return lambda doc: (
        all(clause(doc) for clause in required)
        and not any(clause(doc) for clause in must_not)
        and sum(clause(doc) for clause in should) >= needed
    )


_QUERIES: dict[str, Callable[[Any], Matcher]] = {
    "match_all": _match_all,
    "match_none": _match_none,
    "term": _term,
    "terms": _terms,
    "match": _match,
    "match_phrase": _match_phrase,
    "prefix": _prefix,
    "exists": _exists,
    "ids": _ids,
    "range": _range,
    "bool": _bool,
}


def compile_query(query: Any) -> Matcher:
    """A predicate over task documents for one query clause; QueryError for what it cannot read."""
    if not isinstance(query, dict):
        raise _parsing("query malformed, must start with start_object")
    if not query:
        raise _parsing("query malformed, empty clause found")
    kind = next(iter(query))
    if len(query) > 1:
        raise _parsing(f"[{kind}] malformed query, expected [END_OBJECT] but found [FIELD_NAME]")
    if kind not in _QUERIES:
        raise _parsing(f"unknown query [{kind}]")
    return _QUERIES[kind](query[kind])

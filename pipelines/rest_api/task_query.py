"""`POST|GET /_plugins/_ml/tasks/_search`: an OpenSearch search over task records held in memory.

Pure, no I/O: `serve-api` reads the records from its task store and answers with
`search_tasks(records, body, params)`, the search response ML Commons gives for its
`.plugins-ml-task` index. A record's `task_id` is its hit's `_id` and its position in `records` the
hit's `_seq_no`; its `_source` is the record without `task_id` and `owner`, and queries (read by
`query_dsl`) see what `_source` shows, plus `_id`.

The body reads `query`, `size` (default 10), `from`, `sort` (`"field"`, `{"field": "desc"}`,
`{"field": {"order": "asc", "missing": "_first"}}`, lists of these, `_score`, `_doc`; missing values
last), `_source` (true, false, patterns with `*`, or `{"includes": [...], "excludes": [...]}`) and
`track_scores`; `track_total_hits`, `timeout`, `version` and `seq_no_primary_term` are accepted and
change nothing. `size` and `from` in the query string win over the body's, as in OpenSearch. Every
hit scores 1.0; without `sort`, hits come by score, then newest `create_time` first. `took` is 0:
no clock is read, so the answer depends on the records and the request alone.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Any

from connectors.local.index_query import search_response
from pipelines.rest_api.query_dsl import QueryError, compile_query
from pipelines.rest_api.task_fields import TaskDoc, field_name, field_values

TASK_INDEX = ".plugins-ml-task"
MAX_RESULT_WINDOW = 10_000
BODY_KEYS = (
    "query", "size", "from", "sort", "_source", "track_total_hits", "track_scores", "timeout",
    "version", "seq_no_primary_term",
)  # fmt: skip
SCORE = 1.0
_HIDDEN = ("task_id", "owner")
_SORT_OPTIONS = frozenset({"order", "missing", "unmapped_type"})


@dataclass(frozen=True)
class SortKey:
    """One `sort` entry: a field (or `_score`, `_doc`), its direction, where missing values go."""

    field: str
    descending: bool
    missing_first: bool = False


NEWEST_FIRST = (SortKey("_score", True), SortKey("create_time", True))


def _sort_key(entry: Any) -> SortKey:
    if isinstance(entry, str):
        return SortKey(field_name(entry), entry == "_score")
    if not isinstance(entry, dict) or len(entry) != 1:
        raise QueryError(
            "parsing_exception", '[sort] entries are "field", {"field": "desc"} or {"field": {...}}'
        )
    ((name, spec),) = entry.items()
    options = spec if isinstance(spec, dict) else {"order": spec}
    unknown = sorted(set(options) - _SORT_OPTIONS)
    if unknown:
        raise QueryError("parsing_exception", f"[sort] on [{name}] does not support [{unknown[0]}]")
    order = str(options.get("order", "desc" if name == "_score" else "asc")).lower()
    if order not in ("asc", "desc"):
        raise QueryError("illegal_argument_exception", f"Unknown SortOrder [{order}] for [{name}]")
    missing = options.get("missing", "_last")
    if missing not in ("_first", "_last"):
        raise QueryError("illegal_argument_exception", f"[sort] on [{name}]: [missing] is _first or _last")
    return SortKey(field_name(name), order == "desc", missing == "_first")


def sort_keys(sort: Any) -> tuple[SortKey, ...]:
    """The `sort` of a search body, in each of the forms OpenSearch reads."""
    return tuple(_sort_key(entry) for entry in (sort if isinstance(sort, list) else [sort]))


def _ordering(value: Any) -> tuple[int, Any] | None:
    """Numbers (and booleans) sort before strings; objects do not sort."""
    if isinstance(value, int | float):
        return (0, value)
    return (1, value) if isinstance(value, str) else None


def _sort_value(doc: TaskDoc, key: SortKey) -> Any:
    """The value a hit sorts by: the smallest of a field's values ascending, the largest descending."""
    if key.field == "_score":
        return SCORE
    if key.field == "_doc":
        return doc.seq_no
    values = [value for value in field_values(doc, key.field) if _ordering(value) is not None]
    return (max if key.descending else min)(values, key=_ordering) if values else None


def _compare_by(keys: Sequence[SortKey]) -> Callable[[list[Any]], Any]:
    """A sort key over hits' sort values, in the order `keys` give."""

    def compare(a: list[Any], b: list[Any]) -> int:
        for key, x, y in zip(keys, a, b, strict=True):
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return (-1 if key.missing_first else 1) * (1 if x is None else -1)
            order = (_ordering(x) > _ordering(y)) - (_ordering(x) < _ordering(y))
            if order:
                return -order if key.descending else order
        return 0

    return cmp_to_key(compare)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def _patterns(value: Any) -> list[str]:
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise QueryError("parsing_exception", "[_source] patterns are a string or a list of strings")
    return value


def source_filter(spec: Any) -> tuple[list[str], list[str]] | None:
    """(includes, excludes) of a body's `_source`; None for `false` (hits without `_source`)."""
    if spec is False:
        return None
    if spec is True:
        return [], []
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"includes", "excludes", "include", "exclude"})
        if unknown:
            raise QueryError("parsing_exception", f"[_source] does not support [{unknown[0]}]")
        wanted = spec.get("includes", spec.get("include", []))
        return _patterns(wanted), _patterns(spec.get("excludes", spec.get("exclude", [])))
    return _patterns(spec), []


def _may_hold(patterns: list[str], path: str) -> bool:
    """Whether one of `patterns` may name something inside the object at `path`."""
    inside = f"{path}."
    heads = [(pattern.split("*")[0], "*" in pattern) for pattern in patterns]
    return any(head.startswith(inside) or (star and inside.startswith(head)) for head, star in heads)


def filter_source(source: dict[str, Any], includes: list[str], excludes: list[str], prefix: str = "") -> dict:
    """`source` keeping what `includes` name (everything when empty) and dropping what `excludes` name;
    patterns are dotted paths with `*` wildcards, and naming an object keeps all inside it."""
    kept: dict[str, Any] = {}
    for key, value in source.items():
        path = f"{prefix}{key}"
        if any(_glob(pattern).fullmatch(path) for pattern in excludes):
            continue
        whole = not includes or any(_glob(pattern).fullmatch(path) for pattern in includes)
        if isinstance(value, dict) and value and (whole or _may_hold(includes, path)):
            inner = filter_source(value, [] if whole else includes, excludes, f"{path}.")
            if inner:
                kept[key] = inner
        elif whole:
            kept[key] = copy.deepcopy(value)
    return kept


def _integer(name: str, value: Any, in_query_string: bool) -> int:
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    if in_query_string:
        message = f"Failed to parse int parameter [{name}] with value [{value}]"
        raise QueryError("illegal_argument_exception", message)
    raise QueryError("parsing_exception", f"[{name}] must be an integer, found [{value}]")


def _count(name: str, body: Mapping[str, Any], params: Mapping[str, str], default: int) -> int:
    """`from` or `size`: the query string's, else the body's, else `default`; never negative."""
    if name in params:
        number = _integer(name, params[name], True)
    elif body.get(name) is not None:
        number = _integer(name, body[name], False)
    else:
        number = default
    if number < 0:
        raise QueryError(
            "illegal_argument_exception", f"[{name}] parameter cannot be negative, found [{number}]"
        )
    return number


def _window(body: Mapping[str, Any], params: Mapping[str, str]) -> tuple[int, int]:
    start = _count("from", body, params, 0)
    size = _count("size", body, params, 10)
    if start + size > MAX_RESULT_WINDOW:
        raise QueryError(
            "illegal_argument_exception",
            f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}]"
            f" but was [{start + size}]",
        )
    return start, size


def _search_body(body: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise QueryError("parsing_exception", "the search body must be a JSON object")
    unknown = [key for key in body if key not in BODY_KEYS]
    if unknown:
        raise QueryError(
            "illegal_argument_exception",
            f"unknown key [{unknown[0]}] in the search body: tasks/_search reads {', '.join(BODY_KEYS)}",
        )
    if not isinstance(body.get("track_scores", False), bool):
        raise QueryError("parsing_exception", "[track_scores] must be true or false")
    return body


def _hit(doc: TaskDoc, scored: bool, wanted: tuple[list[str], list[str]] | None) -> dict[str, Any]:
    hit: dict[str, Any] = {
        "_index": TASK_INDEX,
        "_id": doc.task_id,
        "_version": 1,
        "_seq_no": doc.seq_no,
        "_primary_term": 1,
        "_score": SCORE if scored else None,
    }
    if wanted is not None:
        hit["_source"] = filter_source(doc.source, *wanted)
    return hit


def search_tasks(
    records: Sequence[Mapping[str, Any]],
    body: Mapping[str, Any] | None,
    params: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The OpenSearch search response for `body` (and the query string `params`) over `records`;
    QueryError for a body or parameter it cannot read."""
    request = _search_body(body)
    start, size = _window(request, params or {})
    matches = compile_query(request.get("query", {"match_all": {}}))
    explicit = request.get("sort") not in (None, [])
    keys = sort_keys(request["sort"]) if explicit else NEWEST_FIRST
    wanted = source_filter(request.get("_source", True))
    docs = [
        TaskDoc(str(record.get("task_id", "")), seq_no, {k: v for k, v in record.items() if k not in _HIDDEN})
        for seq_no, record in enumerate(records)
    ]
    order = _compare_by(keys)
    found = sorted(
        ((doc, [_sort_value(doc, key) for key in keys]) for doc in docs if matches(doc)),
        key=lambda pair: order(pair[1]),
    )
    scored = not explicit or request.get("track_scores", False) or any(key.field == "_score" for key in keys)
    hits = [
        _hit(doc, scored, wanted) | ({"sort": values} if explicit else {})
        for doc, values in found[start : start + size]
    ]
    return search_response(len(found), SCORE if scored and hits else None, hits)

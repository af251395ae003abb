"""JSONPath evaluation for the project step (read -> **project** -> join -> map -> write).

`compile_path` turns one JSONPath expression into a `CompiledPath` once, at plan time.
Simple definite paths (`$.a.b[0]`, `$['a.b']`) become a tuple of dict keys and list
indexes walked directly; everything else goes through jsonpath-ng's extended parser.
Both give the same answers (tests compare them): a definite path yields its single
match, an indefinite one (wildcard, slice, filter, `..`, union) yields the list of its
matches, as Jayway JsonPath does in ML Commons. A path that matches nothing yields
`MISSING`, never an exception. Paths are capped at `MAX_PATH_CHARS` characters and
`MAX_PATH_SEGMENTS` segments (keys, indexes, wildcards, filters), so a request cannot make
the parser or the evaluation run for minutes or recurse without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jsonpath_ng import Child, Fields, Index, Root
from jsonpath_ng.ext import parse as parse_extended

from transforms.echo import cut, echo


class _Missing:
    """The value of a path that matches nothing (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | \[(?P<index>\d+)\]
      | \['(?P<squoted>[^'\\]*)'\]
      | \["(?P<dquoted>[^"\\]*)"\]""",
    re.VERBOSE,
)
_RESERVED_NAMES = frozenset({"where", "wherenot"})
MAX_PATH_CHARS = 1000
MAX_PATH_SEGMENTS = 100
_MAX_PARSER_MESSAGE = 120


class JsonPathError(ValueError):
    """The expression is not valid JSONPath."""


def simple_steps(expression: str) -> tuple[str | int, ...] | None:
    """The key/index steps of a simple definite path, or None if the path needs jsonpath-ng."""
    if not expression.startswith("$"):
        return None
    steps: list[str | int] = []
    position = 1
    while position < len(expression):
        match = _STEP.match(expression, position)
        if match is None:
            return None
        if match["name"] is not None:
            if match["name"] in _RESERVED_NAMES:
                return None
            steps.append(match["name"])
        elif match["index"] is not None:
            steps.append(int(match["index"]))
        else:
            steps.append(match["squoted"] if match["squoted"] is not None else match["dquoted"])
        position = match.end()
    return tuple(steps)


def _is_definite(node: Any) -> bool:
    if isinstance(node, Root):
        return True
    if isinstance(node, Child):
        return _is_definite(node.left) and _is_definite(node.right)
    if isinstance(node, Fields):
        return len(node.fields) == 1 and node.fields[0] != "*"
    if isinstance(node, Index):
        return len(node.indices) == 1
    return False


@dataclass(frozen=True)
class CompiledPath:
    """One JSONPath, ready to evaluate against parsed JSON records."""

    expression: str
    steps: tuple[str | int, ...] | None = field(default=None, compare=False)
    _parsed: Any = field(default=None, compare=False, repr=False)
    _definite: bool = field(default=True, compare=False, repr=False)

    def evaluate(self, record: Any) -> Any:
        """The value at this path in `record`, or MISSING (a simple path is walked here, in one call:
        it is evaluated for every field of every record)."""
        steps = self.steps
        if steps is None:
            return self.evaluate_with_jsonpath_ng(record)
        value = record
        try:
            for step in steps:
                if step.__class__ is int and value.__class__ is not list:
                    return MISSING
                value = value[step]
        except (KeyError, IndexError, TypeError):
            return MISSING
        return value

    def evaluate_with_jsonpath_ng(self, record: Any) -> Any:
        """The same answer as `evaluate`, always through jsonpath-ng (used to cross-check)."""
        parsed = self._parsed if self._parsed is not None else parse_extended(self.expression)
        values = [match.value for match in parsed.find(record)]
        if not self._definite:
            return values if values else MISSING
        return values[0] if values else MISSING

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return compile_path, (self.expression,)


def _segments(parsed: Any) -> int:
    """How many segments a parsed path has: the leaves of its tree of `Child`/`Descendants`
    nodes, not counting the root."""
    count, stack = 0, [parsed]
    while stack:
        node = stack.pop()
        children = [getattr(node, side) for side in ("left", "right") if hasattr(node, side)]
        stack.extend(children)
        count += not children and not isinstance(node, Root)
    return count


def compile_path(expression: str) -> CompiledPath:
    """Compile `expression`; raise JsonPathError naming what is wrong."""
    if not isinstance(expression, str) or not expression.startswith("$"):
        raise JsonPathError(f"{echo(expression)} is not a JSONPath (it must start with '$')")
    if len(expression) > MAX_PATH_CHARS:
        raise JsonPathError(
            f"{echo(expression)} is {len(expression)} characters long; a JSONPath may have at most "
            f"{MAX_PATH_CHARS}"
        )
    steps = simple_steps(expression)
    if steps is not None and len(steps) > MAX_PATH_SEGMENTS:
        raise JsonPathError(_too_many_segments(expression, len(steps)))
    try:
        parsed = parse_extended(expression)
    except Exception as error:  # jsonpath-ng raises bare Exception subclasses for syntax errors
        raise JsonPathError(
            f"invalid JSONPath {echo(expression)}: {cut(str(error), _MAX_PARSER_MESSAGE)}"
        ) from None
    if steps is None and (segments := _segments(parsed)) > MAX_PATH_SEGMENTS:
        raise JsonPathError(_too_many_segments(expression, segments))
    return CompiledPath(expression, steps, parsed, steps is not None or _is_definite(parsed))


def _too_many_segments(expression: str, segments: int) -> str:
    return f"{echo(expression)} has {segments} segments; a JSONPath may have at most {MAX_PATH_SEGMENTS}"


def field_name_of(expression: str) -> str:
    """The document field an `ingest_fields` path is stored under: its last dotted segment.

    ML Commons splits the JSONPath on '.' and keeps the last part (`$.id` -> `id`,
    `$.meta.lang` -> `lang`); we do the same so indexes look identical.
    """
    return expression.split(".")[-1]

"""OpenSearch's rules for index names (pure): used by request checks and by `serve-index` routes.

A name is refused when it is not lowercase, contains `\\ / * ? " < > | , # :`, a space (named
as such) or another control / line / paragraph / space separator character, is `.` or `..`,
starts with `_`, `-` or `+`, or is longer than 255 UTF-8 bytes.
Every such name is also unsafe as a directory name.
"""

from __future__ import annotations

import unicodedata

_FORBIDDEN = ' \\/*?"<>|,#:'
_MAX_BYTES = 255
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")


def index_name_problem(name: str) -> str | None:
    """Why OpenSearch would refuse `name` as an index name, or None."""
    if not name:
        return "it must not be empty"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        return f"it must be at most {_MAX_BYTES} bytes"
    invisible = sorted(
        {char for char in name if char != " " and unicodedata.category(char) in _INVISIBLE_CATEGORIES}
    )
    if invisible:
        return "it must not contain control or separator characters (" + ", ".join(
            f"U+{ord(char):04X}" for char in invisible
        ) + ")"
    if name != name.lower():
        return "it must be lowercase"
    bad = sorted(set(name) & set(_FORBIDDEN))
    if bad:
        return f"it must not contain {' '.join(repr(char) for char in bad)}"
    if name in (".", ".."):
        return "it must not be '.' or '..'"
    if name[0] in "_-+":
        return "it must not start with '_', '-' or '+'"
    return None

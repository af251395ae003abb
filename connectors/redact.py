"""Keep credentials out of everything we print, store or write (logs, task records, errors, DLQ).

`redact_credential` masks every value of a request's `credential` object; `Redactor`
replaces known secret strings wherever they appear in text or nested JSON values, and can
be installed as a logging filter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MASK = "***"
_MIN_SECRET_LENGTH = 4


NOT_SECRET = frozenset({"region", "service_name"})


def credential_secrets(credential: dict[str, Any] | None) -> list[Any]:
    """The values of a credential object that are secrets (all but `NOT_SECRET` keys)."""
    return [value for key, value in (credential or {}).items() if key not in NOT_SECRET]


def redact_credential(credential: dict[str, Any] | None) -> dict[str, str]:
    """The credential object with every secret masked (keys kept, so users see what was set)."""
    return {key: value if key in NOT_SECRET else MASK for key, value in (credential or {}).items()}


@dataclass(frozen=True)
class Redactor:
    """Masks the given secret strings."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[Any]) -> Redactor:
        found = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH}
        return cls(tuple(sorted(found, key=len, reverse=True)))

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """`value` with secrets masked in every string, recursively through dicts and lists."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def __repr__(self) -> str:
        return f"Redactor({len(self.secrets)} secrets)"


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's final message."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redactor.text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True

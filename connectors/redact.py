"""Keep credentials out of everything we print, store or write (logs, task records, errors, DLQ).

`redact_credential` masks every value of a request's `credential` object; `Redactor`
replaces known secret strings wherever they appear in text or nested JSON values, and can
be installed as a logging filter. On a worker that is not the launching process, the redactor
holds no secret: `Redactor.for_workers(ref)` masks the secrets its `SecretRef` resolves to there
(and the worker's own `SECRET_ENV_VARS`), so dead-letter entries written there stay masked.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connectors.secret_refs import SecretRef

MASK = "***"
_MIN_SECRET_LENGTH = 4


NOT_SECRET = frozenset({"region", "service_name"})
SECRET_ENV_VARS = ("OPENAI_API_KEY", "OPENSEARCH_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def env_secrets() -> list[str | None]:
    """The values of this process's `SECRET_ENV_VARS`."""
    return [os.environ.get(name) for name in SECRET_ENV_VARS]


def credential_secrets(credential: dict[str, Any] | None) -> list[Any]:
    """The values of a credential object that are secrets (all but `NOT_SECRET` keys)."""
    return [value for key, value in (credential or {}).items() if key not in NOT_SECRET]


def redact_credential(credential: dict[str, Any] | None) -> dict[str, str]:
    """The credential object with every secret masked (keys kept, so users see what was set)."""
    return {key: value if key in NOT_SECRET else MASK for key, value in (credential or {}).items()}


@dataclass(frozen=True)
class Redactor:
    """Masks the given secret strings, or on workers those `source` resolves to."""

    secrets: tuple[str, ...] = ()
    source: SecretRef | None = None
    on_worker: bool = False

    @classmethod
    def of(cls, values: Iterable[Any]) -> Redactor:
        found = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH}
        return cls(tuple(sorted(found, key=len, reverse=True)))

    @classmethod
    def for_workers(cls, ref: SecretRef | None) -> Redactor:
        """A redactor that pickles without secrets and masks, where it runs, what `ref` resolves to
        and that process's own secret variables (only those without a `ref`)."""
        return cls(source=ref, on_worker=True)

    def _masked(self) -> tuple[str, ...]:
        return _worker_secrets(self.source) if self.on_worker else self.secrets

    def text(self, text: str) -> str:
        for secret in self._masked():
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """`value` with secrets masked in every string, recursively through dicts and lists."""
        if not self._masked():
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def __repr__(self) -> str:
        if self.on_worker:
            return f"Redactor({self.source.label if self.source else 'worker environment'})"
        return f"Redactor({len(self.secrets)} secrets)"


@functools.lru_cache(maxsize=8)
def _worker_secrets(ref: SecretRef | None) -> tuple[str, ...]:
    """What a worker masks: the secrets `ref` resolves to and the worker's own secret variables."""
    return Redactor.of([*(ref.values().values() if ref else ()), *env_secrets()]).secrets


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

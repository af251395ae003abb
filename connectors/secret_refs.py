"""Secrets handed to a run's workers by reference (the **run** step's hand-over to the workers).

A Beam runner whose workers are not this process pickles every DoFn into the job graph, so
nothing a DoFn holds may be a secret. The objects that need one (`connectors.sources.SourceAccess`,
`connectors.opensearch.config.OpenSearchConfig`, `connectors.redact.Redactor`) hold a `SecretRef`
instead: it pickles as its kind, its name and the names of the secrets it carries, never their
values, and `values()` resolves them on the worker the first time one is needed (cached per process).

- `env`: the workers' environment, one variable per secret, `MLBATCH_SECRET_<NAME>`
  (`env_var("opensearch.password")` is `MLBATCH_SECRET_OPENSEARCH_PASSWORD`);
- `file:PATH`: a JSON object of the secrets, mode 0600, that the launcher writes (`publish`)
  and removes when the run ends (`withdraw`);
- `aws-secretsmanager:NAME_OR_ARN`: the same JSON object as an AWS Secrets Manager secret,
  put there by the launcher with boto3 and read by the workers with their own AWS credentials.

Errors name the reference and the missing secret, never a value.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

RefKind = Literal["env", "file", "aws-secretsmanager"]
REF_KINDS: tuple[RefKind, ...] = ("env", "file", "aws-secretsmanager")
ENV_PREFIX = "MLBATCH_SECRET_"
REF_FORMS = "env, file:PATH or aws-secretsmanager:NAME_OR_ARN"
_CACHED_RUNS = 8  # a long-lived worker (Dask) keeps the secrets of its last few runs only


class SecretRefError(RuntimeError):
    """A reference that cannot be parsed, published or resolved; the message names it, never a value."""


def env_var(name: str) -> str:
    """The workers' environment variable that holds the secret `name`."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@dataclass(frozen=True)
class SecretRef:
    """Where the workers find the secrets `names` of run `run_id` (which keeps a long-lived
    worker's cache of one run apart from the next's); `region` is the Secrets Manager region."""

    kind: RefKind
    name: str = ""
    names: tuple[str, ...] = ()
    region: str | None = None
    run_id: str = ""

    @property
    def label(self) -> str:
        """The reference as the user wrote it (`env`, `file:/path`, `aws-secretsmanager:name`)."""
        return self.kind if self.kind == "env" else f"{self.kind}:{self.name}"

    def describe(self) -> dict[str, Any]:
        """What a task record shows: the kind and where, never a value."""
        if self.kind == "env":
            return {"kind": "env", "variables": [env_var(name) for name in self.names]}
        return {"kind": self.kind, "name": self.name}

    def values(self) -> dict[str, str]:
        """The secrets by name, resolved once per process."""
        return dict(_resolve(self))

    def publish(self, values: Mapping[str, str]) -> None:
        """Make `values` available to the workers (`file`, `aws-secretsmanager`; `env` is the user's)."""
        text = json.dumps(dict(values))
        if self.kind == "file":
            _write_private(self.name, text)
        elif self.kind == "aws-secretsmanager":
            _put_secret(self, text)

    def withdraw(self) -> None:
        """Remove what `publish` wrote, when it wrote a file (a secret in Secrets Manager stays)."""
        if self.kind == "file":
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.name)


def parse_ref(text: str) -> SecretRef:
    """`env`, `file`, `file:PATH` or `aws-secretsmanager:NAME_OR_ARN` (a `file` without a path is
    completed by the launcher); raises SecretRefError."""
    kind, _, name = text.partition(":")
    if kind not in REF_KINDS or (kind == "env" and name) or (kind == "aws-secretsmanager" and not name):
        raise SecretRefError(f"--worker-secrets {text!r}: use {REF_FORMS}")
    if kind == "file" and name:
        name = os.path.abspath(os.path.expanduser(name))
    return SecretRef(kind, name)  # type: ignore[arg-type]


def secretsmanager_region(name: str) -> str:
    """The region of a secret: an ARN's own, else this machine's AWS region (us-east-1 without one)."""
    parts = name.split(":")
    if name.startswith("arn:") and len(parts) > 3 and parts[3]:
        return parts[3]
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


@functools.lru_cache(maxsize=_CACHED_RUNS)
def _resolve(ref: SecretRef) -> Mapping[str, str]:
    if ref.kind == "env":
        missing = [env_var(name) for name in ref.names if env_var(name) not in os.environ]
        if missing:
            raise SecretRefError(f"worker secrets (env): {', '.join(missing)} not set on this worker")
        return {name: os.environ[env_var(name)] for name in ref.names}
    text = _read_file(ref) if ref.kind == "file" else _get_secret(ref)
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict) or not all(isinstance(value, str) for value in found.values()):
        raise SecretRefError(f"worker secrets {ref.label}: not a JSON object of strings")
    missing = [name for name in ref.names if name not in found]
    if missing:
        raise SecretRefError(f"worker secrets {ref.label}: no {', '.join(missing)}")
    return {name: found[name] for name in ref.names}


def _read_file(ref: SecretRef) -> str:
    try:
        with open(ref.name, encoding="utf-8") as stream:
            return stream.read()
    except OSError as error:
        raise SecretRefError(
            f"worker secrets {ref.label}: cannot read ({error.strerror or error}); "
            "the workers must share the launching machine's filesystem, or use env or aws-secretsmanager"
        ) from None


def _write_private(path: str, text: str) -> None:
    """`text` into `path`, readable by this user only from the first byte (mode 0600)."""
    directory = os.path.dirname(path)
    temporary = None
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".secrets-")  # created 0600
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.link(temporary, path)  # never replaces a file that is there (it is removed after the run)
    except FileExistsError:
        raise SecretRefError(
            f"--worker-secrets file:{path}: the file exists; name a new file (it is removed after the run)"
        ) from None
    except OSError as error:
        reason = error.strerror or error
        raise SecretRefError(f"--worker-secrets file:{path}: cannot write ({reason})") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _secretsmanager(ref: SecretRef) -> Any:
    import boto3

    return boto3.session.Session().client("secretsmanager", region_name=ref.region)


def _put_secret(ref: SecretRef, text: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _secretsmanager(ref)
    try:
        try:
            client.put_secret_value(SecretId=ref.name, SecretString=text)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(Name=ref.name, SecretString=text)
    except (ClientError, BotoCoreError) as error:
        raise SecretRefError(f"--worker-secrets {ref.label}: cannot store the secret ({error})") from None


def _get_secret(ref: SecretRef) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return _secretsmanager(ref).get_secret_value(SecretId=ref.name)["SecretString"]
    except (ClientError, BotoCoreError, KeyError) as error:
        raise SecretRefError(f"worker secrets {ref.label}: cannot read the secret ({error})") from None

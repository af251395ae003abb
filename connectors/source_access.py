"""How the read step reaches a request's files: its source type and credential (the **read**
step's access, used by `connectors.sources` and the dead-letter writer).

`SourceAccess` builds the S3 and OpenAI clients from the request's `credential`, else the
default AWS chain and `$OPENAI_API_KEY`; with a `local_root` (`mlbatch serve-api --local-root`),
local sources may only expand to files under it. It travels inside the job graph, so for workers that
are not the launching process `for_workers` swaps the credential's secrets for a
`connectors.secret_refs.SecretRef` they resolve where the clients are built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from connectors.redact import NOT_SECRET
from connectors.secret_refs import SecretRef

_CREDENTIAL = "credential."


@dataclass(frozen=True)
class SourceAccess:
    """How to reach the files of one request: its source type and credential.

    On workers that are not the launching process, `for_workers` leaves only the credential's
    non-secret fields (`region`) inline: its secrets come from `secrets` where they are used.
    """

    source_type: str
    credential: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: SecretRef | None = None
    local_root: str | None = None

    def worker_secrets(self) -> dict[str, str]:
        """The secrets the workers need, by name (`credential.<key>`): the credential's secret
        fields, and the launcher's `$OPENAI_API_KEY` for an OpenAI request without `openAI_key`."""
        values = {
            f"{_CREDENTIAL}{key}": value for key, value in self.credential.items() if key not in NOT_SECRET
        }
        environment_key = os.environ.get("OPENAI_API_KEY")
        if self.source_type == "openAI" and "openAI_key" not in self.credential and environment_key:
            values[f"{_CREDENTIAL}openAI_key"] = environment_key
        return values

    def for_workers(self, ref: SecretRef) -> SourceAccess:
        """This access without secrets: workers resolve them from `ref`."""
        public = {key: value for key, value in self.credential.items() if key in NOT_SECRET}
        return SourceAccess(self.source_type, public, ref, self.local_root)

    def _credential(self) -> dict[str, str]:
        if self.secrets is None:
            return self.credential
        resolved = {
            name.removeprefix(_CREDENTIAL): value
            for name, value in self.secrets.values().items()
            if name.startswith(_CREDENTIAL)
        }
        return {**self.credential, **resolved}

    def s3_client(self) -> Any:
        """An S3 client with the request's keys when it is an S3 request, else the default AWS chain."""
        import boto3

        if self.source_type != "s3":
            return boto3.session.Session().client("s3")
        credential = self._credential()
        keys = {
            "aws_access_key_id": credential.get("access_key"),
            "aws_secret_access_key": credential.get("secret_key"),
            "aws_session_token": credential.get("session_token"),
            "region_name": credential.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        }
        return boto3.session.Session(**{k: v for k, v in keys.items() if v}).client("s3")

    def openai_client(self) -> Any:
        import openai

        api_key = self._credential().get("openAI_key") or os.environ.get("OPENAI_API_KEY")
        return openai.OpenAI(api_key=api_key)

"""How a run's workers get its secrets (the **run** step's hand-over, around the Beam run).

The secrets a run's workers need are the request's `credential` secrets (and the launcher's
`$OPENAI_API_KEY` for an OpenAI request without `openAI_key`) and the cluster's password.
`WorkerSecrets.plan` chooses how they travel, before the task is created:
- the in-process DirectRunner (`RunnerChoice.in_process`): inside the graph, which never
  leaves this process (nothing written);
- `--worker-secrets REF` (`env`, `file:PATH`, `aws-secretsmanager:NAME_OR_ARN`): by that reference;
- otherwise a `file:` under `$MLBATCH_HOME/secrets/` when the workers see this machine's files
  (the DirectRunner's other modes, Dask); a runner whose workers do not (Dataflow, portable
  runners) is refused: it needs `env` or `aws-secretsmanager`, and the message says so.
`handed_over` publishes them for the run's duration (writes the 0600 file, removed at the end;
puts the Secrets Manager secret; names the variables of `env`) and yields the `HandOver` that
builds the workers' source access, cluster config and redactor, which carry only the reference.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from connectors.opensearch.config import OpenSearchConfig
from connectors.redact import Redactor
from connectors.secret_refs import SecretRef, env_var, parse_ref, secretsmanager_region
from connectors.source_access import SourceAccess
from connectors.task_store import mlbatch_home
from pipelines.runner_choice import RunnerChoice
from pipelines.worker_reach import runner_name

log = logging.getLogger("mlbatch")


class WorkerSecretsError(ValueError):
    """The run's secrets cannot reach its workers as asked; the message names `--worker-secrets`."""


@dataclass(frozen=True)
class HandOver:
    """The reference the workers resolve the secrets from (None: they are in the graph, in process)."""

    ref: SecretRef | None = None
    in_process: bool = True  # the in-process DirectRunner: its graph never leaves this process

    def access(self, access: SourceAccess) -> SourceAccess:
        return access if self.ref is None else access.for_workers(self.ref)

    def cluster(self, cluster: OpenSearchConfig) -> OpenSearchConfig:
        return cluster if self.ref is None else cluster.for_workers(self.ref)

    def redactor(self, redactor: Redactor) -> Redactor:
        """This process's redactor in process; elsewhere one that holds no secret of this machine."""
        return redactor if self.ref is None and self.in_process else Redactor.for_workers(self.ref)

    def record_fields(self) -> dict[str, Any]:
        """What the task record shows of the hand-over: the reference, never a value."""
        return {} if self.ref is None else {"worker_secrets": self.ref.describe()}


@dataclass(frozen=True)
class WorkerSecrets:
    """The secrets of one run by name, and the reference chosen for its workers (None: none needed)."""

    values: dict[str, str] = field(repr=False)
    ref: SecretRef | None = None
    in_process: bool = True

    @classmethod
    def plan(
        cls,
        option: str | None,
        access: SourceAccess,
        cluster: OpenSearchConfig,
        runner: RunnerChoice,
        workers_see_local_files: bool,
    ) -> WorkerSecrets:
        """Choose the reference for `--worker-secrets option` (None: the default); raises
        WorkerSecretsError when the workers could not resolve it."""
        values = {**access.worker_secrets(), **cluster.worker_secrets()}
        if not values:
            return cls(values, in_process=runner.in_process)
        who = f"{runner_name(runner.runner)}'s workers cannot read a file on this machine"
        if option is not None:
            ref = parse_ref(option)
            if ref.kind == "file" and not workers_see_local_files:
                raise WorkerSecretsError(
                    f"--worker-secrets {option}: {who}; use env or aws-secretsmanager:NAME_OR_ARN"
                )
            return cls(values, ref)
        if runner.in_process:
            return cls(values)
        if not workers_see_local_files:
            variables = ", ".join(env_var(name) for name in sorted(values))
            raise WorkerSecretsError(
                f"this run has secrets and {who}: pass --worker-secrets env (and set {variables} on the "
                "workers) or --worker-secrets aws-secretsmanager:NAME_OR_ARN"
            )
        return cls(values, SecretRef("file"))

    @contextlib.contextmanager
    def handed_over(self, task_id: str) -> Iterator[HandOver]:
        """Publish the secrets for task `task_id`'s workers while the run lasts; withdraw them after."""
        if self.ref is None:
            yield HandOver(in_process=self.in_process)
            return
        ref = replace(self.ref, names=tuple(sorted(self.values)), run_id=task_id)
        if ref.kind == "file" and not ref.name:
            ref = replace(ref, name=str(mlbatch_home() / "secrets" / f"{task_id}.json"))
        elif ref.kind == "aws-secretsmanager":
            ref = replace(ref, region=secretsmanager_region(ref.name))
        elif ref.kind == "env":
            variables = ", ".join(env_var(name) for name in ref.names)
            log.info("worker secrets: the workers read %s from their environment", variables)
        ref.publish(self.values)
        try:
            yield HandOver(ref)
        finally:
            ref.withdraw()

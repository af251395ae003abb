"""Secret references: what pickles, what workers resolve, and which reference a run chooses."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from connectors.opensearch.config import OpenSearchConfig
from connectors.redact import MASK, Redactor
from connectors.secret_refs import SecretRef, SecretRefError, env_var, parse_ref
from connectors.source_access import SourceAccess
from pipelines.runner_choice import RunnerChoice
from pipelines.worker_secrets import WorkerSecrets, WorkerSecretsError

KEY, PASSWORD = "sk-request-key-31f0", "cluster-pass-a7c2"
NAMES = ("credential.openAI_key", "opensearch.password")
IN_PROCESS = RunnerChoice()
MULTI_PROCESSING = RunnerChoice("DirectRunner", "multi_processing")
DATAFLOW = RunnerChoice("DataflowRunner")


def test_env_variables_are_named_predictably():
    assert env_var("credential.openAI_key") == "MLBATCH_SECRET_CREDENTIAL_OPENAI_KEY"
    assert env_var("opensearch.password") == "MLBATCH_SECRET_OPENSEARCH_PASSWORD"


def test_references_parse_and_a_bad_one_names_the_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_ref("env") == SecretRef("env")
    assert parse_ref("file") == SecretRef("file")  # the launcher picks the path
    assert parse_ref("file:s.json") == SecretRef("file", str(tmp_path / "s.json"))
    assert parse_ref("aws-secretsmanager:runs/x") == SecretRef("aws-secretsmanager", "runs/x")
    for bad in ("vault:x", "env:X", "aws-secretsmanager", ""):
        with pytest.raises(SecretRefError, match="env, file:PATH or aws-secretsmanager:NAME_OR_ARN"):
            parse_ref(bad)


def test_a_file_reference_is_written_private_resolved_and_removed(tmp_path):
    ref = SecretRef("file", str(tmp_path / "secrets" / "run.json"), NAMES, run_id="t1")
    ref.publish({"credential.openAI_key": KEY, "opensearch.password": PASSWORD})
    assert stat.S_IMODE(os.stat(ref.name).st_mode) == 0o600
    assert ref.values() == {"credential.openAI_key": KEY, "opensearch.password": PASSWORD}
    ref.withdraw()
    assert not os.path.exists(ref.name)


def test_resolved_once_per_process_and_run(tmp_path):
    path = tmp_path / "run.json"
    first = SecretRef("file", str(path), ("opensearch.password",), run_id="t1")
    first.publish({"opensearch.password": "first-value"})
    assert first.values()["opensearch.password"] == "first-value"
    first.withdraw()
    first.publish({"opensearch.password": "second-value"})
    assert first.values()["opensearch.password"] == "first-value"  # cached in this process
    assert (
        SecretRef("file", str(path), first.names, run_id="t2").values()["opensearch.password"]
        == "second-value"
    )


def test_what_cannot_be_resolved_is_named_never_its_value(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBATCH_SECRET_CREDENTIAL_OPENAI_KEY", KEY)
    with pytest.raises(
        SecretRefError, match="MLBATCH_SECRET_OPENSEARCH_PASSWORD not set on this worker"
    ) as error:
        SecretRef("env", names=NAMES, run_id="missing").values()
    assert KEY not in str(error.value)
    partial = SecretRef("file", str(tmp_path / "run.json"), NAMES, run_id="partial")
    partial.publish({"credential.openAI_key": KEY})
    with pytest.raises(SecretRefError, match="no opensearch.password") as error:
        partial.values()
    assert KEY not in str(error.value)
    with pytest.raises(SecretRefError, match="cannot read .*share the launching machine's filesystem"):
        SecretRef("file", str(tmp_path / "absent.json"), NAMES).values()


def test_worker_objects_pickle_without_secrets_and_resolve_after_unpickling(tmp_path):
    access = SourceAccess("openAI", {"openAI_key": KEY, "region": "eu-west-1"})
    cluster = OpenSearchConfig(url=f"https://admin:{PASSWORD}@search.example:9200")
    ref = SecretRef("file", str(tmp_path / "run.json"), NAMES, run_id="pickled")
    ref.publish({**access.worker_secrets(), **cluster.worker_secrets()})
    workers = (access.for_workers(ref), cluster.for_workers(ref), Redactor.for_workers(ref))
    pickled = pickle.dumps(workers)  # Beam's own pickles: tests/test_worker_secrets.py
    assert KEY.encode() not in pickled and PASSWORD.encode() not in pickled
    worker_access, worker_cluster, worker_redactor = pickle.loads(pickle.dumps(workers))
    assert worker_access.credential == {"region": "eu-west-1"}
    assert worker_access.openai_client().api_key == KEY
    assert worker_cluster.url == "https://search.example:9200" and worker_cluster.user == "admin"
    assert worker_cluster.password is None
    assert worker_cluster.client().transport.kwargs["http_auth"] == ("admin", PASSWORD)
    assert worker_redactor.text(f"key {KEY}, password {PASSWORD}") == f"key {MASK}, password {MASK}"
    assert KEY not in repr(workers) and PASSWORD not in repr(workers)


def test_the_worker_redactor_also_masks_the_workers_own_secret_variables(monkeypatch):
    monkeypatch.setenv("MLBATCH_SECRET_OPENSEARCH_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "worker-session-token-9")
    redactor = Redactor.for_workers(SecretRef("env", names=("opensearch.password",), run_id="own"))
    assert redactor.value({"e": [f"{PASSWORD} worker-session-token-9"]}) == {"e": [f"{MASK} {MASK}"]}


def test_an_openai_request_without_a_key_hands_the_launchers_key_to_the_workers(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert SourceAccess("openAI").worker_secrets() == {"credential.openAI_key": KEY}
    assert SourceAccess("s3", {"region": "us-east-1"}).worker_secrets() == {}


def _plan(option: str | None, runner: RunnerChoice, see_local: bool = True, password: str | None = PASSWORD):
    cluster = OpenSearchConfig(user="admin", password=password)
    return WorkerSecrets.plan(option, SourceAccess("local"), cluster, runner, see_local)


def test_the_in_process_runner_keeps_the_secrets_in_process_and_others_default_to_a_file():
    assert _plan(None, IN_PROCESS).ref is None
    assert _plan(None, MULTI_PROCESSING).ref == SecretRef("file")
    assert _plan("env", IN_PROCESS).ref == SecretRef("env")  # asked for: honoured
    assert _plan("env", DATAFLOW, see_local=False, password=None).ref is None  # nothing to hand over


def test_dataflow_with_secrets_needs_env_or_secrets_manager():
    with pytest.raises(WorkerSecretsError) as error:
        _plan(None, DATAFLOW, see_local=False)
    assert "--worker-secrets env (and set MLBATCH_SECRET_OPENSEARCH_PASSWORD on the workers)" in str(
        error.value
    )
    assert "aws-secretsmanager:NAME_OR_ARN" in str(error.value) and PASSWORD not in str(error.value)
    with pytest.raises(
        WorkerSecretsError, match="DataflowRunner's workers cannot read a file on this machine"
    ):
        _plan("file:/tmp/s.json", DATAFLOW, see_local=False)
    assert _plan("aws-secretsmanager:runs/x", DATAFLOW, see_local=False).ref.kind == "aws-secretsmanager"


def test_the_default_file_lives_under_mlbatch_home_for_the_run_only(mlbatch_home):
    plan = _plan(None, MULTI_PROCESSING)
    with plan.handed_over("task-1") as handover:
        path = mlbatch_home / "secrets" / "task-1.json"
        assert handover.record_fields() == {"worker_secrets": {"kind": "file", "name": str(path)}}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert handover.cluster(OpenSearchConfig(user="admin", password=PASSWORD)).password is None
    assert not path.exists()


def test_a_secrets_manager_arn_carries_its_region():
    from connectors.secret_refs import secretsmanager_region

    assert (
        secretsmanager_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:runs/x-AbCdEf")
        == "eu-west-1"
    )


def test_a_bad_worker_secrets_option_is_an_options_error():
    from pipelines.ingest_options import IngestOptions, IngestOptionsError

    with pytest.raises(IngestOptionsError, match="--worker-secrets 'vault:x': use env, file:PATH"):
        IngestOptions(worker_secrets="vault:x")
    assert (
        IngestOptions(worker_secrets="aws-secretsmanager:runs/x").worker_secrets
        == "aws-secretsmanager:runs/x"
    )


def test_a_run_with_no_secret_of_its_own_pickles_none_of_this_machines_for_other_processes(monkeypatch):
    """The launcher's own secret variables stay out of the graph of a run whose workers are elsewhere."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "launcher-aws-secret-9d1e")
    launcher = Redactor.of(["launcher-aws-secret-9d1e"])
    cluster = OpenSearchConfig()
    for runner, in_graph in ((IN_PROCESS, True), (MULTI_PROCESSING, False), (DATAFLOW, False)):
        plan = WorkerSecrets.plan(None, SourceAccess("s3", {}), cluster, runner, runner is not DATAFLOW)
        with plan.handed_over("task-1") as handover:
            redactor = handover.redactor(launcher)
        assert (b"launcher-aws-secret-9d1e" in pickle.dumps(redactor)) is in_graph
        assert redactor.text("key launcher-aws-secret-9d1e") == f"key {MASK}"  # masked where it runs


def test_a_file_reference_never_replaces_an_existing_file_and_leaves_no_copy(tmp_path):
    existing = tmp_path / "credentials"
    existing.write_text("keep me")
    ref = SecretRef("file", str(existing), NAMES, run_id="run-1")
    with pytest.raises(SecretRefError, match="the file exists"):
        ref.publish({"credential.openAI_key": KEY, "opensearch.password": PASSWORD})
    assert existing.read_text() == "keep me" and os.listdir(tmp_path) == ["credentials"]

"""What a caller of `mlbatch serve-api` may make it reach: connector URLs against the trusted endpoint
patterns, local files under `--local-root` (at submission and when the worker expands them)."""

from __future__ import annotations

import pytest

from connectors.batch_predict.connector import parse_connector
from connectors.source_access import SourceAccess
from connectors.sources import SourceError, expand_source
from pipelines.rest_api.confinement import ML_COMMONS_TRUSTED_ENDPOINTS, confined_sources, untrusted_url


def connector(url: str, status_url: str | None = None, **parameters: str) -> object:
    actions = [{"action_type": "batch_predict", "method": "POST", "url": url}]
    if status_url:
        actions.append({"action_type": "batch_predict_status", "method": "GET", "url": status_url})
    return parse_connector({"name": "c", "protocol": "http", "parameters": parameters, "actions": actions})


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1/batches",
        "https://api.sagemaker.us-east-1.amazonaws.com/CreateTransformJob",
        "https://bedrock.us-west-2.amazonaws.com/model-invocation-job",
        "https://api.cohere.ai/v1/embed-jobs",
    ],
)
def test_the_services_ml_commons_trusts_are_trusted(url):
    assert untrusted_url(connector(url), {}, ML_COMMONS_TRUSTED_ENDPOINTS) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://bedrock.x@evil.example/a.amazonaws.com/model/batch",
        "https://runtime.sagemaker.evil.example/a.amazonaws.com/x",
        "http://api.openai.com/v1/batches",
        "https://api.openai.com.evil.example/v1/batches",
        "http://169.254.169.254/latest/meta-data",
        "https://api.openai.com@127.0.0.1:9200/_search",
    ],
)
def test_hosts_ml_commons_patterns_were_loose_about_are_refused(url):
    assert untrusted_url(connector(url), {}, ML_COMMONS_TRUSTED_ENDPOINTS) == url


def test_parameters_of_the_connector_and_the_request_are_filled_before_the_check():
    templated = connector("${parameters.base_url}/batches", base_url="https://api.openai.com/v1")
    assert untrusted_url(templated, {}, ML_COMMONS_TRUSTED_ENDPOINTS) is None
    moved = untrusted_url(templated, {"base_url": "http://10.0.0.1"}, ML_COMMONS_TRUSTED_ENDPOINTS)
    assert moved == "http://10.0.0.1/batches"
    status = connector(
        "https://api.openai.com/v1/batches",
        "${parameters.base}/batches/${parameters.id}",
        base="https://api.openai.com/v1",
    )
    assert untrusted_url(status, {"base": "https://evil.example"}, ML_COMMONS_TRUSTED_ENDPOINTS) == (
        "https://evil.example/batches/${parameters.id}"
    )


def test_derived_status_and_cancel_calls_are_checked_too():
    openai = connector("https://api.openai.com/v1/batches")
    assert untrusted_url(openai, {}, [r"^https://api\.openai\.com/v1/batches$"]) == (
        "https://api.openai.com/v1/batches/${parameters.id}"
    )


def test_local_sources_are_made_absolute_under_the_root(tmp_path):
    assert confined_sources(["a.jsonl", str(tmp_path / "b")], str(tmp_path)) == [
        str(tmp_path / "a.jsonl"),
        str(tmp_path / "b"),
    ]
    for outside in ("../a.jsonl", "/etc/hosts", "x/../../a"):
        with pytest.raises(ValueError, match="is outside --local-root"):
            confined_sources([outside], str(tmp_path))
    with pytest.raises(ValueError, match="--local-root DIR"):
        confined_sources(["a.jsonl"], None)


def test_expanding_a_glob_or_a_directory_never_leaves_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jsonl").write_text("{}\n")
    (root / "mine.jsonl").write_text("{}\n")
    (root / "link").symlink_to(outside)
    (root / "sub" / "s.jsonl").symlink_to(outside / "secret.jsonl")
    access = SourceAccess("local", local_root=str(root))
    assert [file.uri for file in expand_source(str(root / "*.jsonl"), access)] == [str(root / "mine.jsonl")]
    for source in ("lin?/secret.jsonl", "**/*.jsonl", "sub"):
        with pytest.raises(SourceError, match="is outside --local-root"):
            expand_source(str(root / source), access)
    assert len(expand_source(str(root / "sub"), SourceAccess("local"))) == 1  # mlbatch ingest: no root

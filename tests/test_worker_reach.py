"""Runners whose workers cannot see this machine's files refuse local paths before anything runs."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.runner_choice import runner_key
from pipelines.worker_reach import is_local, reach_problem, workers_see_local_files

DATAFLOW_DOTTED = "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"


@pytest.mark.parametrize(
    ("runner", "key"),
    [
        ("DataflowRunner", "dataflowrunner"),
        ("dataflow", "dataflowrunner"),
        (DATAFLOW_DOTTED, "dataflowrunner"),
        ("FlinkRunner", "flinkrunner"),
        ("apache_beam.runners.dask.dask_runner.DaskRunner", "daskrunner"),
    ],
)
def test_runner_names_are_read_as_beam_reads_them(runner, key):
    assert runner_key(runner) == key


def test_dataflow_and_portable_runners_workers_do_not_see_local_files():
    for runner in (
        "DataflowRunner",
        DATAFLOW_DOTTED,
        "FlinkRunner",
        "SparkRunner",
        "PrismRunner",
        "PortableRunner",
    ):
        assert not workers_see_local_files(runner)
    assert workers_see_local_files("FlinkRunner", "LOOPBACK")  # the SDK workers run in this process
    for runner in ("DirectRunner", "direct", "DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        assert workers_see_local_files(runner)


def test_object_storage_is_not_local():
    assert is_local("/data/out.jsonl") and is_local("out/*.jsonl") and is_local("file:///data/out.jsonl")
    assert not any(is_local(uri) for uri in ("s3://b/k", "gs://b/k", "https://host/k"))


def test_a_local_source_is_refused_for_dataflow_naming_the_field_and_what_to_use():
    problem = reach_problem("DataflowRunner", "local", ["/data/out.jsonl", "/data/in.jsonl"], "s3://b/dlq")
    assert problem is not None
    assert "DataflowRunner's workers cannot see this machine's files" in problem
    assert "data_source.source[0] '/data/out.jsonl' is a local path (2 of 2 sources are)" in problem
    assert 'data_source.type "s3"' in problem and "--dlq" not in problem


def test_the_default_and_a_local_dead_letter_directory_are_refused_for_dataflow():
    default = reach_problem("DataflowRunner", "s3", ["s3://b/out.jsonl"], None)
    assert default is not None and "default dead-letter directory is under $MLBATCH_HOME" in default
    assert "--dlq s3://bucket/prefix or gs://bucket/prefix" in default
    local = reach_problem("FlinkRunner", "s3", ["s3://b/out.jsonl"], "/var/dlq")
    assert local is not None and "--dlq '/var/dlq' is a local directory" in local


def test_object_storage_passes_and_local_paths_pass_where_workers_see_them():
    assert reach_problem("DataflowRunner", "s3", ["s3://b/out.jsonl"], "s3://b/dlq") is None
    assert reach_problem("DataflowRunner", "openAI", ["file-abc"], "gs://b/dlq") is None
    assert reach_problem("DirectRunner", "local", ["/data/out.jsonl"], None) is None
    assert reach_problem("DaskRunner", "local", ["/data/out.jsonl"], "/shared/dlq") is None
    assert reach_problem("FlinkRunner", "local", ["/data/out.jsonl"], None, "LOOPBACK") is None


@pytest.mark.integration  # loads Beam's options
def test_dataflow_with_a_local_source_exits_2_before_anything_runs(tmp_path, capsys, mlbatch_home):
    request = {
        "index_name": "vectors",
        "field_map": {"text": "$.text"},
        "data_source": {"type": "local", "source": [str(tmp_path / "out.jsonl")]},
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    code = main(
        [
            "ingest",
            str(tmp_path / "request.json"),
            "--opensearch=http://127.0.0.1:9",  # nothing listens: the cluster is never asked
            "--runner=DataflowRunner",
            "--project=p",
            "--region=us-central1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "data_source.source[0]" in captured.err and "default dead-letter directory" in captured.err
    assert not (mlbatch_home / "tasks.db").exists()  # no task was created

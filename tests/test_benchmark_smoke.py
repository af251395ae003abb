"""Small runs of the benchmark scripts so they cannot rot (no timings are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def test_runner_modes_experiment_runs_and_checks_completeness():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.runner_modes",
            "--keys",
            "200",
            "--dim",
            "8",
            "--runs",
            "1",
            "--modes",
            "in_memory",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["complete"] is True and row["indexed"] == 200 and row["state"] == "COMPLETED"


def test_ingest_benchmark_runs_every_contender_and_writes_its_table(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ingest_benchmark",
            "--docs",
            "300",
            "--json",
            str(out),
            "--skip",
            "multi_processing",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["contender"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {
        "baseline",
        "mlbatch in_memory",
        "mlbatch shuffle join",
        "limit",
        "mlbatch single source",
    }
    assert all(row["docs_per_s"] > 0 and row["peak_rss_mib"] > 0 for row in rows.values())
    assert rows["baseline"]["vs_baseline"] == 1.0 and rows["limit"]["vs_limit"] == 1.0
    assert rows["limit"]["first_bulk_s"] is None  # the limit writes nothing
    assert all(row["first_bulk_s"] > 0 for name, row in rows.items() if name != "limit")
    assert "contender" in result.stdout


def test_the_memory_run_delivers_every_document_of_a_multi_file_output():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_run", "--docs", "300", "--output-files", "3"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["sink_documents"], report["output_files"]) == (300, 3) and report["peak_rss_mib"] > 0


def test_the_scale_out_benchmark_runs_on_a_real_dask_cluster(tmp_path):
    out = tmp_path / "scale.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_out", "--docs", "300", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())


def test_the_api_benchmark_ingests_through_serve_api_and_the_cli(tmp_path):
    out = tmp_path / "api.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.api_overhead", "--docs", "300", "--repeat", "1", "--json", out],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(out.read_text())
    assert [row["contender"] for row in measured["rows"]] == ["mlbatch ingest", "serve-api"]
    assert measured["get_task_ms"] > 0 and measured["post_answer_ms"] > 0


def test_the_null_sink_command_receives_large_bodies_intact():
    """`python -m benchmarks.null_sink` once ran two serving loops; bodies of a few MB sent on
    several connections at once arrived reordered."""
    from concurrent.futures import ThreadPoolExecutor

    from opensearchpy import OpenSearch

    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.null_sink"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        client = OpenSearch([sink.stdout.readline().strip()], max_retries=0, timeout=30, maxsize=4)
        vector = json.dumps([round(i / 7, 7) for i in range(384)])
        body = "".join(f'{{"index":{{"_id":"d{i}"}}}}\n{{"embedding":{vector}}}\n' for i in range(300))

        def ids_back(_: int) -> list[str]:
            return [item["index"]["_id"] for item in client.bulk(body=body, index="bench")["items"]]

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ids_back, range(24)))
        assert answers == [[f"d{i}" for i in range(300)]] * 24
        client.close()
    finally:
        sink.kill()
        sink.wait(timeout=10)

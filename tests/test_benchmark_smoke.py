"""Small runs of the benchmark scripts so they cannot rot (no timings are asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

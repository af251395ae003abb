"""What a person sees of `mlbatch ingest` on stderr: a bar on a terminal, lines otherwise, a summary table."""

from __future__ import annotations

import gzip
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.data import jsonl, knn_index_body, sagemaker_lines
from tests.ingest_helpers import REPO, mlbatch_command, run_mlbatch, write_request
from transforms import progress

pytestmark = pytest.mark.integration
PTY_SECONDS = 150


def request_of(directory: Path) -> dict:
    return {
        "index_name": "progress",
        "field_map": {"chapter": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(directory)]},
    }


def input_files(tmp_path: Path) -> Path:
    """A directory of 2000 plain JSONL records, 500 gzipped ones and a bad line."""
    directory = tmp_path / "in"
    directory.mkdir()
    lines = sagemaker_lines(2500, 4)
    (directory / "a.jsonl").write_bytes(jsonl(lines[:2000]) + b"not json\n")
    (directory / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(lines[2000:])))
    return directory


def ingest_args(tmp_path: Path, url: str) -> list[str]:
    request_path, mapping_path = write_request(
        tmp_path, request_of(input_files(tmp_path)), knn_index_body(["embedding"], 4)
    )
    return ["ingest", str(request_path), "--opensearch", url, "--create-index", str(mapping_path)]


def run_in_terminal(args: list[str], home: Path) -> tuple[int, str, str]:
    """`mlbatch ARGS` with stderr on a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    environment = {**os.environ, "MLBATCH_HOME": str(home), "COLUMNS": "160"}
    process = subprocess.Popen(
        mlbatch_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=environment,
        cwd=REPO,
    )
    os.close(terminal)
    shown = bytearray()
    deadline = time.monotonic() + PTY_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal's other end closed: the process ended
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        stdout = process.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return process.returncode, stdout.decode(), shown.decode(errors="replace")


def test_a_terminal_shows_a_bar_reaching_100_percent_then_the_summary(osmem_url, tmp_path, mlbatch_home):
    code, stdout, shown = run_in_terminal(ingest_args(tmp_path, osmem_url), mlbatch_home)
    assert code == 3, shown
    assert json.loads(stdout)["counts"]["indexed"] == 2500
    assert "100%|" in shown and "2500 docs" in shown and "1 dead letters" in shown, shown
    assert "indexed 2500 documents (" not in shown  # the bar replaces the progress lines
    assert "records read" in shown and "source[0]" in shown and "parse 1" in shown, shown
    assert shown.index("100%|") < shown.index("records read")


@pytest.mark.parametrize("helper", ["on", "off"])
def test_without_a_terminal_the_lines_stay_the_table_follows_and_all_bytes_count(
    osmem_url, tmp_path, mlbatch_home, capsys, helper
):
    code = main([*ingest_args(tmp_path, osmem_url), f"--read-helper={helper}"])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "%|" not in captured.err
    assert "mlbatch: read 2501 record(s), indexed 2500 document(s), rejected 1" in captured.err
    rows = [line.split() for line in captured.err.splitlines()]
    assert ["source[0]", "2", "2501", "2500", "1"] in rows, captured.err
    assert ["written", "2500"] in rows, captured.err
    assert json.loads(captured.out)["counts"]["rejected_by_source"] == {"source[0]": 1}
    total = progress.INPUT.total or 0
    assert total - 2500 <= progress.INPUT.read <= total  # line ends and blank lines aside, every byte


def test_quiet_shows_neither_bar_nor_table_even_on_a_terminal(osmem_url, tmp_path, mlbatch_home):
    code, stdout, shown = run_in_terminal([*ingest_args(tmp_path, osmem_url), "--quiet"], mlbatch_home)
    assert code == 3 and json.loads(stdout)["counts"]["indexed"] == 2500
    assert "%|" not in shown and "records read" not in shown and "written" not in shown, shown


def test_a_piped_run_prints_progress_lines_and_the_table(osmem_url, tmp_path, mlbatch_home):
    result = run_mlbatch(*ingest_args(tmp_path, osmem_url), "--read-helper=off", home=mlbatch_home)
    assert result.returncode == 3, result.stderr
    assert "%|" not in result.stderr and "\r" not in result.stderr
    assert "records read" in result.stderr and "written" in result.stderr

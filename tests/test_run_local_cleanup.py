"""`./run_local.sh` stops the services it starts: on a normal exit and on Ctrl-C.

The script runs as a user runs it, on a small corpus (`MLBATCH_DEMO_MODULES`), with its own
$MLBATCH_HOME; its services are found afterwards by that $MLBATCH_HOME in their environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingest_helpers import REPO

pytestmark = pytest.mark.integration

SMALL_CORPUS = "json,getopt"
RUN_TIMEOUT = 900  # the first run may install mlbatch[local] into .venv


def services_of(home: Path) -> list[int]:
    """Pids of `mlbatch serve-index` / `serve-embeddings` processes running with MLBATCH_HOME=home."""
    marker = f"MLBATCH_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"serve-" in command and marker in environment:
            found.append(int(entry.name))
    return found


@pytest.fixture
def run_local(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen]]]:
    """Where the script's output goes and the scripts started; every leftover is killed afterwards."""
    home = tmp_path / "home"
    started: list[subprocess.Popen] = []
    yield home, started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    for pid in services_of(home):
        os.kill(pid, signal.SIGKILL)


def start(home: Path, tmp_path: Path, started: list[subprocess.Popen]) -> subprocess.Popen:
    env = {**os.environ, "MLBATCH_HOME": str(home), "MLBATCH_DEMO_MODULES": SMALL_CORPUS}
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        process = subprocess.Popen(
            ["./run_local.sh"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    started.append(process)
    return process


def test_services_are_stopped_after_a_normal_run(run_local, tmp_path):
    home, started = run_local
    process = start(home, tmp_path, started)
    assert process.wait(timeout=RUN_TIMEOUT) == 0, (tmp_path / "err.txt").read_text()[-3000:]
    assert "top " in (tmp_path / "out.txt").read_text()
    assert services_of(home) == []


def test_services_are_stopped_after_ctrl_c(run_local, tmp_path):
    home, started = run_local
    process = start(home, tmp_path, started)
    deadline = time.monotonic() + RUN_TIMEOUT
    while "batch embedding service:" not in (tmp_path / "err.txt").read_text():
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "err.txt").read_text()[
            -3000:
        ]
        time.sleep(0.1)
    assert len(services_of(home)) == 2

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    assert process.wait(timeout=120) == 130
    assert services_of(home) == []

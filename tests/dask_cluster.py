"""A real Dask cluster on 127.0.0.1 for the integration tests: `dask scheduler` and `dask worker` processes.

Started as users start them, from the venv's `dask` command, on free loopback ports and with no
dashboard. Workers run without a nanny (so a SIGKILLed worker stays dead, as a lost machine),
one thread each by default, and import the project from this repository (`PYTHONPATH`, cwd),
loading the runner's tasks (and Beam) at start-up (`--preload`);
they share this machine's filesystem, as the docs require of local paths. Start-up waits at
most 60 s for every worker; `replace_killed_workers` brings the cluster back to its size after
a test killed one; `close` stops every process, also after a failed start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from tests.ingest_helpers import REPO
from tests.servers import free_port

START_SECONDS = 60
DASK = str(Path(sys.executable).with_name("dask"))


class DaskCluster:
    """A scheduler and `workers` worker processes; `address` is the scheduler's `tcp://` URL."""

    def __init__(
        self, directory: Path, workers: int = 2, nthreads: int = 1, env: dict[str, str] | None = None
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
        self._logs: list[IO[bytes]] = []
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.size = workers
        self._nthreads = nthreads
        self._started = 0
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        try:
            self.scheduler = self._start(
                "scheduler",
                [
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    self.address.rsplit(":", 1)[1],
                    "--no-dashboard",
                ],
                ["--idle-timeout", "600"],
            )
            for _ in range(workers):
                self._start_worker()
            self.wait_for_workers(workers)
        except BaseException:
            self.close()
            raise

    def _start_worker(self) -> None:
        number, self._started = self._started, self._started + 1
        self.workers.append(self._start(f"worker-{number}", self._worker_args(number)))

    def _worker_args(self, number: int) -> list[str]:
        return [
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            str(self._nthreads),
            "--no-nanny",
            "--no-dashboard",
            "--name",
            f"worker-{number}",
            "--death-timeout",
            "60",
            "--local-directory",
            str(self._directory / f"worker-{number}"),
            "--preload",
            "pipelines.dask_runner.tasks",  # Beam and the runner load at start-up, not in the first task
        ]

    def _start(self, name: str, args: list[str], extra: list[str] | None = None) -> subprocess.Popen:
        log = open(self._directory / f"{name}.log", "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        return subprocess.Popen(
            [DASK, *args, *(extra or [])], cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT
        )

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=START_SECONDS) as client:
            client.wait_for_workers(count, timeout=START_SECONDS)

    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in self.workers if worker.poll() is None]

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker process: its tasks and the results it held are lost."""
        os.kill(pid, signal.SIGKILL)

    def replace_killed_workers(self) -> None:
        """Start a worker for each one that died, and wait until they joined."""
        for _ in range(self.size - len(self.worker_pids())):
            self._start_worker()
        self.wait_for_workers(self.size)

    def log(self, name: str) -> str:
        return (self._directory / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        """SIGTERM to every process; SIGKILL to those still running 5 s later (a dask worker can
        linger after it stopped)."""
        processes = [process for process in [*self.workers, self.scheduler] if process is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 5
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for log in self._logs:
            log.close()

"""`mlbatch serve-api` as users run it, for the REST API tests: the command, its URL, its log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from opensearchpy import OpenSearch

from tests.servers import serve_command

RUNNING_STATES = ("CREATED", "RUNNING")


@dataclass
class ApiProcess:
    process: subprocess.Popen
    url: str
    log: str = ""

    def client(self, **options: object) -> OpenSearch:
        return OpenSearch(hosts=[self.url], timeout=30, **options)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, self.log = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, self.log = self.process.communicate(timeout=10)
        return self.log


@contextmanager
def serve_api(*args: str, env: dict[str, str] | None = None) -> Iterator[ApiProcess]:
    process, url = serve_command("serve-api", list(args), env or {})
    api = ApiProcess(process, url)
    try:
        yield api
    finally:
        api.stop()


def wait_for_task(client: OpenSearch, task_id: str, timeout: float = 120.0) -> dict:
    """Poll GET task until it leaves CREATED and RUNNING (or fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.plugins.ml.get_task(task_id=task_id)
        if record["state"] not in RUNNING_STATES:
            return record
        assert time.monotonic() < deadline, f"task still {record['state']} after {timeout} s: {record}"
        time.sleep(0.2)

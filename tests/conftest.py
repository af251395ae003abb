"""Shared fixtures: an isolated $MLBATCH_HOME, the moto S3 server, the local batch services,
fault-injecting OpenSearch-compatible servers; and an AIRFLOW_HOME of the session's own, set
before any test imports Airflow (which reads it at import), so no test touches ~/airflow.

osmem-server's pytest plugin provides `osmem_url`: a fresh clone of an OpenSearch-compatible
server per test.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batch_services import BatchServices
from tests.fault_server import FaultServer
from tests.servers import MotoS3

OPENAI_TEST_KEY = "sk-test-0123456789abcdef"
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="mlbatch-test-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def mlbatch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mlbatch-home"
    monkeypatch.setenv("MLBATCH_HOME", str(home))
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    server = MotoS3()
    yield server
    server.close()


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch):
    """A boto3 S3 client on a clean moto server; AWS_ENDPOINT_URL points everything at it."""
    import boto3

    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def openai_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServices]:
    """The local batch services; OPENAI_BASE_URL points the openai SDK at them."""
    server = BatchServices(OPENAI_TEST_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
    yield server
    server.close()


@pytest.fixture
def fault_servers() -> Iterator[Callable[..., FaultServer]]:
    """Starts `FaultServer(**options)` on 127.0.0.1 per call; all are closed after the test."""
    started: list[FaultServer] = []

    def start(**options: Any) -> FaultServer:
        started.append(FaultServer(**options).start())
        return started[-1]

    yield start
    for running in started:
        running.close()


class LoggedLines(logging.Filter):
    """What the mlbatch logger logs (a filter on the logger: the CLI replaces its handlers)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.lines.append(record.getMessage())
        return True


@pytest.fixture
def logged() -> Iterator[LoggedLines]:
    """The mlbatch logger's messages during the test."""
    lines = LoggedLines()
    logging.getLogger("mlbatch").addFilter(lines)
    yield lines
    logging.getLogger("mlbatch").removeFilter(lines)

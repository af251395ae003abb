"""Real local servers for the integration tests, all on 127.0.0.1.

- `MotoS3`: the moto server in its own process (the real S3 wire API, not the in-process mock).
- `tests.batch_services.BatchServices`: the OpenAI Files/Batch, Cohere, Bedrock and SageMaker
  APIs where moto falls short.
- `serve_command`: an `mlbatch serve-…` command run as users run it, with the URL it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def serve_command(
    command: str, args: list[str], env: dict[str, str], stderr: int = subprocess.PIPE
) -> tuple[subprocess.Popen, str]:
    """Start `mlbatch COMMAND ARGS` with `env` added and return it with the URL it announces
    (killed if no URL line comes within 20 s)."""
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlbatch")), command, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    timer = threading.Timer(20, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
    finally:
        timer.cancel()
    assert line, process.stderr.read() if process.stderr else "no URL line"
    return process, json.loads(line)["url"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """`moto_server` on a free loopback port, stopped on close."""

    def __init__(self) -> None:
        port = free_port()
        binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("moto_server did not start within 30 s")

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=5
        ).close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

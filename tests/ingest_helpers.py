"""Run `mlbatch ingest` in-process (the real Beam DirectRunner) and read back what was indexed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch

from pipelines.cli import main


def run_ingest(
    capsys: Any, tmp_path: Path, request: dict, url: str, *extra: str, index_body: dict | None = None
) -> tuple[int, dict]:
    """Write the request, run the CLI, return (exit code, printed task record)."""
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    args = ["ingest", str(request_path), "--opensearch", url, *extra]
    if index_body is not None:
        mapping = tmp_path / "mapping.json"
        mapping.write_text(json.dumps(index_body))
        args += ["--create-index", str(mapping)]
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def indexed_documents(url: str, index: str) -> dict[str, dict]:
    client = OpenSearch(hosts=[url])
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"query": {"match_all": {}}, "size": 10000})["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def dead_letters(record: dict) -> list[dict]:
    directory = Path(record["dlq"])
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


REPO = Path(__file__).resolve().parents[1]


def write_request(directory: Path, request: dict, index_body: dict | None = None) -> tuple[Path, Path | None]:
    """request.json (and mapping.json when `index_body` is given) in `directory`."""
    request_path = directory / "request.json"
    request_path.write_text(json.dumps(request))
    if index_body is None:
        return request_path, None
    mapping_path = directory / "mapping.json"
    mapping_path.write_text(json.dumps(index_body))
    return request_path, mapping_path


def mlbatch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def run_mlbatch(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`mlbatch ARGS` in a subprocess with its own $MLBATCH_HOME, as a user would run it."""
    environment = {**os.environ, **(env or {}), "MLBATCH_HOME": str(home)}
    return subprocess.run(
        mlbatch_command(*args), capture_output=True, text=True, env=environment, cwd=REPO, timeout=180
    )

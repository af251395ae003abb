"""REST API benchmark: an ingestion through `mlbatch serve-api` against the same run of `mlbatch ingest`.

    python -m benchmarks.api_overhead [--docs 50000] [--repeat 5] [--json api-overhead.json]

Generates the ingest benchmark's 2-source join (`benchmarks.ingest_benchmark.generate`), starts the
null `_bulk` sink and one `serve-api` (`--local-root` the data), then in interleaved rounds times
(a) `mlbatch ingest REQUEST` by whole-run wall clock including start-up, and (b) the same request
through the API: from `POST /_plugins/_ml/_batch_ingestion` until `GET /_plugins/_ml/tasks/{id}`
(polled every 20 ms) shows it COMPLETED, with the POST's own answer time. Every run must deliver
all N documents. The GETs made while an ingestion runs are timed (median, p99), and at the end,
with nothing running, 200 `GET` task calls and 200 `tasks/_search` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from opensearchpy import OpenSearch

from benchmarks.ingest_benchmark import KNN_PROPERTIES, generate, ingest_command, timed
from benchmarks.null_sink import NullSink
from tests.servers import serve_command

POLL_SECONDS = 0.02
CALLS = 200


def through_api(client: OpenSearch, body: dict, polls: list[float]) -> tuple[float, float]:
    """(seconds from the POST until the task is COMPLETED, seconds the POST took to answer); the
    time of each GET while the ingestion runs goes to `polls`."""
    started = time.monotonic()
    accepted = client.transport.perform_request("POST", "/_plugins/_ml/_batch_ingestion", body=body)
    answered = time.monotonic() - started
    while True:
        asked = time.monotonic()
        record = client.plugins.ml.get_task(task_id=accepted["task_id"])
        polls.append(time.monotonic() - asked)
        if record["state"] not in ("CREATED", "RUNNING"):
            break
        time.sleep(POLL_SECONDS)
    if record["state"] != "COMPLETED":
        raise RuntimeError(f"the API's ingestion ended {record['state']}: {record.get('error')}")
    return time.monotonic() - started, answered


def median_call_ms(call: object) -> float:
    times = []
    for _ in range(CALLS):
        started = time.monotonic()
        call()
        times.append(time.monotonic() - started)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--json", default="api-overhead-results.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = generate(directory, args.docs)
        body = json.loads(paths["join_request"].read_text())
        sink = NullSink(properties=KNN_PROPERTIES).start()
        env = {**os.environ, "MLBATCH_HOME": str(directory / "home")}
        cli = ingest_command(paths["join_request"], sink.url)
        api_process, url = serve_command(
            "serve-api", ["--opensearch", sink.url, "--local-root", str(directory), "--quiet"], env
        )
        client = OpenSearch(hosts=[url], timeout=60)
        walls: dict[str, list[float]] = {"mlbatch ingest": [], "serve-api": []}
        answers: list[float] = []
        polls: list[float] = []
        try:
            for round_number in range(args.repeat):
                for name in walls:
                    before = sink.documents
                    if name == "serve-api":
                        wall, answered = through_api(client, body, polls)
                        answers.append(answered)
                    else:
                        wall = timed(cli, env)[0]
                    if sink.documents - before != args.docs:
                        raise RuntimeError(f"{name} wrote {sink.documents - before} of {args.docs} documents")
                    walls[name].append(wall)
                    print(f"round {round_number + 1}: {name}: {wall:.2f} s", file=sys.stderr, flush=True)
            task_id = client.plugins.ml.search_tasks(body={"query": {"match_all": {}}})["hits"]["hits"][0][
                "_id"
            ]
            get_ms = median_call_ms(lambda: client.plugins.ml.get_task(task_id=task_id))
            search = {"query": {"term": {"state": "COMPLETED"}}, "size": 10}
            search_ms = median_call_ms(lambda: client.plugins.ml.search_tasks(body=search))
        finally:
            api_process.terminate()
            api_process.wait(timeout=60)
            sink.close()
    base = statistics.median(walls["mlbatch ingest"])
    rows = [
        {
            "contender": name,
            "seconds": round(statistics.median(runs), 2),
            "vs_cli": round(base / statistics.median(runs), 2),
            "runs_seconds": [round(run, 2) for run in runs],
        }
        for name, runs in walls.items()
    ]
    result = {
        "docs": args.docs,
        "cores": os.cpu_count(),
        "repeat": args.repeat,
        "rows": rows,
        "post_answer_ms": round(statistics.median(answers) * 1000, 1),
        "get_task_during_run_ms": round(statistics.median(polls) * 1000, 2),
        "get_task_during_run_p99_ms": round(sorted(polls)[int(len(polls) * 0.99)] * 1000, 2),
        "get_task_ms": get_ms,
        "search_tasks_ms": search_ms,
    }
    print(f"{args.docs:,} documents, 2-source join, {os.cpu_count()} cores, median of {args.repeat} rounds")
    for row in rows:
        print(f"{row['contender']:<16}{row['seconds']:>8} s{row['vs_cli']:>8}× the CLI")
    print(
        f"POST answered in {result['post_answer_ms']} ms; GET task {get_ms} ms idle, "
        f"{result['get_task_during_run_ms']} ms during a run "
        f"(p99 {result['get_task_during_run_p99_ms']} ms); "
        f"tasks/_search {search_ms} ms"
    )
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

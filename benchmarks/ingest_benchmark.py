"""The ingest benchmark: one command, one generated data set, every contender in the same run.

    python -m benchmarks.ingest_benchmark [--docs N] [--repeat R] [--json results.json]

Generates N documents across 2 sources (an OpenAI-batch-output-shaped file with 384-float
embeddings and its input file in another order) and a single-source SageMaker-shaped file,
starts the null `_bulk` sink on 127.0.0.1 (its index maps `embedding` as a 384-dimension
`knn_vector`, so every vector is checked as against a real cluster), and runs, each as its
own process, timed by whole-run wall clock including start-up:
(a) the hand-written baseline (`benchmarks/baseline_script.py`: json + dict join + helpers.bulk),
(b) `mlbatch ingest` on DirectRunner in_memory (its default broadcast join), the same with
`--join-strategy shuffle`, (c) multi_processing with 2 workers,
(d) the limit (`benchmarks/limit.py`: orjson parse + serialize only), and (e) `mlbatch ingest`
of the single-source file. Prints a table (docs/s, input MB/s, peak RSS of the process tree,
ratio to the baseline and to the limit, the start-up: seconds from a contender's process
start to its first `_bulk` request at the sink, and its worst round against the baseline of the
same round) and writes it as JSON. With `--repeat R` the
contenders run in R interleaved rounds and the table shows each one's median time (this
machine's timings vary by a fifth from run to run). Every mlbatch and baseline run must
deliver all N documents to the sink.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.null_sink import NullSink

DIM = 384
KNN_PROPERTIES = {"embedding": {"type": "knn_vector", "dimension": DIM}}
REPO = Path(__file__).resolve().parents[1]


def generate(directory: Path, docs: int, seed: int = 11, dim: int = DIM) -> dict[str, Path]:
    """The benchmark's input files and the requests that ingest them (2-source join, single source)."""
    rng = random.Random(seed)
    order = list(range(docs))
    rng.shuffle(order)
    paths = {name: directory / f"{name}.jsonl" for name in ("output", "input", "sagemaker")}
    with paths["output"].open("w") as output, paths["sagemaker"].open("w") as sagemaker:
        for i in order:
            vector = [round(rng.uniform(-1, 1), 7) for _ in range(dim)]
            data = [{"object": "embedding", "index": 0, "embedding": vector}]
            output.write(
                json.dumps(
                    {
                        "id": f"batch_req_{i}",
                        "custom_id": f"doc-{i}",
                        "response": {
                            "status_code": 200,
                            "request_id": f"r{i}",
                            "body": {"object": "list", "data": data, "model": "text-embedding-3-small"},
                        },
                        "error": None,
                    }
                )
                + "\n"
            )
            sagemaker.write(
                json.dumps({"SageMakerOutput": [vector], "content": [f"passage {i}"], "id": i}) + "\n"
            )
    with paths["input"].open("w") as inputs:
        for i in range(docs):
            inputs.write(
                json.dumps(
                    {
                        "custom_id": f"doc-{i}",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": {"model": "text-embedding-3-small", "input": [f"passage {i}"]},
                    }
                )
                + "\n"
            )
    join = {
        "index_name": "bench",
        "field_map": {
            "text": "source[1].$.body.input[0]",
            "embedding": "source[0].$.response.body.data[0].embedding",
            "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
        },
        "data_source": {"type": "local", "source": [str(paths["output"]), str(paths["input"])]},
    }
    single = {
        "index_name": "bench",
        "field_map": {"text": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(paths["sagemaker"])]},
    }
    paths["join_request"] = directory / "join.json"
    paths["single_request"] = directory / "single.json"
    paths["join_request"].write_text(json.dumps(join))
    paths["single_request"].write_text(json.dumps(single))
    return paths


def ingest_command(request: Path, sink_url: str, *options: str) -> list[str]:
    """`mlbatch ingest REQUEST` against the sink, quiet, in this interpreter, with more `options`."""
    return [
        sys.executable,
        "-m",
        "pipelines.cli",
        "ingest",
        str(request),
        "--opensearch",
        sink_url,
        "--quiet",
        *options,
    ]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB of the process tree, epoch start), measured by `benchmarks.measure`."""
    measured = [sys.executable, "-m", "benchmarks.measure", *command]
    result = subprocess.run(measured, capture_output=True, text=True, env=env, cwd=REPO)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    if report["exit"] not in (0, 3):
        raise RuntimeError(f"{command[2:4]} failed ({report['exit']}): {result.stderr[-2000:]}")
    return report["seconds"], report["peak_rss_mib"], report["started_at"]


def main() -> None:
    parser = argparse.ArgumentParser(description="mlbatch ingest benchmark")
    parser.add_argument("--docs", type=int, default=50_000, help="documents (default 50,000: about a minute)")
    parser.add_argument("--json", default="benchmark-results.json", help="where to write the results")
    parser.add_argument(
        "--skip", default="", help="comma-separated contenders to skip (e.g. multi_processing)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of every contender, interleaved; the table shows each one's median (default 1)",
    )
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = generate(directory, args.docs)
        input_mb = (paths["output"].stat().st_size + paths["input"].stat().st_size) / 2**20
        sink = NullSink(properties=KNN_PROPERTIES).start()
        env = {**os.environ, "MLBATCH_HOME": str(directory / "home")}
        ingest = [python, "-m", "pipelines.cli", "ingest", "--opensearch", sink.url, "--quiet"]
        contenders = {
            "baseline": [
                python,
                "-m",
                "benchmarks.baseline_script",
                str(paths["output"]),
                str(paths["input"]),
                sink.url,
                "bench",
            ],
            "mlbatch in_memory": [*ingest, str(paths["join_request"])],
            "mlbatch shuffle join": [*ingest, str(paths["join_request"]), "--join-strategy", "shuffle"],
            "multi_processing": [
                *ingest,
                str(paths["join_request"]),
                "--direct_running_mode=multi_processing",
                "--direct_num_workers=2",
            ],
            "limit": [python, "-m", "benchmarks.limit", str(paths["output"]), str(paths["input"])],
            "mlbatch single source": [*ingest, str(paths["single_request"])],
        }
        chosen = {name: command for name, command in contenders.items() if name not in args.skip.split(",")}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
        startups: dict[str, list[float]] = {name: [] for name in chosen}
        try:
            for round_number in range(args.repeat):
                for name, command in chosen.items():
                    before, sink.first_bulk_at = sink.documents, None
                    wall, peak, started_at = timed(command, env)
                    if name != "limit" and sink.documents - before != args.docs:
                        raise RuntimeError(f"{name} wrote {sink.documents - before} of {args.docs} documents")
                    runs[name].append((wall, peak))
                    if sink.first_bulk_at is not None:  # process start to its first _bulk request
                        startups[name].append(sink.first_bulk_at - started_at)
                    print(f"round {round_number + 1}: {name}: {wall:.1f} s", file=sys.stderr, flush=True)
        finally:
            sink.close()
    rows = []
    for name, measured in runs.items():
        wall = statistics.median(seconds for seconds, _ in measured)
        rows.append(
            {
                "contender": name,
                "seconds": round(wall, 2),
                "docs_per_s": round(args.docs / wall),
                "input_mb_per_s": round(input_mb / wall, 1),
                "peak_rss_mib": round(max(peak for _, peak in measured)),
                "runs_seconds": [round(seconds, 2) for seconds, _ in measured],
                "first_bulk_s": round(statistics.median(startups[name]), 2) if startups[name] else None,
            }
        )
    by_name = {row["contender"]: row for row in rows}
    for row in rows:
        for reference in ("baseline", "limit"):
            if reference in by_name:
                row[f"vs_{reference}"] = round(row["docs_per_s"] / by_name[reference]["docs_per_s"], 2)
        if "baseline" in by_name:  # each round against the baseline of the same round
            pairs = zip(by_name["baseline"]["runs_seconds"], row["runs_seconds"], strict=True)
            row["rounds_vs_baseline"] = [round(baseline / seconds, 2) for baseline, seconds in pairs]
    rounds = f", median of {args.repeat} interleaved rounds" if args.repeat > 1 else ""
    print(f"{args.docs:,} documents, {input_mb:.0f} MB of 2-source input, {os.cpu_count()} cores{rounds}")
    print(
        f"{'contender':<24}{'s':>8}{'docs/s':>10}{'MB/s':>8}{'peak RSS':>10}{'vs base':>9}{'vs limit':>10}"
        f"{'1st bulk s':>12}{'worst round':>13}"
    )
    for row in rows:
        first_bulk = "" if row["first_bulk_s"] is None else row["first_bulk_s"]
        print(
            f"{row['contender']:<24}{row['seconds']:>8}{row['docs_per_s']:>10,}{row['input_mb_per_s']:>8}"
            f"{row['peak_rss_mib']:>8} M{row.get('vs_baseline', ''):>9}{row.get('vs_limit', ''):>10}"
            f"{first_bulk:>12}{min(row.get('rounds_vs_baseline') or ['']):>13}"
        )
    Path(args.json).write_text(
        json.dumps(
            {
                "docs": args.docs,
                "input_mb": round(input_mb, 1),
                "cores": os.cpu_count(),
                "repeat": args.repeat,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

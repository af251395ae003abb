"""Do DirectRunner's running modes give complete joins? A bounded, repeatable experiment.

For each mode (in_memory, multi_processing) and each run, this writes a 2-source join
input (an OpenAI-batch-output-shaped file with `--dim`-float vectors, ~3 KB per line, and
an input file in another order), runs `mlbatch ingest` on it against the null `_bulk` sink,
and checks that every key arrived exactly once. It also runs a bare-Beam CoGroupByKey of
the same element sizes, with no mlbatch code, to tell a runner problem from ours.

    python -m benchmarks.runner_modes --keys 200000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.ingest_benchmark import generate, ingest_command
from benchmarks.null_sink import NullSink


def run_mlbatch(request: Path, mode: str, workers: int, home: Path) -> dict:
    sink = NullSink().start()
    started = time.monotonic()
    try:
        result = subprocess.run(
            ingest_command(
                request, sink.url, f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"
            ),
            capture_output=True,
            text=True,
            env={"MLBATCH_HOME": str(home), "PATH": str(Path(sys.executable).parent)},
            timeout=1800,
        )
        record = (
            json.loads(result.stdout)
            if result.stdout.strip()
            else {"state": "no output", "error": result.stderr}
        )
        return {
            "seconds": round(time.monotonic() - started, 1),
            "state": record.get("state"),
            "indexed": record.get("counts", {}).get("indexed"),
            "sink_actions": sink.documents,
            "sink_distinct_ids": len(sink.ids),
            "error": record.get("error"),
        }
    finally:
        sink.close()


def bare_beam_join(keys: int, dim: int, mode: str, workers: int) -> int:
    """Keys joined by a plain Beam CoGroupByKey of ~3 KB elements; no mlbatch code involved."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    counter = Metrics.counter("repro", "joined")

    def count(element: object) -> None:
        counter.inc()

    options = PipelineOptions(
        ["--runner=DirectRunner", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    )
    with beam.Pipeline(options=options) as pipeline:
        left = pipeline | "L" >> beam.Create(range(keys)) | "LV" >> beam.Map(lambda i: (f"k{i}", [0.5] * dim))
        right = (
            pipeline | "R" >> beam.Create(range(keys)) | "RV" >> beam.Map(lambda i: (f"k{i}", f"text {i}"))
        )
        ({"l": left, "r": right} | beam.CoGroupByKey() | beam.Map(count))
    result = pipeline.result
    counters = result.metrics().query(MetricsFilter().with_name("joined"))["counters"]
    return sum(c.committed or 0 for c in counters)


def main() -> None:
    parser = argparse.ArgumentParser(description="DirectRunner mode completeness experiment")
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="in_memory,multi_processing")
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers")
    parser.add_argument("--bare-beam", action="store_true", help="also run the bare-Beam CoGroupByKey")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        request = generate(Path(tmp), args.keys, dim=args.dim)["join_request"]
        for mode in args.modes.split(","):
            for run in range(args.runs):
                row = {
                    "mode": mode,
                    "run": run + 1,
                    "keys": args.keys,
                    "workers": args.workers,
                    **run_mlbatch(request, mode, args.workers, Path(tmp) / "home"),
                }
                row["complete"] = row["indexed"] == row["sink_distinct_ids"] == args.keys
                print(json.dumps(row), flush=True)
                if args.bare_beam:
                    joined = bare_beam_join(args.keys, args.dim, mode, args.workers)
                    print(
                        json.dumps(
                            {
                                "mode": mode,
                                "run": run + 1,
                                "bare_beam_joined": joined,
                                "complete": joined == args.keys,
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()

"""Scale-out benchmark: the same join on the DirectRunner and on Dask with 1 and 2 workers.

    python -m benchmarks.scale_out [--docs 200000] [--repeat 3] [--json scale-out.json]

Generates the ingest benchmark's 2-source join (`benchmarks.ingest_benchmark.generate`: an
OpenAI-batch-output-shaped file with 384-float vectors and its input file), starts the null
`_bulk` sink, and one real Dask cluster per worker count (`dask scheduler` + `dask worker`
processes on 127.0.0.1, one thread each, started before the clock runs, as a user's cluster
would be), then runs `mlbatch ingest` on each contender in interleaved rounds, timed by whole-run
wall clock including start-up. Every run must deliver all N documents and end COMPLETED.
The table shows each contender's median seconds, docs/s and its ratio to the DirectRunner.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.ingest_benchmark import KNN_PROPERTIES, generate, timed
from benchmarks.null_sink import NullSink
from tests.dask_cluster import DaskCluster

WORKER_COUNTS = (1, 2)


def _contenders(ingest: list[str], request: Path, clusters: dict[int, DaskCluster]) -> dict[str, list[str]]:
    contenders = {"DirectRunner in_memory": [*ingest, str(request)]}
    for workers, cluster in clusters.items():
        contenders[f"Dask, {workers} worker{'s' if workers > 1 else ''}"] = [
            *ingest,
            str(request),
            "--runner=DaskRunner",
            f"--dask_client_address={cluster.address}",
        ]
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--split-bytes", default=None, help="passed to mlbatch ingest (byte ranges)")
    parser.add_argument("--json", default="scale-out-results.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = generate(directory, args.docs)
        sink = NullSink(properties=KNN_PROPERTIES).start()
        env = {**os.environ, "MLBATCH_HOME": str(directory / "home")}
        ingest = [sys.executable, "-m", "pipelines.cli", "ingest", "--opensearch", sink.url, "--quiet"]
        if args.split_bytes:
            ingest += ["--split-bytes", args.split_bytes]
        clusters: dict[int, DaskCluster] = {}
        try:
            for workers in WORKER_COUNTS:
                clusters[workers] = DaskCluster(directory / f"dask-{workers}", workers=workers)
            contenders = _contenders(ingest, paths["join_request"], clusters)
            runs: dict[str, list[float]] = {name: [] for name in contenders}
            for round_number in range(args.repeat):
                for name, command in contenders.items():
                    before = sink.documents
                    wall, _, _ = timed(command, env)
                    if sink.documents - before != args.docs:
                        raise RuntimeError(f"{name} wrote {sink.documents - before} of {args.docs} documents")
                    runs[name].append(wall)
                    print(f"round {round_number + 1}: {name}: {wall:.1f} s", file=sys.stderr, flush=True)
        finally:
            for cluster in clusters.values():
                cluster.close()
            sink.close()
    base = statistics.median(runs["DirectRunner in_memory"])
    rows = [
        {
            "contender": name,
            "seconds": round(statistics.median(walls), 2),
            "docs_per_s": round(args.docs / statistics.median(walls)),
            "vs_direct": round(base / statistics.median(walls), 2),
            "runs_seconds": [round(wall, 2) for wall in walls],
        }
        for name, walls in runs.items()
    ]
    print(f"{args.docs:,} documents, 2-source join, {os.cpu_count()} cores, median of {args.repeat} rounds")
    print(f"{'contender':<26}{'s':>8}{'docs/s':>10}{'vs direct':>11}")
    for row in rows:
        print(f"{row['contender']:<26}{row['seconds']:>8}{row['docs_per_s']:>10,}{row['vs_direct']:>11}")
    Path(args.json).write_text(
        json.dumps(
            {"docs": args.docs, "cores": os.cpu_count(), "repeat": args.repeat, "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()

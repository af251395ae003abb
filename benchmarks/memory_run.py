"""Peak memory of a large 2-source join: `mlbatch ingest` of N generated documents into the null sink.

    python -m benchmarks.memory_run [--docs 1000000] [-- Beam options]

Prints one JSON line: documents, seconds, peak RSS of the ingest process tree, final state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.ingest_benchmark import KNN_PROPERTIES, generate, timed
from benchmarks.null_sink import NullSink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    args, beam_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = generate(directory, args.docs)
        sink = NullSink(properties=KNN_PROPERTIES).start()
        try:
            env = {**os.environ, "MLBATCH_HOME": str(directory / "home")}
            command = [
                sys.executable,
                "-m",
                "pipelines.cli",
                "ingest",
                str(paths["join_request"]),
                "--opensearch",
                sink.url,
                "--quiet",
                *beam_args,
            ]
            seconds, peak = timed(command, env)
        finally:
            sink.close()
        print(
            json.dumps(
                {
                    "docs": args.docs,
                    "seconds": round(seconds, 1),
                    "peak_rss_mib": round(peak),
                    "sink_documents": sink.documents,
                    "beam_args": beam_args,
                }
            )
        )


if __name__ == "__main__":
    main()

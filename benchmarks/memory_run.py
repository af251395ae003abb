"""Peak memory of a large 2-source join: `mlbatch ingest` of N generated documents into the null sink.

    python -m benchmarks.memory_run [--docs 1000000] [--output-files 10] [mlbatch/Beam options]

With `--output-files K` the batch output (the streamed source) is cut into K files of
consecutive lines in one directory, as SageMaker writes one `.out` per input file. Other
options go to `mlbatch ingest` (e.g. `--join-strategy shuffle`). Prints one JSON line:
documents, output files, seconds, peak RSS of the ingest process tree, documents written.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from itertools import islice
from pathlib import Path

from benchmarks.ingest_benchmark import KNN_PROPERTIES, generate, ingest_command, timed
from benchmarks.null_sink import NullSink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--output-files", type=int, default=1, help="files the batch output is cut into")
    args, beam_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = generate(directory, args.docs)
        if args.output_files > 1:
            cut_output(paths, args.docs, args.output_files)
        sink = NullSink(properties=KNN_PROPERTIES).start()
        try:
            env = {**os.environ, "MLBATCH_HOME": str(directory / "home")}
            command = ingest_command(paths["join_request"], sink.url, *beam_args)
            seconds, peak, _ = timed(command, env)
        finally:
            sink.close()
        print(
            json.dumps(
                {
                    "docs": args.docs,
                    "output_files": args.output_files,
                    "seconds": round(seconds, 1),
                    "peak_rss_mib": round(peak),
                    "sink_documents": sink.documents,
                    "beam_args": beam_args,
                }
            )
        )


def cut_output(paths: dict[str, Path], docs: int, files: int) -> None:
    """Cut the batch output into `files` files of consecutive lines in `output/`, and make the join
    request read that directory."""
    directory = paths["output"].with_suffix("")
    directory.mkdir()
    per_file = -(-docs // files)
    with paths["output"].open("rb") as output:
        for number in range(files):
            with (directory / f"part-{number:03d}.jsonl").open("wb") as part:
                part.writelines(islice(output, per_file))
    paths["output"].unlink()
    request = json.loads(paths["join_request"].read_text())
    request["data_source"]["source"][0] = str(directory)
    paths["join_request"].write_text(json.dumps(request))


if __name__ == "__main__":
    main()

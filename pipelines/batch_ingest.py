"""`python -m pipelines.batch_ingest`: the same job as `mlbatch ingest`, with the request as an option.

    python -m pipelines.batch_ingest --request r.json --opensearch URL [options] [Beam options]

The Beam graph itself is `pipelines.ingest_graph`.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """`--request r.json ...` → `mlbatch ingest r.json ...`."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.batch_ingest", add_help=False)
    parser.add_argument("--request", required=True, help="the _batch_ingestion request body (JSON file)")
    known, rest = parser.parse_known_args(argv)
    return cli_main(["ingest", known.request, *rest])


if __name__ == "__main__":
    sys.exit(main())

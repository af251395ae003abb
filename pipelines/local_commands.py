"""The embedded-default commands: `mlbatch serve-index`, `mlbatch serve-embeddings`, `mlbatch search`.

    mlbatch serve-index [--port N] [--data-dir DIR]       # OpenSearch REST subset with k-NN search
    mlbatch serve-embeddings [--port N] [--api-key KEY]   # OpenAI Files + Batch API over MiniLM
    mlbatch search "query text" --index NAME [--opensearch URL] [--field F] [-k N] [--vector JSON] [--json]

Each server prints one JSON line with its `url` on stdout, then serves on 127.0.0.1 until
stopped (Ctrl-C or SIGTERM). `search` embeds the text with the same local model (or takes
`--vector`), runs a `knn` query against any OpenSearch endpoint and prints the hits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from connectors.opensearch import OpenSearchConfig, describe, knn_vector_fields
from connectors.task_store import mlbatch_home
from pipelines.cli_common import EXIT_FAILED, EXIT_OK, UsageError, log, print_json

TEXT_FIELDS = ("title", "name", "question", "chapter", "text", "content", "passage")


def add_local_commands(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "serve-index", help="run the local k-NN index server (OpenSearch REST subset)"
    )
    index.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    index.add_argument("--data-dir", help="where indexes persist (default $MLBATCH_HOME/index-service)")

    embeddings = commands.add_parser(
        "serve-embeddings", help="run the local OpenAI-compatible batch embedding service"
    )
    embeddings.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    embeddings.add_argument(
        "--api-key", default="local", help="the Bearer key clients must send (default: local)"
    )

    search = commands.add_parser(
        "search", help="k-NN search an index with a text (embedded locally) or a vector"
    )
    search.add_argument("text", nargs="?", help="the query text")
    search.add_argument("--index", required=True)
    search.add_argument(
        "--opensearch", help="cluster URL (default: $OPENSEARCH_URL, else http://localhost:9200)"
    )
    search.add_argument("--user", help="basic-auth user; the password comes from $OPENSEARCH_PASSWORD")
    search.add_argument("--field", help="the knn_vector field (default: the first one in the mapping)")
    search.add_argument("-k", type=int, default=5, help="hits to return (default 5)")
    search.add_argument("--vector", help="a JSON list of floats to search with instead of a text")
    search.add_argument("--json", action="store_true", help="print the raw hits as JSON")


def _serve(server: Any, announce: dict[str, Any]) -> int:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write(json.dumps(announce) + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    return EXIT_OK


def _snippet(source: dict[str, Any], width: int = 70) -> str:
    for name in (*TEXT_FIELDS, *source):
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if len(text) <= width else text[: width - 1] + "…"
    return ""


def _search(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.vector is None):
        raise UsageError("search: give a query text or --vector, not both")
    client = OpenSearchConfig.from_env(args.opensearch, args.user).client()
    try:
        mapping = client.indices.get_mapping(index=args.index)
        fields = knn_vector_fields(next(iter(mapping.values()))["mappings"].get("properties", {}))
        field = args.field or next(iter(fields), None)
        if field is None or field not in fields:
            raise UsageError(
                f"search: index {args.index!r} has no knn_vector field {args.field or ''}".rstrip()
            )
        if args.vector is not None:
            vector = orjson.loads(args.vector)
        else:
            from connectors.embedder import MiniLM

            (vector,) = MiniLM().embed([args.text])
        body = {"size": args.k, "query": {"knn": {field: {"vector": vector, "k": args.k}}}}
        hits = client.search(index=args.index, body=body)["hits"]["hits"]
    except UsageError:
        raise
    except Exception as error:  # opensearch-py errors: one line, no traceback
        log.error("search failed: %s", describe(error))
        return EXIT_FAILED
    if args.json:
        print_json(hits)
        return EXIT_OK
    print(f"top {len(hits)} of index {args.index!r} by {field} for {args.text or 'the vector'!r}:")
    print(f"{'score':>7}  {'_id':<24} text")
    for hit in hits:
        print(f"{hit['_score']:7.4f}  {hit['_id']:<24} {_snippet(hit.get('_source', {}))}")
    return EXIT_OK


def run_local_command(args: argparse.Namespace) -> int:
    if args.command == "serve-index":
        from connectors.index_service import LocalIndexServer

        directory = args.data_dir or str(mlbatch_home() / "index-service")
        server = LocalIndexServer(directory=Path(directory), port=args.port)
        return _serve(server, {"url": server.url, "data_dir": directory})
    if args.command == "serve-embeddings":
        from connectors.embedding_service import EmbeddingService

        service = EmbeddingService(api_key=args.api_key, port=args.port)
        return _serve(service, {"url": service.url, "model": service.model_name})
    return _search(args)

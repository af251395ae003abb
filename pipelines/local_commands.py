"""The embedded-default commands: `mlbatch serve-index`, `mlbatch serve-embeddings`, `mlbatch search`.

    mlbatch serve-index [--port N] [--data-dir DIR] [--max-body-mb N]  # OpenSearch REST subset, k-NN
    mlbatch serve-embeddings [--port N] [--api-key-file FILE]           # OpenAI Files + Batch over MiniLM
    mlbatch search "query text" --index NAME [--opensearch URL] [cluster options] [--field F] [-k N]
                   [--vector JSON] [--json]

Each server prints one JSON line with its `url` on stdout, then serves on 127.0.0.1 until
stopped (Ctrl-C or SIGTERM). `serve-embeddings` takes its key from `--api-key-file`, else
`--api-key` (visible to every user in `ps`), else `$MLBATCH_EMBEDDINGS_API_KEY`, else `local`.
`search` embeds the text with the same local model (or takes `--vector`), runs a `knn` query
against any OpenSearch endpoint (basic auth, SigV4 and TLS options as `mlbatch ingest` has
them) and prints the hits; a vector field inside a `nested` field (chunks) is searched with a
`nested` query, and each hit shows its best chunk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from connectors.opensearch.config import SIGV4_SERVICES, cluster_config, describe
from connectors.opensearch.mapping import knn_vector_fields
from connectors.task_store import mlbatch_home
from pipelines.cli_common import EXIT_FAILED, EXIT_OK, UsageError, log, print_json

TEXT_FIELDS = ("title", "name", "question", "chapter", "text", "content", "passage")
API_KEY_ENV = "MLBATCH_EMBEDDINGS_API_KEY"
DEFAULT_API_KEY = "local"


def add_local_commands(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser(
        "serve-index", help="run the local k-NN index server (OpenSearch REST subset)"
    )
    index.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    index.add_argument("--data-dir", help="where indexes persist (default $MLBATCH_HOME/index-service)")
    index.add_argument(
        "--max-body-mb", type=int, default=100, help="largest request body accepted, in MiB (default 100)"
    )

    embeddings = commands.add_parser(
        "serve-embeddings", help="run the local OpenAI-compatible batch embedding service"
    )
    embeddings.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    key = embeddings.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file", help=f"a file holding the Bearer key clients must send (default: ${API_KEY_ENV})"
    )
    key.add_argument(
        "--api-key",
        help=f"the Bearer key, visible in `ps` (default: ${API_KEY_ENV}, else {DEFAULT_API_KEY})",
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
    search.add_argument("--insecure", action="store_true", help="do not verify the cluster's TLS certificate")
    search.add_argument("--ca-certs", help="CA bundle for the cluster's TLS certificate")
    search.add_argument(
        "--aws-sigv4",
        choices=SIGV4_SERVICES,
        help="sign requests with SigV4 for Amazon OpenSearch Service (es) or Serverless (aoss); "
        "credentials from the default AWS chain",
    )
    search.add_argument(
        "--aws-region", "--region", dest="region", help="AWS region for --aws-sigv4 (default $AWS_REGION)"
    )
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
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    log.info("stopped")
    return EXIT_OK


def embeddings_api_key(args: argparse.Namespace) -> str:
    """The key `serve-embeddings` requires: `--api-key-file`, else `--api-key`, else the environment."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as error:
            raise UsageError(f"--api-key-file {args.api_key_file}: cannot read ({error.strerror})") from None
        if not key:
            raise UsageError(f"--api-key-file {args.api_key_file}: the file is empty")
        return key
    if args.api_key:
        return args.api_key
    return os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY


def _snippet(source: dict[str, Any], width: int = 70) -> str:
    for name in (*TEXT_FIELDS, *source):
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if len(text) <= width else text[: width - 1] + "…"
    return ""


def nested_path(properties: dict[str, Any], field: str) -> str | None:
    """The `nested` field that holds `field` (`chunks` for `chunks.embedding`), or None."""
    found, parts = None, field.split(".")
    for depth in range(1, len(parts)):
        spec = properties.get(parts[depth - 1], {})
        if spec.get("type") == "nested":
            found = ".".join(parts[:depth])
        properties = spec.get("properties", {})
    return found


def knn_query(properties: dict[str, Any], field: str, vector: Any, k: int) -> dict[str, Any]:
    """The `knn` query of `field`; in a `nested` field, wrapped in a `nested` query whose
    `inner_hits` say which chunk matched (each document scored by its best chunk)."""
    knn = {"knn": {field: {"vector": vector, "k": k}}}
    path = nested_path(properties, field)
    return knn if path is None else {"nested": {"path": path, "query": knn, "inner_hits": {}}}


def _hit_text(hit: dict[str, Any]) -> str:
    """A hit's text: the matching chunk's (`[chunk N] …`) when it has inner hits, else its own."""
    for inner in (hit.get("inner_hits") or {}).values():
        for chunk in inner["hits"]["hits"][:1]:
            return f"[chunk {chunk['_nested']['offset']}] {_snippet(chunk.get('_source', {}), 60)}"
    return _snippet(hit.get("_source", {}))


def _search(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.vector is None):
        raise UsageError("search: give a query text or --vector, not both")
    try:
        client = cluster_config(args).client()
        mapping = client.indices.get_mapping(index=args.index)
        properties = next(iter(mapping.values()))["mappings"].get("properties", {})
        fields = knn_vector_fields(properties)
        field = args.field or next(iter(fields), None)
        if field is None or field not in fields:
            raise UsageError(
                f"search: index {args.index!r} has no knn_vector field {args.field or ''}".rstrip()
            )
        if args.vector is not None:
            vector = orjson.loads(args.vector)
        else:
            from connectors.local.embedder import MiniLM

            (vector,) = MiniLM().embed([args.text])
        body = {"size": args.k, "query": knn_query(properties, field, vector, args.k)}
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
        print(f"{hit['_score']:7.4f}  {hit['_id']:<24} {_hit_text(hit)}")
    return EXIT_OK


def run_local_command(args: argparse.Namespace) -> int:
    if args.command == "serve-index":
        from connectors.local.index_server import LocalIndexServer

        if args.max_body_mb < 1:
            raise UsageError("serve-index: --max-body-mb must be at least 1")
        directory = args.data_dir or str(mlbatch_home() / "index-service")
        server = LocalIndexServer(
            directory=Path(directory), port=args.port, max_body_bytes=args.max_body_mb * 2**20
        )
        return _serve(server, {"url": server.url, "data_dir": directory})
    if args.command == "serve-embeddings":
        from connectors.local.embedding_server import EmbeddingService

        service = EmbeddingService(api_key=embeddings_api_key(args), port=args.port)
        return _serve(service, {"url": service.url, "model": service.model_name})
    return _search(args)

"""`mlbatch serve-api`: the ML Commons REST API as a long-running service.

    mlbatch serve-api [--opensearch URL] [cluster and ingestion options] [--host H] [--port N]
                      [--auth-file FILE] [--max-body-mb N] [--max-running N] [--max-queued N]
                      [--poll-interval S] [--local-root DIR] [--trusted-connector-endpoints REGEX …]

Every `_batch_ingestion` it accepts runs with the ingestion options given here (the cluster,
its auth, bulk sizes, retries, Beam options), in a worker process of its own. It listens on
127.0.0.1 unless `--host` says otherwise, and any other address needs `--auth-file`. It prints one JSON
line with its `url` on stdout, logs one line per request on stderr, and serves until Ctrl-C or
SIGTERM, which stop the running ingestions (FAILED "interrupted", counts kept) and fail the
waiting ones. Tasks, connectors and models live under `$MLBATCH_HOME`; connector credentials
are sealed with the master key (`$MLBATCH_MASTER_KEY`, else `$MLBATCH_HOME/master.key`).
Callers reach local files only under `--local-root` and connector URLs only matching the trusted
endpoint patterns (`pipelines.rest_api.confinement`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import signal
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.cli_common import EXIT_OK, UsageError, log
from pipelines.ingest_options import IngestOptions, add_ingest_options

LOOPBACK_NAMES = frozenset({"localhost"})


def add_serve_api_command(commands: argparse._SubParsersAction) -> None:
    api = commands.add_parser(
        "serve-api",
        help="serve the ML Commons REST API (_batch_ingestion, tasks, connectors, models, _batch_predict)",
        description="Ingestion options apply to every _batch_ingestion the service runs; unknown options "
        "are passed to Apache Beam.",
    )
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=0, help="port (default: a free one, printed on start)")
    api.add_argument(
        "--auth-file",
        help="who may call: lines `user:password` (basic auth) or `bearer TOKEN`; required unless "
        "--host is a loopback address; must not be readable by other users",
    )
    api.add_argument(
        "--max-body-mb", type=int, default=10, help="largest request body accepted, in MiB (default 10)"
    )
    api.add_argument("--max-running", type=int, default=1, help="ingestions run at once (default 1)")
    api.add_argument(
        "--max-queued",
        type=int,
        default=100,
        help="ingestions waiting beyond those; more get 429 (default 100)",
    )
    api.add_argument(
        "--poll-interval", type=float, default=10.0, help="seconds between polls of batch jobs (default 10)"
    )
    api.add_argument(
        "--local-root",
        metavar="DIR",
        help='serve "type": "local" sources, only files under DIR (default: refused; callers would '
        "read any file the service can)",
    )
    api.add_argument(
        "--trusted-connector-endpoints",
        metavar="REGEX",
        action="append",
        help="a connector URL must match one of these (repeat it); default: ML Commons' list "
        "(api.openai.com, SageMaker, Bedrock, Cohere, …)",
    )
    add_ingest_options(api)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _checked(args: argparse.Namespace) -> None:
    if not is_loopback(args.host) and not args.auth_file:
        raise UsageError(
            f"serve-api: --host {args.host} accepts calls from other machines: give --auth-file "
            "with the users or tokens allowed (or listen on 127.0.0.1)"
        )
    if args.max_body_mb < 1 or args.max_running < 1 or args.max_queued < 0:
        raise UsageError(
            "serve-api: --max-body-mb and --max-running must be at least 1, --max-queued at least 0"
        )
    if not args.poll_interval > 0:
        raise UsageError("serve-api: --poll-interval must be positive")
    if args.local_root and not Path(args.local_root).is_dir():
        raise UsageError(f"serve-api: --local-root {args.local_root}: not a directory")
    for pattern in args.trusted_connector_endpoints or ():
        try:
            re.compile(pattern)
        except re.error as error:
            raise UsageError(f"serve-api: --trusted-connector-endpoints {pattern!r}: {error}") from None


def _with_absolute_paths(options: IngestOptions) -> IngestOptions:
    """Files named in the options, made absolute: workers may run after the service's cwd changed."""
    paths: dict[str, Any] = {
        name: str(Path(getattr(options, name)).resolve())
        for name in ("create_index", "ca_certs", "dlq", "local_root")
        if getattr(options, name)
    }
    return replace(options, **paths)


def serve_api(args: argparse.Namespace, options: IngestOptions) -> int:
    """Run the service until Ctrl-C or SIGTERM."""
    from connectors.ml_store import MlStore
    from connectors.secret_box import SecretBox, SecretBoxError, load_master_key
    from connectors.task_store import TaskStore, mlbatch_home
    from pipelines.rest_api.auth import AuthFileError, load_auth_file
    from pipelines.rest_api.confinement import ML_COMMONS_TRUSTED_ENDPOINTS
    from pipelines.rest_api.context import ApiSettings
    from pipelines.rest_api.server import ApiServer
    from pipelines.rest_api.service import MlService

    _checked(args)
    if options.resume:
        raise UsageError("serve-api: --resume names the task of one run: give it to mlbatch ingest")
    try:
        credentials = load_auth_file(Path(args.auth_file)) if args.auth_file else None
        box = SecretBox(load_master_key(mlbatch_home()))
        tasks, objects = TaskStore(), MlStore(box)
    except (AuthFileError, SecretBoxError) as error:
        raise UsageError(f"serve-api: {error}") from None
    except (OSError, sqlite3.Error) as error:
        home = mlbatch_home()
        raise UsageError(f"serve-api: cannot keep its stores in {home} ($MLBATCH_HOME): {error}") from None
    settings = ApiSettings(
        _with_absolute_paths(options),
        args.max_running,
        args.max_queued,
        args.poll_interval,
        trusted_endpoints=tuple(args.trusted_connector_endpoints or ML_COMMONS_TRUSTED_ENDPOINTS),
    )
    service = MlService(settings, tasks, objects)
    try:
        server = ApiServer(service, args.host, args.port, credentials, args.max_body_mb * 2**20)
    except OSError as error:
        service.close()
        raise UsageError(
            f"serve-api: cannot listen on {args.host}:{args.port} ({error.strerror or error})"
        ) from None

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    service.start()
    announce = {"url": server.url, "auth": credentials is not None, **service.describe()}
    sys.stdout.write(json.dumps(announce) + "\n")
    sys.stdout.flush()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        log.info("stopping: ending the running ingestions")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.close()
        service.close()
    log.info("stopped")
    return EXIT_OK

"""Whether a runner's workers can reach this machine's files (the **run** step's check before
anything is submitted).

The workers of Dataflow and of the portable runners (Flink, Spark, Prism: a job server runs the
SDK workers in its own containers or processes) do not see the launching machine's filesystem,
unless `--environment_type=LOOPBACK` runs them in the launching process. For those runners
`reach_problem` refuses local source paths and a local dead-letter directory (the default,
under `$MLBATCH_HOME`, is one) with one message naming the field or option and what to use
instead. The DirectRunner's workers are this machine's processes; Dask's are taken to share its
filesystem (see docs/runners.md). The rule is pure; `environment_type` reads Beam's option.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlparse

from pipelines.runner_choice import runner_key

# Runners whose workers run elsewhere, by `runner_key`.
REMOTE_WORKER_RUNNERS = frozenset(
    {"dataflowrunner", "testdataflowrunner", "portablerunner", "flinkrunner", "sparkrunner", "prismrunner"}
)
DLQ_REMOTE_FORMS = "s3://bucket/prefix or gs://bucket/prefix"


class WorkerReachError(ValueError):
    """Local paths given to a runner whose workers cannot see them; the message says what to use."""


def environment_type(beam_args: Sequence[str]) -> str | None:
    """Beam's `--environment_type` among `beam_args` (None when not given)."""
    if not beam_args:
        return None
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    return PipelineOptions(list(beam_args)).view_as(PortableOptions).environment_type


def workers_see_local_files(runner: str, environment_type: str | None = None) -> bool:
    """False for the runners whose workers run on other machines (not in LOOPBACK mode)."""
    if (environment_type or "").upper() == "LOOPBACK":
        return True
    return runner_key(runner) not in REMOTE_WORKER_RUNNERS


def is_local(uri: str) -> bool:
    """A path on this machine (or `file://`), not object storage or another service's id."""
    scheme = urlparse(uri).scheme
    return "://" not in uri or scheme == "file"


def runner_name(runner: str) -> str:
    """The runner as messages name it: its class name (`DataflowRunner`)."""
    return runner.rsplit(".", 1)[-1]


def reach_problem(
    runner: str,
    source_type: str,
    sources: Sequence[str],
    dlq: str | None,
    environment_type: str | None = None,
) -> str | None:
    """Why the workers of `runner` cannot reach this run's files, or None when they can.

    `dlq` None is the default dead-letter directory, under `$MLBATCH_HOME` on this machine."""
    if workers_see_local_files(runner, environment_type):
        return None
    who = f"{runner_name(runner)}'s workers cannot see this machine's files"
    problems = []
    local_sources = [
        (position, uri) for position, uri in enumerate(sources) if source_type == "local" and is_local(uri)
    ]
    if local_sources:
        position, uri = local_sources[0]
        problems.append(
            f"data_source.source[{position}] {uri!r} is a local path ({len(local_sources)} of "
            f"{len(sources)} sources are); put the files in object storage and use an s3 request "
            '(data_source.type "s3", s3://bucket/key)'
        )
    if dlq is None:
        problems.append(
            "the default dead-letter directory is under $MLBATCH_HOME on this machine; "
            f"pass --dlq {DLQ_REMOTE_FORMS}"
        )
    elif is_local(dlq):
        problems.append(f"--dlq {dlq!r} is a local directory; pass --dlq {DLQ_REMOTE_FORMS}")
    return f"{who}: {'; '.join(problems)}" if problems else None

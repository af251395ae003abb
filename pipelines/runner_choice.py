"""Which Beam runner runs an ingestion, and what that allows (the **run** step's set-up).

Beam's options are read through Beam's own views (`StandardOptions.runner`,
`DirectOptions.direct_running_mode`). Loading Beam takes seconds, so with no Beam option
given the defaults (`--runner=DirectRunner --direct_running_mode=in_memory`) are known
without it, and the read helpers of the largest files (`early_reads`) start parsing while
Beam loads.

- `runner_choice(beam_args)`: the runner and the DirectRunner's mode;
- `use_read_helper(choice, runner)`: whether large files are parsed in helper processes;
- `early_reads(plan, files, strategy, access, action)`: the read jobs whose helpers start
  before Beam loads;
- `beam_options(beam_args)`: the pipeline's options, the runner always named;
- `pipeline_runner(choice)`: the project's own runner where it replaces Beam's (`DaskRunner`,
  by its short or Beam's dotted name: `pipelines.dask_runner`), the DirectRunner without its
  Prism attempt, else None (Beam's);
- `unknown_beam_args(beam_args)`: what no Beam option accepts, the options of every known
  runner included (Dask's, when dask is installed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from connectors.byte_ranges import FileRange
from connectors.sources import SourceAccess
from pipelines.join_strategy import JoinStrategy, streamed_file
from transforms.bulk_body import BulkAction
from transforms.read_helper import ReadJob
from transforms.read_jobs import DocumentsJob, ProjectJob, broadcast_job
from transforms.types import IngestPlan

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineRunner

ReadHelperChoice = Literal["auto", "on", "off"]
DEFAULT_RUNNER = "DirectRunner"
DEFAULT_DIRECT_RUNNING_MODE = "in_memory"
EARLY_SIDE_FILES = 8  # a broadcast join's small-source files started early, at most
# Pipeline options of a known runner defined outside Beam's `pipeline_options`: their prefix,
# the module defining them (loaded only when an argument has the prefix: it loads dask) and
# the package that module needs.
_RUNNER_OPTION_MODULES = (("--dask_", "apache_beam.runners.dask.dask_runner", "distributed"),)
log = logging.getLogger("mlbatch")


def runner_key(runner: str) -> str:
    """Beam's key for a `--runner` value: the class name, lower-cased, ending in `runner`
    (`--runner=dataflow`, `DataflowRunner` and the dotted path all name the same class)."""
    name = runner.rsplit(".", 1)[-1].lower()
    return name if name.endswith("runner") else f"{name}runner"


@dataclass(frozen=True)
class RunnerChoice:
    """The runner Beam is asked for, and the DirectRunner's running mode."""

    runner: str = DEFAULT_RUNNER
    direct_running_mode: str = DEFAULT_DIRECT_RUNNING_MODE

    @property
    def direct(self) -> bool:
        return runner_key(self.runner) == "directrunner"

    @property
    def dask(self) -> bool:
        return runner_key(self.runner) == "daskrunner"  # Beam's class or ours: both run on ours

    @property
    def in_process(self) -> bool:
        """The DirectRunner in in_memory mode: its steps run in this process, so they see this
        process's tallies and can take the helpers started early."""
        return self.direct and self.direct_running_mode == "in_memory"


def runner_choice(beam_args: Sequence[str]) -> RunnerChoice:
    """The runner and mode `beam_args` ask for (the defaults, without loading Beam, when empty)."""
    if not beam_args:
        return RunnerChoice()
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    return RunnerChoice(
        options.view_as(StandardOptions).runner or DEFAULT_RUNNER,
        options.view_as(DirectOptions).direct_running_mode,
    )


def use_read_helper(choice: ReadHelperChoice, runner: RunnerChoice, cores: int | None = None) -> bool:
    """`auto`: on when the DirectRunner (one thread) runs on a machine with a core to spare."""
    if choice != "auto":
        return choice == "on"
    return runner.direct and (cores or os.cpu_count() or 1) > 1


def early_reads(
    plan: IngestPlan,
    files: Sequence[Sequence[FileRange]],
    strategy: JoinStrategy,
    access: SourceAccess,
    action: BulkAction,
) -> list[ReadJob]:
    """The read jobs whose helpers start before Beam loads: a single source's documents from its
    file, a broadcast join of one whole streamed file entire (the small sources included), or
    for a streamed file read in ranges its first range and the small sources' files (read
    first, to be held in memory)."""
    streamed = streamed_file(strategy, files)
    if streamed is None:
        return []
    index, part = streamed
    if strategy.name == "none":
        return [DocumentsJob(plan.sources[index], part, action, access)]
    if len(files[index]) == 1:
        return [broadcast_job(plan, files, index, access, action)]
    side = [
        ProjectJob(source, side_part, access)
        for source in plan.sources
        if source.index != index
        for side_part in files[source.index]
    ]
    return [ProjectJob(plan.sources[index], part, access), *(side if len(side) <= EARLY_SIDE_FILES else [])]


def beam_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Pipeline options with the runner always named.

    With no runner named, Beam 2.77 tries to download its Prism runner binary at run time;
    we default to the DirectRunner (in in_memory mode, Beam's default mode) instead.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or DEFAULT_RUNNER
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        log.warning(
            "direct_running_mode=multi_processing lost records and miscounted them in our runs "
            "(see README, Runners); this run is reconciled and fails if records go missing. "
            "Prefer in_memory locally, Dataflow or Flink at scale."
        )
    return options


def pipeline_runner(choice: RunnerChoice) -> PipelineRunner | None:
    """The project's runner for `choice`, where it replaces Beam's; None lets Beam make the runner.

    Beam 2.77's DirectRunner first tries its Prism runner on every pipeline Prism supports: it
    downloads the Prism binary (which must never happen at run time; offline it fails after a
    lookup) and, where the download succeeds, runs the job out of this process. The DirectRunner
    here is Beam's, told to skip that attempt, so it runs the job on its FnApiRunner as intended."""
    if choice.direct:
        from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

        runner = SwitchingDirectRunner()
        runner.is_interactive()  # the one switch with which SwitchingDirectRunner skips Prism
        return runner
    if not choice.dask:
        return None
    if importlib.util.find_spec("distributed") is None:
        raise RuntimeError(f"--runner={choice.runner} needs dask.distributed: pip install 'mlbatch[dask]'")
    from pipelines.dask_runner import DaskRunner

    return DaskRunner()


def unknown_beam_args(beam_args: Sequence[str]) -> list[str]:
    """The arguments no Beam pipeline option accepts (Beam would drop them with only a log line)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    for prefix, module, needs in _RUNNER_OPTION_MODULES:
        if any(arg.startswith(prefix) for arg in beam_args) and importlib.util.find_spec(needs) is not None:
            importlib.import_module(module)
    parser = _BeamArgumentParser(allow_abbrev=False)
    pending, seen = list(PipelineOptions.__subclasses__()), set()
    while pending:
        options_class = pending.pop()
        if options_class in seen:
            continue
        seen.add(options_class)
        pending.extend(options_class.__subclasses__())
        with contextlib.suppress(argparse.ArgumentError):
            options_class._add_argparse_args(parser)
    return parser.parse_known_args(list(beam_args))[1]

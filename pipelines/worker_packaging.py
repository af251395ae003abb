"""How mlbatch reaches a remote runner's workers (the **run** step's set-up, before Beam runs).

Dataflow's workers start from Beam's SDK image: every DoFn of the graph refers to mlbatch's
modules, so mlbatch must be installed there, or the job fails on its workers with
`No module named 'transforms'` after the VMs started. `staged_beam_args` makes sure it is:

- the user ships it (`--setup_file`, `--extra_package`, `--sdk_container_image` or
  `--worker_harness_container_image`): their choice is kept;
- else, run from a source checkout (a `pyproject.toml` of project `mlbatch` beside the
  packages): `--setup_file=<checkout>/pyproject.toml` is added, and Beam stages an sdist of it;
- else (mlbatch installed from a wheel): a usage error names the three ways.

A `--setup_file` naming a `pyproject.toml` is built here by Beam with `python -m build
--no-isolation --sdist`, so the build needs `build` and the file's `[build-system] requires`
installed in this environment (the `dataflow` extra); a missing one is reported before the run.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.cli_common import UsageError
from pipelines.runner_choice import runner_key

CHECKOUT = Path(__file__).resolve().parents[1]
PROJECT = "mlbatch"
_SHIPPING_OPTIONS = ("setup_file", "extra_packages", "sdk_container_image", "worker_harness_container_image")
_DATAFLOW_RUNNERS = ("dataflowrunner", "testdataflowrunner")  # by `runner_key`
log = logging.getLogger("mlbatch")


def staged_beam_args(beam_args: Sequence[str], checkout: Path = CHECKOUT) -> tuple[str, ...]:
    """`beam_args`, with `--setup_file` of `checkout` added when a Dataflow run ships no mlbatch;
    raises UsageError when it cannot be shipped or the setup file cannot be built here."""
    if not beam_args:
        return ()
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

    options = PipelineOptions(list(beam_args))
    runner = options.view_as(StandardOptions).runner or ""
    setup_file = options.view_as(SetupOptions).setup_file
    if setup_file:
        check_setup_file(setup_file)
    shipped = any(options.get_all_options().get(name) for name in _SHIPPING_OPTIONS)
    if shipped or runner_key(runner) not in _DATAFLOW_RUNNERS:
        return tuple(beam_args)
    pyproject = checkout / "pyproject.toml"
    if project_name(pyproject) != PROJECT:
        raise UsageError(
            f"{runner}'s workers need mlbatch installed: pass "
            "--setup_file=<mlbatch checkout>/pyproject.toml, --extra_package=<an mlbatch sdist or wheel>, "
            "or --sdk_container_image=<an image with mlbatch>"
        )
    check_setup_file(str(pyproject))
    log.info("staging this mlbatch checkout for %s's workers: --setup_file=%s", runner, pyproject)
    return (*beam_args, f"--setup_file={pyproject}")


def project_name(pyproject: Path) -> str | None:
    """The `[project] name` of a pyproject.toml, or None when there is no such file or name."""
    import tomllib  # only remote runs read a pyproject.toml: not loaded on a local run's path

    try:
        return tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None


def check_setup_file(setup_file: str) -> None:
    """Raise UsageError unless Beam can build an sdist of `setup_file` in this environment."""
    path = Path(setup_file)
    if not path.is_file():
        raise UsageError(f"--setup_file {setup_file}: no such file")
    if path.name != "pyproject.toml":
        return
    import tomllib

    try:
        requires = tomllib.loads(path.read_text()).get("build-system", {}).get("requires", [])
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"--setup_file {setup_file}: not valid TOML ({error})") from None
    missing = missing_requirements(["build", *requires])
    if missing:
        raise UsageError(
            f"--setup_file {setup_file}: Beam builds its sdist here without isolation, which needs "
            f"{', '.join(missing)} installed in this environment (pip install 'mlbatch[dataflow]')"
        )


def missing_requirements(requirements: Sequence[str]) -> list[str]:
    """The requirements (`name>=version`) this environment does not satisfy."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{text} (found {installed})")
    return missing

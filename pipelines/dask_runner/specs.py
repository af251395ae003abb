"""What a fused stage's task is given (built on the launcher, pickled once per stage, run on the workers).

A `StageSpec` names the stage's steps in member order (`pipelines.dask_runner.fusion`), each
a `StepSpec` with its DoFn, what it reads in memory and its side inputs, and which `(member,
tag)` outputs leave the stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.utils.windowed_value import WindowedValue

Partition = list[WindowedValue]
Output = tuple[int, str | None]  # (member, tag)


@dataclass(frozen=True)
class StepSpec:
    """One member: its DoFn and arguments, what it reads in memory (`source`, None for the
    stage's input), and its side inputs as positions in the stage task's side arguments."""

    step: str
    dofn: Any
    args: Sequence[Any]
    kwargs: dict[str, Any]
    windowing: Any
    side_views: Sequence[tuple[type, dict[str, Any]]]
    sides: Sequence[int]
    tags: Sequence[str | None]
    source: Output | None


@dataclass(frozen=True)
class StageSpec:
    """What a stage's task needs, pickled once per stage; a worker unpickles a copy per thread that
    runs it (`pipelines.dask_runner.dofn_pool`)."""

    name: str
    steps: Sequence[StepSpec]
    kept: Sequence[Output]

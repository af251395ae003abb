"""Beam's DaskRunner, fixed: the runner `--runner=DaskRunner` selects (see `docs/scale-out.md`).

- `runner`: the `DaskRunner` subclass and its result, whose metrics count final attempts;
- `translate`: the pipeline as one Dask task graph, its ParDos fused into stages (`fusion`);
- `stage`, `specs`, `dofn_pool`: what a stage's task runs on the workers, with DoFns reused;
- `tasks`: what the other tasks run on the workers.

`DaskRunner` is imported on first use, so the package itself imports neither Beam nor Dask.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DaskRunner"]


def __getattr__(name: str) -> Any:
    if name == "DaskRunner":
        from pipelines.dask_runner.runner import DaskRunner

        return DaskRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

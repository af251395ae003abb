"""Beam's DaskRunner, fixed: the runner `--runner=DaskRunner` selects (see `docs/scale-out.md`).

- `runner`: the `DaskRunner` subclass and its result, whose metrics count final attempts;
- `translate`: the pipeline as one Dask task graph;
- `tasks`: what the tasks run on the workers.
"""

from pipelines.dask_runner.runner import DaskRunner

__all__ = ["DaskRunner"]

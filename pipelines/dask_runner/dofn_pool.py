"""Set-up DoFns kept between bundles in a worker process (the Dask runner's DoFn reuse).

As on Beam's own runners, a DoFn is set up once and then runs bundle after bundle: a stage's
task takes an idle, set-up copy of the stage (`StageSpec`, whose steps hold the DoFns) when
this process has one, else unpickles a new one that the task sets up. After a bundle that
finished, the copy goes back to the pool; after a bundle that failed, the task tears it down
instead. So what a DoFn builds in `setup` (a client, an index of a side input shared by its
bundles) is built once per process and thread, not once per partition. The pool keeps the
copies of the `MAX_STAGES` stages used last; older ones are torn down (a teardown error is
logged, as Beam's runners do: teardown is best effort), and every idle copy is torn down when a
job ends (`clear_pool`, run on every worker by the launcher), so a long-lived worker keeps
nothing of a finished job.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from apache_beam.internal import pickler

from pipelines.dask_runner.specs import StageSpec

MAX_STAGES = 32
log = logging.getLogger("mlbatch")


class StagePool:
    """Idle set-up copies of stages by their pickled spec, the stages used last kept."""

    def __init__(self, max_stages: int = MAX_STAGES) -> None:
        self._max_stages = max_stages
        self._lock = threading.Lock()
        self._idle: OrderedDict[bytes, list[StageSpec]] = OrderedDict()

    def acquire(self, pickled_spec: bytes) -> tuple[StageSpec, bool]:
        """A copy of the stage, and whether its DoFns are set up already."""
        with self._lock:
            idle = self._idle.get(pickled_spec)
            if idle:
                self._idle.move_to_end(pickled_spec)
                return idle.pop(), True
        return pickler.loads(pickled_spec), False

    def release(self, pickled_spec: bytes, spec: StageSpec) -> None:
        """`spec`'s set-up DoFns, idle again after a bundle that finished."""
        evicted: list[StageSpec] = []
        with self._lock:
            self._idle.setdefault(pickled_spec, []).append(spec)
            self._idle.move_to_end(pickled_spec)
            while len(self._idle) > self._max_stages:
                evicted += self._idle.popitem(last=False)[1]
        for old in evicted:
            tear_down(old)

    def clear(self) -> int:
        """Tear down every idle stage (a job ended: what its DoFns hold, clients and side-input
        indexes, is released on a long-lived worker); the number torn down."""
        with self._lock:
            idle = [spec for specs in self._idle.values() for spec in specs]
            self._idle.clear()
        for spec in idle:
            tear_down(spec)
        return len(idle)


def tear_down(spec: StageSpec) -> None:
    for step in spec.steps:
        try:
            step.dofn.teardown()
        except Exception as error:  # noqa: BLE001 - best effort, as Beam's runners
            log.warning("teardown of the DoFn of %s failed: %s", step.step, error)


POOL = StagePool()


def clear_pool() -> int:
    """`POOL.clear()`, as the launcher runs it on every worker when its job ends."""
    return POOL.clear()

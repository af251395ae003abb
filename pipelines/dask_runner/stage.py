"""What a fused stage's task does on a worker: its ParDos' bundles over one partition, in memory.

A stage (`pipelines.dask_runner.fusion`) is a chain or tree of ParDos run as one task per
partition. The first member processes the partition's elements; each element a member
emits goes at once to the members that read that output (`_StepReceiver`), and into a list
only when the output leaves the stage (`StageSpec.kept`, one partition per `(member, tag)`,
so each consumer outside gets only its tag). Bundles start in member order and finish in
member order, so what a member emits in `finish_bundle` still reaches the members after it.
DoFns are set up once per process and reused by later bundles (`pipelines.dask_runner.dofn_pool`).
Each member counts its metrics in a `MetricsContainer` of its own (its state is entered
while it processes), and they travel back with the outputs: Dask keeps one result per task,
so a task recomputed after its worker was lost replaces all its steps' counts at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from apache_beam.metrics.execution import MetricsContainer, MetricUpdates
from apache_beam.runners.common import DoFnRunner, Receiver
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.dask_runner.dofn_pool import POOL, tear_down
from pipelines.dask_runner.specs import Output, Partition, StageSpec

log = logging.getLogger("mlbatch")


class StageResult(NamedTuple):
    """One task's outputs that leave the stage, and each member's metrics."""

    outputs: dict[Output, Partition]
    metrics: list[tuple[str, MetricUpdates]]


class _ListReceiver(Receiver):
    def __init__(self, values: Partition) -> None:
        self.values = values

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append(windowed_value)


class _StepReceiver(Receiver):
    """Hands an element to the member that reads it, in that member's metrics state."""

    def __init__(self, runner: DoFnRunner, state: Any) -> None:
        self._runner = runner
        self._state = state

    def receive(self, windowed_value: WindowedValue) -> None:
        with self._state:
            self._runner.process(windowed_value)


class _FanOut(Receiver):
    def __init__(self, receivers: list[Receiver]) -> None:
        self._receivers = receivers

    def receive(self, windowed_value: WindowedValue) -> None:
        for receiver in self._receivers:
            receiver.receive(windowed_value)


class _DroppingReceiver(Receiver):
    """Outputs nothing reads are dropped, as on Beam's DirectRunner."""

    def receive(self, windowed_value: WindowedValue) -> None:
        return None


class _Receivers(dict):
    def __missing__(self, tag: str | None) -> Receiver:
        return _DroppingReceiver()


def run_stage(pickled_spec: bytes, elements: Partition, *side_values: Partition) -> StageResult:
    """One bundle of each member of the stage over `elements`, with DoFns set up in this process
    by an earlier bundle when it has some idle (`dofn_pool`).

    An empty partition is no bundle: nothing runs, as Beam runs no bundle without elements."""
    spec, set_up = POOL.acquire(pickled_spec)
    outputs: dict[Output, Partition] = {output: [] for output in spec.kept}
    containers = [MetricsContainer(step.step) for step in spec.steps]
    if elements:
        sampler = statesampler.StateSampler(spec.name, CounterFactory())
        previous = statesampler.get_current_tracker()
        statesampler.set_current_tracker(sampler)
        try:
            states = [
                sampler.scoped_state(step.step, "process", metrics_container=container)
                for step, container in zip(spec.steps, containers, strict=True)
            ]
            try:
                _process(_runners(spec, states, outputs, side_values), states, elements, set_up)
            except BaseException:
                if set_up:  # a copy an earlier bundle set up: its DoFns, never its runners, tear down
                    tear_down(spec)
                raise
        finally:
            statesampler.set_current_tracker(previous)
        set_up = True
    if set_up:
        POOL.release(pickled_spec, spec)
    metrics = zip((step.step for step in spec.steps), containers, strict=True)
    return StageResult(outputs, [(step, container.get_cumulative()) for step, container in metrics])


def _runners(
    spec: StageSpec, states: list[Any], outputs: dict[Output, Partition], side_values: Sequence[Partition]
) -> list[DoFnRunner]:
    """A DoFnRunner per member, each emitting to the members that read it and to its kept lists;
    made from the last member back, so every reader exists before its producer."""
    readers: dict[Output, list[int]] = {}
    for position, step in enumerate(spec.steps):
        if step.source is not None:
            readers.setdefault(step.source, []).append(position)
    runners: list[DoFnRunner | None] = [None] * len(spec.steps)
    for position in reversed(range(len(spec.steps))):
        step = spec.steps[position]
        receivers = _Receivers()
        for tag in step.tags:
            targets: list[Receiver] = [
                _StepReceiver(runners[reader], states[reader]) for reader in readers.get((position, tag), [])
            ]
            if (position, tag) in outputs:
                targets.append(_ListReceiver(outputs[(position, tag)]))
            if targets:
                receivers[tag] = targets[0] if len(targets) == 1 else _FanOut(targets)
        sides = [
            SideInputMap(view, options, side_values[slot])
            for (view, options), slot in zip(step.side_views, step.sides, strict=True)
        ]
        runners[position] = DoFnRunner(
            step.dofn, step.args, step.kwargs, sides, step.windowing, receivers, step.step
        )
    return [runner for runner in runners if runner is not None]


def _process(runners: list[DoFnRunner], states: list[Any], elements: Partition, set_up: bool) -> None:
    """Set up (unless `set_up`), start, process and finish every member's bundle in member
    order; when anything fails, tear down the members this call set up and raise the failure
    (a teardown error is logged: teardown is best effort, and the bundle's error is the one to
    report). DoFns set up by an earlier bundle are the caller's to tear down."""
    ready: list[DoFnRunner] = []
    try:
        if not set_up:
            for runner in runners:
                runner.setup()
                ready.append(runner)
        for runner, state in zip(runners, states, strict=True):
            with state:
                runner.start()
        with states[0]:
            for element in elements:
                runners[0].process(element)
        for runner, state in zip(runners, states, strict=True):
            with state:
                runner.finish()
    except BaseException:
        for runner in reversed(ready):
            try:
                runner.teardown()
            except Exception as error:  # noqa: BLE001 - best effort, as Beam's runners
                log.warning("teardown after a failed bundle failed: %s", error)
        raise

"""What the Dask runner's tasks do on the workers: run a Beam bundle, move elements between partitions.

A partition is a list of `WindowedValue`s. A ParDo's task runs one bundle over one
partition (`run_bundle`): a fresh DoFn from the step's pickled `StepSpec`, its outputs kept
per tag (those emitted in `finish_bundle` too), and its metrics counted in a
`MetricsContainer` of its own that travels back with the outputs. Dask keeps one result per
task, so when a lost worker's task is recomputed only the final attempt's metrics are kept.
A GroupByKey splits every partition into a piece per output partition by key hash (`ByKey`),
and each output partition groups its pieces (`group_pieces`); a Reshuffle deals each partition
round-robin into pieces that are output partitions themselves (`deal`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from apache_beam.coders.coders import Coder
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricsContainer, MetricUpdates
from apache_beam.runners.common import DoFnRunner, Receiver
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.windowed_value import WindowedValue

Partition = list[WindowedValue]


@dataclass(frozen=True)
class StepSpec:
    """What a ParDo's bundle needs, pickled once per step; each task unpickles its own DoFn."""

    step: str
    dofn: Any
    args: Sequence[Any]
    kwargs: dict[str, Any]
    windowing: Any
    side_views: Sequence[tuple[type, dict[str, Any]]]
    tags: Sequence[str | None]


class BundleResult(NamedTuple):
    """One bundle's outputs by tag (None: the main output) and the metrics it counted."""

    outputs: dict[str | None, Partition]
    step: str
    metrics: MetricUpdates


class _ListReceiver(Receiver):
    def __init__(self, values: Partition) -> None:
        self.values = values

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append(windowed_value)


class _DroppingReceiver(Receiver):
    """Outputs to a tag no transform declared are dropped, as on Beam's DirectRunner."""

    def receive(self, windowed_value: WindowedValue) -> None:
        return None


class _Receivers(dict):
    def __missing__(self, tag: str | None) -> Receiver:
        return _DroppingReceiver()


def create_partition(pickled_values: bytes) -> Partition:
    """The values of a Create (pickled, so Dask never reads them as tasks), in the global window."""
    return [GlobalWindows.windowed_value(value) for value in pickler.loads(pickled_values)]


def run_bundle(pickled_spec: bytes, elements: Partition, *side_values: Partition) -> BundleResult:
    """One bundle of the step over `elements`, in its own metrics container.

    An empty partition is no bundle: nothing runs, as Beam runs no bundle without elements."""
    spec: StepSpec = pickler.loads(pickled_spec)
    outputs: dict[str | None, Partition] = {tag: [] for tag in spec.tags}
    container = MetricsContainer(spec.step)
    if elements:
        sides = [
            SideInputMap(view, options, values)
            for (view, options), values in zip(spec.side_views, side_values, strict=True)
        ]
        receivers = _Receivers({tag: _ListReceiver(values) for tag, values in outputs.items()})
        with _metrics_scope(spec.step, container):
            _process(
                DoFnRunner(spec.dofn, spec.args, spec.kwargs, sides, spec.windowing, receivers, spec.step),
                elements,
            )
    return BundleResult(outputs, spec.step, container.get_cumulative())


def _process(runner: DoFnRunner, elements: Partition) -> None:
    runner.setup()
    try:
        runner.start()
        for element in elements:
            runner.process(element)
        runner.finish()
    finally:
        runner.teardown()


@contextmanager
def _metrics_scope(step: str, container: MetricsContainer) -> Iterator[None]:
    """Beam's metrics go to `container` while the bundle runs in this (worker) thread."""
    sampler = statesampler.StateSampler(step, CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(step, "process", metrics_container=container):
            yield
    finally:
        statesampler.set_current_tracker(previous)


def output_of(result: BundleResult, tag: str | None) -> Partition:
    return result.outputs[tag]


def metrics_of(result: BundleResult) -> tuple[str, MetricUpdates]:
    return result.step, result.metrics


def gather(*partitions: Partition) -> Partition:
    """Partitions in one list: a side input, computed once for all its consumers."""
    return [element for partition in partitions for element in partition]


def collect_metrics(*metrics: tuple[str, MetricUpdates]) -> list[tuple[str, MetricUpdates]]:
    """The metrics of every bundle of the job, the job's last task."""
    return list(metrics)


class ByKey:
    """Where a `(key, value)` element goes in a GroupByKey: a hash of its key's deterministic encoding."""

    def __init__(self, key_coder: Coder) -> None:
        self._coder = key_coder

    def __call__(self, elements: Partition, n: int) -> list[list[tuple[bytes, WindowedValue]]]:
        pieces: list[list[tuple[bytes, WindowedValue]]] = [[] for _ in range(n)]
        for element in elements:
            encoded = self._coder.encode(element.value[0])
            pieces[zlib.crc32(encoded) % n].append((encoded, element))
        return pieces


def deal(elements: Partition, n: int) -> list[Partition]:
    """`elements` dealt round-robin into `n` pieces."""
    return [elements[start::n] for start in range(n)]


def piece(pieces: list[list[Any]], target: int) -> list[Any]:
    return pieces[target]


def group_pieces(*pieces: list[tuple[bytes, WindowedValue]]) -> Partition:
    """`(key, [values as WindowedValues])` per key of a GroupByKey's partition, for Beam's
    GroupAlsoByWindow step to window."""
    groups: dict[bytes, tuple[Any, list[WindowedValue]]] = {}
    for found in pieces:
        for encoded, element in found:
            key, value = element.value
            group = groups.get(encoded)
            if group is None:
                group = groups[encoded] = (key, [])
            group[1].append(value)
    return [GlobalWindows.windowed_value(group) for group in groups.values()]

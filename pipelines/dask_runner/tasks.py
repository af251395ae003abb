"""What the Dask runner's tasks do on the workers, besides running stages: move elements between partitions.

A partition is a list of `WindowedValue`s. A stage's task (`pipelines.dask_runner.stage`)
returns the outputs that leave it and its steps' metrics; `output_of` and `metrics_of` pick
them for the tasks that read them, and the job's last task collects every task's metrics.
A GroupByKey splits every partition into a piece per output partition by key hash (`ByKey`),
and each output partition groups its pieces (`group_pieces`); a Reshuffle deals each partition
round-robin into pieces that are output partitions themselves (`deal`).
"""

from __future__ import annotations

import zlib
from typing import Any

from apache_beam.coders.coders import Coder
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricUpdates
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.dask_runner.specs import Output, Partition
from pipelines.dask_runner.stage import StageResult


def create_partition(pickled_values: bytes) -> Partition:
    """The values of a Create (pickled, so Dask never reads them as tasks), in the global window."""
    return [GlobalWindows.windowed_value(value) for value in pickler.loads(pickled_values)]


def output_of(result: StageResult, output: Output) -> Partition:
    return result.outputs[output]


def metrics_of(result: StageResult) -> list[tuple[str, MetricUpdates]]:
    return result.metrics


def gather(*partitions: Partition) -> Partition:
    """Partitions in one list: a side input, computed once for all its consumers."""
    return [element for partition in partitions for element in partition]


def collect_metrics(*metrics: list[tuple[str, MetricUpdates]]) -> list[tuple[str, MetricUpdates]]:
    """The metrics of every bundle of the job, the job's last task."""
    return [bundle for task in metrics for bundle in task]


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

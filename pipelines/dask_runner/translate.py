"""Beam's pipeline as one Dask task graph (the Dask runner's translation, on the launcher).

Every PCollection is a list of partitions, each one Dask task (`dask.delayed`), and every
output of a ParDo is its own list, so each consumer gets only its tag. A side input is
gathered once into one task that its consumers depend on. GroupByKey hashes each key's
deterministic encoding to a partition; Reshuffle deals the elements round-robin, so the few
file names of a Create spread over the workers. Every bundle's metrics feed the graph's last
task (`final`), so computing it computes every step, leaves included, in one graph where a
task shared by several consumers runs once.
"""

from __future__ import annotations

import functools
import math
import operator
import pickle
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam import coders
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.pvalue import PCollection
from apache_beam.runners.common import DoFnSignature
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Reshuffle
from apache_beam.transforms.userstate import is_stateful_dofn
from apache_beam.typehints import typehints
from dask.delayed import Delayed, delayed

from pipelines.dask_runner.fusion import Fusion, Stage, fuse
from pipelines.dask_runner.specs import StageSpec, StepSpec
from pipelines.dask_runner.stage import run_stage
from pipelines.dask_runner.tasks import (
    ByKey,
    collect_metrics,
    create_partition,
    deal,
    gather,
    group_pieces,
    metrics_of,
    output_of,
    piece,
)

CREATE_PARTITIONS_PER_THREAD = 4  # a Create of up to 4 elements per worker thread: one per partition


@dataclass(frozen=True)
class Partitioning:
    """How many partitions: `--dask_npartitions` or `--dask_partition_size` when given, else
    one element per partition for small Creates (up to 4 per worker thread) and one partition
    per worker thread out of a shuffle."""

    parallelism: int = 1
    npartitions: int | None = None
    partition_size: int | None = None

    def create_size(self, count: int) -> int:
        """Elements per partition of a Create of `count` elements."""
        if self.partition_size:
            return self.partition_size
        partitions = self.npartitions or CREATE_PARTITIONS_PER_THREAD * self.parallelism
        return max(1, math.ceil(count / partitions))

    def grouped(self) -> int:
        """Partitions out of a GroupByKey (each input partition splits into this many pieces)."""
        return self.npartitions or self.parallelism

    def reshuffled(self, sources: int) -> int:
        """Partitions out of a Reshuffle of `sources` partitions: at least one per worker thread."""
        return max(sources, self.npartitions or self.parallelism)


class DaskGraph(PipelineVisitor):
    """Visits a pipeline (after Beam's Dask overrides), checks every step can run, and builds
    its task graph (`final`) with its ParDos fused into stages."""

    def __init__(self, partitioning: Partitioning) -> None:
        self._partitioning = partitioning
        self._token = uuid.uuid4().hex[:8]  # one run's keys never meet another's on a shared scheduler
        self._nodes: list[AppliedPTransform] = []
        self._fusion: Fusion | None = None
        self._built: set[int] = set()
        self._partitions: dict[PCollection, list[Delayed]] = {}
        self._sides: dict[PCollection, Delayed] = {}
        self._metrics: list[Delayed] = []
        self._functions: dict[str, Delayed] = {}

    def final(self) -> Delayed:
        """The last task: every bundle's `(step, MetricUpdates)`, so it needs every step."""
        self._fusion = fuse(self._nodes)
        for node in self._nodes:
            self._build(node)
        return self._task(collect_metrics)(*self._metrics, dask_key_name=f"metrics {self._token}")

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        if isinstance(transform, beam.ParDo):
            if is_stateful_dofn(transform.fn) or DoFnSignature(transform.fn).is_splittable_dofn():
                raise NotImplementedError(
                    f"the Dask runner cannot run the stateful or splittable DoFn of {node.full_label!r}"
                )
        elif not isinstance(transform, (_Create, beam.Impulse, _Flatten, _GroupByKeyOnly, _Reshuffle)):
            if any(pcoll.producer is node for pcoll in node.outputs.values()):
                raise NotImplementedError(
                    f"the Dask runner cannot run step {node.full_label!r} ({type(transform).__name__})"
                )
            return
        self._nodes.append(node)

    def _build(self, node: AppliedPTransform) -> None:
        """The tasks of `node` (of its whole stage for a ParDo), once, after those it reads."""
        assert self._fusion is not None
        unit: Any = self._fusion.stage_of.get(node, node)
        if id(unit) in self._built:
            return
        self._built.add(id(unit))
        transform = node.transform
        if isinstance(unit, Stage):
            self._stage(unit)
        elif isinstance(transform, _Create):
            self._create(node, list(transform.values))
        elif isinstance(transform, beam.Impulse):
            self._create(node, [b""])
        elif isinstance(transform, _Flatten):
            self._set_output(node, [part for pcoll in node.inputs for part in self._input(pcoll)])
        elif isinstance(transform, _GroupByKeyOnly):
            self._group_by_key(node)
        else:
            self._reshuffle(node)

    def _task(self, function: Callable[..., Any], name: str | None = None) -> Callable[..., Delayed]:
        """Makes tasks that call `function`, itself the value of a task of the graph (pickled by
        reference): the scheduler, which unpickles the graph, imports neither the runner nor Beam."""
        name = name or f"{function.__module__}.{function.__qualname__}"
        if name not in self._functions:
            self._functions[name] = delayed(pickle.loads)(
                pickle.dumps(function), dask_key_name=f"{name} {self._token}"
            )
        return functools.partial(delayed(operator.call), self._functions[name])

    def _input(self, pcoll: PCollection) -> list[Delayed]:
        """The partitions of `pcoll`, its producer's tasks built first if they are not yet."""
        assert self._fusion is not None
        if pcoll not in self._partitions:
            self._build(self._fusion.producers[pcoll])
        return self._partitions[pcoll]

    def _name(self, node: AppliedPTransform, part: str = "") -> str:
        return f"{node.full_label}{part} {self._token}"

    def _set_output(self, node: AppliedPTransform, partitions: list[Delayed]) -> None:
        (pcoll,) = node.outputs.values()
        self._partitions[pcoll] = partitions

    def _create(self, node: AppliedPTransform, values: list[Any]) -> None:
        size = self._partitioning.create_size(len(values))
        name = self._name(node)
        self._set_output(
            node,
            [
                self._task(create_partition)(
                    pickler.dumps(values[start : start + size]), dask_key_name=(name, i)
                )
                for i, start in enumerate(range(0, len(values), size))
            ],
        )

    def _stage(self, stage: Stage) -> None:
        """One task per partition of the stage's input runs all its ParDos; each output read
        outside the stage is a partition per task, picked from the task's result."""
        assert self._fusion is not None
        sides = stage.sides()
        slots = {side: slot for slot, side in enumerate(sides)}
        steps = [
            StepSpec(
                step=node.full_label,
                dofn=node.transform.fn,
                args=node.transform.args,
                kwargs=node.transform.kwargs,
                windowing=next(iter(node.main_inputs.values())).windowing,
                side_views=[(type(side), side._view_options()) for side in node.side_inputs],
                sides=[slots[side.pvalue] for side in node.side_inputs],
                tags=list(node.outputs),
                source=self._fusion.source(stage, node),
            )
            for node in stage.members
        ]
        root = stage.members[0]
        kept = self._fusion.kept(stage)
        spec = StageSpec(_stage_label(stage), steps, kept)
        name = self._name(root, " stage")
        pickled_spec = delayed(pickler.dumps(spec), name=self._name(root, " spec"))
        side_tasks = [self._side(side) for side in sides]
        results = [
            self._task(run_stage)(pickled_spec, part, *side_tasks, dask_key_name=(name, i))
            for i, part in enumerate(self._input(stage.input))
        ]
        self._metrics += [
            self._task(metrics_of)(result, dask_key_name=(f"{name} metrics", i))
            for i, result in enumerate(results)
        ]
        for position, node in enumerate(stage.members):
            for tag, pcoll in node.outputs.items():
                key = f"{self._name(node)} [{tag}]"
                self._partitions[pcoll] = (
                    [
                        self._task(output_of)(result, (position, tag), dask_key_name=(key, i))
                        for i, result in enumerate(results)
                    ]
                    if (position, tag) in kept
                    else []
                )

    def _side(self, pcoll: PCollection) -> Delayed:
        """A side input's partitions in one task, made once however many steps read it."""
        if pcoll not in self._sides:
            name = f"side input {pcoll.producer.full_label}[{pcoll.tag}] {self._token}"
            self._sides[pcoll] = self._task(gather)(*self._input(pcoll), dask_key_name=name)
        return self._sides[pcoll]

    def _group_by_key(self, node: AppliedPTransform) -> None:
        """Each input partition split by key hash in `n` pieces (one task), each piece picked (one
        tiny task), each output partition grouped from its pieces (one task)."""
        (pcoll,) = node.inputs
        key_type = typehints.Any
        if isinstance(pcoll.element_type, typehints.TupleHint.TupleConstraint):
            key_type = pcoll.element_type.tuple_types[0]
        splitter = ByKey(coders.registry.get_coder(key_type).as_deterministic_coder(node.full_label))
        n = self._partitioning.grouped()
        name = self._name(node)
        splits = [
            self._task(splitter, f"{name} key hash")(part, n, dask_key_name=(f"{name} split", i))
            for i, part in enumerate(self._input(pcoll))
        ]
        pick = self._task(piece)
        pieces = [
            [pick(split, target, dask_key_name=(f"{name} piece", i, target)) for target in range(n)]
            for i, split in enumerate(splits)
        ]
        self._set_output(
            node,
            [
                self._task(group_pieces)(*[row[target] for row in pieces], dask_key_name=(name, target))
                for target in range(n)
            ],
        )

    def _reshuffle(self, node: AppliedPTransform) -> None:
        """Each input partition dealt round-robin into the output partitions congruent to it, so
        the elements of one partition (a file's ranges, a few names) spread over the workers."""
        (pcoll,) = node.inputs
        sources = self._input(pcoll)
        if not sources:
            self._set_output(node, [])
            return
        n = self._partitioning.reshuffled(len(sources))
        name = self._name(node)
        splits = [
            self._task(deal)(part, len(range(i, n, len(sources))), dask_key_name=(f"{name} split", i))
            for i, part in enumerate(sources)
        ]
        self._set_output(
            node,
            [
                self._task(piece)(
                    splits[target % len(sources)], target // len(sources), dask_key_name=(name, target)
                )
                for target in range(n)
            ],
        )


def _stage_label(stage: Stage) -> str:
    first, last = stage.members[0].full_label, stage.members[-1].full_label
    return first if first == last else f"{first} .. {last}"

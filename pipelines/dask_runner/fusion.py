"""Which ParDos run together in one task per partition (the Dask runner's fusion, on the launcher).

As Beam's own runners do, a ParDo joins the stage of the ParDo whose output it reads as main
input, so a chain of ParDos runs as one task per partition and its elements go from DoFn to
DoFn in memory (`pipelines.dask_runner.stage` runs it). A GroupByKey, a Reshuffle, a Flatten
or a Create starts no stage: a ParDo reading their output starts a new one. A ParDo whose side
input is computed from the stage's own outputs cannot join it (the stage would wait for
itself) and starts a new stage too. An output leaves a stage, materialized as a partition
per task, only when something outside the stage reads it (`Stage.kept`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.pipeline import AppliedPTransform
from apache_beam.pvalue import PCollection


@dataclass(eq=False)
class Stage:
    """ParDos run as one task per partition of `input`: the first reads `input`, each other
    reads an output of an earlier member."""

    input: PCollection
    members: list[AppliedPTransform] = field(default_factory=list)

    def sides(self) -> list[PCollection]:
        """The side inputs of every member, each once."""
        return list(dict.fromkeys(side.pvalue for node in self.members for side in node.side_inputs))


@dataclass(frozen=True)
class Consumer:
    node: AppliedPTransform
    main: bool  # reads the collection as its main input (not as a side input, not a GroupByKey…)


@dataclass
class Fusion:
    """The stages of a pipeline's primitive transforms, in topological order."""

    producers: dict[PCollection, AppliedPTransform]
    consumers: dict[PCollection, list[Consumer]]
    stage_of: dict[AppliedPTransform, Stage]

    def kept(self, stage: Stage) -> list[tuple[int, str | None]]:
        """The `(member, tag)` outputs read outside the stage."""
        return [
            (position, tag)
            for position, node in enumerate(stage.members)
            for tag, pcoll in node.outputs.items()
            if any(
                not (consumer.main and self.stage_of.get(consumer.node) is stage)
                for consumer in self.consumers.get(pcoll, [])
            )
        ]

    def source(self, stage: Stage, node: AppliedPTransform) -> tuple[int, str | None] | None:
        """The `(member, tag)` a member reads in memory; None for the member reading `stage.input`."""
        if node is stage.members[0]:
            return None
        (main,) = node.main_inputs.values()
        producer = self.producers[main]
        (tag,) = [tag for tag, pcoll in producer.outputs.items() if pcoll is main]
        return stage.members.index(producer), tag


def fuse(nodes: Sequence[AppliedPTransform]) -> Fusion:
    """The stages of `nodes` (the pipeline's primitive transforms in topological order)."""
    producers = {pcoll: node for node in nodes for pcoll in node.outputs.values()}
    consumers: dict[PCollection, list[Consumer]] = {}
    for node in nodes:
        for pcoll in node.inputs:
            consumers.setdefault(pcoll, []).append(Consumer(node, isinstance(node.transform, beam.ParDo)))
        for side in node.side_inputs:
            consumers.setdefault(side.pvalue, []).append(Consumer(node, False))
    fusion = Fusion(producers, consumers, {})
    for node in nodes:
        if not isinstance(node.transform, beam.ParDo):
            continue
        (main,) = node.main_inputs.values()
        stage = fusion.stage_of.get(producers.get(main))
        if stage is None or any(_reaches(fusion, side.pvalue, stage) for side in node.side_inputs):
            stage = Stage(main)
        stage.members.append(node)
        fusion.stage_of[node] = stage
    return fusion


def _reaches(fusion: Fusion, pcoll: PCollection, stage: Stage) -> bool:
    """Whether computing `pcoll` needs `stage`'s outputs."""
    todo = [pcoll]
    seen: set[int] = set()
    while todo:
        producer = fusion.producers.get(todo.pop())
        if producer is None:
            continue
        unit = fusion.stage_of.get(producer, producer)
        if unit is stage:
            return True
        if id(unit) not in seen:
            seen.add(id(unit))
            todo.extend(_upstream(unit))
    return False


def _upstream(unit: Stage | AppliedPTransform) -> Iterable[PCollection]:
    if isinstance(unit, Stage):
        return [unit.input, *unit.sides()]
    return [*unit.inputs, *(side.pvalue for side in unit.side_inputs)]

"""Choose how several sources are joined: broadcast or shuffle (the **plan** step, pure).

A batch-inference job's files are lopsided: the embeddings are large (a 384-float vector is
about 4 KB of JSON per record) and the inputs beside them small. The shuffle join moves
every record through the runner's shuffle; the broadcast join (`transforms.join.BroadcastJoin`)
keeps the small sources in memory as a side input and streams the large one, so the
vectors are never shuffled. Broadcast needs a streamed source of exactly one file (read in
order by one step, or in byte ranges whose keys are settled afterwards: see
`transforms.split_join`) and small sources that fit in memory, so with `auto`:
- the streamed source is the largest single-file source;
- the others together must be at most `broadcast_max_bytes` of input;
- otherwise, and for any source of several files, the shuffle join is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from connectors.byte_ranges import FileRange

JoinStrategyName = Literal["auto", "broadcast", "shuffle"]
DEFAULT_BROADCAST_MAX_BYTES = 512 * 1024 * 1024


class JoinStrategyError(ValueError):
    """`--join-strategy broadcast` asked for what the sources cannot do; the message says why."""


@dataclass(frozen=True)
class JoinStrategy:
    """`broadcast` streams `source[streamed]`; `shuffle` joins by a CoGroupByKey; `none`: one source."""

    name: Literal["none", "broadcast", "shuffle"]
    streamed: int | None = None
    reason: str = ""


def choose_join_strategy(
    sizes_by_source: Sequence[Sequence[int]],
    requested: JoinStrategyName = "auto",
    broadcast_max_bytes: int = DEFAULT_BROADCAST_MAX_BYTES,
) -> JoinStrategy:
    """The strategy for sources whose files have these sizes (bytes, one list per source)."""
    if len(sizes_by_source) < 2:
        return JoinStrategy("none")
    if requested == "shuffle":
        return JoinStrategy("shuffle", reason="--join-strategy shuffle")
    single_file = [index for index, sizes in enumerate(sizes_by_source) if len(sizes) == 1]
    if not single_file:
        why = "no source is a single file"
        if requested == "broadcast":
            raise JoinStrategyError(f"--join-strategy broadcast: {why} to stream")
        return JoinStrategy("shuffle", reason=why)
    streamed = max(single_file, key=lambda index: (sizes_by_source[index][0], -index))
    side_bytes = sum(sum(sizes) for index, sizes in enumerate(sizes_by_source) if index != streamed)
    if requested == "auto" and side_bytes > broadcast_max_bytes:
        return JoinStrategy(
            "shuffle",
            reason=f"the sources beside source[{streamed}] hold {side_bytes:,} bytes, "
            f"over --broadcast-max-bytes {broadcast_max_bytes:,}",
        )
    return JoinStrategy(
        "broadcast",
        streamed,
        reason=f"source[{streamed}] streams; the other sources ({side_bytes:,} bytes) are held in memory",
    )


def streamed_file(
    strategy: JoinStrategy, reads_by_source: Sequence[Sequence[FileRange]]
) -> tuple[int, FileRange] | None:
    """(source index, file or first byte range) of the one file a run streams, if it has one: the
    broadcast join's large file, or a single source's only file."""
    if strategy.name == "broadcast" and strategy.streamed is not None:
        source = strategy.streamed
    elif strategy.name == "none":
        source = 0
    else:
        return None
    reads = reads_by_source[source]
    return (source, reads[0]) if len({part.uri for part in reads}) == 1 else None

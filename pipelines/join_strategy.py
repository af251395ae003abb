"""Choose how several sources are joined: broadcast or shuffle (the **plan** step, pure).

A batch-inference job's files are lopsided: the embeddings are large (a 384-float vector is
about 4 KB of JSON per record) and the inputs beside them small. The shuffle join moves
every record through the runner's shuffle; the broadcast join (`transforms.join.BroadcastJoin`)
keeps the small sources in memory as a side input and streams the large one, so the
vectors are never shuffled. The streamed source may have several files (SageMaker writes one
`.out` per input file, several OpenAI batches give several output files): each file, or each
byte range of a split file, is streamed on its own and the keys met in several are settled by a
small shuffle of ids and positions (`transforms.split_join`). With `auto`:
- the streamed source is the largest, by the bytes of all its files;
- the others together must be at most `broadcast_max_bytes` of input;
- otherwise the shuffle join is used.
With `--action create` (`ordered`) a key's first write stays, so the streamed source must be
read in order by one step: only a single-file source streams then, as before, and with none
the shuffle join is used.
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
    ordered: bool = False,
) -> JoinStrategy:
    """The strategy for sources whose files have these sizes (bytes, one list per source);
    `ordered`: only a single-file source may stream (`--action create`)."""
    if len(sizes_by_source) < 2:
        return JoinStrategy("none")
    if requested == "shuffle":
        return JoinStrategy("shuffle", reason="--join-strategy shuffle")
    candidates = [index for index, sizes in enumerate(sizes_by_source) if not ordered or len(sizes) == 1]
    if not candidates:
        why = "no source is a single file (--action create streams one file in order)"
        if requested == "broadcast":
            raise JoinStrategyError(f"--join-strategy broadcast: {why}")
        return JoinStrategy("shuffle", reason=why)
    streamed = max(candidates, key=lambda index: (sum(sizes_by_source[index]), -index))
    side_bytes = sum(sum(sizes) for index, sizes in enumerate(sizes_by_source) if index != streamed)
    if requested == "auto" and side_bytes > broadcast_max_bytes:
        return JoinStrategy(
            "shuffle",
            reason=f"the sources beside source[{streamed}] hold {side_bytes:,} bytes, "
            f"over --broadcast-max-bytes {broadcast_max_bytes:,}",
        )
    files = len(sizes_by_source[streamed])
    return JoinStrategy(
        "broadcast",
        streamed,
        reason=f"source[{streamed}] streams ({files} file{'s' if files != 1 else ''}); "
        f"the other sources ({side_bytes:,} bytes) are held in memory",
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

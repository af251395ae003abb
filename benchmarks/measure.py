"""Run a command and report its wall time and the peak RSS of its process tree (one JSON line on stderr).

The report also gives `started_at`, the epoch time the command was started, so a server that
notes when the command first reached it can tell the command's start-up time.

python -m benchmarks.measure COMMAND...

The tree's RSS (the command and every process under it, e.g. mlbatch's read helpers) is
summed from /proc every `SAMPLE_SECONDS`; the peak reported is the larger of that sampled
sum and the largest single process's own peak (`ru_maxrss`), so short peaks are not missed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

SAMPLE_SECONDS = 0.25


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    return children


def tree_rss_mib(root: int) -> float:
    """The summed RSS of `root` and its descendants, in MiB (0 where /proc is unavailable)."""
    children = _children()
    total_pages, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total_pages += int(statm.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    started, started_at = time.monotonic(), time.time()
    process = subprocess.Popen(sys.argv[1:])
    peak_tree = 0.0
    while process.poll() is None:
        peak_tree = max(peak_tree, tree_rss_mib(process.pid))
        try:
            process.wait(SAMPLE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    wall = time.monotonic() - started
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = {
        "seconds": wall,
        "peak_rss_mib": max(peak_tree, largest),
        "exit": process.returncode,
        "started_at": started_at,
    }
    print(json.dumps(report), file=sys.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())

"""A read job that sends nothing for a minute (as a broadcast join reading its small sources),
for the read helper's orphan test; run as a script, it starts one helper, prints its pid and
waits to be killed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from connectors.byte_ranges import FileRange


@dataclass(frozen=True)
class SilentJob:
    part: FileRange = FileRange("silent")

    def frames(self) -> Iterator[tuple[list, dict]]:
        time.sleep(60)
        yield [], {}


if __name__ == "__main__":
    from tests.slow_job import SilentJob as Importable  # the helper cannot load `__main__`'s class
    from transforms.read_helper import HelperRead

    helper = HelperRead(Importable())
    print(helper._process.pid, flush=True)
    time.sleep(60)

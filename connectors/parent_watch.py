"""Child processes that must not outlive their parent (the read helper, serve-api's ingestion workers):
they watch, on a thread of their own, for the parent to be gone. Kept apart from the task store so a
helper's start-up loads nothing more than this."""

from __future__ import annotations

import os
import time

ORPHAN_CHECK_SECONDS = 0.5


def wait_until_orphaned(parent: int, every: float = ORPHAN_CHECK_SECONDS) -> None:
    """Return once process `parent` is no longer this process's parent: it died (SIGKILL, say) and
    this process was given to another."""
    while os.getppid() == parent:
        time.sleep(every)

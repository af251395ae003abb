"""Run a command and report its wall time and the peak RSS of it and its children (one JSON line on stderr).

python -m benchmarks.measure COMMAND...
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> int:
    started = time.monotonic()
    code = subprocess.call(sys.argv[1:])
    wall = time.monotonic() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": wall, "peak_rss_mib": peak_mib, "exit": code}), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Read and project one file in a helper process, so parsing runs beside the merge and the writes.

The DirectRunner runs a pipeline on one thread, and parsing JSON is most of a record's cost.
`HelperRead` starts `python -m transforms.read_helper`, sends it the source plan,
the source access and the file URI on stdin (so a credential never shows in the process
list) and yields what the helper streams back on stdout, in file order: frames of up to
`FRAME_RECORDS` projected records or DeadLetters, each with the counts to add to the Beam
counters. The helper runs the same `projected_records` as in-process reading; a file it
cannot read raises SourceError with the same message.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import Any, BinaryIO

from connectors.sources import SourceAccess, SourceError
from transforms.record_stream import ProjectedRecord, Tally, projected_records
from transforms.types import DeadLetter, SourcePlan

FRAME_RECORDS = 1000
_HEADER = struct.Struct("<Q")


def write_frame(stream: BinaryIO, item: Any) -> None:
    data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)


def read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def serve(job: BinaryIO, out: BinaryIO) -> None:
    """The helper's side: read the job, stream frames, end with `end` or `error`."""
    try:
        source, access, uri = pickle.loads(job.read())
        tally = Tally()
        batch: list[Any] = []
        for record in projected_records(source, access, uri, tally):
            batch.append(record)
            if len(batch) >= FRAME_RECORDS:
                write_frame(out, ("records", batch, tally.take()))
                batch = []
        write_frame(out, ("records", batch, tally.take()))
        write_frame(out, ("end",))
    except SourceError as error:
        write_frame(out, ("error", str(error)))
    except Exception as error:  # reported to the pipeline as this file's failure, not a bare traceback
        write_frame(out, ("error", f"the read helper failed: {type(error).__name__}: {error}"))
    out.flush()


class HelperRead:
    """A helper process reading one file, started at once; `frames` yields what it sends.

    The process is stopped when `frames` ends or is closed, or when this object is dropped
    unread (say, the caller failed before reading).
    """

    def __init__(self, source: SourcePlan, access: SourceAccess, uri: str) -> None:
        self._uri = uri
        self._process = subprocess.Popen(
            [sys.executable, "-m", "transforms.read_helper"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._stop = weakref.finalize(self, _stop, self._process)
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps((source, access, uri), pickle.HIGHEST_PROTOCOL))
        self._process.stdin.close()

    def frames(self) -> Iterator[tuple[list[ProjectedRecord | DeadLetter], Tally]]:
        """(records, their counts) frames of the file, in order."""
        stream = self._process.stdout
        assert stream is not None
        try:
            while True:
                try:
                    kind, *rest = read_frame(stream)
                except EOFError:
                    code = self._process.wait()
                    raise SourceError(f"{self._uri}: the read helper exited early ({code})") from None
                if kind == "end":
                    return
                if kind == "error":
                    raise SourceError(rest[0])
                records, tally = rest
                yield records, tally
        finally:
            self._stop()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)

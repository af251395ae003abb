"""Byte ranges of large files, and the JSONL lines of a byte stream (the **read** step's pure part).

A large uncompressed JSONL file is read as several `FileRange`s, so any worker reads any part
of it (`split_file`, at plan time, from the file's size). A line belongs to the range holding
its first byte: a range `[start, end)` with `start > 0` skips up to and including the first
`\\n` at or after byte `start - 1` (so a line starting exactly at `start` is its own), then
takes every line starting before `end`, the last one running past `end` if it does
(`range_lines`). `\\n` never occurs inside a multi-byte UTF-8 character, so splitting on it
is safe anywhere. Compressed files, Parquet files and OpenAI file ids are read whole.

Records of a whole file are numbered by line (`file_lines`, 1-based, blank lines counted);
records of a split file by the byte offset of their line's first byte, which a range knows
without reading what comes before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple

DEFAULT_SPLIT_BYTES = 64 * 2**20
MAX_RANGES_PER_FILE = 10_000  # a tiny --split-bytes on a huge file makes larger ranges, not millions
# Every extension smart_open decompresses (in any case): such files are read through it, and whole.
COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4"})
WHOLE_FILE_SUFFIXES = COMPRESSED_SUFFIXES | {".parquet"}


class FileRange(NamedTuple):
    """What one read step reads: a whole file (`end` None), or its bytes `[start, end)`."""

    uri: str
    start: int = 0
    end: int | None = None

    @property
    def by_offset(self) -> bool:
        """Whether its records are located by byte offset (a split file) rather than by line."""
        return self.end is not None


def can_split(uri: str, source_type: str) -> bool:
    """Whether a file can be read in byte ranges: a local or S3 file, neither compressed nor Parquet."""
    return source_type != "openAI" and os.path.splitext(uri)[1].lower() not in WHOLE_FILE_SUFFIXES


def split_file(uri: str, size: int, split_bytes: int) -> list[FileRange]:
    """The ranges of a file of `size` bytes: ranges of about `split_bytes` (all within a byte of each
    other), or the whole file when it is no larger than one range or `split_bytes` is 0."""
    if split_bytes <= 0 or size <= split_bytes:
        return [FileRange(uri)]
    count = min(-(-size // split_bytes), MAX_RANGES_PER_FILE)
    step = -(-size // count)
    return [FileRange(uri, start, min(start + step, size)) for start in range(0, size, step)]


def split_on_newlines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, without their b"\\n", split on b"\\n" only (JSON strings may hold
    U+2028 and friends)."""
    pending = b""
    for chunk in chunks:
        lines = chunk.split(b"\n")
        if pending:
            lines[0] = pending + lines[0]
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending


def file_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without a trailing b"\\r") of every line that is not blank."""
    for number, line in enumerate(lines, start=1):
        stripped = line.rstrip(b"\r")
        if stripped.strip():
            yield number, stripped


def _lines_from(chunks: Iterator[bytes], offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the lines of a stream whose first byte is at `offset`, up to the last one
    starting before `end`; no chunk is taken once that line has ended."""
    pending: list[bytes] = []
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        for piece in pieces:
            if pending:
                pending.append(piece)
                piece = b"".join(pending)
                pending = []
            yield offset, piece
            offset += len(piece) + 1
            if offset >= end:
                return
        if tail:
            pending.append(tail)
    if pending:
        yield offset, b"".join(pending)


def _after_first_newline(chunks: Iterator[bytes], offset: int, end: int) -> tuple[int, bytes] | None:
    """(offset, rest of its chunk) just after the first b"\\n" of a stream starting at `offset`, or
    None when no line starts before `end`."""
    for chunk in chunks:
        newline = chunk.find(b"\n")
        if newline >= 0:
            start = offset + newline + 1
            return (start, chunk[newline + 1 :]) if start < end else None
        offset += len(chunk)
        if offset >= end:
            return None
    return None


def range_lines(chunks: Iterable[bytes], start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line without a trailing b"\\r") of every non-blank line whose first byte is in
    `[start, end)`, from `chunks` of the file read from byte `start - 1` (from 0 when `start` is 0)."""
    stream = iter(chunks)
    offset = 0
    if start > 0:
        found = _after_first_newline(stream, start - 1, end)
        if found is None:
            return
        offset, rest = found
        stream = _prepend(rest, stream)
    for position, line in _lines_from(stream, offset, end):
        stripped = line.rstrip(b"\r")
        if stripped.strip():
            yield position, stripped


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest

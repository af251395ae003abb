"""Open the request's data sources and yield their records (the **read** step's I/O edge).

- `local`: paths, directories and globs on this machine.
- `s3`: `s3://bucket/key`, prefixes (`s3://bucket/output/`) and key globs, through boto3 and
  smart_open, with the request's `credential` or the default AWS chain; boto3 honours
  `AWS_ENDPOINT_URL` (moto server, MinIO). Key globs match as a shell's do (`s3_glob`): `*`,
  `?` and `[...]` never match `/`; `**` matches across `/`, and `**/` also matches no folder
  at all (as a local `glob(..., recursive=True)` does).
- `openAI`: `file-...` IDs through the openai SDK (`credential.openAI_key`, `OPENAI_BASE_URL`).
Files ending in `.gz` are decompressed transparently; `.parquet` files yield one record per row.
Large local and S3 JSONL files are read in byte ranges (`connectors.byte_ranges`): a local file
by `seek`, an S3 object by a ranged GET from the range's start on.
`expand_source` runs once at plan time; `read_records` runs on the workers.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from connectors.byte_ranges import COMPRESSED_SUFFIXES, FileRange, file_lines, range_lines, split_on_newlines
from connectors.source_access import SourceAccess

_GLOB_CHARS = frozenset("*?[")
_PARQUET_BATCH_ROWS = 1024
_READ_CHUNK_BYTES = 4 * 1024 * 1024
_TAIL_CHUNK_BYTES = 64 * 1024  # reads past a range's end, to finish its last line


class SourceFile(NamedTuple):
    """One concrete file of a source and its size in bytes."""

    uri: str
    size: int


class SourceError(RuntimeError):
    """A source cannot be listed or read; the message names the URI."""


def _has_glob(text: str) -> bool:
    return any(char in _GLOB_CHARS for char in text)


def _bracket(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex for the `[...]` class at `start` and the index after it, or None if unclosed."""
    end = start + 1
    if end < len(pattern) and pattern[end] in "!^":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    end = pattern.find("]", end)
    if end < 0:
        return None
    body = pattern[start + 1 : end]
    negate = body[:1] in ("!", "^")
    members = body[1:] if negate else body
    escaped = re.escape(members).replace("\\-", "-")
    return (f"[^/{escaped}]" if negate else f"(?!/)[{escaped}]"), end + 1


def s3_glob(pattern: str) -> re.Pattern[str]:
    """A key glob as a regex over whole keys: `*`, `?` and `[...]` stay within one `/` segment,
    `**` crosses segments and `**/` may stand for no folder at all."""
    parts: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if pattern.startswith("**/", position):
            parts.append("(?:.*/)?")
            position += 3
        elif pattern.startswith("**", position):
            parts.append(".*")
            position += 2
        elif char == "*":
            parts.append("[^/]*")
            position += 1
        elif char == "?":
            parts.append("[^/]")
            position += 1
        elif char == "[" and (bracket := _bracket(pattern, position)) is not None:
            parts.append(bracket[0])
            position = bracket[1]
        else:
            parts.append(re.escape(char))
            position += 1
    try:
        return re.compile("".join(parts), re.DOTALL)
    except re.error as error:
        raise SourceError(f"s3 key glob {pattern!r} is not valid: {error}") from None


def _expand_local(path: str) -> list[str]:
    if _has_glob(path):
        # `**` next to `**` (or `*`) lists a file once per way it matches: each file counts once.
        files = sorted({p for p in glob.glob(path, recursive=True) if os.path.isfile(p)})
        if not files:
            raise SourceError(f"{path}: no files match")
        return files
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if not name.startswith(".") and os.path.isfile(os.path.join(path, name))
        )
        if not files:
            raise SourceError(f"{path}: the directory has no files")
        return files
    if not os.path.isfile(path):
        raise SourceError(f"{path}: no such file")
    return [path]


def resolved_under(path: str | os.PathLike[str], root: str) -> str | None:
    """`path` with `..` and symbolic links resolved, if that lies under `root` (resolved too); else None."""
    base, resolved = os.path.realpath(root), os.path.realpath(path)
    return resolved if os.path.commonpath([base, resolved]) == base else None


def _sized_local(path: str, root: str | None) -> list[SourceFile]:
    """The files `path` stands for, with their sizes; with a `root`, every one of them (symbolic
    links resolved, those a glob or a directory reaches included) must be under it."""
    try:
        files = [SourceFile(name, os.path.getsize(name)) for name in _expand_local(path)]
    except OSError as error:
        raise SourceError(f"{path}: cannot read its size ({error})") from None
    if root is not None:
        for file in files:
            if resolved_under(file.uri, root) is None:
                raise SourceError(f"{path}: {file.uri} is outside --local-root {os.path.realpath(root)}")
    return files


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _expand_s3(uri: str, client: Any) -> list[SourceFile]:
    bucket, key = _split_s3(uri)
    if key and not key.endswith("/") and not _has_glob(key):
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise SourceError(f"{uri}: no such object") from None
            raise SourceError(f"{uri}: {code or error}") from None
        return [SourceFile(uri, int(head["ContentLength"]))]
    prefix = key
    for position, char in enumerate(key):
        if char in _GLOB_CHARS:
            prefix = key[: key.rfind("/", 0, position) + 1]
            break
    matcher = s3_glob(key) if _has_glob(key) else None
    found: list[SourceFile] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"]
            if name.endswith("/") or (matcher is not None and not matcher.fullmatch(name)):
                continue
            found.append(SourceFile(f"s3://{bucket}/{name}", int(item["Size"])))
    if not found:
        raise SourceError(f"{uri}: no objects under this prefix")
    return sorted(found)


def expand_source(uri: str, access: SourceAccess) -> list[SourceFile]:
    """The concrete files one `data_source.source` entry stands for, with their sizes (compressed
    size for `.gz`), in a stable order."""
    try:
        if access.source_type == "s3":
            return _expand_s3(uri, access.s3_client())
        if access.source_type == "openAI":
            return _check_openai_file(uri, access)
        return _sized_local(uri, access.local_root)
    except (ClientError, BotoCoreError) as error:
        raise SourceError(f"{uri}: {error}") from None


def _chunks(stream: Any) -> Iterator[bytes]:
    """The stream in large reads: one GIL release per chunk, not per line, while bulk threads run."""
    while chunk := stream.read(_READ_CHUNK_BYTES):
        yield chunk


def _parquet_rows(stream: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    number = 0
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(stream).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield number, row


@contextmanager
def _openai_errors(file_id: str) -> Iterator[None]:
    import openai

    try:
        yield
    except openai.APIStatusError as error:
        raise SourceError(
            f"{file_id}: the OpenAI files API answered {error.status_code} ({error.message})"
        ) from None
    except openai.APIConnectionError as error:
        raise SourceError(f"{file_id}: cannot reach the OpenAI files API ({error})") from None


def _check_openai_file(file_id: str, access: SourceAccess) -> list[SourceFile]:
    with _openai_errors(file_id):
        return [SourceFile(file_id, int(access.openai_client().files.retrieve(file_id).bytes or 0))]


def _read_openai(file_id: str, access: SourceAccess) -> Iterator[tuple[int, bytes]]:
    with (
        _openai_errors(file_id),
        access.openai_client().files.with_streaming_response.content(file_id) as response,
    ):
        yield from file_lines(split_on_newlines(response.iter_bytes()))


def read_records(part: FileRange, access: SourceAccess) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(position, raw JSONL line or Parquet row) for every record of one file or byte range: the
    1-based line or row number in a whole file, the byte offset of the line in a range."""
    uri = part.uri
    if access.source_type == "openAI":
        yield from _read_openai(uri, access)
        return
    try:
        with _open(uri, access) as stream:
            if part.end is not None:
                yield from range_lines(_range_chunks(stream, part.start, part.end), part.start, part.end)
            elif uri.endswith(".parquet"):
                yield from _parquet_rows(stream)
            else:
                yield from file_lines(split_on_newlines(_chunks(stream)))
    except (ClientError, BotoCoreError, OSError, EOFError, zlib.error, *_arrow_errors()) as error:
        raise SourceError(f"{uri}: cannot read ({type(error).__name__}: {error})") from None


def _range_chunks(stream: Any, start: int, end: int) -> Iterator[bytes]:
    """The stream from byte `start - 1` (0 for the first range): large reads up to `end`, small
    ones past it (only the range's last line is read there)."""
    position = max(start - 1, 0)
    stream.seek(position)
    while chunk := stream.read(min(_READ_CHUNK_BYTES, max(end - position, _TAIL_CHUNK_BYTES))):
        position += len(chunk)
        yield chunk


def _open(uri: str, access: SourceAccess) -> Any:
    """A binary stream of one file: plain local files directly, S3 and compressed files through
    smart_open (imported only then: it takes a third of a second)."""
    if not uri.startswith("s3://") and os.path.splitext(uri)[1].lower() not in COMPRESSED_SUFFIXES:
        return open(uri, "rb")  # noqa: SIM115 - closed by the caller's `with`
    import smart_open

    params = {"client": access.s3_client(), "defer_seek": True} if uri.startswith("s3://") else {}
    return smart_open.open(uri, "rb", transport_params=params)


def _arrow_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's error type, if pyarrow was loaded (only Parquet files load it)."""
    arrow = sys.modules.get("pyarrow")
    return (arrow.ArrowException,) if arrow is not None else ()

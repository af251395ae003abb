"""A file split into byte ranges yields exactly the records of the whole file: pure, then through
local files, S3 (moto) and the real pipeline, with dead-letter byte offsets pointing at their lines."""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator

import pytest

from connectors.byte_ranges import (
    DEFAULT_SPLIT_BYTES,
    MAX_RANGES_PER_FILE,
    FileRange,
    can_split,
    file_lines,
    range_lines,
    split_file,
    split_on_newlines,
)
from connectors.sources import SourceAccess, read_records
from pipelines.ingest_options import IngestOptions, IngestOptionsError
from pipelines.plan import compile_plan, split_reads
from pipelines.request import parse_request
from pipelines.runner_choice import RunnerChoice
from tests.data import SAGEMAKER_REQUEST, jsonl, knn_index_body, sagemaker_lines
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest
from transforms.types import DeadLetter, Locator

LOCAL = SourceAccess("local")


def chunks_from(data: bytes, start: int, size: int) -> Iterator[bytes]:
    """`data` from byte `max(start - 1, 0)` in chunks of `size`, as `connectors.sources` reads a range."""
    for position in range(max(start - 1, 0), len(data), size):
        yield data[position : position + size]


def expected_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, line) of every non-blank line, found the slow way."""
    found, offset = [], 0
    for line in data.split(b"\n"):
        if line.rstrip(b"\r").strip():
            found.append((offset, line.rstrip(b"\r")))
        offset += len(line) + 1
    return found


def read_in_ranges(data: bytes, split_bytes: int, chunk: int = 4096) -> list[tuple[int, bytes]]:
    lines = []
    for part in split_file("f.jsonl", len(data), split_bytes):
        end = len(data) if part.end is None else part.end
        lines += range_lines(chunks_from(data, part.start, chunk), part.start, end)
    return lines


AWKWARD = (
    b'{"a": 1}\r\n'  # CRLF
    b"\n   \n"  # blank lines
    b'{"text": "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}\n'  # multi-byte UTF-8
    + b'{"long": "'
    + b"x" * 300
    + b'"}\n'  # one line over several ranges
    b'{"b": 2}\n'
    b'{"last": "no newline"}'
)


@pytest.mark.parametrize("split_bytes", [1, 2, 3, 7, 10, 11, 64, 100, 333, 10_000])
@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_ranges_yield_the_lines_of_the_whole_file(split_bytes, chunk):
    assert read_in_ranges(AWKWARD, split_bytes, chunk) == expected_lines(AWKWARD)
    whole = [line for _, line in file_lines(split_on_newlines([AWKWARD]))]
    assert [line for _, line in read_in_ranges(AWKWARD, split_bytes, chunk)] == whole


def test_a_boundary_exactly_at_a_line_start_gives_the_line_to_the_later_range():
    data = b'{"a": 1}\n{"b": 2}\n'
    assert list(range_lines(chunks_from(data, 0, 64), 0, 9)) == [(0, b'{"a": 1}')]
    assert list(range_lines(chunks_from(data, 9, 64), 9, 18)) == [(9, b'{"b": 2}')]
    assert list(range_lines(chunks_from(data, 10, 64), 10, 18)) == []


def test_a_boundary_inside_a_crlf_or_a_multibyte_character_splits_nothing():
    data = '{"é": "€"}\r\n{"z": 1}\n'.encode()
    for boundary in range(1, len(data)):
        first = list(range_lines(chunks_from(data, 0, 3), 0, boundary))
        second = list(range_lines(chunks_from(data, boundary, 3), boundary, len(data)))
        assert first + second == expected_lines(data)
        assert all(line.decode() for _, line in first + second)


def test_a_range_inside_one_long_line_has_no_line_and_stops_reading_at_its_end():
    data = b'{"long": "' + b"y" * 1000 + b'"}\n{"next": 1}\n'
    read: list[bytes] = []

    def counted(start: int) -> Iterator[bytes]:
        for chunk in chunks_from(data, start, 10):
            read.append(chunk)
            yield chunk

    assert list(range_lines(counted(100), 100, 200)) == []
    assert sum(map(len, read)) <= 110


def test_random_lines_and_boundaries_read_as_the_whole_file():
    rng = random.Random(13)
    pieces = [b"", b"\r", b" ", b"{}", "é".encode(), "😀".encode(), b"x" * 40]
    for _ in range(300):
        lines = [b"".join(rng.choices(pieces, k=rng.randrange(0, 6))) for _ in range(rng.randrange(0, 12))]
        data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])
        split_bytes, chunk = rng.randrange(1, 40), rng.randrange(1, 50)
        assert read_in_ranges(data, split_bytes, chunk) == expected_lines(data), (data, split_bytes, chunk)


def test_split_file_makes_even_ranges_and_leaves_small_files_whole():
    assert split_file("f", 100, 0) == [FileRange("f")]
    assert split_file("f", 100, 100) == [FileRange("f")]
    ranges = split_file("f", 100, 30)
    assert [(r.start, r.end) for r in ranges] == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert all(r.by_offset for r in ranges) and not FileRange("f").by_offset


def test_a_tiny_split_size_on_a_huge_file_makes_at_most_max_ranges():
    ranges = split_file("f", 10**10, 1)
    assert len(ranges) == MAX_RANGES_PER_FILE and ranges[-1].end == 10**10
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))


def test_compressed_parquet_and_openai_files_are_never_split():
    assert can_split("s3://b/out.jsonl", "s3") and can_split("/d/out.json.out", "local")
    for name in ("a.jsonl.gz", "a.bz2", "a.xz", "a.zst", "a.lz4", "a.parquet", "s3://b/A.JSONL.GZ", "a.Zst"):
        assert not can_split(name, "local")
    assert not can_split("file-abc", "openAI")


def plan_of(field_map: dict, sources: list[str]):
    request = {"index_name": "i", "field_map": field_map, "data_source": {"type": "local", "source": sources}}
    return compile_plan(parse_request(request))


def test_split_reads_keeps_derived_id_sources_and_compressed_files_whole():
    with_ids = plan_of({"text": "$.t", "_id": "$.id"}, ["big.jsonl"])
    reads, notes = split_reads(with_ids, [[("big.jsonl", 100), ("big.jsonl.gz", 100), ("small", 10)]], 40)
    assert [len(parts) for parts in reads] == [5] and notes == []
    assert reads[0][3:] == (FileRange("big.jsonl.gz"), FileRange("small"))
    derived = plan_of({"text": "$.t"}, ["big.jsonl"])
    reads, notes = split_reads(derived, [[("big.jsonl", 100)]], 40)
    assert reads == ((FileRange("big.jsonl"),),)
    assert notes == [
        "source[0]: big.jsonl is read whole, not in byte ranges: its document ids are derived "
        "from each record's file and line"
    ]
    reads, notes = split_reads(with_ids, [[("big.jsonl", 100)]], 40, {0: "asked"})
    assert reads == ((FileRange("big.jsonl"),),) and notes[0].endswith(": asked")


def test_files_are_split_by_default_only_where_ranges_run_side_by_side():
    in_process, dask = RunnerChoice(), RunnerChoice("DaskRunner")
    assert IngestOptions().split_bytes_on(in_process) == 0
    assert IngestOptions().split_bytes_on(dask) == DEFAULT_SPLIT_BYTES == 64 * 2**20
    assert IngestOptions(split_bytes=1000).split_bytes_on(in_process) == 1000
    assert IngestOptions(split_bytes=0).split_bytes_on(dask) == 0
    with pytest.raises(IngestOptionsError, match="--split-bytes must not be negative"):
        IngestOptions(split_bytes=-1)


def read_all(parts: list[FileRange], access: SourceAccess) -> list[tuple[int, bytes]]:
    return [record for part in parts for record in read_records(part, access)]


@pytest.mark.integration
def test_local_ranges_read_what_the_whole_file_reads(tmp_path):
    path = tmp_path / "awkward.jsonl"
    path.write_bytes(AWKWARD)
    whole = read_all([FileRange(str(path))], LOCAL)
    for split_bytes in (1, 9, 50, 200):
        ranges = read_all(split_file(str(path), len(AWKWARD), split_bytes), LOCAL)
        assert ranges == expected_lines(AWKWARD)
        assert [line for _, line in ranges] == [line for _, line in whole]


@pytest.mark.integration
def test_s3_ranges_are_ranged_reads_of_the_object(s3):
    s3.create_bucket(Bucket="ranges")
    s3.put_object(Bucket="ranges", Key="out.jsonl", Body=AWKWARD)
    access = SourceAccess("s3", SAGEMAKER_REQUEST["credential"])
    for split_bytes in (60,):
        parts = split_file("s3://ranges/out.jsonl", len(AWKWARD), split_bytes)
        assert read_all(parts, access) == expected_lines(AWKWARD)


def single_source_request(path: str, index: str) -> dict:
    s3 = path.startswith("s3://")
    return {
        "index_name": index,
        "field_map": {"chapter": "$.content[0]", "chapter_embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
        "credential": SAGEMAKER_REQUEST["credential"] if s3 else {},
        "data_source": {"type": "s3" if s3 else "local", "source": [path]},
    }


def sagemaker_with_bad_lines() -> bytes:
    lines = jsonl(sagemaker_lines(12, 4)).splitlines(keepends=True)
    lines.insert(4, b"{not json\r\n")
    lines.insert(9, b'{"content": ["no id"], "SageMakerOutput": [[0.1, 0.2, 0.3, 0.4]]}\n')
    lines.insert(11, b"\n")
    return b"".join(lines) + b'{"id": 99, "content": ["short vector"], "SageMakerOutput": [[1.0]]}'


def run_split_and_whole(capsys, tmp_path, url: str, path: str, data: bytes, split: str) -> None:
    """The same single-source request read whole and in `split`-byte ranges: same documents, same
    dead letters, each byte offset pointing at its line in `data`."""
    results = {}
    for split_bytes in ("0", split):
        directory = tmp_path / f"split-{split_bytes}"
        directory.mkdir()
        index = f"ranges-{split_bytes}"
        code, record = run_ingest(
            capsys,
            directory,
            single_source_request(path, index),
            url,
            "--split-bytes",
            split_bytes,
            index_body=knn_index_body(["chapter_embedding"], 4),
        )
        assert code == 3, record
        assert (
            record["counts"]["accounted_by_source"] == record["counts"]["read_by_source"] == {"source[0]": 15}
        )
        results[split_bytes] = (indexed_documents(url, index), dead_letters(record))
    assert results["0"][0] == results[split][0] and len(results["0"][0]) == 12
    line_starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    whole = sorted((e["line"], e["stage"], e["reason"], e["raw"]) for e in results["0"][1])
    located = []
    for entry in results[split][1]:
        offset = entry["byte_offset"]
        assert data[offset:].split(b"\n")[0].rstrip(b"\r").decode() == entry["raw"]
        located.append((line_starts.index(offset) + 1, entry["stage"], entry["reason"], entry["raw"]))
    assert sorted(located) == whole and len(whole) == 3


@pytest.mark.integration
def test_a_split_local_file_ingests_as_the_whole_file_with_dead_letters_at_their_offsets(
    osmem_url, capsys, tmp_path
):
    data = sagemaker_with_bad_lines()
    path = tmp_path / "out.jsonl"
    path.write_bytes(data)
    run_split_and_whole(capsys, tmp_path, osmem_url, str(path), data, "300")


@pytest.mark.integration
def test_a_split_s3_object_ingests_as_the_whole_object(s3, osmem_url, capsys, tmp_path):
    data = sagemaker_with_bad_lines()
    s3.create_bucket(Bucket="split")
    s3.put_object(Bucket="split", Key="out/part.jsonl", Body=data)
    run_split_and_whole(capsys, tmp_path, osmem_url, "s3://split/out/part.jsonl", data, "700")


@pytest.mark.integration
def test_compressed_files_and_derived_ids_are_read_whole(osmem_url, capsys, tmp_path, logged):
    def ranges_logged() -> bool:
        found = any(re.search(r"read as \d+ byte ranges", line) for line in logged.lines)
        logged.lines.clear()
        return found

    lines = jsonl(sagemaker_lines(10, 4))
    (tmp_path / "out.jsonl.gz").write_bytes(gzip.compress(lines))
    request = single_source_request(str(tmp_path / "out.jsonl.gz"), "gz")
    index = knn_index_body([], 4)
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, "--split-bytes", "100", index_body=index)
    assert code == 0 and record["counts"]["indexed"] == 10, record.get("error")
    assert not ranges_logged()
    (tmp_path / "plain.jsonl").write_bytes(lines)
    request = single_source_request(str(tmp_path / "plain.jsonl"), "plain")
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, "--split-bytes", "100", index_body=index)
    assert code == 0 and ranges_logged()  # the same lines uncompressed are split: the check can fail
    request = {
        **single_source_request(str(tmp_path / "plain.jsonl"), "derived"),
        "field_map": {"chapter": "$.content[0]"},
    }
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, "--split-bytes", "100", index_body=index)
    assert code == 0 and record["counts"]["indexed"] == 10, record.get("error")
    assert not ranges_logged()
    whole = set(indexed_documents(osmem_url, "derived"))
    request = {**request, "index_name": "derived-whole"}
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, "--split-bytes", "0", index_body=index)
    assert code == 0 and set(indexed_documents(osmem_url, "derived-whole")) == whole


def test_dead_letters_of_split_files_give_byte_offsets():
    letter = DeadLetter("parse", "bad", (Locator(0, "s3://b/k", 1234, True), Locator(1, "in.jsonl", 3)), "x")
    entry = letter.to_json("t")
    assert entry["byte_offset"] == 1234 and "line" not in entry
    assert entry["origins"] == [
        {"source": "s3://b/k", "byte_offset": 1234},
        {"source": "in.jsonl", "line": 3},
    ]
    assert str(Locator(0, "s3://b/k", 1234, True)) == "s3://b/k (byte 1234)"
    assert json.dumps(entry)

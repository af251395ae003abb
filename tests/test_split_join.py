"""The broadcast join of a streamed file split into byte ranges gives the whole-file join's index,
dead letters and counts: its pure cores on random files and boundaries, then the real pipeline."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from connectors.byte_ranges import FileRange
from tests.data import jsonl, knn_index_body, openai_batch_files
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest
from tests.test_join_strategies import three_file_request
from transforms import counters
from transforms.buckets import bucket_of
from transforms.merge import JoinTally, index_by_id
from transforms.range_settle import (
    Rewrite,
    SideIndex,
    StreamedFile,
    lose,
    losers_of,
    rewrite_winner,
    settle_bucket,
)
from transforms.stream_join import Claim, stream_join, stream_range
from transforms.types import DeadLetter, Document, IngestPlan, Locator, SourcePlan

URI = "output.jsonl"
FILES = (StreamedFile(URI, True),)
ORDER = ("embedding", "question", "custom_field1")


def plan(join: str) -> IngestPlan:
    sources = tuple(SourcePlan(index, f"s{index}", None, ()) for index in range(3))
    return IngestPlan("joined", "local", sources, ORDER, join)


def random_case(rng: random.Random) -> tuple[list, list]:
    """(streamed records and read rejections in file order, side batches) with duplicates in
    the streamed file and a small source, keys missing from some source and keys only the side has."""
    keys = [f"k{i}" for i in range(rng.randrange(1, 25))]
    streamed, offset = [], 0
    for _ in range(rng.randrange(0, 40)):
        offset += rng.randrange(1, 50)
        if rng.random() < 0.1:
            streamed.append(DeadLetter("parse", "bad", (Locator(0, URI, offset, True),), "{x"))
        else:
            streamed.append((rng.choice(keys), offset, {"embedding": [float(offset)]}))
    side = []
    for source, name in ((1, "question"), (2, "custom_field1")):
        records = [
            (key, line, {name: f"{key}@{line}"})
            for line, key in enumerate(rng.sample(keys, k=len(keys) // 2), 1)
        ]
        records += [(rng.choice(keys), 100 + line, {name: "late"}) for line in range(rng.randrange(0, 3))]
        side += [
            (source, FileRange(f"s{source}"), records[start : start + 3])
            for start in range(0, len(records), 3)
        ]
    return streamed, side


def writer_counts(documents: list[Document]) -> Counter:
    """What the write step counts for documents it writes in this order, all accepted."""
    counts: Counter = Counter()
    written = set()
    for document in documents:
        counts[counters.INDEXED] += 1
        counts[counters.UPDATED] += document.doc_id in written
        written.add(document.doc_id)
        for origin in document.origins:
            counts[counters.accounted_by_source(origin.source)] += 1
    return counts


def final_index(
    rng, first_writes: list[Document], second_writes: list[Document], tally, counts: Counter
) -> dict:
    """The index after the units' first writes (in no set order) and the rewrites after them;
    the join's and the writer's counts added to `counts`."""
    rng.shuffle(first_writes)
    index = {document.doc_id: document for document in first_writes + second_writes}
    counts.update(tally.take_counts())
    counts.update(writer_counts(first_writes + second_writes))
    return index


def nonzero(counts: Counter) -> dict[str, int]:
    return {name: count for name, count in counts.items() if count}


def whole_join(streamed: list, side: list, join: str):
    tally = JoinTally()
    whole = FileRange(URI, 0, 10**9)  # a file located by byte offset, read by one element
    joined = list(stream_join(streamed, 0, whole, index_by_id(side), plan(join), tally))
    documents = [item for item in joined if type(item) is Document]
    counts = Counter(tally.take_counts()) + writer_counts(documents)
    return (
        {d.doc_id: d for d in documents},
        sorted(map(repr, (i for i in joined if type(i) is DeadLetter))),
        counts,
    )


def split_join(streamed: list, side: list, join: str, boundaries: list[int], rng: random.Random):
    """As `SplitBroadcastJoin`: each range on its own, its claims settled per bucket, rewrites last."""
    side_index = SideIndex(index_by_id(side))
    fields_at = {(0, record[1]): record[2] for record in streamed if type(record) is tuple}
    first_writes, dead, claims = [], [], []
    for start, end in zip(boundaries, boundaries[1:], strict=False):
        for item in stream_range(
            streamed[start:end], 0, 0, FileRange(URI, start, end), side_index.by_id, plan(join)
        ):
            {Document: first_writes, DeadLetter: dead, Claim: claims}[type(item)].append(item)
    tally, rewrites, counts = JoinTally(), [], Counter()
    by_bucket: dict[int, list[Claim]] = {bucket_of(doc_id): [] for doc_id in side_index.by_id}
    for claim in claims:
        by_bucket.setdefault(bucket_of(claim.doc_id), []).append(claim)
    for bucket, mine in by_bucket.items():  # the other buckets have nothing to settle
        for item in settle_bucket(
            mine, side_index.ids_in(bucket), side_index.by_id, plan(join), 0, FILES, tally
        ):
            {Document: first_writes, DeadLetter: dead, Rewrite: rewrites}[type(item)].append(item)
    second_writes = []
    for rewrite in rewrites:
        document, fixed = rewrite_winner(rewrite, fields_at[rewrite.winner], plan(join), 0, FILES)
        counts.update(fixed)
        second_writes += [document] if document else []
        for loser in losers_of(rewrite, 0, FILES):
            letter, lost = lose(loser, fields_at[loser.at], 0, FILES)
            dead.append(letter)
            counts.update(lost)
    return final_index(rng, first_writes, second_writes, tally, counts), sorted(map(repr, dead)), counts


@pytest.mark.parametrize("join", ["outer", "inner"])
def test_random_files_split_anywhere_join_as_the_whole_file(join):
    rng = random.Random(join)
    for _ in range(200):
        streamed, side = random_case(rng)
        cuts = sorted(rng.sample(range(1, len(streamed) + 1), k=min(len(streamed), rng.randrange(0, 6))))
        boundaries = [0, *dict.fromkeys(cuts), len(streamed)] if streamed else [0, 0]
        documents, dead, counts = whole_join(streamed, side, join)
        split_documents, split_dead, split_counts = split_join(streamed, side, join, boundaries, rng)
        assert split_documents == documents
        assert split_dead == dead
        assert nonzero(split_counts) == nonzero(counts)


def test_a_key_first_met_in_two_ranges_is_rewritten_with_the_first_record():
    side = [(1, FileRange("s1"), [("k", 1, {"question": "q"})])]
    streamed = [
        ("k", 10, {"embedding": [1.0]}),
        ("k", 20, {"embedding": [2.0]}),
        ("k", 30, {"embedding": [3.0]}),
    ]
    claims = [
        item
        for part in ([streamed[0]], streamed[1:])
        for item in stream_range(part, 0, 0, FileRange(URI, 0, 1), index_by_id(side), plan("outer"))
        if type(item) is Claim
    ]
    assert claims == [
        Claim("k", 0, 10, None),
        Claim("k", 0, 20, None),
        Claim("k", 0, 30, {"embedding": [3.0]}),
    ]
    settled = list(settle_bucket(claims, ["k"], index_by_id(side), plan("outer"), 0, FILES, JoinTally()))
    rewrite = next(item for item in settled if type(item) is Rewrite)
    assert (rewrite.winner, rewrite.losers) == ((0, 10), ((0, 20),))
    duplicate = next(item for item in settled if type(item) is DeadLetter)
    assert duplicate.reason == f"duplicate _id 'k' in source[0]; the record at {URI} (byte 10) was kept"
    document, counts = rewrite_winner(rewrite, {"embedding": [1.0]}, plan("outer"), 0, FILES)
    assert document.fields == {"embedding": [1.0], "question": "q"}
    (loser,) = losers_of(rewrite, 0, FILES)
    letter, lost = lose(loser, {"embedding": [2.0]}, 0, FILES)
    assert letter.origins == (Locator(0, URI, 20, True),)
    assert letter.reason == duplicate.reason  # the winner at byte 10 was kept
    assert lost == {"duplicates": 1}
    assert counts == {
        "indexed": -2,
        "updated": -2,
        "accounted.source[0]": -2,
        "accounted.source[1]": -2,
    }


def split_join_request(directory, strategy: str) -> dict:
    """Batch output lines of about 300 bytes: duplicates next to each other and far apart, keys
    only in the input, a duplicate in the input, malformed lines among them."""
    outputs, inputs, metadata = openai_batch_files(16, 4)
    outputs = [record for record in outputs if record["custom_id"] not in ("request-15", "request-16")]
    outputs.insert(1, {**outputs[9], "id": "early duplicate"})
    outputs.insert(5, {**outputs[5], "id": "next duplicate"})
    outputs.append({**outputs[2], "id": "last duplicate"})
    inputs.append({"custom_id": "request-4", "body": {"input": ["late duplicate"]}})
    inputs.append({"custom_id": "only-in-input", "body": {"input": ["lonely"]}})
    lines = jsonl(outputs).splitlines(keepends=True)
    lines[4:4] = [b"{not json\n"]
    lines[9:9] = [b'{"custom_id": ["not", "an", "id"]}\r\n']
    (directory / "output.jsonl").write_bytes(b"".join(lines) + b"{truncated")
    return three_file_request(directory, inputs, metadata, f"joined-{strategy}")


COMPARED = (
    "read",
    "keys",
    "incomplete",
    "duplicates",
    "join_dropped",
    "merged_records",
    "indexed",
    "created",
    "dlq",
)


def line_of(path: str, offset: int) -> int:
    """The 1-based line of the file `path` that starts at byte `offset`."""
    data = Path(path).read_bytes()
    return [0, *(i + 1 for i, byte in enumerate(data) if byte == ord("\n"))].index(offset) + 1


def normalized_dead_letters(record: dict, directory: Path) -> list[tuple]:
    """(stage, reason, file, line) of each entry, byte offsets (in the reason too) turned into lines."""
    found = []
    for entry in dead_letters(record):
        reason = re.sub(
            r"(\S+) \(byte (\d+)\)", lambda m: f"{m[1]}:{line_of(m[1], int(m[2]))}", entry["reason"]
        )
        line = entry["line"] if "line" in entry else line_of(entry["source"], entry["byte_offset"])
        found.append(
            (entry["stage"], reason.replace(str(directory), "DIR"), Path(entry["source"]).name, line)
        )
    return sorted(found)


@pytest.mark.integration
@pytest.mark.parametrize("join", ["outer", "inner"])
def test_a_split_broadcast_join_indexes_what_the_whole_file_join_does(osmem_url, capsys, tmp_path, join):
    results = {}
    for name, options in (
        ("whole", ("--join-strategy", "broadcast", "--split-bytes", "0")),
        ("split", ("--join-strategy", "broadcast", "--split-bytes", "700")),
        ("shuffle", ("--join-strategy", "shuffle", "--split-bytes", "700")),
    ):
        directory = tmp_path / name
        directory.mkdir()
        code, record = run_ingest(
            capsys,
            directory,
            split_join_request(directory, name),
            osmem_url,
            *options,
            "--join",
            join,
            index_body=knn_index_body(["question_embedding"], 4),
        )
        assert code == 3, record.get("error")
        counts = record["counts"]
        assert counts["accounted_by_source"] == counts["read_by_source"]
        results[name] = (
            indexed_documents(osmem_url, f"joined-{name}"),
            {name: counts[name] for name in COMPARED},
            normalized_dead_letters(record, directory),
        )
        assert all(("byte_offset" in entry) == (name != "whole") for entry in dead_letters(record))
    assert results["split"] == results["whole"]
    assert results["shuffle"] == results["whole"]
    documents, counts, letters = results["whole"]
    assert counts["duplicates"] == 4 and counts["dlq"] == 7
    assert documents["request-4"]["question"] == "question 4?"
    assert (join == "outer") == ("only-in-input" in documents)


@pytest.mark.integration
def test_with_action_create_the_streamed_file_is_read_whole(osmem_url, capsys, tmp_path):
    request = split_join_request(tmp_path, "create")
    code, record = run_ingest(
        capsys,
        tmp_path,
        request,
        osmem_url,
        "--join-strategy",
        "broadcast",
        "--split-bytes",
        "700",
        "--action",
        "create",
        index_body=knn_index_body(["question_embedding"], 4),
    )
    assert code == 3, record.get("error")
    assert record["counts"]["accounted_by_source"] == record["counts"]["read_by_source"]
    where = {(Path(entry["source"]).name, "line" in entry) for entry in dead_letters(record)}
    assert where == {("output.jsonl", True), ("input.jsonl", False)}
    assert indexed_documents(osmem_url, "joined-create")["request-4"]["question"] == "question 4?"

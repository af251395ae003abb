"""The broadcast join of a streamed source of several files gives the shuffle join's index, dead
letters and counts: its pure cores on random files (some whole, some split into byte ranges),
then real runs of the CLI, shuffle against auto, with a gzip file among the streamed files."""

from __future__ import annotations

import gzip
import random
from collections import Counter

import pytest

from connectors.byte_ranges import FileRange
from tests.data import jsonl, knn_index_body, openai_batch_files
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest
from tests.test_join_strategies import three_file_request
from tests.test_split_join import final_index, nonzero, plan, writer_counts
from transforms.buckets import bucket_of
from transforms.merge import JoinTally, index_by_id, join_batches
from transforms.range_settle import Rewrite, SideIndex, lose, rewrite_winner, settle_bucket, streamed_files
from transforms.split_finish import ReadBackTasks
from transforms.stream_join import Claim, stream_range
from transforms.types import DeadLetter, Document, Locator

Unit = tuple[FileRange, list]  # a whole file or a byte range, and its records in file order


def random_files(rng: random.Random, keys: list[str]) -> list[Unit]:
    """The streamed source's units: 1 to 4 files (named in no set order), each whole (located by
    line) or split into ranges (by byte offset), with duplicates within and across files."""
    units: list[Unit] = []
    for number in rng.sample(range(100), k=rng.randrange(1, 5)):
        uri, split = f"out-{number:02d}.jsonl", rng.random() < 0.5
        records, position = [], 0
        for _ in range(rng.randrange(0, 15)):
            position += rng.randrange(1, 40) if split else 1
            if rng.random() < 0.1:
                records.append(DeadLetter("parse", "bad", (Locator(0, uri, position, split),), "{x"))
            else:
                records.append((rng.choice(keys), position, {"embedding": [float(number * 1000 + position)]}))
        if not split:
            units.append((FileRange(uri), records))
            continue
        cuts = sorted(rng.sample(range(1, len(records) + 1), k=min(len(records), rng.randrange(0, 4))))
        bounds = [0, *dict.fromkeys(cuts), len(records)]
        offsets = (
            [0] + [r[1] if type(r) is tuple else r.origins[0].position for r in records[1:]] + [position + 1]
        )
        units += [
            (FileRange(uri, offsets[start], offsets[end]), records[start:end])
            for start, end in zip(bounds, bounds[1:], strict=False)
        ]
    return units


def random_side(rng: random.Random, keys: list[str]) -> list:
    """Batches of the two small sources, with duplicates and keys no file has."""
    side = []
    for source, name in ((1, "question"), (2, "custom_field1")):
        records = [
            (key, line, {name: f"{key}@{line}"})
            for line, key in enumerate(rng.sample(keys, len(keys) // 2), 1)
        ]
        records += [(rng.choice(keys), 100 + line, {name: "late"}) for line in range(rng.randrange(0, 3))]
        side += [
            (source, FileRange(f"s{source}"), records[start : start + 3])
            for start in range(0, len(records), 3)
        ]
    return side


def shuffle_reference(units: list[Unit], side: list, join: str):
    """`join_batches` on every record of every source (bucketing changes nothing), as `JoinSources`."""
    tally = JoinTally()
    batches = [(0, part, [r for r in records if type(r) is tuple]) for part, records in units] + side
    joined = list(join_batches(batches, plan(join), tally))
    read_dead = [r for _, records in units for r in records if type(r) is DeadLetter]
    documents = [item for item in joined if type(item) is Document]
    counts = Counter(tally.take_counts()) + writer_counts(documents)
    dead = [item for item in joined if type(item) is DeadLetter] + read_dead
    return {d.doc_id: d for d in documents}, sorted(map(repr, dead)), counts


def units_join(units: list[Unit], side: list, join: str, rng: random.Random):
    """As `SplitBroadcastJoin` + `FinishSplitJoin`: units in any order, claims settled per bucket,
    the rewrites' records read back by (file, position) and written last."""
    files = streamed_files(part for part, _ in units)
    number = {file.uri: index for index, file in enumerate(files)}
    side_index = SideIndex(index_by_id(side))
    fields_at = {
        (number[part.uri], r[1]): r[2] for part, records in units for r in records if type(r) is tuple
    }
    first_writes, dead, claims = [], [], []
    for part, records in rng.sample(units, len(units)):
        for item in stream_range(records, 0, number[part.uri], part, side_index.by_id, plan(join)):
            {Document: first_writes, DeadLetter: dead, Claim: claims}[type(item)].append(item)
    tally, rewrites, counts = JoinTally(), [], Counter()
    by_bucket: dict[int, list[Claim]] = {bucket_of(doc_id): [] for doc_id in side_index.by_id}
    for claim in claims:
        by_bucket.setdefault(bucket_of(claim.doc_id), []).append(claim)
    for bucket, mine in by_bucket.items():
        for item in settle_bucket(
            mine, side_index.ids_in(bucket), side_index.by_id, plan(join), 0, files, tally
        ):
            {Document: first_writes, DeadLetter: dead, Rewrite: rewrites}[type(item)].append(item)
    second_writes = []
    tasks = ReadBackTasks(0, files, [part for part, _ in units])
    for (file, start), task in (keyed for rewrite in rewrites for keyed in tasks(rewrite)):
        at = task.winner if type(task) is Rewrite else task.at
        unit = next(part for part, _ in units if number[part.uri] == file and part.start == start)
        assert any(type(r) is tuple and r[1] == at[1] for r in dict(units)[unit])  # read back from its unit
        if type(task) is Rewrite:
            document, fixed = rewrite_winner(task, fields_at[at], plan(join), 0, files)
            second_writes += [document] if document else []
        else:
            letter, fixed = lose(task, fields_at[at], 0, files)
            dead.append(letter)
        counts.update(fixed)
    return final_index(rng, first_writes, second_writes, tally, counts), sorted(map(repr, dead)), counts


@pytest.mark.parametrize("join", ["outer", "inner"])
def test_random_multi_file_sources_join_as_the_shuffle_join(join):
    rng = random.Random(f"multi-{join}")
    rewritten = 0
    for _ in range(300):
        keys = [f"k{i}" for i in range(rng.randrange(1, 20))]
        units, side = random_files(rng, keys), random_side(rng, keys)
        documents, dead, counts = shuffle_reference(units, side, join)
        unit_documents, unit_dead, unit_counts = units_join(units, side, join, rng)
        assert unit_documents == documents
        assert unit_dead == dead
        assert nonzero(unit_counts) == nonzero(counts)
        rewritten += any("was kept" in letter for letter in dead)
    assert rewritten > 100  # duplicates were common, across files among them


def multi_file_request(directory) -> dict:
    """Batch outputs in 3 files, one gzip: duplicates within a file (next to each other and far
    apart), across files (both ways of the file order), malformed lines, keys only in the input and
    a duplicate in the input."""
    outputs, inputs, metadata = openai_batch_files(20, 4)
    by_id = {record["custom_id"]: record for record in outputs}
    files = {
        "a.jsonl": [f"request-{i}" for i in (1, 2, 3, 4, 5, 3, 6, 7, 8)],
        "b.jsonl.gz": [f"request-{i}" for i in (9, 10, 10, 2, 11, 12, 13, 14)],
        "c.jsonl": [f"request-{i}" for i in (15, 9, 16, 1, 17, 18, 16)],
    }
    (directory / "out").mkdir()
    for name, ids in files.items():
        records = [{**by_id[doc_id], "id": f"{name}:{line}"} for line, doc_id in enumerate(ids, 1)]
        lines = jsonl(records).splitlines(keepends=True)
        lines[3:3] = [b"{not json\n"]
        data = b"".join(lines)
        (directory / "out" / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    inputs.append({"custom_id": "request-4", "body": {"input": ["late duplicate"]}})
    inputs.append({"custom_id": "only-in-input", "body": {"input": ["lonely"]}})
    request = three_file_request(directory, inputs, metadata, "joined")
    request["data_source"]["source"][0] = str(directory / "out")
    return request


def normalized(record: dict, directory) -> list[tuple]:
    return sorted(
        (
            entry["stage"],
            entry["reason"].replace(str(directory), "DIR"),
            entry["source"].replace(str(directory), "DIR"),
            entry.get("line"),
            entry.get("byte_offset"),
        )
        for entry in dead_letters(record)
    )


COMPARED = ("read", "keys", "incomplete", "duplicates", "join_dropped", "merged_records", "indexed", "dlq")


@pytest.mark.integration
@pytest.mark.parametrize("join", ["outer", "inner"])
def test_a_multi_file_source_streams_and_indexes_what_the_shuffle_join_does(
    osmem_url, capsys, tmp_path, logged, join
):
    results = {}
    for name, options in (
        ("shuffle-split", ("--join-strategy", "shuffle", "--split-bytes", "600")),
        ("auto-split", ("--split-bytes", "600")),
        ("shuffle-whole", ("--join-strategy", "shuffle", "--split-bytes", "0")),
        ("broadcast-whole", ("--join-strategy", "broadcast", "--split-bytes", "0")),
    ):
        directory = tmp_path / name
        directory.mkdir()
        request = {**multi_file_request(directory), "index_name": f"joined-{name}"}
        logged.lines.clear()
        code, record = run_ingest(
            capsys,
            directory,
            request,
            osmem_url,
            *options,
            "--join",
            join,
            index_body=knn_index_body(["question_embedding"], 4),
        )
        assert code == 3, record.get("error")
        assert record["join_strategy"] == name.split("-")[0].replace("auto", "broadcast")
        assert record["counts"]["accounted_by_source"] == record["counts"]["read_by_source"]
        if "shuffle" not in name:
            assert any(
                line.startswith("broadcast join: source[0] streams (3 files);") for line in logged.lines
            )
        results[name] = (
            indexed_documents(osmem_url, f"joined-{name}"),
            {counter: record["counts"][counter] for counter in COMPARED},
            normalized(record, directory),
        )
    assert results["auto-split"] == results["shuffle-split"]
    assert results["broadcast-whole"] == results["shuffle-whole"]
    documents, counts, letters = results["auto-split"]
    assert any(position is not None for *_, position in letters)  # a.jsonl was read in ranges
    assert counts["duplicates"] == 7 and counts["dlq"] == 10
    kept = {
        (source.rsplit("/", 1)[1], reason.rsplit("/", 1)[1])
        for _, reason, source, *_ in letters
        if "kept" in reason
    }
    assert ("c.jsonl", "b.jsonl.gz:1 was kept") in kept  # request-9: the earlier file wins
    assert ("b.jsonl.gz", "a.jsonl (byte 0) was kept") not in kept
    assert (
        documents["request-2"]["question_embedding"]
        == results["shuffle-whole"][0]["request-2"]["question_embedding"]
    )
    assert (join == "outer") == ("only-in-input" in documents)

"""The two join strategies' pure cores on the same records: the shuffle join's `join_batches`
per `_id` bucket and the broadcast join's `stream_join` give the same documents, dead letters
and counts (no Beam, no files)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from connectors.byte_ranges import FileRange
from transforms.buckets import BucketBuffer
from transforms.merge import JoinTally, index_by_id, join_batches
from transforms.stream_join import stream_join
from transforms.types import DeadLetter, Document, IngestPlan, Locator, SourcePlan

URIS = ("output.jsonl", "input.jsonl", "meta.jsonl")
ORDER = ("question", "embedding", "custom_field1")


def plan(join: str) -> IngestPlan:
    sources = tuple(SourcePlan(index, uri, None, ()) for index, uri in enumerate(URIS))
    return IngestPlan("joined", "local", sources, ORDER, join)


def awkward_records() -> list[list[tuple[str, int, dict]]]:
    """`(doc_id, line, fields)` of 3 sources with every case a join meets: a key missing from the
    streamed source, a key only the input has, duplicates in the streamed file and in the input."""
    outputs = [(f"k{i}", line, {"embedding": [float(i)]}) for line, i in enumerate((3, 1, 0, 2, 5), 1)]
    outputs.append(("k1", 7, {"embedding": [-7.0]}))
    inputs = [(f"k{i}", i + 1, {"question": f"q{i}?"}) for i in range(6)]
    inputs += [("k3", 20, {"question": "late"}), ("only-in-input", 21, {"question": "lonely"})]
    metadata = [(f"k{i}", i + 1, {"custom_field1": f"v{i}"}) for i in range(6)]
    return [outputs, inputs, metadata]


def in_batches(source: int, records: list, size: int = 2) -> list[tuple[int, FileRange, list]]:
    part = FileRange(URIS[source])
    return [(source, part, records[start : start + size]) for start in range(0, len(records), size)]


def shuffle_join(records_by_source: list[list], join: str) -> tuple[list, JoinTally]:
    """As `JoinSources`: each source's records bucketed by `_id`, each bucket joined on its own."""
    by_bucket: dict[int, list] = defaultdict(list)
    for source, records in enumerate(records_by_source):
        buckets = BucketBuffer(flush_records=3)
        for start in range(0, len(records), 3):
            for record in records[start : start + 3]:
                buckets.add(*record)
            for bucket, batch in buckets.take().items():
                by_bucket[bucket].append((source, FileRange(URIS[source]), batch))
    tally, joined = JoinTally(), []
    for batches in by_bucket.values():
        joined += join_batches(batches, plan(join), tally)
    return joined, tally


def broadcast_join(
    records_by_source: list[list], join: str, rejected_by_read: list
) -> tuple[list, JoinTally]:
    """As `BroadcastJoin`: sources 1 and 2 held by `_id`, source 0 streamed in file order."""
    side = index_by_id([*in_batches(1, records_by_source[1]), *in_batches(2, records_by_source[2])])
    tally = JoinTally()
    streamed = [*rejected_by_read, *records_by_source[0]]
    return list(stream_join(streamed, 0, FileRange(URIS[0]), side, plan(join), tally)), tally


def by_kind(joined: list) -> tuple[dict[str, Document], list[DeadLetter]]:
    documents = {item.doc_id: item for item in joined if isinstance(item, Document)}
    assert len(documents) == sum(isinstance(item, Document) for item in joined)
    return documents, sorted((item for item in joined if isinstance(item, DeadLetter)), key=str)


@pytest.mark.parametrize("join", ["outer", "inner"])
def test_shuffle_and_broadcast_cores_make_the_same_documents_dead_letters_and_counts(join):
    parse_error = DeadLetter("parse", "not JSON", (Locator(0, URIS[0], 6),), "{not json")
    shuffled, shuffle_tally = shuffle_join(awkward_records(), join)
    streamed, stream_tally = broadcast_join(awkward_records(), join, [parse_error])
    assert parse_error in streamed  # the read step's rejects pass through the stream
    streamed.remove(parse_error)
    assert by_kind(shuffled) == by_kind(streamed)
    assert shuffle_tally == stream_tally
    documents, dead_letters = by_kind(shuffled)
    assert [dead.reason for dead in dead_letters] == [
        f"duplicate _id 'k1' in source[0]; the record at {URIS[0]}:2 was kept",
        f"duplicate _id 'k3' in source[1]; the record at {URIS[1]}:4 was kept",
    ]
    assert documents["k3"].fields == {"question": "q3?", "embedding": [3.0], "custom_field1": "v3"}
    assert documents["k1"].fields["embedding"] == [1.0]  # the first of k1's records in the streamed file
    if join == "outer":
        assert set(documents) == {"k0", "k1", "k2", "k3", "k4", "k5", "only-in-input"}
        assert documents["k4"].fields == {"question": "q4?", "custom_field1": "v4"}
        assert documents["only-in-input"].origins == (Locator(1, URIS[1], 21),)
        counts = {"keys": 7, "incomplete": 2, "duplicates": 2, "merged_records": 18}
    else:
        assert set(documents) == {"k0", "k1", "k2", "k3", "k5"}
        counts = {"keys": 7, "incomplete": 2, "join_dropped": 2, "duplicates": 2, "merged_records": 15}
        counts |= {"accounted.source[1]": 2, "accounted.source[2]": 1}
    assert stream_tally.take_counts() == counts


def test_a_merged_document_keeps_field_map_order_and_every_origin():
    documents, _ = by_kind(shuffle_join(awkward_records(), "outer")[0])
    assert list(documents["k0"].fields) == list(ORDER)
    assert documents["k0"].origins == (Locator(0, URIS[0], 3), Locator(1, URIS[1], 1), Locator(2, URIS[2], 1))


def test_taking_the_counts_starts_the_tally_anew():
    tally = JoinTally(keys=3, duplicates=1)
    tally.dropped_by_source[1] += 2
    assert tally.take_counts() == {"keys": 3, "duplicates": 1, "accounted.source[1]": 2}
    assert tally == JoinTally() and tally.take_counts() == {}

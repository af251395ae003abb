"""Read jobs: a whole broadcast join and a single source's documents, encoded in blocks, give what
the record-by-record cores give, in a helper process as in this one; the block coder sizes
blocks without encoding them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from connectors.byte_ranges import FileRange
from connectors.opensearch.mapping import KnnField
from connectors.sources import SourceAccess
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from tests.data import OPENAI_REQUEST, jsonl, openai_batch_files, sagemaker_lines
from transforms.block_coder import EncodedBlockCoder
from transforms.bulk_body import encode_action
from transforms.encoded import EncodedBlock, action_fields, encoded_blocks
from transforms.merge import JoinTally, index_by_id
from transforms.read_helper import HelperRead
from transforms.read_jobs import BroadcastJob, DocumentsJob, broadcast_job
from transforms.record_stream import Tally, projected_records
from transforms.stream_join import stream_join
from transforms.types import DeadLetter, Document, Locator

LOCAL = SourceAccess("local")
DIMENSION = 4


def openai_plan(paths: list[str]):
    request = {**OPENAI_REQUEST, "data_source": {"type": "local", "source": paths}}
    request.pop("credential")
    knn = {"question_embedding": KnnField(DIMENSION), "answer_embedding": KnnField(DIMENSION)}
    return with_vector_checks(compile_plan(parse_request(request)), knn)


def messy_openai_files(tmp_path) -> list[str]:
    """Batch output (with a duplicate, a bad vector, a malformed line), its input (with a key the
    output lacks, a record without an id) and metadata."""
    outputs, inputs, metadata = openai_batch_files(40, DIMENSION)
    bad_vector = json.loads(json.dumps(outputs[3]))
    bad_vector["custom_id"] = "request-bad"
    bad_vector["response"]["body"]["data"][0]["embedding"] = [1.0, 2.0]
    inputs.append({**inputs[0], "custom_id": "request-only-input"})
    inputs.append({"method": "POST"})
    files = {
        "output.jsonl": jsonl([*outputs[:10], outputs[2], bad_vector, *outputs[10:]]) + b"{oops\n",
        "input.jsonl": jsonl(inputs),
        "meta.jsonl": jsonl(metadata),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [str(tmp_path / name) for name in files]


def reference_join(plan, paths: list[str]) -> tuple[list, dict[str, int]]:
    """The broadcast join record by record: the side indexed, the streamed file joined, encoded."""
    counts: Counter[str] = Counter()
    batches, dead = [], []
    for index, path in list(enumerate(paths))[1:]:
        tally = Tally()
        records = list(projected_records(plan.sources[index], LOCAL, FileRange(path), tally))
        dead += [record for record in records if isinstance(record, DeadLetter)]
        batches.append((index, FileRange(path), [r for r in records if not isinstance(r, DeadLetter)]))
        counts.update(tally.counts(index))
    tally, join_tally = Tally(), JoinTally()
    streamed = projected_records(plan.sources[0], LOCAL, FileRange(paths[0]), tally)
    joined = list(stream_join(streamed, 0, FileRange(paths[0]), index_by_id(batches), plan, join_tally))
    counts.update(tally.counts(0))
    counts.update(join_tally.take_counts())
    return dead + joined, dict(counts)


def unblocked(frames) -> tuple[list, dict[str, int]]:
    """The frames' documents (decoded from their actions) and dead letters in order, counts summed."""
    items: list = []
    counts: Counter[str] = Counter()
    for frame, frame_counts in frames:
        counts.update(frame_counts)
        for item in frame:
            if type(item) is EncodedBlock:
                items += [
                    (doc_id, origins, action_fields(action))
                    for doc_id, origins, action in zip(item.doc_ids, item.origins, item.actions, strict=True)
                ]
            else:
                items.append(item)
    return items, counts


def decoded(items: list) -> list:
    return [
        (item.doc_id, item.origins, action_fields(encode_action(item))) if type(item) is Document else item
        for item in items
    ]


def test_a_broadcast_job_gives_the_record_by_record_join(tmp_path, monkeypatch):
    monkeypatch.setattr("transforms.encoded.BLOCK_DOCUMENTS", 7)
    paths = messy_openai_files(tmp_path)
    plan = openai_plan(paths)
    job = broadcast_job(plan, [[FileRange(path)] for path in paths], 0, LOCAL, "index")
    assert job == BroadcastJob(
        plan,
        0,
        FileRange(paths[0]),
        ((1, (FileRange(paths[1]),)), (2, (FileRange(paths[2]),))),
        "index",
        LOCAL,
    )
    items, counts = unblocked(job.frames())
    expected, expected_counts = reference_join(plan, paths)
    assert Counter(map(repr, items)) == Counter(map(repr, decoded(expected)))
    assert {name: count for name, count in counts.items() if count} == {
        name: count for name, count in expected_counts.items() if count
    }
    reasons = [item.reason for item in items if isinstance(item, DeadLetter)]
    duplicated = json.loads((tmp_path / "output.jsonl").read_text().splitlines()[2])["custom_id"]
    assert any(f"duplicate _id {duplicated!r}" in reason for reason in reasons)
    assert any("malformed JSON" in reason for reason in reasons)
    assert counts["keys"] == 41 and counts["incomplete"] == 21 and counts["duplicates"] == 1


@pytest.mark.integration
def test_the_helper_process_runs_the_same_broadcast_join(tmp_path):
    paths = messy_openai_files(tmp_path)
    job = broadcast_job(openai_plan(paths), [[FileRange(path)] for path in paths], 0, LOCAL, "create")
    here = unblocked(job.frames())
    helper = unblocked(HelperRead(job).frames())
    assert repr(helper) == repr(here) and len(here[0]) > 40
    actions = [
        action
        for frame, _ in job.frames()
        for block in frame
        if type(block) is EncodedBlock
        for action in block.actions
    ]
    assert actions and all(action.startswith(b'{"create":{"_id":') for action in actions)


def test_a_documents_job_encodes_each_record_as_its_document(tmp_path):
    path = tmp_path / "sagemaker.jsonl"
    lines = sagemaker_lines(12, DIMENSION)
    path.write_bytes(jsonl(lines[:5]) + b"[1]\n" + jsonl(lines[5:]))
    request = {
        "index_name": "i",
        "field_map": {"text": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(path)]},
    }
    source = with_vector_checks(
        compile_plan(parse_request(request)), {"embedding": KnnField(DIMENSION)}
    ).sources[0]
    items, counts = unblocked(DocumentsJob(source, FileRange(str(path)), "index", LOCAL).frames())
    assert [item[0] for item in items if type(item) is tuple] == [str(line["id"]) for line in lines]
    first = next(item for item in items if type(item) is tuple)
    assert first[1] == (Locator(0, str(path), 1),)
    assert first[2]["embedding"] == lines[0]["SageMakerOutput"][0]
    (dead,) = [item for item in items if isinstance(item, DeadLetter)]
    assert dead.origins == (Locator(0, str(path), 6),) and counts["read"] == 13 and counts["projected"] == 12


def test_a_document_that_is_not_json_leaves_as_a_dead_letter_and_the_block_goes_on():
    origin = (Locator(0, "f", 1),)
    documents = [
        Document("a", {"x": 1}, origin),
        Document("b", {"x": {1, 2}}, origin),
        Document("c", {}, origin),
    ]
    (dead, block) = sorted(encoded_blocks(documents, "index"), key=lambda item: type(item).__name__)
    assert type(block) is EncodedBlock and block.doc_ids == ["a", "c"]
    assert isinstance(dead, DeadLetter) and dead.stage == "validate" and dead.reason.startswith("not JSON")


def test_the_block_coder_round_trips_and_sizes_without_encoding(monkeypatch):
    block = EncodedBlock(
        ["a", None], [(Locator(0, "f", 1),), (Locator(1, "g", 9, True),)], [b"x" * 10, b"y" * 30]
    )
    coder = EncodedBlockCoder()
    assert coder.decode(coder.encode(block)) == block
    monkeypatch.setattr("transforms.block_coder.pickle.dumps", None)  # sizing must not pickle
    assert coder.estimate_size(block) == 40 + 2 * 64

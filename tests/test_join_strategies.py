"""Broadcast and shuffle joins: the strategy choice (pure), and the same answers through the real runner."""

from __future__ import annotations

import pytest

from pipelines.join_strategy import JoinStrategyError, choose_join_strategy
from tests.data import jsonl, knn_index_body, openai_batch_files
from tests.ingest_helpers import dead_letters, indexed_documents, run_ingest

MIB = 2**20


def test_auto_streams_the_largest_source_of_any_number_of_files():
    strategy = choose_join_strategy([[10 * MIB], [MIB], [MIB, MIB]])
    assert (strategy.name, strategy.streamed) == ("broadcast", 0)
    assert strategy.reason.startswith("source[0] streams (1 file);")
    assert choose_join_strategy([[MIB, MIB], [3 * MIB]]).streamed == 1
    several = choose_join_strategy([[2 * MIB] * 10, [3 * MIB]])
    assert (several.name, several.streamed) == ("broadcast", 0)
    assert several.reason.startswith("source[0] streams (10 files);")
    assert choose_join_strategy([[MIB, MIB], [MIB, MIB]]).streamed == 0


def test_auto_shuffles_when_the_held_sources_are_too_large():
    over = choose_join_strategy([[10 * MIB], [MIB]], broadcast_max_bytes=MIB - 1)
    assert over.name == "shuffle" and "over --broadcast-max-bytes" in over.reason
    over = choose_join_strategy([[5 * MIB, 5 * MIB], [MIB, MIB]], broadcast_max_bytes=2 * MIB - 1)
    assert over.name == "shuffle" and "beside source[0]" in over.reason


def test_with_action_create_only_a_single_file_source_streams():
    assert choose_join_strategy([[5 * MIB, 5 * MIB], [MIB]], ordered=True).streamed == 1
    assert choose_join_strategy([[MIB, MIB], [MIB, MIB]], ordered=True).name == "shuffle"
    with pytest.raises(JoinStrategyError, match="no source is a single file"):
        choose_join_strategy([[1, 2], [3, 4]], "broadcast", ordered=True)


def test_forced_strategies():
    assert choose_join_strategy([[10], [20]], "shuffle").name == "shuffle"
    assert choose_join_strategy([[10], [20]], "broadcast", broadcast_max_bytes=1).name == "broadcast"
    assert choose_join_strategy([[1, 2], [3, 4]], "broadcast").streamed == 1


def test_one_source_needs_no_join():
    assert choose_join_strategy([[10, 20]], "broadcast").name == "none"


def awkward_join(tmp_path) -> dict:
    """3 sources with every case a join meets: incomplete keys, keys only in the small
    sources, duplicates in the streamed file and in a small one, and a malformed line."""
    outputs, inputs, metadata = openai_batch_files(12, 4)
    outputs = [record for record in outputs if record["custom_id"] != "request-12"]
    outputs.insert(3, {**outputs[5], "id": "late duplicate"})
    inputs.append({"custom_id": "request-2", "body": {"input": ["late duplicate"]}})
    inputs.append({"custom_id": "only-in-input", "body": {"input": ["lonely"]}})
    (tmp_path / "output.jsonl").write_bytes(jsonl(outputs) + b"{not json\n")
    return three_file_request(tmp_path, inputs, metadata, "joined")


def three_file_request(directory, inputs: list, metadata: list, index_name: str) -> dict:
    """Writes the input and metadata files beside `directory/output.jsonl`; the request joining
    the three on `custom_id`."""
    (directory / "input.jsonl").write_bytes(jsonl(inputs))
    (directory / "meta.jsonl").write_bytes(jsonl(metadata))
    return {
        "index_name": index_name,
        "field_map": {
            "question": "source[1].$.body.input[0]",
            "question_embedding": "source[0].$.response.body.data[0].embedding",
            "_id": ["source[0].$.custom_id", "source[1].$.custom_id", "source[2].$.custom_id"],
        },
        "ingest_fields": ["source[2].$.custom_field1"],
        "data_source": {
            "type": "local",
            "source": [str(directory / f"{name}.jsonl") for name in ("output", "input", "meta")],
        },
    }


COMPARED = ("read", "keys", "incomplete", "duplicates", "join_dropped", "merged_records", "indexed", "dlq")


@pytest.mark.integration
@pytest.mark.parametrize("join", ["outer", "inner"])
def test_broadcast_and_shuffle_joins_index_the_same_documents(osmem_url, capsys, tmp_path, join):
    results = {}
    for strategy in ("shuffle", "broadcast"):
        directory = tmp_path / strategy
        directory.mkdir()
        request = {**awkward_join(directory), "index_name": f"joined-{strategy}"}
        code, record = run_ingest(
            capsys,
            directory,
            request,
            osmem_url,
            "--join-strategy",
            strategy,
            "--join",
            join,
            "--bulk-size",
            "5",
            index_body=knn_index_body(["question_embedding"], 4),
        )
        assert code == 3, record
        assert record["join_strategy"] == strategy
        assert record["counts"]["accounted_by_source"] == record["counts"]["read_by_source"]
        reasons = sorted(
            (entry["stage"], entry["reason"].replace(str(directory), "DIR"), entry["line"])
            for entry in dead_letters(record)
        )
        results[strategy] = (
            indexed_documents(osmem_url, f"joined-{strategy}"),
            {name: record["counts"][name] for name in COMPARED},
            reasons,
        )
    assert results["broadcast"] == results["shuffle"]
    documents, counts, reasons = results["broadcast"]
    assert counts["duplicates"] == 2 and counts["dlq"] == 3
    assert [stage for stage, _, _ in reasons] == ["map", "map", "parse"]
    assert documents["request-2"]["question"] == "question 2?"
    if join == "outer":
        assert len(documents) == 13
        assert documents["only-in-input"] == {"question": "lonely"}
        assert "question_embedding" not in documents["request-12"]
        assert documents["request-12"]["custom_field1"] == "value 12"
    else:
        assert set(documents) == {f"request-{i}" for i in range(2, 12, 2)}
        assert documents["request-4"] == {
            "question": "question 4?",
            "question_embedding": documents["request-4"]["question_embedding"],
            "custom_field1": "value 4",
        }


@pytest.mark.integration
def test_auto_broadcasts_only_while_the_held_sources_fit_the_limit(osmem_url, capsys, tmp_path):
    outputs, inputs, _ = openai_batch_files(6, 4)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jsonl").write_bytes(jsonl(outputs[:3]))
    (tmp_path / "out" / "b.jsonl").write_bytes(jsonl(outputs[3:]))
    (tmp_path / "input.jsonl").write_bytes(jsonl(inputs))
    request = {
        "index_name": "split",
        "field_map": {
            "question": "source[1].$.body.input[0]",
            "question_embedding": "source[0].$.response.body.data[0].embedding",
            "_id": "source[0].$.custom_id",
        },
        "data_source": {"type": "local", "source": [str(tmp_path / "out"), str(tmp_path / "input.jsonl")]},
    }
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body([], 4))
    assert code == 0, record
    assert record["join_strategy"] == "broadcast"  # the outputs are larger: their 2 files stream
    code, record = run_ingest(
        capsys, tmp_path, request, osmem_url, "--broadcast-max-bytes", "100", index_body=knn_index_body([], 4)
    )
    assert code == 0 and record["join_strategy"] == "shuffle", record
    assert len(indexed_documents(osmem_url, "split")) == 6


@pytest.mark.integration
def test_forced_broadcast_creating_without_a_single_file_source_fails_the_task_in_one_line(
    osmem_url, capsys, tmp_path
):
    outputs, inputs, _ = openai_batch_files(4, 4)
    for name, records in (("out", outputs), ("in", inputs)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.jsonl").write_bytes(jsonl(records[:2]))
        (tmp_path / name / "b.jsonl").write_bytes(jsonl(records[2:]))
    request = {
        "index_name": "forced",
        "field_map": {
            "question_embedding": "source[0].$.response.body.data[0].embedding",
            "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
        },
        "data_source": {"type": "local", "source": [str(tmp_path / "out"), str(tmp_path / "in")]},
    }
    forced = ("--join-strategy", "broadcast", "--action", "create")
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, *forced, index_body=knn_index_body([], 4))
    assert code == 1 and record["state"] == "FAILED"
    assert record["error"] == (
        "--join-strategy broadcast: no source is a single file (--action create streams one file in order)"
    )
    assert "Traceback" not in capsys.readouterr().err

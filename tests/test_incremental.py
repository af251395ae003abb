"""`--incremental` and `--resume`: the manifest's rules, then real runs of the CLI against a local
index server (a re-run reads nothing, a rewritten file is read again, several sources re-run
whole), and a run SIGKILLed midway resumed to the index an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from connectors.byte_ranges import FileRange
from connectors.manifest import Manifest, manifest_path
from connectors.manifest_rules import FileState, Recorded, Unit, fingerprint, is_done, resume_chain, units_of
from pipelines.cli import main
from pipelines.incremental_run import IncrementalRun
from pipelines.ingest_options import IngestOptions, IngestOptionsError
from tests.data import jsonl, knn_index_body
from tests.ingest_helpers import indexed_documents, run_mlbatch, write_request
from tests.ingest_helpers import run_ingest as run_cli
from tests.test_task_lifecycle import processes, wait_for  # noqa: F401 - `processes` is a fixture

MAPPING = knn_index_body(["vec"], 3)
A, B, C = (FileState(0, f"/d/{name}.jsonl", 10, "1") for name in "abc")


def recorded(*states: FileState, task: str = "t1") -> dict:
    return {state.key: Recorded(state, task) for state in states}


# -- the rules, pure ----------------------------------------------------------------------------


def test_one_source_is_one_unit_per_file_holding_all_its_ranges():
    reads = ((FileRange(A.uri, 0, 5), FileRange(A.uri, 5, 10), FileRange(B.uri)),)
    units = units_of(reads, [A, B])
    assert [unit.files for unit in units] == [(A,), (B,)]
    assert units[0].reads == ((FileRange(A.uri, 0, 5), FileRange(A.uri, 5, 10)),)


def test_several_sources_are_one_unit():
    other = FileState(1, "/e/x.jsonl", 3, "9")
    (unit,) = units_of(((FileRange(A.uri),), (FileRange(other.uri),)), [A, other])
    assert unit.files == (A, other)


def test_a_file_recorded_unchanged_is_done_and_a_changed_or_unknown_one_is_not():
    unit = Unit((A,), ((FileRange(A.uri),),))
    assert is_done(unit, recorded(A), None)
    assert not is_done(unit, recorded(FileState(0, A.uri, 10, "2")), None)
    assert not is_done(unit, recorded(FileState(0, A.uri, 11, "1")), None)
    assert not is_done(unit, recorded(FileState(1, A.uri, 10, "1")), None)
    assert not is_done(unit, {}, None)


def test_resume_counts_only_files_the_resumed_tasks_recorded():
    unit = Unit((A,), ((FileRange(A.uri),),))
    assert is_done(unit, recorded(A, task="old"), ["old"])
    assert not is_done(unit, recorded(A, task="other"), ["old", "older"])


def test_several_sources_are_done_only_when_one_run_recorded_exactly_their_files():
    other = FileState(1, "/e/x.jsonl", 3, "9")
    unit = Unit((A, other), ((FileRange(A.uri),), (FileRange(other.uri),)))
    assert is_done(unit, recorded(A, other), None)
    assert not is_done(unit, {**recorded(A), **recorded(other, task="t2")}, None)
    assert not is_done(unit, recorded(A, other, B), None)  # that run joined B too


def test_resume_chain_follows_the_resumed_tasks_once():
    resumed = {"c": "b", "b": "a", "a": None, "x": "y", "y": "x"}
    assert resume_chain("c", resumed.get) == ["c", "b", "a"]
    assert resume_chain("x", resumed.get) == ["x", "y"]


def test_the_fingerprint_changes_with_the_field_map_the_cluster_and_the_quantisation_only():
    base = fingerprint("local", {"v": "$.v"}, [], "outer", "http://a:9200")
    assert base == fingerprint("local", {"v": "$.v"}, [], "outer", "http://a:9200")
    assert base != fingerprint("local", {"w": "$.v"}, [], "outer", "http://a:9200")
    assert base != fingerprint("local", {"v": "$.v"}, [], "outer", "http://b:9200")
    quantised = fingerprint("local", {"v": "$.v"}, [], "outer", "http://a:9200", 127.0)
    assert base != quantised != fingerprint("local", {"v": "$.v"}, [], "outer", "http://a:9200", 254.0)


def test_the_progress_bar_plans_only_the_files_a_run_reads():
    first, second = (FileState(0, name, 10, "v") for name in ("a", "b"))
    run = IncrementalRun(None, "print", "task", (Unit((second,), ()),), (Unit((first,), ()),), False, None)
    assert run.files_to_read([[("a", 10), ("b", 10)]]) == ((("b", 10),),)


def test_the_manifest_keeps_one_entry_per_file_the_latest(mlbatch_home):
    manifest = Manifest(manifest_path("docs"))
    manifest.record("fp", [A, B], "t1", {"read": 2})
    manifest.record("fp", [FileState(0, A.uri, 20, "5")], "t2", {"read": 4})
    entries = manifest.entries("fp")
    assert entries[A.key] == Recorded(FileState(0, A.uri, 20, "5"), "t2", {"read": 4})
    assert entries[B.key].task_id == "t1" and manifest.entries("other") == {}
    assert manifest.path == mlbatch_home / "manifests" / "docs.sqlite"


def test_cluster_assigned_ids_are_refused_with_incremental_and_resume():
    for more in ({"incremental": True}, {"resume": "abc"}):
        with pytest.raises(IngestOptionsError, match="--cluster-ids"):
            IngestOptions(cluster_ids=True, **more)


# -- real runs ----------------------------------------------------------------------------------


def run_ingest(capsys, tmp_path: Path, request: dict, url: str, *extra: str) -> tuple[int, dict]:
    return run_cli(capsys, tmp_path, request, url, *extra, index_body=MAPPING)


def write_files(directory: Path, sizes: list[int], tag: str = "") -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = []
    for number, size in enumerate(sizes):
        path = directory / f"part-{number}.jsonl"
        rows = [{"id": f"f{number}-{i}", "vec": [number, i, 1.0], "tag": tag} for i in range(size)]
        path.write_bytes(jsonl(rows))
        paths.append(path)
    return paths


def one_source_request(directory: Path) -> dict:
    return {
        "index_name": "incremental",
        "field_map": {"vec": "$.vec", "tag": "$.tag", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(directory / "*.jsonl")]},
    }


@pytest.mark.integration
def test_an_incremental_rerun_reads_nothing_and_says_so(capsys, tmp_path, fault_servers, logged):
    sink = fault_servers()
    write_files(tmp_path / "in", [5, 7, 3])
    request = one_source_request(tmp_path / "in")
    code, first = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    assert code == 0 and first["counts"]["read"] == 15, first.get("error")
    assert (first["counts"]["skipped_files"], first["counts"]["read_files"]) == (0, 3)
    calls = sink.bulk_calls

    code, again = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    assert (code, again["state"], again["counts"]["read"], again["counts"]["indexed"]) == (
        0,
        "COMPLETED",
        0,
        0,
    )
    assert (again["counts"]["skipped_files"], again["counts"]["read_files"]) == (3, 0)
    assert sink.bulk_calls == calls
    assert any("nothing new to read" in line for line in logged.lines)
    assert len(indexed_documents(sink.url, "incremental")) == 15


@pytest.mark.integration
def test_a_rewritten_file_is_read_again_and_the_others_are_skipped(capsys, tmp_path, fault_servers, logged):
    sink = fault_servers()
    paths = write_files(tmp_path / "in", [5, 7, 3])
    request = one_source_request(tmp_path / "in")
    assert run_ingest(capsys, tmp_path, request, sink.url, "--incremental")[0] == 0
    rows = [{"id": f"f1-{i}", "vec": [1, i, 1.0], "tag": "new"} for i in range(7)]
    paths[1].write_bytes(jsonl(rows))
    os.utime(paths[1], ns=(1, 1))  # a new mtime even on a coarse clock

    code, record = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    assert (code, record["counts"]["read"], record["counts"]["skipped_files"]) == (0, 7, 2)
    assert any("skipping 2 of 3 file(s)" in line for line in logged.lines)
    tags = {doc_id: doc["tag"] for doc_id, doc in indexed_documents(sink.url, "incremental").items()}
    assert {tag for doc_id, tag in tags.items() if doc_id.startswith("f1-")} == {"new"}
    assert {tag for doc_id, tag in tags.items() if not doc_id.startswith("f1-")} == {""}


@pytest.mark.integration
def test_a_changed_field_map_reads_every_file_again(capsys, tmp_path, fault_servers):
    sink = fault_servers()
    write_files(tmp_path / "in", [2, 2])
    request = one_source_request(tmp_path / "in")
    assert run_ingest(capsys, tmp_path, request, sink.url, "--incremental")[0] == 0
    changed = {**request, "field_map": {"vec": "$.vec", "_id": "$.id"}}
    code, record = run_ingest(capsys, tmp_path, changed, sink.url, "--incremental")
    assert (code, record["counts"]["read"], record["counts"]["skipped_files"]) == (0, 4, 0)


@pytest.mark.integration
def test_several_sources_rerun_whole_or_not_at_all(capsys, tmp_path, fault_servers):
    sink = fault_servers()
    left, right = write_files(tmp_path / "left", [4]), write_files(tmp_path / "right", [4])
    request = {
        "index_name": "incremental",
        "field_map": {"vec": "source[0].$.vec", "tag": "source[1].$.tag", "_id": "$.id"},
        "data_source": {"type": "local", "source": [str(left[0]), str(right[0])]},
    }
    assert run_ingest(capsys, tmp_path, request, sink.url, "--incremental")[0] == 0
    code, again = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    assert (code, again["counts"]["read"], again["counts"]["skipped_files"]) == (0, 0, 2)
    write_files(tmp_path / "right", [4], tag="new")
    os.utime(right[0], ns=(1, 1))
    code, joined = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    assert (code, joined["counts"]["read"], joined["counts"]["skipped_files"]) == (0, 8, 0)
    assert {doc["tag"] for doc in indexed_documents(sink.url, "incremental").values()} == {"new"}


@pytest.mark.integration
def test_resume_refuses_a_task_it_cannot_resume(capsys, tmp_path, fault_servers):
    sink = fault_servers()
    write_files(tmp_path / "in", [2])
    request = one_source_request(tmp_path / "in")
    _, plain = run_ingest(capsys, tmp_path, request, sink.url)
    _, incremental = run_ingest(capsys, tmp_path, request, sink.url, "--incremental")
    other = {**request, "index_name": "elsewhere"}
    for body, task_id, reason in (
        (request, "nosuchtask", "no such task"),
        (request, plain["task_id"], "did not run with --incremental"),
        (other, incremental["task_id"], "ran another request"),
    ):
        request_path = write_request(tmp_path, body)[0]
        capsys.readouterr()
        assert main(["ingest", str(request_path), "--opensearch", sink.url, "--resume", task_id]) == 2
        assert reason in capsys.readouterr().err


# -- a killed run, resumed ----------------------------------------------------------------------

SIZES = [40, 40, 40]


@pytest.mark.integration
def test_a_killed_run_resumed_reads_only_its_unfinished_files_and_makes_the_same_index(
    processes,  # noqa: F811 - the fixture imported above
    fault_servers,
    tmp_path,
    mlbatch_home,
):
    files = write_files(tmp_path / "in", SIZES)
    request_path, mapping = write_request(tmp_path, one_source_request(tmp_path / "in"), MAPPING)
    assert mapping is not None
    slow = fault_servers(bulk_delay=0.25)
    options = (
        "--opensearch",
        slow.url,
        "--create-index",
        str(mapping),
        "--bulk-size=5",
        "--bulk-concurrency=1",
    )
    process = processes("ingest", str(request_path), *options, "--incremental", home=mlbatch_home)
    path, request = manifest_path("incremental", mlbatch_home), one_source_request(tmp_path / "in")
    print_ = fingerprint("local", request["field_map"], [], "outer", slow.url)
    wait_for(lambda: path.exists() and len(Manifest(path).entries(print_)) == 1, "the first file recorded")
    calls = slow.bulk_calls
    wait_for(lambda: slow.bulk_calls >= calls + 2, "part of the second file written")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert [entry.state.uri for entry in Manifest(path).entries(print_).values()] == [str(files[0])]
    killed = json.loads(run_mlbatch("task", "list", home=mlbatch_home).stdout)[0]
    assert killed["state"] == "FAILED"

    slow.bulk_delay = 0.0
    resumed = run_mlbatch(
        "ingest", str(request_path), *options, "--resume", killed["task_id"], home=mlbatch_home
    )
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(resumed.stdout)
    assert record["resumed_from"] == killed["task_id"]
    assert "skipping 1 of 3 file(s)" in resumed.stderr
    assert (record["counts"]["read"], record["counts"]["skipped_files"]) == (SIZES[1] + SIZES[2], 1)

    whole = fault_servers()
    straight = run_mlbatch(
        "ingest",
        str(request_path),
        "--opensearch",
        whole.url,
        "--create-index",
        str(mapping),
        home=tmp_path / "h2",
    )
    assert straight.returncode == 0, straight.stderr
    expected = indexed_documents(whole.url, "incremental")
    assert len(expected) == sum(SIZES)
    assert indexed_documents(slow.url, "incremental") == expected


def test_serve_api_refuses_resume(capsys):
    assert main(["serve-api", "--resume", "sometask"]) == 2
    assert "--resume names the task of one run" in capsys.readouterr().err

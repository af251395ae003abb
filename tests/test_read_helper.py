"""The helper process reads what in-process reading reads, fails the same way, and is always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.byte_ranges import FileRange
from connectors.opensearch.mapping import KnnField
from connectors.sources import SourceAccess, SourceError
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from pipelines.runner_choice import runner_choice, use_read_helper
from tests.data import jsonl, sagemaker_lines
from transforms.read_helper import HelperRead
from transforms.read_jobs import ProjectJob, framed
from transforms.record_stream import Tally, projected_records

LOCAL = SourceAccess("local")
REPO = Path(__file__).resolve().parents[1]


def source_plan(path: str):
    request = {
        "index_name": "i",
        "field_map": {"text": "$.content[0]", "embedding": "$.SageMakerOutput[0]", "_id": "$.id"},
        "data_source": {"type": "local", "source": [path]},
    }
    return with_vector_checks(compile_plan(parse_request(request)), {"embedding": KnnField(4)}).sources[0]


@pytest.mark.integration
def test_the_helper_yields_what_in_process_reading_yields(tmp_path):
    path = tmp_path / "mixed.jsonl"
    bad_vector = {"SageMakerOutput": [[1.0]], "content": ["short"], "id": 99}
    path.write_bytes(jsonl(sagemaker_lines(5, 4)) + b"{oops\n" + jsonl([bad_vector, {"content": ["no id"]}]))
    source = source_plan(str(path))
    here_tally = Tally()
    here = list(projected_records(source, LOCAL, FileRange(str(path)), here_tally))
    frames = list(HelperRead(ProjectJob(source, FileRange(str(path)), LOCAL)).frames())
    assert [record for records, _ in frames for record in records] == here
    assert sum(tally.read for _, tally in frames) == here_tally.read == 8
    assert sum(tally.invalid_vectors for _, tally in frames) == here_tally.invalid_vectors == 1


@pytest.mark.integration
def test_an_unreadable_file_fails_with_the_in_process_message(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    source = source_plan(str(path))
    with pytest.raises(SourceError) as here:
        list(projected_records(source, LOCAL, FileRange(str(path)), Tally()))
    with pytest.raises(SourceError) as helper:
        list(HelperRead(ProjectJob(source, FileRange(str(path)), LOCAL)).frames())
    assert str(helper.value) == str(here.value) and str(path) in str(here.value)


@pytest.mark.integration
def test_an_early_helper_is_handed_over_once_and_unclaimed_ones_are_stopped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(sagemaker_lines(2, 4)))
    source = source_plan(str(path))
    job = ProjectJob(source, FileRange(str(path)), LOCAL)
    HelperRead.start_early(job)
    early = HelperRead._early[job]
    assert HelperRead.for_job(ProjectJob(source, FileRange(str(path)), SourceAccess("local"))) is early
    assert HelperRead.for_job(job) is not early
    HelperRead.start_early(job)
    unclaimed = HelperRead._early[job]
    HelperRead.discard_early()
    assert unclaimed._process.poll() is not None and not HelperRead._early


def test_the_helper_is_on_for_the_direct_runner_only_unless_asked():
    assert use_read_helper("on", runner_choice(["--runner=DataflowRunner"]))
    assert not use_read_helper("off", runner_choice([]))
    assert not use_read_helper("auto", runner_choice(["--runner", "DataflowRunner"]))
    assert use_read_helper("auto", runner_choice(["--runner=DirectRunner"])) == use_read_helper(
        "auto", runner_choice([])
    )


@pytest.mark.integration
def test_a_transforms_package_in_the_working_directory_is_not_the_helper(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(sagemaker_lines(3, 4)))
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "__init__.py").write_text("raise ImportError('not mlbatch')\n")
    monkeypatch.chdir(tmp_path)
    source = source_plan(str(path))
    assert (
        sum(tally.read for _, tally in HelperRead(ProjectJob(source, FileRange(str(path)), LOCAL)).frames())
        == 3
    )


@pytest.mark.integration
def test_a_helper_whose_pipeline_is_killed_exits_even_while_it_sends_nothing():
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.slow_job"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        helper = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while running(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(helper)
    finally:
        parent.kill()
        if running(helper):
            os.kill(helper, signal.SIGKILL)


def running(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failing_job_hands_over_the_frame_it_had_before_its_error():
    def failing():
        yield "a"
        yield "b"
        raise SourceError("f: broken")

    taken = iter(range(1, 10))
    frames = framed(failing(), lambda: {"read": next(taken)})
    assert next(frames) == (["a", "b"], {"read": 1})
    with pytest.raises(SourceError, match="broken"):
        next(frames)

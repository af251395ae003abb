"""The project's Dask runner against Beam's DaskRunner defects, with plain-Beam pipelines (no mlbatch code
in them, so each test could go upstream), on a real `dask scheduler` and two `dask worker` processes.

Steps that must run once leave a file per run in a shared directory (`MarkRuns`), so a step
run twice is seen even where Beam's metrics would hide it. Also here (pure): which runner and
options the ingest command line selects, and how a bundle's dead-letter file is named.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import cloudpickle
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.transforms.window import GlobalWindows

from pipelines.dask_runner.translate import DaskGraph, Partitioning
from pipelines.runner_choice import pipeline_runner, runner_choice, unknown_beam_args, use_read_helper
from tests.dask_cluster import DaskCluster
from transforms.dead_letters import bundle_file_name
from transforms.types import DeadLetter, Locator

NAMESPACE = "dask-runner-test"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    running = DaskCluster(tmp_path_factory.mktemp("dask-cluster"))
    yield running
    running.close()


def dask_pipeline(cluster: DaskCluster, *args: str) -> beam.Pipeline:
    """A pipeline on the runner `--runner=DaskRunner` selects, as the ingest command makes it."""
    argv = ["--runner=DaskRunner", f"--dask_client_address={cluster.address}", *args]
    return beam.Pipeline(runner=pipeline_runner(runner_choice(argv)), options=PipelineOptions(argv))


def runs(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


class SplitOddEven(beam.DoFn):
    def process(self, number: int) -> Iterator[object]:
        yield beam.pvalue.TaggedOutput("odd", number) if number % 2 else number


class BufferUntilFinish(beam.DoFn):
    """Emits nothing in `process`; every element it saw, doubled, in `finish_bundle`."""

    def start_bundle(self) -> None:
        self._seen: list[int] = []

    def process(self, number: int) -> None:
        self._seen.append(number)

    def finish_bundle(self) -> Iterator[object]:
        for number in self._seen:
            yield GlobalWindows.windowed_value(number * 2)


class CountEverything(beam.DoFn):
    def __init__(self) -> None:
        self._elements = Metrics.counter(NAMESPACE, "elements")
        self._sizes = Metrics.distribution(NAMESPACE, "sizes")
        self._last = Metrics.gauge(NAMESPACE, "last")

    def process(self, number: int) -> Iterator[int]:
        self._elements.inc()
        self._sizes.update(number)
        self._last.set(number)
        yield number


class MarkRuns(beam.DoFn):
    """Leaves a file per run of each element in `directory` (named by process and element), takes
    `seconds`, counts the element and passes it on."""

    def __init__(self, directory: str, seconds: float = 0.0) -> None:
        self._directory = directory
        self._seconds = seconds
        self._done = Metrics.counter(NAMESPACE, "done")

    def process(self, element: object) -> Iterator[object]:
        Path(self._directory, f"{os.getpid()}-{element}-{uuid.uuid4().hex}").touch()
        time.sleep(self._seconds)
        self._done.inc()
        yield element


SEEN = BagStateSpec("seen", VarIntCoder())
SEEN_STATE = beam.DoFn.StateParam(SEEN)


class RememberPerKey(beam.DoFn):
    def process(self, element: tuple[str, int], seen: Any = SEEN_STATE) -> None:
        seen.add(element[1])


class Stamp(beam.DoFn):
    """Leaves a file per element in `directory` named by the time it saw it, then passes it on."""

    def __init__(self, directory: str, label: str) -> None:
        self._directory = directory
        self._label = label

    def process(self, element: object) -> Iterator[object]:
        Path(self._directory, f"{time.monotonic_ns():020d}-{self._label}{element}").touch()
        yield element


class MarkSetups(beam.DoFn):
    """Leaves a file per `setup` and per `teardown` in `directory`, named by process."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def setup(self) -> None:
        Path(self._directory, f"{os.getpid()}-setup-{uuid.uuid4().hex}").touch()

    def process(self, element: object) -> Iterator[object]:
        yield element

    def teardown(self) -> None:
        Path(self._directory, f"{os.getpid()}-teardown-{uuid.uuid4().hex}").touch()


class FailInSecondBundle(MarkSetups):
    """Fails in the second bundle of a copy: one set up by an earlier bundle, taken from the pool."""

    def setup(self) -> None:
        super().setup()
        self._bundles = 0

    def start_bundle(self) -> None:
        self._bundles += 1

    def process(self, element: object) -> Iterator[object]:
        if self._bundles > 1:
            raise ValueError("cannot take a second bundle")
        yield element


def stage_tasks(pipeline: beam.Pipeline, npartitions: int) -> dict[str, int]:
    """Tasks per fused stage of `pipeline`'s graph, by the stage's first step."""
    pipeline.replace_all(dask_overrides())
    graph = DaskGraph(Partitioning(parallelism=1, npartitions=npartitions))
    pipeline.visit(graph)
    names = [key[0].rpartition(" stage ") for key in graph.final().dask if isinstance(key, tuple)]
    return dict(Counter(first for first, stage, token in names if stage and " " not in token))


def fail_on_three(number: int) -> int:
    if number == 3:
        raise ValueError(f"cannot take {number}")
    return number


def test_dask_runner_names_select_the_project_runner_and_its_options_are_known():
    from pipelines.dask_runner import DaskRunner

    for name in ("DaskRunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"):
        choice = runner_choice([f"--runner={name}"])
        assert choice.dask and not choice.in_process
        assert type(pipeline_runner(choice)) is DaskRunner
        assert not use_read_helper("auto", choice, cores=8)
    direct = pipeline_runner(runner_choice([]))  # Beam's DirectRunner, told to skip its Prism attempt
    assert type(direct).__name__ == "SwitchingDirectRunner" and direct._is_interactive
    assert pipeline_runner(runner_choice(["--runner=DataflowRunner"])) is None
    args = ["--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:8786", "--dask_npartitions=4"]
    assert unknown_beam_args(args) == []
    assert unknown_beam_args([*args, "--dask_nonsense=1"]) == ["--dask_nonsense=1"]


def test_a_bundles_dead_letter_file_is_named_the_same_each_time_it_runs():
    first = DeadLetter("parse", "malformed JSON", (Locator(0, "/data/a.jsonl", 7),), "{")
    name = bundle_file_name("task-1", "0", first)
    assert name == bundle_file_name("task-1", "0", first._replace(reason="another reason"))
    assert name.startswith("rejected-0-") and name.endswith(".jsonl")
    others = {
        bundle_file_name("task-2", "0", first),
        bundle_file_name("task-1", "1", first),
        bundle_file_name("task-1", "0", first._replace(origins=(Locator(0, "/data/a.jsonl", 8),))),
        bundle_file_name("task-1", "0", first._replace(stage="map")),
    }
    assert name not in others and len(others) == 4


def test_partitioning_defaults_and_options():
    assert Partitioning(parallelism=2).create_size(8) == 1  # a few file names: one per partition
    assert Partitioning(parallelism=2).create_size(800) == 100
    assert Partitioning(parallelism=2, npartitions=2).create_size(10) == 5
    assert Partitioning(parallelism=2, partition_size=4).create_size(10) == 4
    assert Partitioning(parallelism=4).grouped() == 4
    assert Partitioning(parallelism=4, npartitions=7).grouped() == 7
    assert Partitioning(parallelism=4).reshuffled(1) == 4  # one file's ranges over every worker thread
    assert Partitioning(parallelism=2).reshuffled(3) == 3


def test_a_chain_of_par_dos_is_one_task_per_partition():
    pipeline = beam.Pipeline()
    split = (
        pipeline | beam.Create(range(8)) | "Split" >> beam.ParDo(SplitOddEven()).with_outputs("odd", main="n")
    )
    split.n | "Even" >> beam.Map(str) | "Upper" >> beam.Map(str.upper)
    odd = split.odd | "Odd" >> beam.Map(str)
    odd | beam.GroupBy(key=len) | "AfterShuffle" >> beam.Map(str)
    split.n | "ReadsItsOwnStage" >> beam.Map(lambda n, s: n, beam.pvalue.AsList(odd))
    assert stage_tasks(pipeline, npartitions=2) == {
        "Split/ParDo(SplitOddEven)": 2,  # and Even, Upper, Odd, GroupBy's keying: a task per partition
        "GroupBy(key)/GroupByKey/GroupByWindow": 2,  # and AfterShuffle
        "ReadsItsOwnStage": 2,  # its side input comes from Split's stage: it cannot be in it
    }


def test_the_scheduler_unpickles_the_graph_without_beam_or_mlbatch(tmp_path):
    pipeline = beam.Pipeline()
    pairs = pipeline | beam.Create([("a", 1), ("b", 2)]) | "Pair" >> beam.Map(lambda pair: pair)
    pairs | beam.GroupByKey() | "Grouped" >> beam.Map(str) | beam.Reshuffle()
    pipeline.replace_all(dask_overrides())
    graph = DaskGraph(Partitioning(parallelism=2))
    pipeline.visit(graph)
    payload = tmp_path / "graph.pickle"
    payload.write_bytes(cloudpickle.dumps(dict(graph.final().dask)))
    probe = (
        "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read());"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'apache_beam', 'pipelines'}))"
    )
    found = subprocess.run(  # run where this project is not importable, as on a bare scheduler
        [sys.executable, "-c", probe, str(payload)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "[]"


@pytest.mark.integration
def test_a_fused_chain_passes_each_element_on_before_the_next_and_counts_per_step(cluster, tmp_path):
    pipeline = dask_pipeline(cluster, "--dask_npartitions=1")
    counted = pipeline | beam.Create([1, 2, 3]) | "First" >> beam.ParDo(CountEverything())
    counted | "A" >> beam.ParDo(Stamp(str(tmp_path), "a")) | "B" >> beam.ParDo(Stamp(str(tmp_path), "b"))
    counted | "Second" >> beam.ParDo(CountEverything())
    result = pipeline.run()
    assert result.wait_until_finish() == "DONE"
    assert [name.split("-")[1] for name in runs(tmp_path)] == ["a1", "b1", "a2", "b2", "a3", "b3"]
    found = result.metrics().query(MetricsFilter().with_name("elements"))["counters"]
    assert sorted((found.key.step, found.committed) for found in found) == [("First", 3), ("Second", 3)]


@pytest.mark.integration
def test_a_dofn_is_set_up_once_per_worker_process_reused_by_its_bundles_and_torn_down_after_the_job(
    cluster, tmp_path
):
    with dask_pipeline(cluster, "--dask_npartitions=8") as pipeline:
        pipeline | beam.Create(range(8)) | "Reused" >> beam.ParDo(MarkSetups(str(tmp_path)))
    marks = [name.split("-")[:2] for name in runs(tmp_path)]
    setups = [pid for pid, kind in marks if kind == "setup"]
    assert 1 <= len(setups) <= len(cluster.worker_pids())  # 8 bundles, a DoFn per worker (of one thread)
    assert len(set(setups)) == len(setups)
    # the job's end releases them: a long-lived worker keeps nothing of a finished job
    assert sorted(pid for pid, kind in marks if kind == "teardown") == sorted(setups)


@pytest.mark.integration
def test_a_step_failing_mid_bundle_leaves_the_side_effects_of_what_it_passed_on(cluster, tmp_path):
    pipeline = dask_pipeline(cluster, "--dask_npartitions=1")
    numbers = pipeline | beam.Create([1, 2, 3, 4]) | "Fail" >> beam.Map(fail_on_three)
    numbers | "Written" >> beam.ParDo(MarkRuns(str(tmp_path)))
    with pytest.raises(ValueError, match="cannot take 3"):
        pipeline.run().wait_until_finish()
    assert sorted(name.split("-")[1] for name in runs(tmp_path)) == ["1", "2"]


@pytest.mark.integration
def test_each_tagged_output_reaches_only_its_consumer(cluster):
    with dask_pipeline(cluster) as pipeline:
        split = (
            pipeline | beam.Create([1, 2, 3, 4, 5]) | beam.ParDo(SplitOddEven()).with_outputs("odd", main="n")
        )
        assert_that(split.n, equal_to([2, 4]), label="even")
        assert_that(split.odd, equal_to([1, 3, 5]), label="odd")


@pytest.mark.integration
def test_elements_emitted_in_finish_bundle_are_kept(cluster):
    with dask_pipeline(cluster) as pipeline:
        doubled = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(BufferUntilFinish())
        assert_that(doubled, equal_to([2, 4, 6]))


@pytest.mark.integration
def test_every_leaf_runs_and_a_shared_step_runs_once(cluster, tmp_path):
    shared_runs, leaf_runs = tmp_path / "shared", tmp_path / "leaves"
    shared_runs.mkdir()
    leaf_runs.mkdir()
    with dask_pipeline(cluster) as pipeline:
        shared = pipeline | beam.Create(["a"]) | "Shared" >> beam.ParDo(MarkRuns(str(shared_runs)))
        shared | "Leaf1" >> beam.ParDo(MarkRuns(str(leaf_runs)))
        shared | "Leaf2" >> beam.ParDo(MarkRuns(str(leaf_runs)))
        shared | "Leaf3" >> beam.Map(str.upper) | "Leaf3Runs" >> beam.ParDo(MarkRuns(str(leaf_runs)))
    assert len(runs(shared_runs)) == 1
    assert len(runs(leaf_runs)) == 3


@pytest.mark.integration
def test_metrics_are_beam_metric_results_of_committed_attempts(cluster):
    pipeline = dask_pipeline(cluster)
    pipeline | beam.Create([1, 2, 3, 4]) | "Count" >> beam.ParDo(CountEverything())
    result = pipeline.run()
    assert result.wait_until_finish() == "DONE"
    (elements,) = result.metrics().query(MetricsFilter().with_name("elements"))["counters"]
    assert elements.committed == elements.attempted == 4
    assert elements.key.step == "Count"
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_step("Count"))
    sizes = found["distributions"][0].committed
    assert (sizes.count, sizes.sum, sizes.min, sizes.max) == (4, 10, 1, 4)
    (last,) = result.metrics().query(MetricsFilter().with_name("last"))["gauges"]
    assert last.committed.value in (1, 2, 3, 4)
    assert result.metrics().query(MetricsFilter().with_step("Elsewhere"))["counters"] == []


@pytest.mark.integration
def test_a_side_input_is_computed_once_for_all_its_consumers(cluster, tmp_path):
    with dask_pipeline(cluster) as pipeline:
        side = pipeline | "Side" >> beam.Create([10, 20]) | "SideRuns" >> beam.ParDo(MarkRuns(str(tmp_path)))
        main = pipeline | "Main" >> beam.Create([1, 2, 3, 4])
        total = beam.pvalue.AsList(side)
        added = main | "Add" >> beam.Map(lambda n, s: n + sum(s), total)
        subtracted = main | "Sub" >> beam.Map(lambda n, s: sum(s) - n, total)
        assert_that(added, equal_to([31, 32, 33, 34]), label="add")
        assert_that(subtracted, equal_to([29, 28, 27, 26]), label="sub")
    assert len(runs(tmp_path)) == 2  # one run per element of the side input, not one per consumer task


@pytest.mark.integration
def test_group_by_key_and_co_group_by_key(cluster):
    with dask_pipeline(cluster) as pipeline:
        pairs = pipeline | "Pairs" >> beam.Create([("a", 1), ("b", 2), ("a", 3), (7, 4)])
        grouped = pairs | beam.GroupByKey() | beam.MapTuple(lambda key, values: (key, sorted(values)))
        assert_that(grouped, equal_to([("a", [1, 3]), ("b", [2]), (7, [4])]), label="gbk")
        left = pipeline | "Left" >> beam.Create([("k", 1), ("j", 2)])
        right = pipeline | "Right" >> beam.Create([("k", "x")])
        joined = {"left": left, "right": right} | beam.CoGroupByKey()
        normalized = joined | beam.MapTuple(
            lambda key, found: (key, sorted(found["left"]), sorted(found["right"]))
        )
        assert_that(normalized, equal_to([("k", [1], ["x"]), ("j", [2], [])]), label="cogbk")
        counted = pipeline | "Many" >> beam.Create(range(100)) | beam.combiners.Count.Globally()
        assert_that(counted, equal_to([100]), label="count")
        nothing = pipeline | "Nothing" >> beam.Create([]) | "ShuffleNothing" >> beam.Reshuffle()
        assert_that(nothing | "GroupNothing" >> beam.GroupByKey(), equal_to([]), label="empty")


@pytest.mark.integration
def test_create_and_reshuffle_spread_a_few_elements_over_the_workers(cluster, tmp_path):
    with dask_pipeline(cluster) as pipeline:
        names = pipeline | beam.Create(["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"]) | beam.Reshuffle()
        names | beam.ParDo(MarkRuns(str(tmp_path), 0.5))
    processes = {name.split("-")[0] for name in runs(tmp_path)}
    assert len(runs(tmp_path)) == 4 and len(processes) == 2


@pytest.mark.integration
def test_a_worker_error_reaches_the_launcher_with_its_message(cluster):
    with pytest.raises(ValueError, match="cannot take 3"), dask_pipeline(cluster) as pipeline:
        pipeline | beam.Create([1, 2, 3]) | beam.Map(fail_on_three)


@pytest.mark.integration
def test_a_pooled_dofn_failing_its_bundle_reports_that_error_and_is_torn_down(cluster, tmp_path):
    """A copy set up by an earlier bundle has no runner that set it up: tearing it down through
    the failing bundle's runner raised AttributeError over the bundle's own error."""
    failing = pytest.raises(ValueError, match="cannot take a second bundle")
    with failing, dask_pipeline(cluster, "--dask_npartitions=8") as pipeline:
        pipeline | beam.Create(range(8)) | beam.ParDo(FailInSecondBundle(str(tmp_path)))
    marks = [name.split("-")[1] for name in runs(tmp_path)]
    assert marks.count("teardown") >= 1


@pytest.mark.integration
def test_a_step_the_runner_cannot_run_is_named_before_anything_runs(cluster):
    pipeline = dask_pipeline(cluster)
    pipeline | beam.Create([("a", 1)]) | "Remember" >> beam.ParDo(RememberPerKey())
    with pytest.raises(NotImplementedError, match="cannot run the stateful or splittable DoFn of 'Remember'"):
        pipeline.run()


@pytest.mark.integration
def test_a_local_cluster_runs_without_a_scheduler_address():
    argv = ["--runner=DaskRunner"]
    pipeline = beam.Pipeline(runner=pipeline_runner(runner_choice(argv)), options=PipelineOptions(argv))
    pipeline | beam.Create([1, 2, 3]) | "Count" >> beam.ParDo(CountEverything())
    result = pipeline.run()
    assert result.wait_until_finish() == "DONE"
    (elements,) = result.metrics().query(MetricsFilter().with_name("elements"))["counters"]
    assert elements.committed == 3


@pytest.mark.integration
def test_a_task_recomputed_after_its_worker_died_counts_once(cluster, tmp_path):
    names = ["a", "b", "c", "d"]
    pipeline = dask_pipeline(cluster)
    pipeline | beam.Create(names) | "Slow" >> beam.ParDo(MarkRuns(str(tmp_path), 1.0))
    result = pipeline.run()
    try:
        deadline = time.monotonic() + 30
        while not runs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.kill_worker(int(runs(tmp_path)[0].split("-")[0]))
        assert result.wait_until_finish() == "DONE"
    finally:
        cluster.replace_killed_workers()
    started = runs(tmp_path)
    assert len(started) > len(names)  # the killed worker's bundle ran again on the other worker
    assert {name.split("-")[1] for name in started} == set(names)
    (done,) = result.metrics().query(MetricsFilter().with_name("done"))["counters"]
    assert done.committed == done.attempted == len(names)

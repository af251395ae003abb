"""The project's Dask runner: Beam's `DaskRunner` with its defects fixed (the **run** step on Dask).

`DaskRunner.run_pipeline` connects to the scheduler `--dask_client_address` (or
`--dask_scheduler_file`) names, or starts a bounded local cluster without one, applies Beam's
Dask overrides, translates the pipeline into one task graph (`pipelines.dask_runner.translate`)
and submits its last task. `DaskJobResult.wait_until_finish` waits for it; a worker's error
is raised here as the worker raised it. `metrics()` answers Beam's `MetricResults` built from
each bundle's final successful attempt (committed and attempted are the same values).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from apache_beam.metrics.execution import MetricUpdates
from apache_beam.metrics.metric import MetricResults
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import Pipeline
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.direct.direct_metrics import DirectMetrics
from apache_beam.runners.runner import PipelineResult, PipelineState
from distributed import Client, Future, LocalCluster

from pipelines.dask_runner.dofn_pool import clear_pool
from pipelines.dask_runner.translate import DaskGraph, Partitioning

LOCAL_WORKERS = min(os.cpu_count() or 1, 4)  # processes of the local cluster, one thread each
WORKER_WAIT_SECONDS = 60.0
log = logging.getLogger("mlbatch")


def final_attempt_metrics(bundles: Sequence[tuple[str, MetricUpdates]]) -> DirectMetrics:
    """Beam's metric results from each bundle's one kept attempt: committed as attempted."""
    results = DirectMetrics()
    for position, (_, updates) in enumerate(bundles):
        results.commit_logical(position, updates)
        results.commit_physical(position, updates)
    return results


class DaskJobResult(PipelineResult):
    """A job submitted to Dask: its last task's future, and the client (and local cluster) to close."""

    def __init__(self, client: Client, cluster: LocalCluster | None, future: Future) -> None:
        super().__init__(PipelineState.RUNNING)
        self._client = client
        self._cluster = cluster
        self._future = future
        self._metrics: MetricResults = DirectMetrics()

    def wait_until_finish(self, duration: int | None = None) -> str:
        """Wait for the job (at most `duration` ms); a worker's error is raised as it was raised."""
        if PipelineState.is_terminal(self._state):
            return self._state
        try:
            bundles = self._future.result(timeout=None if duration is None else duration / 1000)
        except TimeoutError:
            return self._state
        except BaseException:
            self._state = PipelineState.FAILED
            self._close()
            raise
        self._metrics = final_attempt_metrics(bundles)
        self._state = PipelineState.DONE
        self._close()
        return self._state

    def cancel(self) -> str:
        if not PipelineState.is_terminal(self._state):
            self._future.cancel()
            self._state = PipelineState.CANCELLED
            self._close()
        return self._state

    def metrics(self) -> MetricResults:
        return self._metrics

    def _close(self) -> None:
        try:
            self._client.run(clear_pool)
        except Exception as error:  # noqa: BLE001 - releasing idle DoFns must not hide the job's end
            log.warning("could not release the job's DoFns on the Dask workers: %s", error)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class DaskRunner(BeamDaskRunner):
    """Runs a Beam pipeline on dask.distributed: every leaf in one graph, tagged outputs apart,
    `finish_bundle` outputs kept, side inputs computed once, metrics from final attempts."""

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> DaskJobResult:
        settings = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        npartitions = settings.pop("npartitions", None)
        partition_size = settings.pop("partition_size", None)
        client, cluster = _connect(settings)
        try:
            pipeline.replace_all(dask_overrides())
            parallelism = _parallelism(client)
            log.info("running on Dask at %s: %d worker thread(s)", client.scheduler.address, parallelism)
            graph = DaskGraph(Partitioning(parallelism, npartitions, partition_size))
            pipeline.visit(graph)
            future = client.compute(graph.final(), optimize_graph=False)
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
        return DaskJobResult(client, cluster, future)


def _connect(settings: dict[str, Any]) -> tuple[Client, LocalCluster | None]:
    """A client of the named scheduler, or of a local cluster started for this run."""
    if settings.get("address") or settings.get("scheduler_file"):
        return Client(**settings), None
    log.warning(
        "no --dask_client_address: starting a local Dask cluster of %d worker processes for this run",
        LOCAL_WORKERS,
    )
    cluster = LocalCluster(
        n_workers=LOCAL_WORKERS,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its HTTP server: loopback, any port
    )
    try:
        return Client(cluster, **settings), cluster
    except BaseException:
        cluster.close()
        raise


def _parallelism(client: Client) -> int:
    """Worker threads of the cluster, once at least one worker has joined."""
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        raise RuntimeError(
            f"no Dask worker joined the scheduler at {client.scheduler.address} "
            f"within {WORKER_WAIT_SECONDS:.0f} s"
        ) from None
    return max(1, sum(client.nthreads().values()))

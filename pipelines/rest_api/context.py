"""What every REST handler of `mlbatch serve-api` works with: the settings, the stores, the background work.

Handlers (`pipelines.rest_api.tasks_api`, `pipelines.rest_api.objects_api`) take an `ApiContext`;
`pipelines.rest_api.service` builds it and routes requests to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.ml_store import MlStore
from connectors.task_store import TaskStore
from pipelines.ingest_options import IngestOptions
from pipelines.rest_api.confinement import ML_COMMONS_TRUSTED_ENDPOINTS
from pipelines.rest_api.ingest_queue import IngestQueue
from pipelines.rest_api.predictions import Predictions


@dataclass(frozen=True)
class ApiSettings:
    """How the service runs its work: the options of every ingestion, how many run at once and
    wait, how often batch jobs are polled, how long a cancel waits for the run to stop; and what
    callers may make it reach (`pipelines.rest_api.confinement`): local files under the options'
    `local_root` (none without it), connector URLs matching `trusted_endpoints`."""

    options: IngestOptions
    max_running: int = 1
    max_queued: int = 100
    poll_interval: float = 10.0
    cancel_wait: float = 10.0
    trusted_endpoints: tuple[str, ...] = ML_COMMONS_TRUSTED_ENDPOINTS


@dataclass(frozen=True)
class ApiContext:
    """One service's settings, stores and background work, as every handler sees them."""

    settings: ApiSettings
    tasks: TaskStore
    objects: MlStore
    ingestions: IngestQueue
    predictions: Predictions

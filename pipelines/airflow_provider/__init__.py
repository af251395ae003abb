"""The mlbatch Airflow provider: launch batch prediction and ingestion from DAGs.

`MLBatchPredictOperator` (submit + deferred wait), `MLBatchIngestOperator` (the Beam ingestion
run), `MLBatchTaskSensor` (wait for a job submitted elsewhere), their trigger
`MLBatchJobTrigger` and hook `MLBatchHook`; the example DAG `mlbatch_predict_and_ingest` is in
`example_dags/`. Installed with the `airflow` extra; Airflow finds it through the
`apache_airflow_provider` entry point, which names `get_provider_info`. This package is named
so it never shadows the `airflow` package itself. The classes are importable from here
(`from pipelines.airflow_provider import MLBatchPredictOperator`); Airflow loads only when
one is asked for, so reading the provider info stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

_INTEGRATION = "mlbatch"
_MODULE = "pipelines.airflow_provider"
_EXPORTS = {
    "MLBatchPredictOperator": "predict",
    "MLBatchIngestOperator": "ingest",
    "MLBatchTaskSensor": "sensors",
    "MLBatchJobTrigger": "triggers",
    "MLBatchHook": "hooks",
}
__all__ = ["get_provider_info", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{_MODULE}.{_EXPORTS[name]}"), name)


def _version() -> str:
    try:
        return version("mlbatch")
    except PackageNotFoundError:
        return "0+unknown"


def get_provider_info() -> dict[str, Any]:
    """What `airflow providers list` shows and where Airflow finds our operators, sensors, triggers."""
    return {
        "package-name": "mlbatch",
        "name": "mlbatch",
        "description": "Batch embedding jobs loaded into OpenSearch k-NN indexes, as Apache Beam pipelines.",
        "versions": [_version()],
        "integrations": [{"integration-name": _INTEGRATION, "tags": ["ml", "opensearch"]}],
        "operators": [
            {"integration-name": _INTEGRATION, "python-modules": [f"{_MODULE}.predict", f"{_MODULE}.ingest"]}
        ],
        "sensors": [{"integration-name": _INTEGRATION, "python-modules": [f"{_MODULE}.sensors"]}],
        "triggers": [{"integration-name": _INTEGRATION, "python-modules": [f"{_MODULE}.triggers"]}],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": [f"{_MODULE}.hooks"]}],
    }

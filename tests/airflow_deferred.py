"""Put a task into Airflow's DEFERRED state and act on it as a user would (a test helper, run in a
fresh process whose AIRFLOW_HOME holds a migrated database):

- `python tests/airflow_deferred.py defer DAG_FILE DAG_ID RUN_CONF_JSON`: `dag.test()` until
  the first task defers, then exit, leaving it DEFERRED with its trigger in the database for a
  real `airflow triggerer` to run (dag.test's own `_run_task` is told not to run the trigger in
  line); prints `deferred <task_id>`.
- `python tests/airflow_deferred.py mark-failed DAG_ID TASK_ID`: mark the DEFERRED instance of
  the task failed the way the REST API's PATCH does (`set_task_instance_state`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def defer(path: str, dag_id: str, run_conf: dict[str, Any]) -> None:
    import airflow.sdk.definitions.dag as dag_module

    from tests.airflow_dag_run import load_dag

    run_task = dag_module._run_task

    def run_until_deferred(*, ti: Any, task: Any, run_triggerer: bool = False) -> None:
        run_task(ti=ti, task=task, run_triggerer=False)
        print(f"{ti.state.value} {ti.task_id}", flush=True)
        os._exit(0)

    dag_module._run_task = run_until_deferred
    load_dag(path, dag_id).test(run_conf=run_conf)


def mark_failed(dag_id: str, task_id: str) -> None:
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        deferred = TaskInstance.state == TaskInstanceState.DEFERRED
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=task_id).filter(deferred).one()
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        dag.set_task_instance_state(
            task_id=task_id, run_id=ti.run_id, state=TaskInstanceState.FAILED, session=session
        )


def main() -> None:
    if sys.argv[1] == "defer":
        defer(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        mark_failed(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()

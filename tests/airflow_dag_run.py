"""Run one DAG with Airflow's own `dag.test()` and print what happened as JSON (a test helper,
run as `python tests/airflow_dag_run.py DAG_FILE DAG_ID RUN_CONF_JSON` in a fresh process whose
AIRFLOW_HOME holds a migrated database).

Prints one JSON object: the run's state, and per task its state, try number and XComs
(`return_value`, `remote_job`, `task_record`). Airflow reads its configuration at import, so
each run gets its own process and environment (connections as `AIRFLOW_CONN_*`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any


def load_dag(path: str, dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location("dag_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id)


def main() -> None:
    path, dag_id, run_conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    dag = load_dag(path, dag_id)
    run = dag.test(run_conf=run_conf)

    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    tasks: dict[str, Any] = {}
    with create_session() as session:
        instances = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run.run_id).all()
        for ti in instances:
            same_task = {"dag_id": dag_id, "run_id": run.run_id, "task_id": ti.task_id}
            xcoms = session.query(XComModel).filter_by(**same_task).all()
            tasks[ti.task_id] = {
                "state": str(ti.state),
                "try_number": ti.try_number,
                "xcom": {x.key: XComModel.deserialize_value(x) for x in xcoms},
            }
    print(json.dumps({"run_state": str(run.state), "tasks": tasks}, default=str))


if __name__ == "__main__":
    main()

"""Example DAGs of the mlbatch Airflow provider (point Airflow's dags folder here, or copy them)."""

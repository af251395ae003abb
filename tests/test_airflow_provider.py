"""The mlbatch provider's hook, predict operator and sensor outside the scheduler, against the
local OpenAI batch service, with connections given as `AIRFLOW_CONN_*` variables: connector
sources and credentials, deferral to `MLBatchJobTrigger`, `execute_complete` outcomes, polling
in the worker, `on_kill` cancelling the job, a refused submit with its key redacted, and the
sensor's deferral and pokes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from email.message import Message

import pytest

pytest.importorskip("airflow")
pytestmark = [pytest.mark.airflow, pytest.mark.integration]

from airflow.sdk.bases.sensor import PokeReturnValue  # noqa: E402
from airflow.sdk.exceptions import AirflowException, TaskDeferred  # noqa: E402

from connectors.batch_predict.connector import ConnectorError  # noqa: E402
from connectors.local.http_server import Reply  # noqa: E402
from pipelines.airflow_provider.hooks import MLBatchHook, connector_body  # noqa: E402
from pipelines.airflow_provider.predict import MLBatchPredictOperator  # noqa: E402
from pipelines.airflow_provider.sensors import MLBatchTaskSensor  # noqa: E402
from pipelines.airflow_provider.triggers import MLBatchJobTrigger  # noqa: E402
from tests.airflow_jobs import (  # noqa: E402
    API_KEY,
    CONN_ID,
    RUN_LIMIT,
    RecordingTI,
    parameters,
    service_calls,
    start_services,
    submitted,
    use_connection,
)
from tests.batch_services import BatchServices  # noqa: E402

PLACEHOLDER = "<your OpenAI API key>"


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchServices]:
    use_connection(monkeypatch, password=API_KEY)
    server = start_services()
    yield server
    server.close()


def test_connector_body_from_a_dict_a_file_and_a_blueprint_name(tmp_path):
    blueprint = connector_body("openai_batch")
    assert blueprint["name"] == "OpenAI batch embeddings" and blueprint["credential"] == {
        "openAI_key": PLACEHOLDER
    }
    given = {"name": "mine", "actions": []}
    assert connector_body(given) == given and connector_body(given) is not given
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(blueprint))
    assert connector_body(str(path)) == blueprint


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no_such_blueprint", "'no_such_blueprint': no such file or packaged blueprint"),
        ("{dir}/missing.json", "cannot read"),
        ("{dir}/bad.json", "not valid JSON"),
    ],
)
def test_connector_body_errors_name_the_source(tmp_path, source, message):
    (tmp_path / "bad.json").write_text('{"name": ')
    with pytest.raises(ConnectorError, match=message):
        connector_body(source.format(dir=tmp_path))


def test_the_hook_fills_the_blueprint_credential_from_the_connection(monkeypatch):
    use_connection(monkeypatch, password=API_KEY)
    assert MLBatchHook(CONN_ID).connector("openai_batch").credential == {"openAI_key": API_KEY}
    filled = asyncio.run(MLBatchHook(CONN_ID).aconnector("openai_batch"))
    assert filled.credential == {"openAI_key": API_KEY}
    assert MLBatchHook().connector("openai_batch").credential == {"openAI_key": PLACEHOLDER}


def test_the_hook_reads_cluster_request_and_aws_connections(monkeypatch):
    use_connection(monkeypatch, "cluster", host="search.local", port=9200, login="admin", password="a@b")
    use_connection(
        monkeypatch, "cloud", conn_type="aws", login="AKIAEX", password="s", extra={"region_name": "r"}
    )
    assert MLBatchHook.cluster("cluster") == {"opensearch": "http://admin:a%40b@search.local:9200"}
    assert MLBatchHook.request_credential("cluster", "openAI") == {"openAI_key": "a@b"}
    assert MLBatchHook.aws_environment("cloud") == {
        "AWS_ACCESS_KEY_ID": "AKIAEX",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "r",
    }


def operator(services: BatchServices, conn_id: str = CONN_ID, **options) -> MLBatchPredictOperator:
    return MLBatchPredictOperator(
        task_id="predict",
        connector="openai_batch",
        parameters=parameters(services),
        conn_id=conn_id,
        poll_interval=0.05,
        **options,
    )


def test_execute_defers_to_the_trigger_after_pushing_remote_job(services):
    ti = RecordingTI()
    with pytest.raises(TaskDeferred) as deferred:
        operator(services, timeout=600).execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, MLBatchJobTrigger) and deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout.total_seconds() == 600
    job_id = next(iter(services.jobs))
    assert ti.pushed == [("remote_job", trigger.record["remote_job"])]
    assert trigger.record["remote_job"]["id"] == job_id and trigger.record["state"] == "CREATED"
    assert (trigger.connector, trigger.conn_id, trigger.poll_interval) == ("openai_batch", CONN_ID, 0.05)
    assert API_KEY not in json.dumps(trigger.serialize())


def test_execute_complete_returns_a_completed_record(services):
    record = {**submitted(services), "state": "COMPLETED"}
    ti = RecordingTI()
    assert operator(services).execute_complete({"ti": ti}, {"record": record}) == record
    assert ti.pushed == [("remote_job", record["remote_job"])]


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "EXPIRED", "UNREACHABLE"])
def test_execute_complete_fails_the_task_naming_the_state(services, state):
    record = {**submitted(services), "state": state, "error": "the service said no"}
    with pytest.raises(AirflowException, match=f"ended {state} .*: the service said no"):
        operator(services).execute_complete({"ti": RecordingTI()}, {"record": record})


def test_polling_in_the_worker_reaches_completed(services):
    ti = RecordingTI()
    record = operator(services, deferrable=False).execute({"ti": ti})
    assert record["state"] == "COMPLETED" and record["remote_job"]["output_file_id"] in services.files
    assert [key for key, _ in ti.pushed] == ["remote_job", "remote_job"]
    assert ti.pushed[-1][1] == record["remote_job"]


def test_polling_in_the_worker_fails_a_failed_job(services):
    services.progress["batch"] = ("validating", "failed")
    with pytest.raises(AirflowException, match="ended FAILED"):
        operator(services, deferrable=False).execute({"ti": RecordingTI()})


def test_on_kill_while_polling_in_the_worker_cancels_the_job(services):
    services.progress["batch"] = ("validating",) + ("in_progress",) * 10_000
    task = operator(services, deferrable=False)
    outcome: list[BaseException] = []

    def execute() -> None:
        try:
            task.execute({"ti": RecordingTI()})
        except AirflowException as error:
            outcome.append(error)

    worker = threading.Thread(target=execute, daemon=True)
    worker.start()
    deadline = time.monotonic() + RUN_LIMIT
    while (task._record or {}).get("state") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.01)
    task.on_kill()
    worker.join(RUN_LIMIT)
    job_id = next(iter(services.jobs))
    assert service_calls(services, "POST", f"/v1/batches/{job_id}/cancel") != []
    assert services.jobs[job_id]["status"] == "cancelled"
    assert not worker.is_alive() and "ended CANCELLED" in str(outcome[0])


def test_on_kill_before_any_job_sends_nothing(services):
    operator(services, deferrable=False).on_kill()
    assert services.requests == []


def test_a_refused_submit_fails_the_task_with_the_key_redacted(services, monkeypatch):
    wrong_key = "sk-wrong-key-0123456789"
    use_connection(monkeypatch, password=wrong_key)

    def echoing_refusal(method: str, path: str, headers: Message, body: bytes) -> Reply:
        status, answer = BatchServices.handle(services, method, path, headers, body)
        if status == 401:  # as OpenAI does, the refusal quotes the key it was given
            answer = {"error": {"message": f"Incorrect API key provided: {headers.get('Authorization')}"}}
        return status, answer

    services.handle = echoing_refusal  # type: ignore[method-assign]
    with pytest.raises(AirflowException, match="submit failed.*HTTP 401") as failed:
        operator(services).execute({"ti": RecordingTI()})
    assert wrong_key not in str(failed.value) and "Bearer ***" in str(failed.value)


def test_a_connection_without_credential_fails_the_task_naming_it(services, monkeypatch):
    use_connection(monkeypatch, "empty_conn")
    with pytest.raises(AirflowException, match="mlbatch connector: connection 'empty_conn'"):
        operator(services, conn_id="empty_conn").execute({"ti": RecordingTI()})


def sensor(services: BatchServices, record: dict, **options) -> MLBatchTaskSensor:
    return MLBatchTaskSensor(
        task_id="wait",
        connector="openai_batch",
        remote_job={"id": record["remote_job"]["id"]},
        parameters={"base_url": services.openai_url},
        conn_id=CONN_ID,
        poke_interval=0.05,
        timeout=60,
        **options,
    )


def test_the_sensor_defers_to_the_trigger_watching_the_given_job(services):
    record = submitted(services)
    with pytest.raises(TaskDeferred) as deferred:
        sensor(services, record).execute({"ti": RecordingTI()})
    trigger = deferred.value.trigger
    assert isinstance(trigger, MLBatchJobTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.record["state"] == "RUNNING" and trigger.record["remote_job"] == {
        "id": record["remote_job"]["id"]
    }
    assert trigger.poll_interval == 0.05 and deferred.value.timeout.total_seconds() == 60
    assert trigger.cancel_on_kill is False  # the watched job belongs to whoever submitted it
    assert service_calls(services, "GET", "") == []


def test_the_sensor_pokes_until_the_job_completes(services):
    watching, ti = sensor(services, submitted(services), deferrable=False), RecordingTI()
    answers = [watching.poke({"ti": ti}) for _ in range(2)]
    assert answers == [False, False] and ti.pushed == []
    done = watching.poke({"ti": ti})
    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value["state"] == "COMPLETED" and done.xcom_value["remote_job"]["output_file_id"]
    assert ti.pushed == [("remote_job", done.xcom_value["remote_job"])]


def test_the_sensor_fails_on_a_failed_job_or_no_job(services):
    services.progress["batch"] = ("validating", "failed")
    with pytest.raises(AirflowException, match="ended FAILED"):
        sensor(services, submitted(services), deferrable=False).poke({"ti": RecordingTI()})
    with pytest.raises(AirflowException, match="remote_job must be"):
        MLBatchTaskSensor(task_id="wait", connector="openai_batch", remote_job={}).execute(
            {"ti": RecordingTI()}
        )


def test_a_job_rendered_to_text_by_a_template_is_read_back():
    from airflow.sdk.exceptions import AirflowFailException

    from pipelines.airflow_provider.predict import job_fields

    job = {"id": "batch_1", "output_file_id": "file-2", "error_file_id": None}
    assert job_fields(job, "remote_job") is job
    assert job_fields(json.dumps(job), "remote_job") == job
    assert job_fields(repr(job), "remote_job") == job  # what "{{ ti.xcom_pull(...) }}" renders
    with pytest.raises(AirflowFailException, match="remote_job is text that is neither JSON nor a dict"):
        job_fields("batch_1 done", "remote_job")

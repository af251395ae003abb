from __future__ import annotations

import json
import logging

import pytest

from connectors.batch_predict.batch_actions import job_action, remote_job_parameters, resolve_remote_job
from connectors.batch_predict.connector import ConnectorAction, ConnectorError, parse_connector
from connectors.batch_predict.job_status import PARTIAL_WARNING, map_status
from connectors.batch_predict.remote_call import check_filled_headers, check_header_templates, render_action
from connectors.batch_predict.templating import fill, merge_parameters, render_body, render_text

CREDENTIAL = {"openAI_key": "sk-abc"}


def test_non_string_parameters_are_inserted_as_json():
    params = merge_parameters(
        {"TransformInput": {"SplitType": "Line"}, "count": 3, "flag": True, "none": None}, {}
    )
    body = render_body(
        '{"in": ${parameters.TransformInput}, "n": ${parameters.count}, "f": ${parameters.flag},'
        ' "z": ${parameters.none}}',
        params,
        {},
    )
    assert json.loads(body) == {"in": {"SplitType": "Line"}, "n": 3, "f": True, "z": None}


def test_request_strings_are_escaped_unless_already_json():
    params = merge_parameters({"model": "m"}, {"text": 'say "hi"\n', "doc": '{"a": 1}', "model": "override"})
    assert (
        params["text"] == 'say \\"hi\\"\\n' and params["doc"] == '{"a": 1}' and params["model"] == "override"
    )
    body = render_body(
        '{"t": "${parameters.text}", "d": ${parameters.doc}, "m": "${parameters.model}"}', params, {}
    )
    assert json.loads(body) == {"t": 'say "hi"\n', "d": {"a": 1}, "m": "override"}


def test_connector_strings_are_not_escaped():
    assert merge_parameters({"endpoint": "/v1/embeddings"}, {}) == {"endpoint": "/v1/embeddings"}


def test_defaults_and_null_defaults():
    params = {"present": "yes"}
    assert fill("${parameters.missing:-fallback} ${parameters.present:-no}", params, {}) == "fallback yes"
    assert json.loads(
        render_body('{"a": "${parameters.x:-null}", "b": "${parameters.present:-null}"}', params, {})
    ) == {"a": None, "b": "yes"}


def test_values_are_filled_recursively_and_double_dollar_is_literal():
    params = {"url": "https://${parameters.host}/v1", "host": "api.example"}
    assert (
        fill("${parameters.url} $${parameters.host}", params, {})
        == "https://api.example/v1 ${parameters.host}"
    )


def test_unfilled_placeholders_fail_with_ml_commons_message():
    with pytest.raises(ConnectorError) as caught:
        render_body('{"a": "${parameters.a}", "b": "${parameters.b}", "c": "${parameters.a}"}', {}, {})
    assert str(caught.value) == "Some parameter placeholder not filled in payload: a, b, a"


def test_credentials_fill_headers_and_missing_ones_are_named():
    assert render_text("Bearer ${credential.openAI_key}", {}, CREDENTIAL, "h") == "Bearer sk-abc"
    with pytest.raises(ConnectorError, match=r"h contains unresolved placeholder\(s\): cohere_key"):
        render_text("Bearer ${credential.cohere_key}", {}, CREDENTIAL, "h")


def test_invalid_json_payload_never_quotes_the_filled_body():
    with pytest.raises(ConnectorError, match="Invalid payload") as caught:
        render_body(
            '{"k": "${credential.key}", "a": ${parameters.x}}', {"x": "not json"}, {"key": "sk-secret"}
        )
    assert "sk-secret" not in str(caught.value)


def test_double_dollar_literal_survives_a_body():
    assert json.loads(render_body('{"a": "$${parameters.x}"}', {}, {})) == {"a": "${parameters.x}"}


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ({"status": "validating"}, "RUNNING"),
        ({"status": "in_progress"}, "RUNNING"),
        ({"TransformJobStatus": "InProgress"}, "RUNNING"),
        ({"status": "finalizing"}, "RUNNING"),
        ({"status": "completed"}, "COMPLETED"),
        ({"TransformJobStatus": "Completed"}, "COMPLETED"),
        ({"status": "complete"}, "COMPLETED"),
        ({"Status": "Completed"}, "COMPLETED"),
        ({"TransformJobStatus": "Stopping"}, "CANCELLING"),
        ({"status": "cancelling"}, "CANCELLING"),
        ({"TransformJobStatus": "Stopped"}, "CANCELLED"),
        ({"status": "cancelled"}, "CANCELLED"),
        ({"status": "expired"}, "EXPIRED"),
        ({"status": "Timeout"}, "EXPIRED"),
        ({"status": "failed"}, "FAILED"),
        ({"TransformJobStatus": "Failed"}, "FAILED"),
        ({}, "RUNNING"),
    ],
)
def test_status_mapping(answer, state):
    assert map_status(answer).state == state


def test_partially_completed_is_completed_with_a_warning_or_failed_on_request():
    assert map_status({"status": "PartiallyCompleted"}).state == "COMPLETED"
    assert map_status({"status": "PartiallyCompleted"}).warning == PARTIAL_WARNING
    assert map_status({"status": "partiallyCompleted"}, partial_is_failure=True).state == "FAILED"


def connector(url: str, **extra) -> dict:
    return {
        "name": "c",
        "protocol": "http",
        "parameters": {},
        "credential": {},
        "actions": [
            {
                "action_type": "batch_predict",
                "method": "POST",
                "url": url,
                "headers": {"Authorization": "Bearer ${credential.key}"},
                "request_body": "{}",
            }
        ],
        **extra,
    }


def test_derived_actions_per_provider():
    openai = parse_connector(connector("https://api.openai.com/v1/batches"))
    status, cancel = job_action(openai, "batch_predict_status"), job_action(openai, "cancel_batch_predict")
    assert (status.method, status.url) == ("GET", "https://api.openai.com/v1/batches/${parameters.id}")
    assert (cancel.method, cancel.url) == (
        "POST",
        "https://api.openai.com/v1/batches/${parameters.id}/cancel",
    )
    assert status.headers == {"Authorization": "Bearer ${credential.key}"}
    bedrock = parse_connector(connector("https://bedrock.us-east-1.amazonaws.com/model-invocation-job"))
    assert job_action(bedrock, "cancel_batch_predict").url.endswith(
        "/model-invocation-job/${parameters.processedJobArn}/stop"
    )
    sagemaker = parse_connector(connector("https://api.sagemaker.us-east-1.amazonaws.com/CreateTransformJob"))
    described = job_action(sagemaker, "batch_predict_status")
    assert described.url.endswith("/DescribeTransformJob") and "TransformJobName" in described.request_body
    assert job_action(sagemaker, "cancel_batch_predict").url.endswith("/StopTransformJob")


def test_sagemaker_json_protocol_target_is_switched():
    body = connector("https://api.sagemaker.us-east-1.amazonaws.com/")
    body["actions"][0]["headers"] = {"X-Amz-Target": "SageMaker.CreateTransformJob"}
    stop = job_action(parse_connector(body), "cancel_batch_predict")
    assert stop.headers == {"X-Amz-Target": "SageMaker.StopTransformJob"}


def test_underivable_actions_are_a_clear_error():
    with pytest.raises(ConnectorError, match="please configure the action type to get the batch job details"):
        job_action(parse_connector(connector("https://example.com/jobs")), "batch_predict_status")


def test_remote_job_parameters():
    params = remote_job_parameters(
        {
            "TransformJobArn": "arn:aws:sagemaker:us-east-1:1:transform-job/job-7",
            "jobArn": "arn:aws:bedrock:x:1:job/abc",
            "job_id": "emb-1",
            "nested": {"x": 1},
        }
    )
    assert params["TransformJobName"] == "job-7"
    assert params["processedJobArn"] == "arn:aws:bedrock:x:1:job%2Fabc"
    assert params["id"] == "emb-1" and "nested" not in params


def test_remote_job_placeholders_in_sources():
    job = {"output_file_id": "file-out", "TransformOutput": {"S3OutputPath": "s3://b/out/"}}
    assert resolve_remote_job("${remote_job.output_file_id}", job) == "file-out"
    assert resolve_remote_job("${remote_job.TransformOutput.S3OutputPath}", job) == "s3://b/out/"
    with pytest.raises(ConnectorError, match="the finished job has no such field"):
        resolve_remote_job("${remote_job.error_file_id}", job)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": "ftp"}, "protocol: 'ftp' is not one of http, aws_sigv4"),
        ({"actions": []}, "actions: must be a non-empty list"),
        ({"protocol": "aws_sigv4"}, "Missing service name"),
        ({"protocol": "aws_sigv4", "parameters": {"service_name": "sagemaker"}}, "Missing region"),
    ],
)
def test_connector_validation(change, message):
    with pytest.raises(ConnectorError) as caught:
        parse_connector({**connector("https://api.openai.com/v1/batches"), **change})
    assert str(caught.value) == message


def test_provider_is_found_after_connector_parameters_are_filled():
    body = connector("${parameters.base_url}/batches", parameters={"base_url": "https://api.openai.com/v1"})
    status = job_action(parse_connector(body), "batch_predict_status")
    assert status.url == "https://api.openai.com/v1/batches/${parameters.id}"


def test_derived_actions_start_from_the_filled_url():
    endpoint = "https://api.sagemaker.us-east-1.amazonaws.com/CreateTransformJob"
    body = connector("${parameters.endpoint}", parameters={"endpoint": endpoint})
    sagemaker = parse_connector(body)
    assert job_action(sagemaker, "batch_predict_status").url == endpoint.replace("Create", "Describe")
    assert job_action(sagemaker, "cancel_batch_predict").url == endpoint.replace("Create", "Stop")


def test_derived_urls_keep_what_the_connector_parameters_do_not_fill():
    url = "https://${parameters.host}/${parameters.region:-us}/$${parameters.literal}/openai/${credential.k}"
    parsed = parse_connector(connector(url, parameters={"host": "h.example"}))
    assert job_action(parsed, "batch_predict_status").url == (
        "https://h.example/${parameters.region:-us}/$${parameters.literal}/openai/${credential.k}"
        "/${parameters.id}"
    )


def test_no_escape_params_are_inserted_as_they_are():
    request = {"fields": '"a": 1, "b": "x"', "text": 'say "hi"', "no_escape_params": "x, fields"}
    params = merge_parameters({}, request)
    assert params["fields"] == '"a": 1, "b": "x"' and params["text"] == 'say \\"hi\\"'
    assert json.loads(render_body("{${parameters.fields}}", params, {})) == {"a": 1, "b": "x"}
    assert merge_parameters({}, {"fields": '"a"'})["fields"] == '\\"a\\"'


def test_unfilled_credential_in_a_body_is_refused_without_values():
    with pytest.raises(ConnectorError) as caught:
        render_body(
            '{"key": "${credential.api_key}", "k": "${credential.present}"}', {}, {"present": "sk-value"}
        )
    assert str(caught.value) == (
        "Some credential placeholder not filled in payload: ${credential.api_key} "
        "(the connector's credential has no such key)"
    )
    assert "sk-value" not in str(caught.value)
    with pytest.raises(ConnectorError, match=r"^Some parameter placeholder not filled in payload: p$"):
        render_body('{"a": "${parameters.p}", "b": "${credential.c}"}', {}, {})


def test_aws_sigv4_settings_may_sit_in_the_credential():
    body = connector("https://runtime.sagemaker.us-east-1.amazonaws.com/CreateTransformJob")
    body.update(protocol="aws_sigv4", credential={"region": "eu-west-1", "service_name": "sagemaker"})
    parsed = parse_connector(body)
    assert (parsed.aws_setting("region"), parsed.aws_setting("service_name")) == ("eu-west-1", "sagemaker")
    body["parameters"] = {"region": "us-east-1"}
    assert parse_connector(body).aws_setting("region") == "us-east-1"


def test_header_rules_follow_ml_commons():
    with pytest.raises(ConnectorError) as caught:
        check_header_templates({"Authorization": "Bearer ${parameters.key}"})
    assert str(caught.value) == (
        "Header 'Authorization' cannot use ${parameters.*} placeholders for security reasons. "
        "Use ${credential.*} instead."
    )
    check_header_templates({"X-Model": "${parameters.model}", "Authorization": "Bearer ${credential.key}"})
    for value in ("a\r\nX-Injected: 1", "a\x00", "a\x7f"):
        with pytest.raises(ConnectorError, match="^Header value contains invalid control character$"):
            check_filled_headers({"X": value})
    check_filled_headers({"X": "a\tb"})
    with pytest.raises(ConnectorError, match="^Header size \\(key \\+ value\\) exceeds 8KB limit$"):
        check_filled_headers({"X": "v" * 8192})
    with pytest.raises(ConnectorError, match="^Total headers size \\(key \\+ value\\) exceeds 64KB limit$"):
        check_filled_headers({f"X{n}": "v" * 8000 for n in range(9)})


def test_unknown_connector_fields_are_ignored_as_ml_commons_does(caplog):
    body = connector("https://api.openai.com/v1/batches", surprise=1, created_time=1, owner={"name": "a"})
    with caplog.at_level(logging.WARNING, logger="mlbatch"):
        assert parse_connector(body).name == "c"
    assert caplog.messages == ["connector: ignoring unknown field(s) 'surprise'"]


def test_a_post_needs_a_body_except_to_cancel():
    parsed = parse_connector(connector("https://api.openai.com/v1/batches", credential={"key": "sk-1"}))
    submit = ConnectorAction("batch_predict", "POST", "https://api.openai.com/v1/batches")
    with pytest.raises(ConnectorError, match="^Content length is 0. Aborting request to remote model$"):
        render_action(parsed, submit, {})
    cancel = job_action(parsed, "cancel_batch_predict")
    assert render_action(parsed, cancel, {"id": "b1"}).body is None

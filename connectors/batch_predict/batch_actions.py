"""Status and cancel actions of a batch connector, and what a submitted job tells them (pure).

When a connector has no `batch_predict_status` / `cancel_batch_predict` action, they are
derived from the `batch_predict` URL as ML Commons does: the connector's own parameters are
filled into it first (so `url: ${parameters.endpoint}` derives from the endpoint), and the
first provider name in it decides:

| provider | status | cancel |
|---|---|---|
| sagemaker | POST …/DescribeTransformJob, `{"TransformJobName": …}` | POST …/StopTransformJob, same body |
| openai, cohere | GET `<url>/${parameters.id}` | POST `<url>/${parameters.id}/cancel` |
| bedrock | GET `<url>/${parameters.processedJobArn}` | POST `<url>/${parameters.processedJobArn}/stop` |

Placeholders the connector's parameters do not fill (request parameters, `${credential.x}`,
defaults) stay in the derived url for the call. Headers are copied from `batch_predict` (for
SageMaker's JSON protocol the `X-Amz-Target` operation is switched too). The submit response
is kept as `remote_job`; its string fields become parameters of the status and cancel calls,
plus `TransformJobName` (from `TransformJobArn`), `processedJobArn` (Bedrock's `jobArn`,
URL-encoded) and `id` (Cohere's `job_id`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from connectors.batch_predict.connector import Connector, ConnectorAction, ConnectorError
from connectors.batch_predict.templating import fill_known, merge_parameters
from transforms.echo import cut, echo

PROVIDERS = ("sagemaker", "openai", "bedrock", "cohere")
_SAGEMAKER_BODY = '{ "TransformJobName" : "${parameters.TransformJobName}"}'
_REMOTE_JOB = re.compile(r"\$\{remote_job\.([^}]+)\}")
_OPERATIONS = {"batch_predict_status": "DescribeTransformJob", "cancel_batch_predict": "StopTransformJob"}


def provider_of(url: str) -> str | None:
    lowered = url.lower()
    return next((name for name in PROVIDERS if name in lowered), None)


def _derive(connector: Connector, action_type: str) -> ConnectorAction:
    submit = connector.action("batch_predict")
    assert submit is not None  # parse_connector guarantees it
    url = fill_known(submit.url, merge_parameters(connector.parameters, {}))
    provider = provider_of(url)
    verb = "get the batch job details" if action_type == "batch_predict_status" else "cancel the batch job"
    if provider is None:
        raise ConnectorError(
            f"actions: no {action_type} action, and none can be derived from {echo(submit.url)}; "
            f"please configure the action type to {verb} in the connector"
        )
    status = action_type == "batch_predict_status"
    if provider == "sagemaker":
        operation = _OPERATIONS[action_type]
        headers = {
            name: (f"SageMaker.{operation}" if name.lower() == "x-amz-target" else value)
            for name, value in submit.headers.items()
        }
        return ConnectorAction(
            action_type, "POST", url.replace("CreateTransformJob", operation), headers, _SAGEMAKER_BODY
        )
    key = "processedJobArn" if provider == "bedrock" else "id"
    suffix = "" if status else ("/stop" if provider == "bedrock" else "/cancel")
    return ConnectorAction(
        action_type,
        "GET" if status else "POST",
        f"{url.rstrip('/')}/${{parameters.{key}}}{suffix}",
        dict(submit.headers),
    )


def job_action(connector: Connector, action_type: str) -> ConnectorAction:
    """The connector's status or cancel action, or the one derived from its `batch_predict` URL."""
    action = connector.action(action_type)
    return action if action is not None else _derive(connector, action_type)


def remote_job_parameters(remote_job: dict[str, Any]) -> dict[str, str]:
    """The parameters a status or cancel call gets from the job's submit and status answers."""
    parameters = {name: value for name, value in remote_job.items() if isinstance(value, str)}
    arn = parameters.get("TransformJobArn")
    if arn and "TransformJobName" not in parameters:
        parameters["TransformJobName"] = arn.rsplit("/", 1)[-1]
    if "jobArn" in parameters and "processedJobArn" not in parameters:
        parameters["processedJobArn"] = quote(parameters["jobArn"], safe=":")
    if "job_id" in parameters and "id" not in parameters:
        parameters["id"] = parameters["job_id"]
    return parameters


def lookup(remote_job: dict[str, Any], dotted: str) -> Any:
    """`remote_job.a.b` style lookup; KeyError naming the missing part."""
    value: Any = remote_job
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(dotted)
    return value


def resolve_remote_job(text: str, remote_job: dict[str, Any]) -> str:
    """`text` with `${remote_job.x.y}` placeholders filled from the finished job; ConnectorError if absent."""

    def substitute(match: re.Match[str]) -> str:
        try:
            value = lookup(remote_job, match.group(1))
        except KeyError:
            raise ConnectorError(
                f"${{remote_job.{cut(match.group(1))}}}: the finished job has no such field "
                f"(it has: {', '.join(sorted(remote_job)) or 'nothing'})"
            ) from None
        if not isinstance(value, str | int):
            raise ConnectorError(
                f"${{remote_job.{cut(match.group(1))}}}: is not a string but {type(value).__name__}"
            )
        return str(value)

    return _REMOTE_JOB.sub(substitute, text)


def with_remote_job_sources(body: dict[str, Any], remote_job: dict[str, Any]) -> dict[str, Any]:
    """A `_batch_ingestion` body whose `data_source.source` entries have `${remote_job.x}` filled
    from the finished job (ConnectorError naming a missing field); `body` itself is unchanged."""
    data_source = dict(body["data_source"])
    data_source["source"] = [
        resolve_remote_job(source, remote_job) if isinstance(source, str) else source
        for source in data_source["source"]
    ]
    return {**body, "data_source": data_source}

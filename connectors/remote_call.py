"""Call a remote batch service with a rendered connector action (the batch-predict **I/O edge**).

`render_action` fills an action's url, headers and body; `call` sends it over plain HTTP
(`http` protocol) or signed with botocore's SigV4 (`aws_sigv4`: `service_name` and `region`
from the connector parameters, keys from its `credential` or the default AWS chain, with
`session_token` honoured). Status and cancel calls are retried on 429, 5xx and connection
errors with the same backoff policy as the bulk writer; a submit is sent once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from connectors.bulk_retry import RetryPolicy
from connectors.connector import Connector, ConnectorAction, ConnectorError
from connectors.templating import render_body, render_text

DEFAULT_TIMEOUT = 30.0


class RemoteCallError(RuntimeError):
    """The service could not be reached or answered with an error; `status` is None without an answer."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: str | None = field(default=None, repr=False)


def render_action(
    connector: Connector, action: ConnectorAction, parameters: dict[str, str]
) -> RenderedRequest:
    """The HTTP request an action stands for, every placeholder filled (ConnectorError otherwise)."""
    where = f"{action.action_type} action"
    url = render_text(action.url, parameters, connector.credential, f"{where} url")
    if not url.startswith(("http://", "https://")):
        raise ConnectorError(f"{where} url: {url!r} is not an http(s) URL")
    headers = {
        name: render_text(value, parameters, connector.credential, f"{where} header {name!r}")
        for name, value in action.headers.items()
    }
    body = None
    if action.request_body is not None:
        body = render_body(action.request_body, parameters, connector.credential)
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return RenderedRequest(action.method, url, headers, body)


def _sign(connector: Connector, request: RenderedRequest) -> dict[str, str]:
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    keys = connector.credential
    if keys.get("access_key") and keys.get("secret_key"):
        credentials = Credentials(keys["access_key"], keys["secret_key"], keys.get("session_token"))
    else:
        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise RemoteCallError(
                None, "aws_sigv4: no access_key/secret_key in the connector and none in the AWS chain"
            )
    aws_request = AWSRequest(
        method=request.method, url=request.url, data=request.body or "", headers=request.headers
    )
    SigV4Auth(credentials, connector.parameters["service_name"], connector.parameters["region"]).add_auth(
        aws_request
    )
    return dict(aws_request.headers.items())


def _send_once(connector: Connector, request: RenderedRequest, timeout: float) -> dict[str, Any]:
    headers = _sign(connector, request) if connector.protocol == "aws_sigv4" else request.headers
    try:
        response = requests.request(
            request.method,
            request.url,
            headers=headers,
            data=request.body.encode() if request.body else None,
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise RemoteCallError(
            None, f"{request.method} {request.url}: {type(error).__name__}: {error}"
        ) from None
    if not 200 <= response.status_code < 300:
        raise RemoteCallError(
            response.status_code,
            f"{request.method} {request.url} answered HTTP {response.status_code}: "
            f"{response.text[:300].strip()}",
        )
    try:
        answer = response.json() if response.content else {}
    except ValueError:
        raise RemoteCallError(
            response.status_code, f"{request.method} {request.url}: the answer is not JSON"
        ) from None
    return answer if isinstance(answer, dict) else {"response": answer}


def call(
    connector: Connector,
    request: RenderedRequest,
    retry: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send `request`; with `retry`, 429 / 5xx / connection errors are retried with backoff."""
    attempt = 0
    while True:
        try:
            return _send_once(connector, request, timeout)
        except RemoteCallError as error:
            retryable = error.status is None or error.status == 429 or error.status >= 500
            if retry is None or not retryable or attempt >= retry.max_retries:
                raise
            sleep(retry.delay(attempt))
            attempt += 1

"""Call a remote batch service with a rendered connector action (the batch-predict **I/O edge**).

`render_action` fills an action's url, headers and body; `call` sends it over plain HTTP
(`http` protocol) or signed with botocore's SigV4 (`aws_sigv4`: `service_name` and `region`
from the connector parameters or else its credential, keys from its `credential` or the
default AWS chain, with `session_token` honoured). Status and cancel calls are retried on
429, 5xx and connection errors with the same backoff policy as the bulk writer; a submit is
sent once. Headers follow ML Commons' rules, with its messages: no `${parameters.x}` in
credential-bearing headers (`Authorization`, `X-Api-Key`, …), no control characters in a
filled value, at most 8 KB per header and 64 KB in all; and a POST other than a cancel
needs a body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from connectors.batch_predict.connector import Connector, ConnectorAction, ConnectorError
from connectors.batch_predict.templating import render_body, render_text
from connectors.retry import HttpStatusError, RetryPolicy, is_retryable_status
from transforms.echo import cut, echo

DEFAULT_TIMEOUT = 30.0
MAX_HEADER_BYTES = 8192
EMPTY_POST = "Content length is 0. Aborting request to remote model"
MAX_HEADERS_BYTES = 65536
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
        "x-auth-header",
        "x-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "true-client-ip",
        "x-originating-ip",
        "host",
        "x-forwarded-host",
        "x-forwarded-server",
        "forwarded",
    }
)


class RemoteCallError(HttpStatusError):
    """The service could not be reached or answered with an error; `status` is None without an answer."""


@dataclass(frozen=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    body: str | None = field(default=None, repr=False)


def check_header_templates(headers: dict[str, str]) -> None:
    """ML Commons' rule: headers that carry credentials or client identity take no request parameters."""
    for name, value in headers.items():
        if "${parameters." in value and name.lower() in CREDENTIAL_HEADERS:
            raise ConnectorError(
                f"Header '{cut(name)}' cannot use ${{parameters.*}} placeholders for security reasons. "
                "Use ${credential.*} instead."
            )


def check_filled_headers(headers: dict[str, str]) -> None:
    """ML Commons' checks of filled header values: no control characters (a tab is fine), sizes capped."""
    total = 0
    for name, value in headers.items():
        if any((char < " " and char != "\t") or char == "\x7f" for char in value):
            raise ConnectorError("Header value contains invalid control character")
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            raise ConnectorError("Header size (key + value) exceeds 8KB limit")
        total += size
    if total > MAX_HEADERS_BYTES:
        raise ConnectorError("Total headers size (key + value) exceeds 64KB limit")


def render_action(
    connector: Connector, action: ConnectorAction, parameters: dict[str, str]
) -> RenderedRequest:
    """The HTTP request an action stands for, every placeholder filled (ConnectorError otherwise)."""
    where = f"{action.action_type} action"
    url = render_text(action.url, parameters, connector.credential, f"{where} url")
    if not url.startswith(("http://", "https://")):
        raise ConnectorError(f"{where} url: {echo(action.url)} does not give an http(s) URL")
    check_header_templates(action.headers)
    headers = {
        name: render_text(value, parameters, connector.credential, f"{where} header {echo(name)}")
        for name, value in action.headers.items()
    }
    check_filled_headers(headers)
    body = None
    if action.request_body is not None:
        body = render_body(action.request_body, parameters, connector.credential)
    if action.method == "POST" and not body and action.action_type != "cancel_batch_predict":
        raise ConnectorError(EMPTY_POST)
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
    service_name, region = connector.aws_setting("service_name"), connector.aws_setting("region")
    SigV4Auth(credentials, service_name, region).add_auth(aws_request)
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
    attempt, started = 0, time.monotonic()
    while True:
        try:
            return _send_once(connector, request, timeout)
        except RemoteCallError as error:
            if retry is None or not is_retryable_status(error.status):
                raise
            if retry.exhausted(attempt, time.monotonic() - started):
                raise
            sleep(retry.delay(attempt))
            attempt += 1

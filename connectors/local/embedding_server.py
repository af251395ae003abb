"""`mlbatch serve-embeddings`: a local batch embedding service speaking the OpenAI Files + Batch API.

The subset the launcher and the openai SDK use: `POST /v1/files` (multipart upload),
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}`,
`POST /v1/batches/{id}/cancel`. A batch over `/v1/embeddings` lines runs in a background
thread through a real model (`connectors.local.embedder.MiniLM`, all-MiniLM-L6-v2, 384 dimensions)
and writes an output file in OpenAI's batch output format, so the same connector, launcher
and ingestion code runs offline as against OpenAI. Requests need `Authorization: Bearer <key>`
with the key the service was started with (never echoed in answers). Malformed uploads and
batch requests are answered with 400 in OpenAI's error shape; a batch whose input lines are
not embedding requests ends `failed` with one error per bad line, as OpenAI's do.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from connectors.local.http_server import JsonHttpServer, Reply

Embed = Callable[[Sequence[str]], list[list[float]]]
BATCH_TEXTS = 64
log = logging.getLogger("mlbatch")


class UploadError(ValueError):
    """A `POST /v1/files` body that is not a multipart/form-data upload with a `file` part."""


def parse_upload(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The `file` part and the other form fields of a multipart/form-data upload."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if message.get_content_type() != "multipart/form-data" or not message.get_boundary():
        raise UploadError("the upload must be multipart/form-data with a boundary")
    content, fields = None, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            content = part.get_payload(decode=True)
        elif name:
            fields[name] = (part.get_payload(decode=True) or b"").decode("utf-8", "replace").strip()
    if content is None:
        raise UploadError("the upload has no 'file' part (a multipart/form-data body with name=\"file\")")
    return content, fields


def openai_error(status: int, message: str, kind: str = "invalid_request_error") -> Reply:
    """An error answer shaped as OpenAI shapes them."""
    return status, {"error": {"message": message, "type": kind, "param": None, "code": None}}


def input_problem(line: bytes) -> str | None:
    """Why an input file line is not an embedding request this service can run, or None."""
    try:
        request = json.loads(line)
    except ValueError:
        return "the line is not valid JSON"
    if not isinstance(request, dict) or not isinstance(request.get("custom_id"), str):
        return "the line needs a string custom_id"
    body = request.get("body")
    text = body.get("input") if isinstance(body, dict) else None
    if not (isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))):
        return "body.input must be a string or a list of strings"
    return None


def batch_errors(content: bytes) -> list[dict[str, Any]]:
    """OpenAI's batch `errors.data` entries for the input lines that are not embedding requests."""
    return [
        {"code": "invalid_request", "message": problem, "param": None, "line": number}
        for number, line in enumerate(content.splitlines(), 1)
        if line.strip() and (problem := input_problem(line))
    ]


class EmbeddingService(JsonHttpServer):
    """The service; `embed` defaults to the packaged MiniLM model."""

    def __init__(
        self,
        api_key: str = "local",
        embed: Embed | None = None,
        model_name: str = "all-MiniLM-L6-v2",
        port: int = 0,
    ) -> None:
        if embed is None:
            from connectors.local.embedder import MiniLM

            embed = MiniLM().embed
        self.api_key = api_key
        self.embed = embed
        self.model_name = model_name
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        super().__init__(self.handle, port, url_suffix="/v1")

    def error_reply(self, status: int, kind: str, reason: str) -> Reply:
        return openai_error(status, reason, "server_error" if status >= 500 else "invalid_request_error")

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        given = headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
            return openai_error(401, "Incorrect API key provided")
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "files"]:
            if method == "POST" and len(parts) == 2:
                try:
                    content, fields = parse_upload(headers.get("Content-Type", ""), body)
                except UploadError as error:
                    return openai_error(400, str(error))
                return 200, self._store_file(
                    content, f"upload-{len(self.files)}.jsonl", fields.get("purpose", "batch")
                )
            entry = self.files.get(parts[2]) if len(parts) > 2 else None
            if entry is None:
                return openai_error(404, "No such File object")
            return (200, entry["content"]) if parts[3:] == ["content"] else (200, entry["meta"])
        if parts[:2] == ["v1", "batches"]:
            return self._batches(method, parts[2:], body)
        return openai_error(404, f"no route {method} {path}")

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self.lock:
            self.files[file_id] = {"meta": meta, "content": content}
        return meta

    def _batches(self, method: str, parts: list[str], body: bytes) -> Reply:
        if method == "POST" and not parts:
            try:
                request = json.loads(body or b"{}")
            except ValueError as error:
                return openai_error(400, f"the request body is not valid JSON ({error})")
            if not isinstance(request, dict):
                return openai_error(400, "the request body must be a JSON object")
            file_id = request.get("input_file_id")
            if not isinstance(file_id, str) or file_id not in self.files:
                return openai_error(400, f"input_file_id {file_id!r} not found")
            if request.get("endpoint") != "/v1/embeddings":
                return openai_error(400, "this service runs /v1/embeddings batches only")
            batch = {
                "id": f"batch_{uuid.uuid4().hex[:24]}",
                "object": "batch",
                "endpoint": request["endpoint"],
                "input_file_id": request["input_file_id"],
                "completion_window": request.get("completion_window"),
                "status": "validating",
                "output_file_id": None,
                "error_file_id": None,
                "created_at": int(time.time()),
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }
            with self.lock:
                self.batches[batch["id"]] = batch
            threading.Thread(target=self._run_or_fail, args=(batch,), daemon=True).start()
            return 200, dict(batch)
        batch = self.batches.get(parts[0]) if parts else None
        if batch is None:
            return openai_error(404, "No such Batch object")
        if method == "POST" and parts[1:] == ["cancel"]:
            with self.lock:
                if batch["status"] in ("validating", "in_progress"):
                    batch["status"] = "cancelling"
        return 200, dict(batch)

    def _run_or_fail(self, batch: dict[str, Any]) -> None:
        """Run `batch`; if the model fails, the batch ends `failed` rather than in progress for ever."""
        try:
            self._run(batch)
        except Exception as error:
            log.exception("batch %s failed", batch["id"])
            failure = {"code": "server_error", "message": f"embedding failed: {type(error).__name__}"}
            with self.lock:
                batch["status"] = "failed"
                batch["errors"] = {"object": "list", "data": [{**failure, "param": None, "line": None}]}

    def _run(self, batch: dict[str, Any]) -> None:
        content = self.files[batch["input_file_id"]]["content"]
        errors = batch_errors(content)
        lines = [json.loads(line) for line in content.splitlines() if line.strip()] if not errors else []
        with self.lock:
            if batch["status"] == "cancelling":
                batch["status"] = "cancelled"
                return
            if errors:
                batch["status"] = "failed"
                batch["errors"] = {"object": "list", "data": errors}
                return
            batch["status"] = "in_progress"
            batch["request_counts"]["total"] = len(lines)
        outputs = []
        for start in range(0, len(lines), BATCH_TEXTS):
            if batch["status"] == "cancelling":
                with self.lock:
                    batch["status"] = "cancelled"
                return
            chunk = lines[start : start + BATCH_TEXTS]
            texts = [
                [text] if isinstance(text, str) else list(text)
                for text in (line["body"]["input"] for line in chunk)
            ]
            vectors = iter(self.embed([text for group in texts for text in group]))
            for line, group in zip(chunk, texts, strict=True):
                data = [
                    {"object": "embedding", "index": i, "embedding": next(vectors)} for i in range(len(group))
                ]
                outputs.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                        "custom_id": line["custom_id"],
                        "response": {
                            "status_code": 200,
                            "request_id": uuid.uuid4().hex,
                            "body": {
                                "object": "list",
                                "data": data,
                                "model": self.model_name,
                                "usage": {"prompt_tokens": 0, "total_tokens": 0},
                            },
                        },
                        "error": None,
                    }
                )
            with self.lock:
                batch["request_counts"]["completed"] = len(outputs)
        content = b"".join(json.dumps(output).encode() + b"\n" for output in outputs)
        meta = self._store_file(content, f"{batch['id']}_output.jsonl", "batch_output")
        with self.lock:
            batch["output_file_id"] = meta["id"]
            batch["status"] = "completed"

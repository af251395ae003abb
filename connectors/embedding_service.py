"""`mlbatch serve-embeddings`: a local batch embedding service speaking the OpenAI Files + Batch API.

The subset the launcher and the openai SDK use: `POST /v1/files` (multipart upload),
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}`,
`POST /v1/batches/{id}/cancel`. A batch over `/v1/embeddings` lines runs in a background
thread through a real model (`connectors.embedder.MiniLM`, all-MiniLM-L6-v2, 384 dimensions)
and writes an output file in OpenAI's batch output format, so the same connector, launcher
and ingestion code runs offline as against OpenAI. Requests need `Authorization: Bearer <key>`
with the key the service was started with.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from connectors.http_service import JsonHttpServer, Reply

Embed = Callable[[Sequence[str]], list[list[float]]]
BATCH_TEXTS = 64


def parse_upload(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The `file` part and the other form fields of a multipart/form-data upload."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    content, fields = b"", {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            content = part.get_payload(decode=True)
        elif name:
            fields[name] = part.get_content().strip()
    return content, fields


def _error(status: int, message: str) -> Reply:
    return status, {"error": {"message": message, "type": "invalid_request_error"}}


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
            from connectors.embedder import MiniLM

            embed = MiniLM().embed
        self.api_key = api_key
        self.embed = embed
        self.model_name = model_name
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        super().__init__(self.handle, port, url_suffix="/v1")

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "files"]:
            if method == "POST" and len(parts) == 2:
                content, fields = parse_upload(headers.get("Content-Type", ""), body)
                return 200, self._store_file(
                    content, f"upload-{len(self.files)}.jsonl", fields.get("purpose", "batch")
                )
            entry = self.files.get(parts[2]) if len(parts) > 2 else None
            if entry is None:
                return _error(404, "No such File object")
            return (200, entry["content"]) if parts[3:] == ["content"] else (200, entry["meta"])
        if parts[:2] == ["v1", "batches"]:
            return self._batches(method, parts[2:], body)
        return _error(404, f"no route {method} {path}")

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
            request = json.loads(body or b"{}")
            if request.get("input_file_id") not in self.files:
                return _error(400, f"input_file_id {request.get('input_file_id')!r} not found")
            if request.get("endpoint") != "/v1/embeddings":
                return _error(400, "this service runs /v1/embeddings batches only")
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
            threading.Thread(target=self._run, args=(batch,), daemon=True).start()
            return 200, dict(batch)
        batch = self.batches.get(parts[0]) if parts else None
        if batch is None:
            return _error(404, "No such Batch object")
        if method == "POST" and parts[1:] == ["cancel"]:
            with self.lock:
                if batch["status"] in ("validating", "in_progress"):
                    batch["status"] = "cancelling"
        return 200, dict(batch)

    def _run(self, batch: dict[str, Any]) -> None:
        lines = [
            json.loads(line)
            for line in self.files[batch["input_file_id"]]["content"].splitlines()
            if line.strip()
        ]
        with self.lock:
            if batch["status"] == "cancelling":
                batch["status"] = "cancelled"
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

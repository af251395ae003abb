"""Local stand-ins, on 127.0.0.1, for the remote batch APIs moto does not cover, in their wire formats.

- OpenAI Files + Batch (`/v1/files…`, `/v1/batches…`): uploads (multipart), batch jobs that go
  validating -> in_progress -> finalizing -> completed over successive polls, and on
  completion an output file in OpenAI's batch output format whose embeddings are a
  deterministic function of each input text (these are API stand-ins, not a model).
- Cohere embed jobs (`/v1/embed-jobs…`), Bedrock model-invocation jobs
  (`/model-invocation-job…`, SigV4 service `bedrock`) and SageMaker's JSON protocol
  (`X-Amz-Target: SageMaker.*`, SigV4 service `sagemaker`) with InProgress and
  Stopping states.
Paths may start with `/openai/` or `/cohere/`, so connectors without status and cancel
actions can derive them from the url as ML Commons does. Every job walks through its
kind's `progress` (changeable per test), one status per poll; cancel goes to the
cancelling state, and the next poll shows it cancelled.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from email.message import Message
from typing import Any
from urllib.parse import unquote

from connectors.local.embedding_server import parse_upload
from connectors.local.http_server import JsonHttpServer, Reply

OPENAI_PROGRESS = ("validating", "in_progress", "finalizing", "completed")
COHERE_PROGRESS = ("processing", "complete")
BEDROCK_PROGRESS = ("Submitted", "InProgress", "Completed")
SAGEMAKER_PROGRESS = ("InProgress", "InProgress", "Completed")


def fake_embedding(text: str, dimension: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 127.5) / 127.5, 6) for i in range(dimension)]


class BatchServices:
    def __init__(self, api_key: str, dimension: int = 8) -> None:
        self.api_key = api_key
        self.dimension = dimension
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.progress = {
            "batch": OPENAI_PROGRESS,
            "embed": COHERE_PROGRESS,
            "bedrock": BEDROCK_PROGRESS,
            "transform": SAGEMAKER_PROGRESS,
        }
        self._http = JsonHttpServer(self._locked_handle)
        self.url = self._http.url
        self.openai_url = f"{self.url}/v1"
        self._http.start()

    def _locked_handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        with self.lock:
            return self.handle(method, path, headers, body)

    def close(self) -> None:
        self._http.close()

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Message, body: bytes) -> Reply:
        self.requests.append((method, path, headers.get("Authorization", "")))
        target = headers.get("X-Amz-Target", "")
        if target.startswith("SageMaker."):
            return self._sagemaker(target.split(".", 1)[1], headers, body)
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if parts[0] in ("openai", "cohere"):
            parts = parts[1:]
        if parts[0] == "model-invocation-job":
            return self._bedrock(method, parts[1:], headers, body)
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        if parts[:2] == ["v1", "files"]:
            return self._files(method, parts[2:], headers, body)
        if parts[:2] == ["v1", "batches"]:
            return self._batches(method, parts[2:], body)
        if parts[:2] == ["v1", "embed-jobs"]:
            return self._cohere(method, parts[2:], body)
        return 404, {"error": {"message": f"no route {method} {path}"}}

    # -- job state machine -----------------------------------------------------------------

    def _new_job(self, kind: str, cancelling: str, cancelled: str, **fields: Any) -> dict:
        job_id = f"{kind}_{uuid.uuid4().hex[:12]}"
        progress = self.progress[kind]
        job = {
            "id": job_id,
            "kind": kind,
            "progress": list(progress),
            "polls": 0,
            "cancelling": cancelling,
            "cancelled": cancelled,
            "status": progress[0],
            **fields,
        }
        self.jobs[job_id] = job
        return job

    def _advance(self, job: dict) -> None:
        if job["status"] == job["cancelling"]:
            job["status"] = job["cancelled"]
            return
        if job["status"] in (job["cancelled"], job["progress"][-1]):
            return
        job["polls"] += 1
        job["status"] = job["progress"][min(job["polls"], len(job["progress"]) - 1)]
        if job["status"] == job["progress"][-1]:
            self._finish(job)

    def _finish(self, job: dict) -> None:
        if job["kind"] != "batch":
            return
        lines = []
        for line in self.files.get(job["input_file_id"], b"").splitlines():
            request = json.loads(line)
            texts = request["body"]["input"]
            data = [
                {"object": "embedding", "index": i, "embedding": fake_embedding(text, self.dimension)}
                for i, text in enumerate(texts if isinstance(texts, list) else [texts])
            ]
            lines.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                    "custom_id": request["custom_id"],
                    "response": {
                        "status_code": 200,
                        "request_id": uuid.uuid4().hex,
                        "body": {"object": "list", "data": data, "model": request["body"]["model"]},
                    },
                    "error": None,
                }
            )
        output_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[output_id] = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        job["output_file_id"] = output_id

    # -- OpenAI ----------------------------------------------------------------------------

    def _files(self, method: str, parts: list[str], headers: Message, body: bytes) -> Reply:
        if method == "POST" and not parts:
            content, _ = parse_upload(headers.get("Content-Type", ""), body)
            file_id = f"file-{uuid.uuid4().hex[:12]}"
            self.files[file_id] = content
            return 200, self._file_object(file_id)
        if not parts or parts[0] not in self.files:
            return 404, {"error": {"message": "No such File object", "type": "invalid_request_error"}}
        if len(parts) == 2 and parts[1] == "content":
            return 200, self.files[parts[0]]
        return 200, self._file_object(parts[0])

    def _file_object(self, file_id: str) -> dict:
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(self.files[file_id]),
            "created_at": 0,
            "filename": f"{file_id}.jsonl",
            "purpose": "batch",
            "status": "processed",
        }

    def _batch_object(self, job: dict) -> dict:
        return {
            "id": job["id"],
            "object": "batch",
            "endpoint": job["endpoint"],
            "input_file_id": job["input_file_id"],
            "completion_window": "24h",
            "status": job["status"],
            "output_file_id": job.get("output_file_id"),
            "error_file_id": None,
            "created_at": 0,
        }

    def _batches(self, method: str, parts: list[str], body: bytes) -> Reply:
        if method == "POST" and not parts:
            request = json.loads(body)
            if request.get("input_file_id") not in self.files:
                return 400, {"error": {"message": "input_file_id not found", "type": "invalid_request_error"}}
            job = self._new_job(
                "batch",
                "cancelling",
                "cancelled",
                input_file_id=request["input_file_id"],
                endpoint=request["endpoint"],
            )
            return 200, self._batch_object(job)
        job = self.jobs.get(parts[0]) if parts else None
        if job is None:
            return 404, {"error": {"message": "No such batch"}}
        if method == "POST" and parts[1:] == ["cancel"]:
            job["status"] = "cancelling"
        else:
            self._advance(job)
        return 200, self._batch_object(job)

    # -- Cohere ----------------------------------------------------------------------------

    def _cohere(self, method: str, parts: list[str], body: bytes) -> Reply:
        if method == "POST" and not parts:
            request = json.loads(body)
            job = self._new_job("embed", "cancelling", "cancelled", dataset_id=request["dataset_id"])
            return 200, {"job_id": job["id"], "meta": {"api_version": {"version": "1"}}}
        job = self.jobs.get(parts[0]) if parts else None
        if job is None:
            return 404, {"message": "job not found"}
        if method == "POST" and parts[1:] == ["cancel"]:
            job["status"] = "cancelling"
            return 200, {}
        self._advance(job)
        answer = {"job_id": job["id"], "status": job["status"], "input_dataset_id": job["dataset_id"]}
        if job["status"] == "complete":
            answer["output_dataset_id"] = f"{job['dataset_id']}-embeddings"
        return 200, answer

    # -- AWS (SigV4 checked for the service) -----------------------------------------------

    def _signed_for(self, headers: Message, service: str) -> bool:
        auth = headers.get("Authorization", "")
        return auth.startswith("AWS4-HMAC-SHA256 Credential=") and f"/{service}/aws4_request" in auth

    def _bedrock(self, method: str, parts: list[str], headers: Message, body: bytes) -> Reply:
        if not self._signed_for(headers, "bedrock"):
            return 403, {"message": "Missing Authentication Token"}
        if method == "POST" and not parts:
            request = json.loads(body)
            job = self._new_job("bedrock", "Stopping", "Stopped", request=request)
            job["jobArn"] = f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{job['id']}"
            return 200, {"jobArn": job["jobArn"]}
        arn = parts[0] if parts else ""
        job = self.jobs.get(arn.rsplit("/", 1)[-1])
        if job is None:
            return 404, {"message": f"job {arn} not found"}
        if method == "POST" and parts[1:] == ["stop"]:
            job["status"] = "Stopping"
            return 200, {}
        self._advance(job)
        return 200, {
            "jobArn": job["jobArn"],
            "jobName": job["request"]["jobName"],
            "status": job["status"],
            "modelId": job["request"]["modelId"],
            "outputDataConfig": job["request"]["outputDataConfig"],
        }

    def _sagemaker(self, operation: str, headers: Message, body: bytes) -> Reply:
        if not self._signed_for(headers, "sagemaker"):
            return 403, {"__type": "MissingAuthenticationTokenException"}
        request = json.loads(body)
        name = request["TransformJobName"]
        if operation == "CreateTransformJob":
            job = self._new_job("transform", "Stopping", "Stopped", request=request)
            self.jobs[name] = job
            return 200, {"TransformJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:transform-job/{name}"}
        job = self.jobs.get(name)
        if job is None:
            return 400, {"__type": "ValidationException", "message": f"Could not find job {name}"}
        if operation == "StopTransformJob":
            job["status"] = "Stopping"
            return 200, {}
        self._advance(job)
        return 200, {
            "TransformJobName": name,
            "TransformJobStatus": job["status"],
            "TransformOutput": job["request"]["TransformOutput"],
        }

"""A local fake of the Gemini API endpoints that the batch teacher uses, on 127.0.0.1.

Used by the teacher tests and by the paper rehearsal (`make rehearse-paper`). The real
google-genai client talks to it over HTTP (GOOGLE_GEMINI_BASE_URL). Shapes follow
the installed SDK's own converters (google/genai/batches.py: _BatchJob_from_mldev reads
name + metadata.{state, displayName, output.responsesFile}; files.py: resumable upload
with x-goog-upload-url and x-goog-upload-status, download at files/ID:download?alt=media;
_ListBatchJobsResponse_from_mldev reads `operations`).

Behaviour is set per use: `answer(key, request) -> line` decides each output line (a
response, an error, a block), `final_state` the job's terminal state, `shuffle` the
line order, and `hold` keeps jobs RUNNING until released. One rule of the real service is
always applied: a request that turns thinking off (thinkingBudget 0) for a model that only
works in thinking mode (the 2.5 Pro models) gets a 400 INVALID_ARGUMENT line.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from specdraft.rehearsal.server import LocalServer


def ok_line(text: str, finish: str = "STOP", tokens_in: int = 20, tokens_out: int = 30) -> dict[str, Any]:
    return {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                         "finishReason": finish, "index": 0}],
                         "usageMetadata": {"promptTokenCount": tokens_in, "candidatesTokenCount": tokens_out,
                                           "totalTokenCount": tokens_in + tokens_out},
                         "modelVersion": "gemini-2.5-flash"}}


def blocked_line() -> dict[str, Any]:
    return {"response": {"promptFeedback": {"blockReason": "SAFETY"},
                         "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}}


def error_line(code: int = 500, message: str = "internal", status: str = "INTERNAL") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def service_rules(model: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """The error line the real service answers for a request it refuses, or None."""
    budget = request.get("generationConfig", {}).get("thinkingConfig", {}).get("thinkingBudget")
    if "-pro" in model and budget == 0:
        return error_line(400, "Budget 0 is invalid. This model only works in thinking mode.", "INVALID_ARGUMENT")
    return None


class FakeGemini(LocalServer):
    def __init__(self, answer: Callable[[str, dict[str, Any], int], dict[str, Any]],
                 final_state: str = "BATCH_STATE_SUCCEEDED", polls_before_done: int = 1, shuffle: bool = True):
        self.answer = answer
        # fault injection: the next n requests of a kind ("get", "list", "download",
        # "create") answer 503; a failed "create" still creates the job (an uncertain create)
        self.fail: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.final_state = final_state
        self.polls_before_done = polls_before_done
        self.shuffle = shuffle
        self.hold = threading.Event()
        self.hold.set()  # set = jobs may finish
        self.created = threading.Event()
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.file_meta: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.create_calls = 0
        self.requests_seen: list[dict[str, Any]] = []
        self.api_keys: set[str] = set()
        self._n = 0
        super().__init__(self._handler())

    def __exit__(self, *exc: object) -> None:
        self.hold.set()  # no job left waiting
        super().__exit__(*exc)

    def _id(self) -> str:
        with self.lock:
            self._n += 1
            return f"x{self._n:04d}"

    def _job_json(self, jid: str) -> dict[str, Any]:
        job = self.jobs[jid]
        meta: dict[str, Any] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                                "model": job["model"], "displayName": job["display_name"], "state": job["state"],
                                "name": f"batches/{jid}"}
        if job["state"] == "BATCH_STATE_SUCCEEDED":
            meta["output"] = {"responsesFile": f"files/{job['out']}"}
        return {"name": f"batches/{jid}", "metadata": meta, "done": job["state"] != "BATCH_STATE_RUNNING"}

    def _finish(self, jid: str) -> None:
        job = self.jobs[jid]
        if self.final_state != "BATCH_STATE_SUCCEEDED":
            job["state"] = self.final_state
            return
        lines = []
        for ln in self.files[job["src"]].decode().splitlines():
            req = json.loads(ln)
            self.requests_seen.append(req)
            job["attempts"][req["key"]] = job["attempts"].get(req["key"], 0) + 1
            refused = service_rules(job["model"], req["request"])
            lines.append({"key": req["key"], **(refused or self.answer(req["key"], req["request"], job["round"]))})
        if self.shuffle:
            random.Random(7).shuffle(lines)
        out = self._id()
        self.files[out] = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
        job["out"] = out
        job["state"] = "BATCH_STATE_SUCCEEDED"

    def _handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _send(self, code: int, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _fault(self, kind: str) -> bool:
                with fake.lock:
                    if fake.fail.get(kind, 0) <= 0:
                        return False
                    fake.fail[kind] -= 1
                    fake.failed[kind] = fake.failed.get(kind, 0) + 1
                return True

            def _unavailable(self) -> None:
                self._send(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})

            def _key(self) -> None:
                # the resumable-upload URL carries its own authorisation, as in the real API
                if not self.path.startswith("/upload-session/"):
                    fake.api_keys.add(self.headers.get("x-goog-api-key", ""))

            def do_POST(self) -> None:  # noqa: N802
                self._key()
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/upload/v1beta/files":
                    if self.headers.get("X-Goog-Upload-Command") != "start":
                        return self._send(400, {"error": {"code": 400, "message": "upload must start",
                                                          "status": "INVALID_ARGUMENT"}})
                    uid = fake._id()
                    fake.uploads[uid] = json.loads(body or b"{}").get("file", {})
                    return self._send(200, {}, {"x-goog-upload-url": f"{fake.url}/upload-session/{uid}"})
                m = re.fullmatch(r"/upload-session/(\w+)", path)
                if m:
                    uid = m.group(1)
                    fake.files[uid] = fake.files.get(uid, b"") + body
                    if "finalize" in (self.headers.get("X-Goog-Upload-Command") or ""):
                        meta = {"name": f"files/{uid}", "mimeType": "jsonl", "sizeBytes": str(len(fake.files[uid])),
                                "state": "ACTIVE", "displayName": fake.uploads[uid].get("displayName", "")}
                        fake.file_meta[uid] = meta
                        return self._send(200, {"file": meta}, {"x-goog-upload-status": "final"})
                    return self._send(200, {}, {"x-goog-upload-status": "active"})
                m = re.fullmatch(r"/v1beta/models/([\w.\-]+):batchGenerateContent", path)
                if m:
                    req = json.loads(body)
                    src = req["batch"]["inputConfig"]["fileName"].split("/", 1)[1]
                    jid = fake._id()
                    with fake.lock:
                        fake.create_calls += 1
                        rnd = sum(1 for j in fake.jobs.values() if j["model"] == f"models/{m.group(1)}")
                        fake.jobs[jid] = {"model": f"models/{m.group(1)}", "src": src, "state": "BATCH_STATE_PENDING",
                                          "display_name": req["batch"].get("displayName", ""), "polls": 0,
                                          "attempts": {}, "round": rnd}
                    fake.created.set()
                    if self._fault("create"):
                        return self._unavailable()
                    return self._send(200, fake._job_json(jid))
                return self._send(404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}})

            def do_GET(self) -> None:  # noqa: N802
                self._key()
                path = self.path.split("?")[0]
                m = re.fullmatch(r"/v1beta/batches/(\w+)", path)
                kind = "get" if m else "list" if path == "/v1beta/batches" else "download"
                if self._fault(kind):
                    return self._unavailable()
                if m and m.group(1) in fake.jobs:
                    jid = m.group(1)
                    job = fake.jobs[jid]
                    if job["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
                        job["polls"] += 1
                        job["state"] = "BATCH_STATE_RUNNING"
                        if fake.hold.is_set() and job["polls"] > fake.polls_before_done:
                            fake._finish(jid)
                    return self._send(200, fake._job_json(jid))
                if path == "/v1beta/batches":
                    return self._send(200, {"operations": [fake._job_json(j) for j in fake.jobs]})
                m = re.fullmatch(r"/(?:download/)?v1beta/files/(\w+):download", path)
                if m and m.group(1) in fake.files:
                    return self._send(200, None, raw=fake.files[m.group(1)])
                return self._send(404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}})

        return H

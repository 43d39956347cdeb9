"""Fake BFL and Gemini servers on 127.0.0.1 speaking the documented protocols.

Each runs ``http.server`` in a thread. A test sets ``mode`` (what goes wrong, if
anything) and optionally ``fail_times`` (how many requests misbehave before the
server answers normally), then reads ``requests`` to see what the client sent.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from generation.backends.procedural import render

API_KEY = "test-key-123"


class _Server:
    """Common plumbing: thread, request log, failure budget."""

    def __init__(self):
        self.mode = "ok"
        self.fail_times: int | None = None  # None = always misbehave in `mode`
        self.requests: list[dict[str, Any]] = []
        self.retry_after = "7"
        self.delay = 3.0  # seconds the "timeout" mode stalls
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def misbehaving(self) -> bool:
        """Whether this request should fail in ``mode`` (consumes the budget)."""
        with self._lock:
            if self.mode == "ok":
                return False
            if self.fail_times is None:
                return True
            if self.fail_times > 0:
                self.fail_times -= 1
                return True
            return False

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("content-length") or 0)
                return self.rfile.read(n) if n else b""

            def send(
                self,
                status: int,
                payload: Any = None,
                *,
                raw: bytes | None = None,
                content_type: str = "application/json",
                headers: dict | None = None,
            ):
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def do_GET(self):
                server.handle(self, "GET", b"")

            def do_POST(self):
                server.handle(self, "POST", self._body())

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def log(self, handler, method: str, body: bytes) -> dict:
        entry = {
            "method": method,
            "path": handler.path,
            "headers": {k.lower(): v for k, v in handler.headers.items()},
            "json": json.loads(body) if body.startswith(b"{") else None,
        }
        with self._lock:
            self.requests.append(entry)
        return entry

    def handle(self, handler, method: str, body: bytes) -> None:  # pragma: no cover
        raise NotImplementedError


def _png(prompt: str, seed: int) -> bytes:
    return render(prompt=prompt, seed=seed, width=32, height=32)[0]


class FakeBFL(_Server):
    """``POST /v1/{model}`` → id + polling_url; ``GET /v1/get_result?id=`` → status;
    ``GET /samples/{id}.png`` → the image (no key required, like a signed URL).

    Modes: ok, rate_limited (429 + Retry-After on submit), server_error (503 on
    submit), poll_server_error (500 on poll), timeout (submit stalls), bad_request
    (422), request_moderated, content_moderated, task_error, malformed_submit,
    malformed_poll, not_an_image.
    """

    def __init__(self):
        super().__init__()
        self.tasks: dict[str, dict] = {}
        self.pending_polls = 1  # "Pending" answers before "Ready"

    def handle(self, handler, method, body):
        entry = self.log(handler, method, body)
        url = urlparse(handler.path)
        if url.path.startswith("/samples/"):
            task_id = url.path.rsplit("/", 1)[-1].removesuffix(".png")
            task = self.tasks.get(task_id)
            if task is None:
                return handler.send(404, {"detail": "expired"})
            if self.mode == "not_an_image" and self.misbehaving():
                return handler.send(
                    200, raw=b"<html>oops</html>", content_type="text/html"
                )
            return handler.send(
                200, raw=_png(task["prompt"], task["seed"]), content_type="image/png"
            )
        if handler.headers.get("x-key") != API_KEY:
            return handler.send(403, {"detail": "Not authenticated - Invalid key"})
        if method == "POST" and url.path.startswith("/v1/"):
            return self._submit(handler, entry)
        if method == "GET" and url.path == "/v1/get_result":
            task_id = parse_qs(url.query).get("id", [""])[0]
            return self._poll(handler, task_id)
        return handler.send(404, {"detail": "Not Found"})

    def _submit(self, handler, entry):
        mode = self.mode
        if (
            mode
            in (
                "rate_limited",
                "server_error",
                "timeout",
                "bad_request",
                "malformed_submit",
            )
            and self.misbehaving()
        ):
            if mode == "rate_limited":
                return handler.send(
                    429,
                    {"detail": "You have exceeded the number of active tasks."},
                    headers={"retry-after": self.retry_after},
                )
            if mode == "server_error":
                return handler.send(503, {"detail": "Service Unavailable"})
            if mode == "timeout":
                time.sleep(self.delay)
                return handler.send(503, {"detail": "too late"})
            if mode == "bad_request":
                return handler.send(
                    422,
                    {
                        "detail": [
                            {
                                "loc": ["body", "width"],
                                "msg": "width must be a multiple of 16",
                                "type": "value_error",
                            }
                        ]
                    },
                )
            return handler.send(
                200, raw=b"<html>502 Bad Gateway</html>", content_type="text/html"
            )
        body = entry["json"] or {}
        task_id = f"task-{len(self.tasks) + 1}"
        self.tasks[task_id] = {
            "prompt": body.get("prompt", ""),
            "seed": body.get("seed", 0),
            "polls": 0,
        }
        return handler.send(
            200,
            {
                "id": task_id,
                "polling_url": f"{self.base_url}/v1/get_result?id={task_id}",
                "cost": 3.0,
                "input_mp": 0.0,
                "output_mp": 1.05,
            },
        )

    def _poll(self, handler, task_id):
        task = self.tasks.get(task_id)
        if task is None:
            return handler.send(200, {"id": task_id, "status": "Task not found"})
        mode = self.mode
        if mode == "poll_server_error" and self.misbehaving():
            return handler.send(500, {"detail": "Internal Server Error"})
        task["polls"] += 1
        if task["polls"] <= self.pending_polls:
            return handler.send(
                200,
                {"id": task_id, "status": "Pending", "result": None, "progress": 0.5},
            )
        if (
            mode
            in (
                "request_moderated",
                "content_moderated",
                "task_error",
                "malformed_poll",
            )
            and self.misbehaving()
        ):
            if mode == "malformed_poll":
                return handler.send(200, {"id": task_id, "state": "weird"})
            status = {
                "request_moderated": "Request Moderated",
                "content_moderated": "Content Moderated",
                "task_error": "Error",
            }[mode]
            details = (
                {"Moderation Reasons": ["Derivative Works Filter"]}
                if "moderated" in mode
                else "GPU worker crashed"
            )
            return handler.send(
                200,
                {"id": task_id, "status": status, "result": None, "details": details},
            )
        return handler.send(
            200,
            {
                "id": task_id,
                "status": "Ready",
                "result": {
                    "sample": f"{self.base_url}/samples/{task_id}.png",
                    "prompt": task["prompt"],
                    "seed": task["seed"],
                    "start_time": 1.0,
                    "end_time": 2.5,
                    "duration": 1.5,
                },
            },
        )


class FakeGemini(_Server):
    """``POST /v1beta/models/{model}:generateContent`` as in the Gemini REST API.

    Modes: ok, rate_limited (429 RESOURCE_EXHAUSTED + Retry-After), server_error
    (503 UNAVAILABLE), timeout, bad_request (400 INVALID_ARGUMENT), prompt_blocked
    (promptFeedback.blockReason), image_safety (finishReason IMAGE_SAFETY),
    text_only (the model answers in words), malformed (not JSON), not_an_image.
    """

    def handle(self, handler, method, body):
        entry = self.log(handler, method, body)
        path = urlparse(handler.path).path
        if method != "POST" or not path.endswith(":generateContent"):
            return handler.send(404, _gerror(404, "Not found", "NOT_FOUND"))
        if handler.headers.get("x-goog-api-key") != API_KEY:
            return handler.send(
                400,
                _gerror(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    "INVALID_ARGUMENT",
                ),
            )
        req = entry["json"] or {}
        prompt = req["contents"][0]["parts"][0]["text"]
        seed = (req.get("generationConfig") or {}).get("seed", 0)
        mode = self.mode
        if mode != "ok" and self.misbehaving():
            if mode == "rate_limited":
                return handler.send(
                    429,
                    _gerror(
                        429,
                        "Resource has been exhausted (e.g. check quota).",
                        "RESOURCE_EXHAUSTED",
                    ),
                    headers={"retry-after": self.retry_after},
                )
            if mode == "server_error":
                return handler.send(
                    503,
                    _gerror(
                        503,
                        "The model is overloaded. Please try again later.",
                        "UNAVAILABLE",
                    ),
                )
            if mode == "timeout":
                time.sleep(self.delay)
                return handler.send(503, _gerror(503, "late", "UNAVAILABLE"))
            if mode == "bad_request":
                return handler.send(
                    400, _gerror(400, "Unsupported aspect ratio.", "INVALID_ARGUMENT")
                )
            if mode == "prompt_blocked":
                return handler.send(
                    200,
                    {
                        "promptFeedback": {"blockReason": "SAFETY"},
                        "usageMetadata": {"promptTokenCount": 9},
                    },
                )
            if mode == "image_safety":
                return handler.send(
                    200,
                    {
                        "candidates": [
                            {
                                "content": {"role": "model", "parts": []},
                                "finishReason": "IMAGE_SAFETY",
                                "finishMessage": "Unable to show the generated image.",
                                "index": 0,
                            }
                        ]
                    },
                )
            if mode == "text_only":
                return handler.send(
                    200,
                    {
                        "candidates": [
                            {
                                "content": {
                                    "role": "model",
                                    "parts": [
                                        {"text": "I can't create images of that."}
                                    ],
                                },
                                "finishReason": "STOP",
                                "index": 0,
                            }
                        ]
                    },
                )
            if mode == "malformed":
                return handler.send(
                    200, raw=b'{"candidates": [', content_type="application/json"
                )
            if mode == "not_an_image":
                return handler.send(200, _ok_body(b"not really a png"))
        return handler.send(200, _ok_body(_png(prompt, seed)))


def _ok_body(data: bytes) -> dict:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is your image."},
                        {
                            "inlineData": {
                                "mimeType": "image/png",
                                "data": base64.b64encode(data).decode(),
                            }
                        },
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1302,
        },
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": "resp-abc",
    }


def _gerror(code: int, message: str, status: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


@contextmanager
def running(server: _Server):
    server.start()
    try:
        yield server
    finally:
        server.stop()

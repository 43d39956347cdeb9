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


def _draft_png(prompt: str, seed: int) -> bytes:
    """A different picture from the final one, as a model's draft would be."""
    return render(prompt=f"draft of {prompt}", seed=seed + 1, width=32, height=32)[0]


# --- Black Forest Labs ---------------------------------------------------------------

FLUX2 = {
    "flux-2-max",
    "flux-2-pro",
    "flux-2-flex",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
}
FLUX1_SIZED = {"flux-dev", "flux-pro", "flux-pro-1.1"}
FLUX1_ASPECT = {"flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max"}


def _bfl_body_errors(model: str, body: dict) -> list[dict]:
    """The 422 ``detail`` list BFL's request validation would give (documented
    limits per endpoint: FLUX.2 sizes multiples of 16 up to 4 MP, FLUX.1
    256-1440 in steps of 32, safety_tolerance 0-5 (FLUX.2) or 0-6 (FLUX.1))."""
    errors = []

    def bad(field, msg):
        errors.append({"loc": ["body", field], "msg": msg, "type": "value_error"})

    w, h = body.get("width"), body.get("height")
    if model in FLUX2:
        for field, v in (("width", w), ("height", h)):
            if v is not None and (v < 64 or v % 16):
                bad(field, "must be a multiple of 16 and at least 64")
        if w and h and w * h > 2048 * 2048:
            bad("width", "width × height must be at most 4 megapixels")
        tol_max = 5
    else:
        if model in FLUX1_SIZED:
            for field, v in (("width", w), ("height", h)):
                if v is not None and (not 256 <= v <= 1440 or v % 32):
                    bad(field, "must be a multiple of 32 between 256 and 1440")
        tol_max = 6
    tol = body.get("safety_tolerance")
    if tol is not None and not 0 <= tol <= tol_max:
        bad("safety_tolerance", f"must be between 0 and {tol_max}")
    return errors


class FakeBFL(_Server):
    """``POST /v1/{model}`` → id + polling_url; ``GET /v1/get_result?id=`` →
    status; ``GET /samples/{id}.png`` → a redirect to the signed delivery URL
    ``/delivery/{id}.png`` (no key needed; it expires ``sample_ttl`` seconds after
    the task is Ready, with 403 like a blob store's expired signature).

    ``submissions`` counts accepted submits: each is a paid task. Removing a task
    from ``tasks`` makes it gone (``Task not found``), as when BFL expires it.

    Modes: ok, rate_limited (429 on submit; BFL sends no Retry-After),
    server_error (503 on submit), poll_server_error (500 on poll), timeout
    (submit stalls), poll_timeout (a poll stalls), bad_request (422),
    request_moderated, content_moderated, task_error (status Error), task_lost
    (poll says "Task not found"), malformed_submit, malformed_poll, not_an_image.
    """

    def __init__(self):
        super().__init__()
        # Where the answers point: this server unless a test names another one
        # (a foreign host for polling_url or the sample).
        self.polling_base: str | None = None
        self.sample_url: str | None = None
        self.tasks: dict[str, dict] = {}
        self.pending_polls = 1  # "Pending" answers before "Ready"
        self.sample_ttl = 600.0  # BFL: the sample URL is valid for 10 minutes
        self.error_message = "GPU worker crashed"
        self.submissions = 0  # accepted submits: each one is a paid task

    def handle(self, handler, method, body):
        entry = self.log(handler, method, body)
        url = urlparse(handler.path)
        if url.path.startswith("/samples/"):
            return self._sample_redirect(handler, url.path)
        if url.path.startswith("/delivery/"):
            return self._delivery(handler, url.path)
        if handler.headers.get("x-key") != API_KEY:
            return handler.send(403, {"detail": "Not authenticated - Invalid key"})
        if method == "POST" and url.path.startswith("/v1/"):
            return self._submit(handler, entry, url.path.removeprefix("/v1/"))
        if method == "GET" and url.path == "/v1/get_result":
            task_id = parse_qs(url.query).get("id", [""])[0]
            return self._poll(handler, task_id)
        return handler.send(404, {"detail": "Not Found"})

    def _sample_redirect(self, handler, path):
        task_id = path.rsplit("/", 1)[-1].removesuffix(".png")
        location = f"{self.base_url}/delivery/{task_id}.png?sig=abc"
        return handler.send(302, {}, headers={"location": location})

    def _delivery(self, handler, path):
        task_id = path.rsplit("/", 1)[-1].removesuffix(".png")
        task = self.tasks.get(task_id)
        if task is None or task.get("ready_at") is None:
            return handler.send(404, {"detail": "Not Found"})
        if time.monotonic() - task["ready_at"] > self.sample_ttl:
            return handler.send(
                403,
                raw=b"<Error><Code>AuthenticationFailed</Code></Error>",
                content_type="application/xml",
            )
        if self.mode == "not_an_image" and self.misbehaving():
            return handler.send(200, raw=b"<html>oops</html>", content_type="text/html")
        return handler.send(
            200, raw=_png(task["prompt"], task["seed"]), content_type="image/png"
        )

    def _submit_failure(self, handler):
        if self.mode == "rate_limited":
            return handler.send(
                429, {"detail": "You have exceeded the number of active tasks."}
            )
        if self.mode == "server_error":
            return handler.send(503, {"detail": "Service Unavailable"})
        if self.mode == "timeout":
            time.sleep(self.delay)
            return handler.send(503, {"detail": "too late"})
        if self.mode == "bad_request":
            detail = [{"loc": ["body"], "msg": "invalid input", "type": "value_error"}]
            return handler.send(422, {"detail": detail})
        return handler.send(
            200, raw=b"<html>502 Bad Gateway</html>", content_type="text/html"
        )

    def _submit(self, handler, entry, model):
        if model not in FLUX2 | FLUX1_SIZED | FLUX1_ASPECT:
            return handler.send(404, {"detail": "Not Found"})
        submit_modes = (
            "rate_limited",
            "server_error",
            "timeout",
            "bad_request",
            "malformed_submit",
        )
        if self.mode in submit_modes and self.misbehaving():
            return self._submit_failure(handler)
        body = entry["json"] or {}
        errors = _bfl_body_errors(model, body)
        if errors:
            return handler.send(422, {"detail": errors})
        with self._lock:
            self.submissions += 1
            task_id = f"task-{self.submissions}"
            self.tasks[task_id] = {
                "prompt": body.get("prompt", ""),
                "seed": body.get("seed", 0),
                "polls": 0,
                "ready_at": None,
            }
        return handler.send(
            200,
            {
                "id": task_id,
                "polling_url": f"{self.polling_base or self.base_url}"
                f"/v1/get_result?id={task_id}",
                "cost": 3.0,
                "input_mp": 0.0,
                "output_mp": 1.05,
            },
        )

    def _poll_failure(self, handler, task_id):
        mode = self.mode
        if mode == "malformed_poll":
            return handler.send(200, {"id": task_id, "state": "weird"})
        if mode == "task_lost":
            return handler.send(200, {"id": task_id, "status": "Task not found"})
        status = {
            "request_moderated": "Request Moderated",
            "content_moderated": "Content Moderated",
            "task_error": "Error",
        }[mode]
        details = (
            {"Moderation Reasons": ["Derivative Works Filter"]}
            if "moderated" in mode
            else self.error_message
        )
        return handler.send(
            200, {"id": task_id, "status": status, "result": None, "details": details}
        )

    def _poll(self, handler, task_id):
        task = self.tasks.get(task_id)
        if task is None:
            return handler.send(200, {"id": task_id, "status": "Task not found"})
        if self.mode == "poll_server_error" and self.misbehaving():
            return handler.send(500, {"detail": "Internal Server Error"})
        if self.mode == "poll_timeout" and self.misbehaving():
            time.sleep(self.delay)
            return handler.send(500, {"detail": "too late"})
        task["polls"] += 1
        if task["polls"] <= self.pending_polls:
            return handler.send(
                200,
                {"id": task_id, "status": "Pending", "result": None, "progress": 0.5},
            )
        terminal = (
            "request_moderated",
            "content_moderated",
            "task_error",
            "task_lost",
            "malformed_poll",
        )
        if self.mode in terminal and self.misbehaving():
            return self._poll_failure(handler, task_id)
        if task["ready_at"] is None:
            task["ready_at"] = time.monotonic()
        return handler.send(
            200,
            {
                "id": task_id,
                "status": "Ready",
                "result": {
                    "sample": self.sample_url
                    or f"{self.base_url}/samples/{task_id}.png",
                    "prompt": task["prompt"],
                    "seed": task["seed"],
                    "start_time": 1.0,
                    "end_time": 2.5,
                    "duration": 1.5,
                },
            },
        )


class ForeignServer(_Server):
    """Another origin a provider's answer may point at (a blob store, or an
    attacker): it logs every request (headers included) and answers
    ``/image.png`` with a PNG, ``/hop/<n>`` with a redirect to ``/hop/<n-1>``
    (``/hop/0`` → the PNG), ``/huge`` with ``huge_bytes`` of data (Content-Length
    sent) and ``/huge-unsized`` with the same without a length. ``sent`` counts
    the body bytes it managed to write."""

    def __init__(self):
        super().__init__()
        self.huge_bytes = 300 * 2**20
        self.sent = 0

    def handle(self, handler, method, body):
        self.log(handler, method, body)
        path = urlparse(handler.path).path
        if path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[-1])
            target = "/image.png" if n == 0 else f"/hop/{n - 1}"
            return handler.send(302, {}, headers={"location": target})
        if path in ("/huge", "/huge-unsized"):
            return self._huge(handler, sized=path == "/huge")
        return handler.send(200, raw=_png("foreign", 1), content_type="image/png")

    def _huge(self, handler, *, sized: bool):
        handler.send_response(200)
        handler.send_header("content-type", "image/png")
        if sized:
            handler.send_header("content-length", str(self.huge_bytes))
        else:
            handler.send_header("connection", "close")
            handler.close_connection = True
        handler.end_headers()
        chunk = bytes(2**20)
        try:
            for _ in range(self.huge_bytes // len(chunk)):
                handler.wfile.write(chunk)
                self.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the cap is for


# --- Gemini ----------------------------------------------------------------------

# The image models the fake serves, with what their imageConfig takes (Google's
# docs, 2026-11-27). Anything else - a shut-down preview, gemini-2.5-flash-image
# after 2026-10-02, a typo - gets 404 NOT_FOUND as from the real API.
GEMINI_BASE_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16"}
GEMINI_BASE_RATIOS |= {"16:9", "21:9"}
GEMINI_MODELS = {
    "gemini-3.1-flash-image": (
        GEMINI_BASE_RATIOS | {"1:4", "4:1", "1:8", "8:1"},
        {"512", "1K", "2K", "4K"},
    ),
    "gemini-3-pro-image": (GEMINI_BASE_RATIOS, {"1K", "2K", "4K"}),
}


class FakeGemini(_Server):
    """``POST /v1beta/models/{model}:generateContent`` as in the Gemini REST API.

    Gemini 3 image models think first: by default the answer carries ``drafts``
    draft images as ``thought: true`` parts before the final image.

    Modes: ok, rate_limited (429 RESOURCE_EXHAUSTED with QuotaFailure for a
    per-minute quota and RetryInfo ``retryDelay``; no Retry-After header, as
    Google sends none), daily_quota (429 for a per-day quota), server_error
    (503 UNAVAILABLE), timeout, bad_request (400 INVALID_ARGUMENT),
    prompt_blocked (promptFeedback.blockReason), image_safety (finishReason
    IMAGE_SAFETY), text_only (the model answers in words), drafts_only (thought
    images, no final one), malformed (not JSON), not_an_image.
    """

    def __init__(self):
        super().__init__()
        self.retry_delay = "7s"
        self.drafts = 1

    def handle(self, handler, method, body):
        entry = self.log(handler, method, body)
        path = urlparse(handler.path).path
        model = path.rsplit("/", 1)[-1].removesuffix(":generateContent")
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
        if model not in GEMINI_MODELS:
            return handler.send(
                404,
                _gerror(
                    404,
                    f"models/{model} is not found for API version v1beta, or is not "
                    "supported for generateContent. Call ListModels to see the list "
                    "of available models and their supported methods.",
                    "NOT_FOUND",
                ),
            )
        req = entry["json"] or {}
        config = req.get("generationConfig") or {}
        invalid = _gemini_config_error(model, config.get("imageConfig") or {})
        if invalid:
            return handler.send(400, _gerror(400, invalid, "INVALID_ARGUMENT"))
        prompt = req["contents"][0]["parts"][0]["text"]
        seed = config.get("seed", 0)
        if self.mode != "ok" and self.misbehaving():
            return self._failure(handler, model, prompt, seed)
        return handler.send(200, _ok_body(prompt, seed, model, drafts=self.drafts))

    def _failure(self, handler, model, prompt, seed):
        answer = _GEMINI_FAILURES[self.mode]
        if callable(answer):
            return answer(self, handler, model, prompt, seed)
        status, payload = answer
        return handler.send(status, payload)

    def _rate_limited(self, handler, model, prompt, seed):
        return handler.send(
            429, _quota_error(model, "PerMinute", self.retry_delay, limit="10")
        )

    def _daily_quota(self, handler, model, prompt, seed):
        return handler.send(429, _quota_error(model, "PerDay", "34567s", limit="250"))

    def _timeout(self, handler, model, prompt, seed):
        time.sleep(self.delay)
        return handler.send(503, _gerror(503, "late", "UNAVAILABLE"))

    def _drafts_only(self, handler, model, prompt, seed):
        body = _ok_body(prompt, seed, model, drafts=2)
        parts = body["candidates"][0]["content"]["parts"]
        parts[:] = [p for p in parts if p.get("thought")]
        return handler.send(200, body)

    def _malformed(self, handler, model, prompt, seed):
        return handler.send(
            200, raw=b'{"candidates": [', content_type="application/json"
        )

    def _not_an_image(self, handler, model, prompt, seed):
        body = _ok_body(prompt, seed, model, drafts=0)
        body["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"] = (
            base64.b64encode(b"not really a png").decode()
        )
        return handler.send(200, body)


def _gemini_config_error(model: str, image_config: dict) -> str | None:
    ratios, sizes = GEMINI_MODELS[model]
    ratio = image_config.get("aspectRatio")
    if ratio is not None and ratio not in ratios:
        return f"Unsupported aspect ratio: {ratio}."
    size = image_config.get("imageSize")
    if size is not None and size not in sizes:
        return f"Unsupported image size: {size}."
    return None


def _candidate(parts: list, finish: str = "STOP", **extra) -> dict:
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": finish,
                "index": 0,
                **extra,
            }
        ]
    }


_GEMINI_FAILURES = {
    "rate_limited": FakeGemini._rate_limited,
    "daily_quota": FakeGemini._daily_quota,
    "timeout": FakeGemini._timeout,
    "drafts_only": FakeGemini._drafts_only,
    "malformed": FakeGemini._malformed,
    "not_an_image": FakeGemini._not_an_image,
    "server_error": (
        503,
        {
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        },
    ),
    "bad_request": (
        400,
        {
            "error": {
                "code": 400,
                "message": "Unsupported aspect ratio.",
                "status": "INVALID_ARGUMENT",
            }
        },
    ),
    "prompt_blocked": (
        200,
        {
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 9},
        },
    ),
    "image_safety": (
        200,
        _candidate(
            [],
            "IMAGE_SAFETY",
            finishMessage="Unable to show the generated image.",
        ),
    ),
    "text_only": (
        200,
        _candidate([{"text": "I can't create images of that."}]),
    ),
}


def _inline(data: bytes, **extra) -> dict:
    return {
        "inlineData": {
            "mimeType": "image/png",
            "data": base64.b64encode(data).decode(),
        },
        **extra,
    }


def _ok_body(prompt: str, seed: int, model: str, *, drafts: int = 0) -> dict:
    parts: list[dict] = []
    for _ in range(drafts):
        parts.append({"text": "**Composing the scene**", "thought": True})
        parts.append(_inline(_draft_png(prompt, seed), thought=True))
    parts.append({"text": "Here is your image."})
    signature = base64.b64encode(b"opaque-signature").decode()
    parts.append(_inline(_png(prompt, seed), thoughtSignature=signature))
    body = _candidate(parts)
    body["usageMetadata"] = {
        "promptTokenCount": 12,
        "candidatesTokenCount": 1290,
        "thoughtsTokenCount": 200 * drafts,
        "totalTokenCount": 1302 + 200 * drafts,
    }
    body["modelVersion"] = model
    body["responseId"] = "resp-abc"
    return body


def _quota_error(model: str, window: str, retry_delay: str, *, limit: str) -> dict:
    """429 RESOURCE_EXHAUSTED with the google.rpc details Google documents."""
    quota_id = f"GenerateRequests{window}PerProjectPerModel"
    return {
        "error": {
            "code": 429,
            "message": (
                "You exceeded your current quota, please check your plan and "
                f"billing details. * Quota exceeded for metric: "
                f"generativelanguage.googleapis.com/generate_content_requests, "
                f"limit: {limit}, model: {model}"
            ),
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": (
                                "generativelanguage.googleapis.com/"
                                "generate_content_requests"
                            ),
                            "quotaId": quota_id,
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": limit,
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {
                            "description": "Learn more about Gemini API quotas",
                            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": retry_delay,
                },
            ],
        }
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

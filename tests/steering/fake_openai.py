"""A fake OpenAI-compatible chat server on 127.0.0.1 (``POST /v1/chat/completions``).

It answers in the documented shape (``choices[0].message.{content, refusal}``,
``finish_reason``, ``usage``; errors as ``{"error": {"message", "type", "code"}}``)
and misbehaves on request: ``mode`` is one of ok, refusal, content_filter,
not_json, no_choices, empty, 429, 500, 503, 401, timeout; ``fail_times`` failures
(None: all) before it answers normally. ``reply`` builds the assistant's text from
the request body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk-test-123"


def _completion(content, *, refusal=None, finish="stop") -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": refusal,
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


def _error(message: str, type_: str, code: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class FakeOpenAI:
    def __init__(self):
        self.mode = "ok"
        self.fail_times: int | None = None
        self.requests: list[dict] = []
        self.retry_after = "0"
        self.delay = 2.0
        self.reply: Callable[[dict], str] = lambda body: json.dumps(
            {"prompts": ["a fox, oil painting", "a fox, golden hour light"]}
        )
        self._lock = threading.Lock()

    def _misbehaving(self) -> bool:
        with self._lock:
            if self.mode == "ok":
                return False
            if self.fail_times is None:
                return True
            if self.fail_times > 0:
                self.fail_times -= 1
                return True
            return False

    def _failure(self, mode: str) -> tuple[int, dict | bytes, dict]:
        server_error = _error("The server had an error.", "server_error", "server")
        bad_key = _error(
            "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )
        table = {
            "refusal": (200, _completion(None, refusal="I can't help with that.")),
            "content_filter": (200, _completion(None, finish="content_filter")),
            "not_json": (200, b"<html>gateway</html>"),
            "no_choices": (200, {"id": "x", "choices": []}),
            "empty": (200, _completion("")),
            "prose": (200, _completion("Sure! Here are some prompts: a fox at dawn")),
            "500": (500, server_error),
            "503": (503, server_error),
            "401": (401, bad_key),
        }
        if mode == "429":
            limited = _error(
                "Rate limit reached for requests", "requests", "rate_limit_exceeded"
            )
            return 429, limited, {"retry-after": self.retry_after}
        status, payload = table[mode]
        return status, payload, {}

    def respond(self, headers, body: dict) -> tuple[int, dict | bytes, dict]:
        if headers.get("authorization") != f"Bearer {API_KEY}":
            return self._failure("401")
        if not self._misbehaving():
            return 200, _completion(self.reply(body)), {}
        if self.mode == "timeout":
            time.sleep(self.delay)
            return 200, _completion(self.reply(body)), {}
        return self._failure(self.mode)

    @contextmanager
    def running(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw or b"{}")
                server.requests.append({"path": self.path, "body": body})
                if self.path != "/v1/chat/completions":
                    status, payload, extra = 404, _error("Not found", "x", "x"), {}
                else:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, payload, extra = server.respond(headers, body)
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else json.dumps(payload).encode()
                )
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            host, port = httpd.server_address[:2]
            self.base_url = f"http://{host}:{port}"
            yield self
        finally:
            httpd.shutdown()
            httpd.server_close()

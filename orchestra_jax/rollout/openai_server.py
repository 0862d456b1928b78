"""An OpenAI-compatible ``/v1/chat/completions`` server over any in-process ChatModel.

Puts a :class:`~orchestra_jax.rollout.local_expert.LocalChatModel` (e.g. SmolLM2 served by our JAX
sampler) behind the HTTP API that :class:`~orchestra_jax.tools.llm_client.OpenAIChatClient` —
the toolset's expert client — already speaks, so experts, user simulators and judges reach a local
model exactly as they reach a remote one. Standard library only (``http.server``): one handler
thread per connection, all model calls on one asyncio loop thread (so concurrent requests reach
the engine together and :class:`LocalJaxEngine` batches them).

Endpoints: ``POST /v1/chat/completions`` (non-streaming; ``messages``, ``max_tokens`` or
``max_completion_tokens``, ``temperature``, ``tools``; ``model`` must be one of the served names
when given), ``GET /v1/models``, ``GET /health``. Bad requests get a 4xx with an OpenAI-style
``{"error": {"message", "type", "code"}}`` body (malformed JSON, missing/invalid fields,
``stream: true``, ``n > 1``, an unknown model, a body over ``max_body_bytes``, a prompt the model
refuses with an ``ExpertError`` of status 400); any other model failure is a 500, a call past ``request_timeout_s`` a 504 — the server keeps serving either way.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Sequence

from orchestra_jax.tools.llm_client import ChatModel, ChatResponse, ExpertError

_ROLES = ("system", "user", "assistant", "tool", "developer")


class RequestError(ValueError):
    """A client error: HTTP status, OpenAI error type and code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request",
                 etype: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.code, self.etype = status, code, etype


def _content_text(content: Any, where: str) -> Optional[str]:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only text parts are supported
        out = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or \
                    not isinstance(part.get("text"), str):
                raise RequestError(f"{where}.content[{i}]: only text parts "
                                   "({'type': 'text', 'text': str}) are supported")
            out.append(part["text"])
        return "".join(out)
    raise RequestError(f"{where}.content must be a string, a list of text parts or null, "
                       f"got {type(content).__name__}")


def parse_request(body: Any, served: Sequence[str], default_max_tokens: int) -> dict:
    """Validates a chat-completion request body → keyword arguments for ``ChatModel.chat``
    plus ``"model"``; raises :class:`RequestError`."""
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or (served and model not in served)):
        raise RequestError(f"model {model!r} is not served here (served: {list(served)})",
                           status=404, code="model_not_found")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by this server")
    n = body.get("n", 1)
    if n != 1:
        raise RequestError(f"only n=1 is supported, got n={n!r}")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty list")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in _ROLES:
            raise RequestError(f"messages[{i}].role must be one of {list(_ROLES)}, got {role!r}")
        msg = dict(m)
        msg["content"] = _content_text(m.get("content"), f"messages[{i}]")
        messages.append(msg)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max_tokens))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    temperature = body.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not 0.0 <= temperature <= 2.0:
        raise RequestError(f"temperature must be a number in [0, 2], got {temperature!r}")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict)
                                                                  for t in tools)):
        raise RequestError("'tools' must be a list of objects")
    return {"model": model, "messages": messages, "max_tokens": int(max_tokens),
            "temperature": float(temperature), "tools": tools or None}


def completion_body(resp: ChatResponse, model: str) -> dict:
    """A ``chat.completion`` JSON object for one response (usage included)."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.text}
    if resp.reasoning:
        message["reasoning_content"] = resp.reasoning
    finish = resp.finish_reason if resp.finish_reason in ("stop", "length") else "stop"
    if resp.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.get("name", ""),
                          "arguments": json.dumps(c.get("arguments") or {})}}
            for c in resp.tool_calls]
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": int(resp.prompt_tokens),
                  "completion_tokens": int(resp.completion_tokens),
                  "total_tokens": int(resp.prompt_tokens + resp.completion_tokens)},
    }


class OpenAIChatServer:
    """Serves ``chat_model`` at ``http://{host}:{port}/v1`` (``port=0``: a free port).

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``served_names``: the
    ``model`` values accepted (default: ``chat_model.model``); requests without ``model`` are
    accepted too.
    """

    def __init__(self, chat_model: ChatModel, *, host: str = "127.0.0.1", port: int = 0,
                 served_names: Optional[Sequence[str]] = None, request_timeout_s: float = 600.0,
                 default_max_tokens: int = 1024, max_body_bytes: int = 8 << 20):
        self.chat_model = chat_model
        name = getattr(chat_model, "model", None) or "local"
        self.served_names = list(served_names) if served_names else [name]
        self.request_timeout_s = float(request_timeout_s)
        self.default_max_tokens = int(default_max_tokens)
        self.max_body_bytes = int(max_body_bytes)
        self._host, self._port = host, int(port)
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._threads: list[threading.Thread] = []
        self.requests_served = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` — what :class:`ExpertConfig.base_url` wants."""
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> "OpenAIChatServer":
        if self._httpd is not None:
            return self
        self._loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._loop.run_forever, name="openai-server-loop",
                                       daemon=True)
        loop_thread.start()
        handler = type("Handler", (_Handler,), {"server_obj": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        http_thread = threading.Thread(target=self._httpd.serve_forever, name="openai-server",
                                       daemon=True)
        http_thread.start()
        self._threads = [loop_thread, http_thread]
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            for t in self._threads:
                t.join(timeout=10)
            self._loop.close()
            self._loop = None
        self._threads = []

    def __enter__(self) -> "OpenAIChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling
    def handle_completion(self, body: Any) -> dict:
        """Blocking: one request body → response body; raises :class:`RequestError`."""
        req = parse_request(body, self.served_names, self.default_max_tokens)
        model = req.pop("model") or self.served_names[0]
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self.chat_model.chat(**req), self._loop)
        try:
            resp = fut.result(timeout=self.request_timeout_s)
        except TimeoutError:
            fut.cancel()
            raise RequestError(f"model call exceeded {self.request_timeout_s:g} s", status=504,
                               code="timeout", etype="server_error") from None
        except ExpertError as e:  # status 400: the request's fault (too long, unrenderable)
            if e.status == 400:
                raise RequestError(str(e), status=400, code="bad_request") from None
            raise RequestError(str(e), status=500, code="model_error",
                               etype="server_error") from None
        except Exception as e:  # noqa: BLE001 - never kill the server for one request
            raise RequestError(f"{type(e).__name__}: {e}", status=500, code="internal_error",
                               etype="server_error") from None
        self.requests_served += 1
        return completion_body(resp, model)


class _Handler(BaseHTTPRequestHandler):
    server_obj: OpenAIChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the caller logs what it needs
        pass

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: RequestError) -> None:
        self._send(e.status, {"error": {"message": str(e), "type": e.etype, "code": e.code}})

    def do_GET(self):  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif path == "/v1/models":
            self._send(200, {"object": "list", "data": [
                {"id": n, "object": "model", "owned_by": "orchestra_jax"}
                for n in self.server_obj.served_names]})
        else:
            self._error(RequestError(f"no route GET {path}", status=404, code="not_found"))

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        srv = self.server_obj
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._error(RequestError("Content-Length is required",
                                            status=HTTPStatus.LENGTH_REQUIRED))
        if length > srv.max_body_bytes:
            self.close_connection = True
            return self._error(RequestError(f"body of {length} bytes exceeds "
                                            f"{srv.max_body_bytes}", status=413))
        raw = self.rfile.read(length)
        if path != "/v1/chat/completions":
            return self._error(RequestError(f"no route POST {path}", status=404,
                                            code="not_found"))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._error(RequestError(f"body is not valid JSON: {e}"))
        try:
            self._send(200, srv.handle_completion(body))
        except RequestError as e:
            self._error(e)

"""A real HTTP server on 127.0.0.1 for client tests: scripted replies, 429/500, hangs.

Not a mock of our code: the clients under test open real TCP connections and parse real HTTP.
Each request pops the next action from ``script`` (the last one repeats):

* ``("json", status, body_dict, headers)``  — answer with JSON;
* ``("hang",)``                             — never answer (until the server stops);
* ``("chat", text, prompt_tokens, completion_tokens)`` — a well-formed OpenAI chat completion;
* a callable ``f(request_json) -> action``  — computed per request.

``hits`` counts requests; ``requests`` keeps (path, headers, json body).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def chat_completion(text: str, prompt_tokens: int = 10, completion_tokens: int = 5,
                    model: str = "test-model", tool_calls: list | None = None) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls is not None:
        msg["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FaultServer:
    def __init__(self, script: list):
        self.script = list(script)
        self.hits = 0
        self.requests: list[tuple[str, dict, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with outer._lock:
                    outer.hits += 1
                    outer.requests.append((self.path, dict(self.headers), body))
                    action = outer.script[0] if len(outer.script) == 1 else outer.script.pop(0)
                if callable(action):
                    action = action(body)
                kind = action[0]
                if kind == "hang":
                    outer._stop.wait(60)
                    return
                if kind == "chat":
                    status, payload, headers = 200, chat_completion(*action[1:]), {}
                else:
                    _, status, payload, headers = action
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

"""A response cache for deterministic expert calls (greedy decoding, temperature 0).

Greedy decoding of a fixed model is a function of the request, so an RL run that asks the same
expert the same question thousands of times (G rollouts × epochs) can answer repeats from a
cache. :class:`CachedChatModel` wraps any ``ChatModel``: a request with ``temperature == 0`` is
keyed by (model name, messages, tools, max_tokens); a hit returns the recorded response —
text, token counts (so costs are billed exactly as for the first call) and the *first call's
measured latency* (so the reward's latency term sees what the call really took, and repeated
calls give identical rewards). Sampling requests (temperature > 0) always go to the model.

With ``path`` the cache is a JSONL file appended (and flushed) per new entry and loaded on
start, so later runs and other seeds reuse it. Hits/misses are counted.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import pathlib
import threading
from typing import Any, Optional, Sequence

from orchestra_jax.tools.llm_client import ChatResponse


def request_key(model: str, messages: Sequence[dict], tools: Optional[list], max_tokens: int
                ) -> str:
    blob = json.dumps({"model": model, "messages": list(messages), "tools": tools,
                       "max_tokens": int(max_tokens)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class CachedChatModel:
    """``ChatModel`` wrapper that memoises greedy calls (see module docstring)."""

    def __init__(self, inner: Any, *, model: Optional[str] = None,
                 path: Optional[str | os.PathLike] = None):
        self.inner = inner
        self.model = model or getattr(inner, "model", "model")
        self.path = pathlib.Path(path) if path else None
        self._mem: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._inflight: dict[str, asyncio.Future] = {}
        self.hits = self.misses = 0
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._mem[row["key"]] = row["response"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue   # a torn last line from a killed run: ignore it

    def __len__(self) -> int:
        return len(self._mem)

    def _store(self, key: str, resp: ChatResponse) -> None:
        d = dataclasses.asdict(resp)
        with self._lock:
            self._mem[key] = d
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"key": key, "response": d}) + "\n")

    async def chat(self, messages: Sequence[dict], *, max_tokens: int = 1024,
                   temperature: float = 0.0, tools: Optional[list[dict]] = None) -> ChatResponse:
        if temperature != 0:
            return await self.inner.chat(messages, max_tokens=max_tokens,
                                         temperature=temperature, tools=tools)
        key = request_key(self.model, messages, tools, max_tokens)
        hit = self._mem.get(key)
        if hit is None and key in self._inflight:      # the same request is being computed
            await asyncio.shield(self._inflight[key])
            hit = self._mem.get(key)
        if hit is not None:
            self.hits += 1
            return ChatResponse(**hit)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            resp = await self.inner.chat(messages, max_tokens=max_tokens, temperature=0.0,
                                         tools=tools)
            self.misses += 1
            self._store(key, resp)
            return resp
        finally:
            self._inflight.pop(key, None)
            if not fut.done():
                fut.set_result(None)

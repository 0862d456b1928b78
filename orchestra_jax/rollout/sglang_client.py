"""Async client for SGLang's native ``/generate`` API (upstream SGLang and sglang-jax).

Token ids in, token ids + per-token log-probs out — the trainer never re-tokenises. Each prompt is
one POST::

    {"input_ids": [...], "rid": "...", "return_logprob": true, "return_text_in_logprobs": false,
     "sampling_params": {"max_new_tokens", "temperature", "top_p", "top_k", "stop_token_ids",
                         "no_stop_trim": true, "skip_special_tokens": false[, "sampling_seed"]}}

and the answer's ``output_ids`` / ``meta_info.output_token_logprobs`` (``[[logprob, token_id, text],
...]``) / ``meta_info.finish_reason`` become a :class:`GenerateOutput`.

Robustness contract (never a hang, never an exception for a server problem):

* at most ``max_concurrency`` requests in flight (asyncio semaphore, shared by all servers);
* every request has a total deadline of ``request_timeout_s`` seconds across retries, counted
  from when it gets a concurrency slot (queueing behind other requests never times out). On
  expiry the client POSTs ``/abort_request {"rid": ...}`` to the server that holds it and returns a failed
  output (``finish_reason="error"``, ``error`` says "timeout ...");
* connection errors and HTTP 5xx are retried (at most ``max_retries`` extra attempts, other
  servers first); a server that refused a connection is marked dead for
  ``dead_server_cooldown_s`` seconds and skipped meanwhile; when every server fails the output
  is a failed one with the last error;
* several URLs share the load: each request goes to the live server with the fewest requests in
  flight (round-robin among ties).

Log-prob convention: SGLang returns the log-softmax of the logits the sampler used. Greedy
(temperature 0) and temperature 1 give the model's own log-softmax; for other temperatures
sglang-jax 0.1.0rc0 returns log-probs of the *temperature-scaled* distribution (before top-k/top-p).

Note: the server also stops at the checkpoint's EOS id(s) (``generation_config``/tokenizer EOS), in
addition to ``stop_token_ids``; put the EOS id in ``stop_token_ids`` when comparing with the local
sampler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from typing import Any, Optional, Sequence

import httpx
import numpy as np

from orchestra_jax.rollout.engine import EngineError, GenerateOutput, SamplingParams

_RETRYABLE_EXC = (httpx.TransportError,)  # connect/read/write errors, remote disconnects


@dataclasses.dataclass
class _ServerState:
    url: str
    in_flight: int = 0
    dead_until: float = 0.0  # time.monotonic() before which the server is skipped
    served: int = 0          # requests answered (for load-spreading tests and metrics)
    failures: int = 0


class SGLangEngine:
    """The :class:`~orchestra_jax.rollout.engine.Engine` backed by one or more SGLang servers.

    Args:
        urls: base URLs (``http://host:port``) of servers that all serve the same weights.
        max_concurrency: requests in flight at once, over all servers.
        request_timeout_s: total time budget of one prompt (seconds), retries included.
        max_retries: extra attempts after a connection error / 5xx (0 = try once).
        retry_backoff_s: sleep before a retry on the *same* server (seconds, doubles each time).
        connect_timeout_s: TCP connect timeout per attempt (seconds).
        dead_server_cooldown_s: how long a server that refused a connection is skipped (seconds).
        abort_timeout_s: time allowed for the best-effort ``/abort_request`` after a timeout.
        vocab_size: when given, prompts with ids ``>= vocab_size`` are rejected client-side
            (sglang-jax silently serves them). Negative ids are always rejected: one crashes
            sglang-jax 0.1.0rc0's detokenizer and with it the whole server.
        max_context: when given (the server's ``context_length``), ``max_new_tokens`` is capped
            to ``max_context - len(prompt)`` (finish_reason "length"), as LocalJaxEngine does, and a
            prompt that fills the context fails with a clear error instead of an HTTP 400.
    """

    def __init__(self, urls: Sequence[str] | str, *, max_concurrency: int = 64,
                 request_timeout_s: float = 600.0, max_retries: int = 2,
                 retry_backoff_s: float = 0.2, connect_timeout_s: float = 5.0,
                 dead_server_cooldown_s: float = 5.0, abort_timeout_s: float = 5.0,
                 vocab_size: Optional[int] = None, max_context: Optional[int] = None):
        if isinstance(urls, str):
            urls = [urls]
        urls = [u.rstrip("/") for u in urls]
        if not urls:
            raise ValueError("SGLangEngine needs at least one server URL")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.servers = [_ServerState(u) for u in urls]
        self.max_concurrency = max_concurrency
        self.request_timeout_s = float(request_timeout_s)
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.dead_server_cooldown_s = dead_server_cooldown_s
        self.abort_timeout_s = abort_timeout_s
        self.vocab_size = vocab_size
        self.max_context = max_context
        self._rr = itertools.count()
        # httpx clients and semaphores belong to one event loop; rebuild them if the loop changes
        # (e.g. successive asyncio.run calls).
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._client: Optional[httpx.AsyncClient] = None
        self._sem: Optional[asyncio.Semaphore] = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    # -- plumbing --------------------------------------------------------------------------------
    def _ensure_loop_state(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._client.is_closed:
            self._loop = loop
            limits = httpx.Limits(max_connections=self.max_concurrency + 8,
                                  max_keepalive_connections=self.max_concurrency)
            # read timeout is enforced per request by asyncio.wait_for (total deadline).
            timeout = httpx.Timeout(connect=self.connect_timeout_s, read=None, write=30.0, pool=None)
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
            self._sem = asyncio.Semaphore(self.max_concurrency)
            for s in self.servers:
                s.in_flight = 0
        return self._client, self._sem

    async def aclose(self) -> None:
        """Closes the HTTP connection pool (the engine can still be used afterwards)."""
        if self._client is not None:
            try:
                await self._client.aclose()
            except RuntimeError:  # pool bound to a closed loop
                pass
            self._client = None

    async def __aenter__(self) -> "SGLangEngine":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _pick(self, exclude: set[str]) -> _ServerState:
        """Least-in-flight live server not in ``exclude``; falls back to any server."""
        now = time.monotonic()
        for pool in ([s for s in self.servers if s.url not in exclude and s.dead_until <= now],
                     [s for s in self.servers if s.dead_until <= now],
                     [s for s in self.servers if s.url not in exclude],
                     self.servers):
            if pool:
                low = min(s.in_flight for s in pool)
                ties = [s for s in pool if s.in_flight == low]
                return ties[next(self._rr) % len(ties)]
        raise AssertionError("unreachable: no servers")

    # -- API ---------------------------------------------------------------------------------------
    @staticmethod
    def payload(prompt: Sequence[int], sampling: SamplingParams, rid: str) -> dict[str, Any]:
        """The JSON body of a ``/generate`` request for one prompt."""
        sp: dict[str, Any] = {
            "max_new_tokens": int(sampling.max_new_tokens),
            "temperature": float(sampling.temperature),
            "top_p": float(sampling.top_p),
            "top_k": int(sampling.top_k),
            "no_stop_trim": True,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
        }
        if sampling.stop_token_ids:
            sp["stop_token_ids"] = [int(t) for t in sampling.stop_token_ids]
        if sampling.seed is not None:
            sp["sampling_seed"] = int(sampling.seed)
        return {"input_ids": [int(t) for t in prompt], "sampling_params": sp,
                "return_logprob": True, "return_text_in_logprobs": False, "rid": rid}

    async def generate(self, prompts: Sequence[Sequence[int]],
                       sampling: SamplingParams) -> list[GenerateOutput]:
        """One continuation per prompt, concurrently. Failures come back as finish_reason 'error'."""
        return list(await asyncio.gather(*(self.generate_one(p, sampling) for p in prompts)))

    async def generate_one(self, prompt: Sequence[int], sampling: SamplingParams,
                           rid: Optional[str] = None) -> GenerateOutput:
        """One prompt → one :class:`GenerateOutput` (never raises for server/network trouble)."""
        problem = self._check_prompt(prompt)
        if problem:
            return _failed(problem, len(prompt), 0.0)
        if self.max_context is not None:
            room = self.max_context - len(prompt)
            if sampling.max_new_tokens > room:
                sampling = dataclasses.replace(sampling, max_new_tokens=room)
        rid = rid or uuid.uuid4().hex
        client, sem = self._ensure_loop_state()
        body = self.payload(prompt, sampling, rid)
        async with sem:
            # The deadline starts once the request may be sent: time queued behind
            # max_concurrency other requests does not count.
            t0 = time.perf_counter()
            deadline = t0 + self.request_timeout_s
            tried: set[str] = set()
            last_error = "no attempt made"
            backoff = self.retry_backoff_s
            for _ in range(self.max_retries + 1):
                server = self._pick(tried)
                if server.url in tried:  # every server tried once already: back off
                    await asyncio.sleep(min(backoff, max(0.0, deadline - time.perf_counter())))
                    backoff *= 2
                tried.add(server.url)
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    last_error += f"; then the {self.request_timeout_s:.1f} s deadline passed"
                    break
                server.in_flight += 1
                try:
                    resp = await asyncio.wait_for(
                        client.post(server.url + "/generate", json=body), timeout=remaining)
                except asyncio.TimeoutError:
                    await self._abort(server.url, rid)
                    return _failed(
                        f"timeout: no answer from {server.url} within {self.request_timeout_s:.1f} s "
                        f"(rid {rid}); sent /abort_request", len(prompt), time.perf_counter() - t0)
                except _RETRYABLE_EXC as e:
                    server.failures += 1
                    if isinstance(e, httpx.ConnectError):
                        server.dead_until = time.monotonic() + self.dead_server_cooldown_s
                    last_error = f"{type(e).__name__} talking to {server.url}: {e}"
                    continue
                finally:
                    server.in_flight -= 1
                if resp.status_code >= 500:
                    server.failures += 1
                    last_error = f"HTTP {resp.status_code} from {server.url}: {resp.text[:300]}"
                    continue
                if resp.status_code != 200:
                    return _failed(f"HTTP {resp.status_code} from {server.url}: {resp.text[:500]}",
                                   len(prompt), time.perf_counter() - t0)
                server.served += 1
                try:
                    return parse_generate_response(resp.json(), len(prompt), time.perf_counter() - t0)
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    return _failed(f"bad /generate response from {server.url}: {e}", len(prompt),
                                   time.perf_counter() - t0)
            return _failed(f"server unavailable after {len(tried)} server(s) tried: {last_error}",
                           len(prompt), time.perf_counter() - t0)

    def _check_prompt(self, prompt: Sequence[int]) -> Optional[str]:
        """A clear error message for a prompt the server must not see, else None."""
        if len(prompt) == 0:
            return "empty prompt: at least one input token is required"
        for i, t in enumerate(prompt):
            if not isinstance(t, (int, np.integer)) or isinstance(t, bool):
                return f"prompt token {i} is {t!r}, not an integer id"
            if t < 0 or (self.vocab_size is not None and t >= self.vocab_size):
                hi = self.vocab_size if self.vocab_size is not None else "vocab_size"
                return f"prompt token {i} has id {int(t)}, outside [0, {hi})"
        if self.max_context is not None and len(prompt) >= self.max_context:
            return (f"prompt of {len(prompt)} tokens fills the context (max_context "
                    f"{self.max_context}): no room to generate")
        return None

    async def _abort(self, url: str, rid: str) -> bool:
        """Best-effort ``POST /abort_request``; True if the server acknowledged it."""
        client = self._client
        if client is None:
            return False
        try:
            r = await asyncio.wait_for(client.post(url + "/abort_request", json={"rid": rid}),
                                       timeout=self.abort_timeout_s)
            return r.status_code == 200
        except (httpx.HTTPError, asyncio.TimeoutError):
            return False

    async def health(self, *, generate: bool = False, timeout_s: float = 5.0) -> dict[str, bool]:
        """``{url: healthy}`` via ``GET /health`` (or ``/health_generate``, which runs one token)."""
        client, _ = self._ensure_loop_state()
        path = "/health_generate" if generate else "/health"

        async def one(s: _ServerState) -> bool:
            try:
                r = await asyncio.wait_for(client.get(s.url + path), timeout=timeout_s)
                ok = r.status_code == 200
            except (httpx.HTTPError, asyncio.TimeoutError):
                ok = False
            s.dead_until = 0.0 if ok else time.monotonic() + self.dead_server_cooldown_s
            return ok

        results = await asyncio.gather(*(one(s) for s in self.servers))
        return dict(zip(self.urls, results))

    async def flush_cache(self) -> dict[str, bool]:
        """``POST /flush_cache`` on every server (drops the radix/prefix cache); ``{url: ok}``."""
        client, _ = self._ensure_loop_state()

        async def one(url: str) -> bool:
            try:
                r = await asyncio.wait_for(client.post(url + "/flush_cache"), timeout=30.0)
                return r.status_code == 200
            except (httpx.HTTPError, asyncio.TimeoutError):
                return False

        return dict(zip(self.urls, await asyncio.gather(*(one(u) for u in self.urls))))

    def generate_sync(self, prompts: Sequence[Sequence[int]],
                      sampling: SamplingParams) -> list[GenerateOutput]:
        """Blocking wrapper around :meth:`generate` (for scripts; not inside a running loop)."""
        async def run():
            try:
                return await self.generate(prompts, sampling)
            finally:
                await self.aclose()
        return asyncio.run(run())


def _failed(error: str, prompt_tokens: int, latency_s: float) -> GenerateOutput:
    return GenerateOutput(token_ids=[], logprobs=[], finish_reason="error",
                          prompt_tokens=prompt_tokens, latency_s=latency_s, error=error)


def parse_generate_response(data: dict[str, Any], prompt_tokens: int,
                            latency_s: float) -> GenerateOutput:
    """Turns one ``/generate`` JSON answer into a :class:`GenerateOutput`.

    Raises ValueError when the answer is malformed (no logprobs, ids and logprobs disagree).
    An aborted request (``finish_reason.type == "abort"``) becomes finish_reason "error".
    """
    if isinstance(data, list):  # a batched answer for a single prompt
        if len(data) != 1:
            raise ValueError(f"expected one result, got {len(data)}")
        data = data[0]
    if "error" in data and "meta_info" not in data:
        raise ValueError(f"server error: {data['error']}")
    meta = data["meta_info"]
    pairs = meta.get("output_token_logprobs")
    if pairs is None:
        raise ValueError("meta_info.output_token_logprobs missing (was return_logprob sent?)")
    token_ids = [int(t) for t in data.get("output_ids", [p[1] for p in pairs])]
    if len(pairs) > len(token_ids) > 0 and [int(p[1]) for p in pairs[-len(token_ids):]] == token_ids:
        # sglang-jax 0.1.0rc0 never advances send_output_token_logprobs_offset, so a request that
        # runs past 50 tokens gets its logprob prefix re-sent every 50 tokens (the list becomes
        # lp[:50] + lp[:100] + ... + lp). The last chunk is always the complete list.
        pairs = pairs[-len(token_ids):]
    logprobs = [float(p[0]) for p in pairs]
    ids_from_lp = [int(p[1]) for p in pairs]
    if token_ids != ids_from_lp:
        raise ValueError(f"output_ids {token_ids[:8]}... disagree with the logprob token ids "
                         f"{ids_from_lp[:8]}...")
    fr = meta.get("finish_reason")
    ftype = fr.get("type") if isinstance(fr, dict) else fr
    error = None
    if ftype == "length":
        reason = "length"
    elif ftype == "stop":
        reason = "stop"
    elif ftype == "abort":
        reason = "error"
        error = f"aborted by the server: {fr.get('message', '') if isinstance(fr, dict) else ''}".strip()
    elif ftype is None:
        reason = "error"
        error = "server returned no finish_reason (request did not finish)"
    else:
        reason = "error"
        error = f"unknown finish_reason {fr!r}"
    return GenerateOutput(token_ids=token_ids, logprobs=logprobs, finish_reason=reason,
                          prompt_tokens=int(meta.get("prompt_tokens", prompt_tokens)),
                          latency_s=latency_s, error=error)


__all__ = ["SGLangEngine", "parse_generate_response", "EngineError"]

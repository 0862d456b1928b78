"""In-process JAX rollout engine: the KV-cache sampler of ``orchestra_jax.models.sampling``
behind the async :class:`~orchestra_jax.rollout.engine.Engine` interface.

Concurrent ``generate`` calls (e.g. many episodes awaiting their next turn) are merged into one
batch when they share the same :class:`SamplingParams`: requests arriving within
``batch_window_s`` seconds of each other are sampled together (up to ``max_batch`` prompts), in
a worker thread (``asyncio.to_thread``) so the event loop keeps serving tool calls meanwhile.

Context handling: a prompt of ``n`` tokens gets at most ``max_context - n`` new tokens (finish
reason ``"length"`` when that cap, not ``max_new_tokens``, ended it); a prompt that already fills
the context, an empty prompt, or out-of-vocabulary ids come back with ``finish_reason="error"``
and a message — never an exception, so one bad request does not kill an episode batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional, Sequence

import jax

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.sampling import generate as sample_generate
from orchestra_jax.rollout.engine import EngineError, GenerateOutput, SamplingParams


class LocalJaxEngine:
    """``Engine`` over in-process params. ``update_params`` swaps weights (weight sync)."""

    def __init__(self, config: ModelConfig, params: Any, *, max_context: Optional[int] = None,
                 pad_id: int = 0, seed: int = 0, max_batch: int = 64,
                 batch_window_s: float = 0.002, pad_batch: bool = False):
        self.config = config
        self.max_context = min(int(max_context or config.max_position_embeddings),
                               config.max_position_embeddings)
        if self.max_context < 2:
            raise ValueError(f"max_context must be >= 2, got {self.max_context}")
        self.pad_id = int(pad_id)
        self.max_batch = int(max_batch)
        self.batch_window_s = float(batch_window_s)
        # pad_batch: every sampler call gets exactly max_batch rows (repeats of the last prompt,
        # results dropped) so a large model compiles once per prompt-length bucket, not once
        # per batch size too — worth it when compiles cost more than the padded rows
        self.pad_batch = bool(pad_batch)
        self._params = params
        self._struct = jax.tree.structure(params)
        self._shapes = [getattr(x, "shape", None) for x in jax.tree.leaves(params)]
        self._lock = threading.Lock()
        self._calls = 0
        self._seed = int(seed)
        self._pending: list[tuple[list[list[int]], SamplingParams, asyncio.Future]] = []
        self._worker: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.version = 0

    # ---------------------------------------------------------------- weight sync
    def update_params(self, params: Any) -> None:
        """Replaces the weights used by later batches (same tree structure and shapes)."""
        if jax.tree.structure(params) != self._struct:
            raise EngineError("update_params: param tree structure differs from the engine's")
        shapes = [getattr(x, "shape", None) for x in jax.tree.leaves(params)]
        if shapes != self._shapes:
            bad = next(i for i, (a, b) in enumerate(zip(shapes, self._shapes)) if a != b)
            raise EngineError(f"update_params: leaf {bad} has shape {shapes[bad]}, "
                              f"expected {self._shapes[bad]}")
        with self._lock:
            self._params = params
            self.version += 1

    @property
    def params(self) -> Any:
        return self._params

    # ---------------------------------------------------------------- async API
    async def generate(self, prompts: Sequence[Sequence[int]],
                       sampling: SamplingParams) -> list[GenerateOutput]:
        """One continuation per prompt (ids in, ids + log-probs out)."""
        prompts = [list(map(int, p)) for p in prompts]
        if not prompts:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (e.g. another asyncio.run): fresh queue
            self._loop, self._pending, self._worker = loop, [], None
        fut = loop.create_future()
        self._pending.append((prompts, sampling, fut))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(self.batch_window_s)
            sampling = self._pending[0][1]
            group, rest, n = [], [], 0
            for req in self._pending:
                if req[1] == sampling and (not group or n + len(req[0]) <= self.max_batch):
                    group.append(req)
                    n += len(req[0])
                else:
                    rest.append(req)
            self._pending = rest
            group = [g for g in group if not g[2].done()]
            if not group:
                continue
            flat = [p for g in group for p in g[0]]
            try:
                outs = await asyncio.to_thread(self.generate_sync, flat, sampling)
            except Exception as e:  # never leave an awaiting episode hanging
                outs = [GenerateOutput([], [], "error", len(p), 0.0, f"{type(e).__name__}: {e}")
                        for p in flat]
            k = 0
            for prompts, _, fut in group:
                if not fut.done():
                    fut.set_result(outs[k:k + len(prompts)])
                k += len(prompts)

    # ---------------------------------------------------------------- sync core
    def generate_sync(self, prompts: Sequence[Sequence[int]],
                      sampling: SamplingParams) -> list[GenerateOutput]:
        """Blocking version of :meth:`generate` (no cross-request batching)."""
        t0 = time.perf_counter()
        outs: list[Optional[GenerateOutput]] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        vocab = self.config.vocab_size
        for i, p in enumerate(prompts):
            if not p:
                outs[i] = GenerateOutput([], [], "error", 0, 0.0, "empty prompt")
            elif any(not 0 <= t < vocab for t in p):
                outs[i] = GenerateOutput([], [], "error", len(p), 0.0,
                                         f"prompt has token ids outside [0, {vocab})")
            elif len(p) >= self.max_context:
                outs[i] = GenerateOutput([], [], "error", len(p), 0.0,
                                         f"prompt of {len(p)} tokens leaves no room in "
                                         f"max_context {self.max_context}")
            else:
                budget = min(sampling.max_new_tokens, self.max_context - len(p))
                groups.setdefault(budget, []).append(i)
        with self._lock:
            params = self._params
            self._calls += 1
            call = self._calls
        for budget, idx in sorted(groups.items()):
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start:start + self.max_batch]
                # An explicit seed is reproducible; otherwise every call draws fresh noise.
                if sampling.seed is not None:
                    rng = jax.random.fold_in(jax.random.key(sampling.seed), budget * 131 + start)
                else:
                    rng = jax.random.fold_in(jax.random.key(self._seed),
                                             call * 1_000_003 + budget * 131 + start)
                batch = [prompts[i] for i in chunk]
                if self.pad_batch:
                    batch += [batch[-1]] * (self.max_batch - len(batch))
                res = sample_generate(
                    self.config, params, batch, max_new_tokens=budget,
                    temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                    stop_token_ids=sampling.stop_token_ids, rng=rng, pad_id=self.pad_id)
                for j, i in enumerate(chunk):
                    outs[i] = GenerateOutput(res.tokens[j], res.logprobs[j],
                                             res.finish_reasons[j], len(prompts[i]))
        dt = time.perf_counter() - t0
        for o in outs:
            o.latency_s = dt
        return outs  # type: ignore[return-value]

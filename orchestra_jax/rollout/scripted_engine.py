"""``ScriptedPolicyEngine`` — a TEST/DEMO engine: a fixed token script, genuine log-probs.

A random tiny policy almost never writes a valid ``<tool_call>``, so tests and demos that must
drive the tool paths deterministically (search -> enhance_reasoning -> answer) use this engine:
it implements the :class:`~orchestra_jax.rollout.engine.Engine` protocol by emitting, per call,
the next entry of a script (token ids, or text encoded with the tokenizer) — and it computes
the log-probabilities of those tokens with the REAL model's forward pass (:func:`score_tokens`:
the causal forward run chunk by chunk through the KV cache, each chunk's hidden states projected
to the vocabulary by the trainer's chunked :func:`~orchestra_jax.models.logprobs.hidden_logprobs`,
so a 5k-token prompt never materialises [L, vocab] logits at once), so the trajectory records it
produces (tokens, mask, log-probs) are exactly what a policy with those params would be scored
with. It does not sample; never use it for training data.

``script`` is either a list (entry ``i`` answers the ``i``-th prompt this engine receives,
across calls) or a callable ``(prompt_ids, call_index) -> ids | str``. The output is cut to
``max_new_tokens`` (finish ``"length"``); it ends with ``"stop"`` when its last token is one of
``stop_token_ids``. An exhausted script returns ``finish_reason="error"``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from orchestra_jax.models import apply, init_cache
from orchestra_jax.models.logprobs import hidden_logprobs
from orchestra_jax.rollout.engine import GenerateOutput, SamplingParams

ScriptEntry = Union[str, Sequence[int]]
Script = Union[Sequence[ScriptEntry], Callable[[list[int], int], ScriptEntry]]


_VOCAB_CHUNK = 64  # tokens per vocabulary projection inside a scoring chunk ([1, 64, V] f32)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(2,))
def _score_chunk(config, params, cache, tokens, targets, start, kv_mask):
    """log p(targets[i] | seq[:start+i+1]) for one chunk, and the updated cache."""
    c = tokens.shape[1]
    positions = (start + jnp.arange(c, dtype=jnp.int32))[None, :]
    hidden, cache = apply(config, params, tokens, positions, cache=cache, cache_index=start,
                          kv_mask=kv_mask, return_hidden=True)
    return hidden_logprobs(config, params, hidden, targets, chunk_size=_VOCAB_CHUNK)[0], cache


class _PrefixCache:
    """KV cache of the last scored sequence, reused when the next one extends it (episodes are
    append-only, so turn k+1's prompt starts with turn k's prompt + completion)."""

    def __init__(self):
        self.tokens: list[int] = []
        self.cache: Any = None
        self.total = 0
        self.valid = 0  # positions [0, valid) hold K/V computed from self.tokens


def score_tokens(config: Any, params: Any, prompt: Sequence[int], completion: Sequence[int],
                 chunk: int = 256, prefix_cache: Optional[_PrefixCache] = None) -> np.ndarray:
    """log p(completion[i] | prompt + completion[:i]) in nats (float32 array), computed with the
    model's causal forward in ``chunk``-token pieces over a KV cache (optionally reusing the
    cache of a previous call whose sequence this one extends)."""
    seq = [int(t) for t in prompt] + [int(t) for t in completion]
    n, p = len(seq), len(prompt)
    if p < 1 or not completion:
        raise ValueError("score_tokens needs a non-empty prompt and completion")
    total = max(chunk, 1 << (n - 1).bit_length())
    total = -(-total // chunk) * chunk
    toks = np.zeros((total + 1,), np.int32)
    toks[:n] = seq
    kv_mask = jnp.ones((1, total), bool)  # causal masking alone hides unwritten slots
    begin, cache = 0, None
    pc = prefix_cache
    if pc is not None and pc.cache is not None and pc.total == total:
        k = min(pc.valid, (p - 1) // chunk * chunk)
        if pc.tokens[:k] == seq[:k]:
            begin, cache = k, pc.cache
        pc.cache = None  # donated below; re-set when scoring finishes
    if cache is None:
        cache = init_cache(config, 1, total, dtype=jnp.float32)
    out = np.zeros((total,), np.float32)
    first = (p - 1) // chunk * chunk  # chunks before this one only fill the cache
    for start in range(begin, n - 1, chunk):
        lp, cache = _score_chunk(config, params, cache, jnp.asarray(toks[None, start:start + chunk]),
                                 jnp.asarray(toks[None, start + 1:start + chunk + 1]),
                                 jnp.int32(start), kv_mask)
        if start >= first:
            out[start:start + chunk] = np.asarray(lp)
    if pc is not None:
        pc.tokens, pc.cache, pc.total = seq, cache, total
        pc.valid = (n - 1) // chunk * chunk  # the last chunk may hold padding garbage
    return out[p - 1:n - 1].copy()


class ScriptedPolicyEngine:
    """Engine protocol over a fixed script; log-probs from the real model (test/demo only).

    Args:
      config, params: the model whose forward scores the scripted tokens.
      script: see module docstring.
      tokenizer: needed when script entries are text.
    """

    def __init__(self, config: Any, params: Any, script: Script, tokenizer: Any = None, *,
                 score: bool = True):
        self.score = bool(score)   # False: log-probs 0.0 (demonstrations for SFT need none)
        self.config = config
        self.params = params
        self.script = script
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._score_lock = threading.Lock()
        self._prefix = _PrefixCache()
        self.calls = 0

    def _entry(self, prompt: list[int]) -> Optional[list[int]]:
        with self._lock:
            i = self.calls
            self.calls += 1
        if callable(self.script):
            e = self.script(prompt, i)
        elif i < len(self.script):
            e = self.script[i]
        else:
            return None
        if isinstance(e, str):
            if self.tokenizer is None:
                raise ValueError("text script entries need a tokenizer")
            return list(self.tokenizer.encode(e, add_special_tokens=False))
        return [int(t) for t in e]

    def generate_sync(self, prompts: Sequence[Sequence[int]],
                      sampling: SamplingParams) -> list[GenerateOutput]:
        t0 = time.perf_counter()
        outs: list[GenerateOutput] = []
        for p in prompts:
            p = list(map(int, p))
            ids = self._entry(p)
            if ids is None:
                outs.append(GenerateOutput([], [], "error", len(p), 0.0, "script exhausted"))
                continue
            if not ids:
                outs.append(GenerateOutput([], [], "error", len(p), 0.0, "empty script entry"))
                continue
            finish = "length" if len(ids) > sampling.max_new_tokens else "stop"
            ids = ids[: sampling.max_new_tokens]
            if finish == "stop" and ids[-1] not in sampling.stop_token_ids:
                finish = "length"
            if not self.score:
                lps = np.zeros(len(ids), np.float32)
            else:
                with self._score_lock:
                    lps = score_tokens(self.config, self.params, p, ids,
                                       prefix_cache=self._prefix)
            outs.append(GenerateOutput(ids, [float(x) for x in lps], finish, len(p)))
        dt = time.perf_counter() - t0
        for o in outs:
            o.latency_s = dt
        return outs

    async def generate(self, prompts: Sequence[Sequence[int]],
                       sampling: SamplingParams) -> list[GenerateOutput]:
        return await asyncio.to_thread(self.generate_sync, prompts, sampling)

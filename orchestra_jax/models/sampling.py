"""Batched autoregressive sampling with a KV cache (jitted prefill + ``lax.while_loop`` decode).

Prompts of different lengths are **left-padded** to a common bucket length ``P``: every row's last
prompt token sits in slot ``P-1`` and all rows write generated tokens at the same cache slot, while
each row's RoPE positions start at 0 at its first real token (``position = slot - pad``) and pad
slots are masked out of attention. Batch size, prompt length and the new-token budget are padded
to power-of-two buckets so repeated calls reuse compiled programs; temperature / top-p / top-k /
stop ids / max_new_tokens are traced values (changing them does not recompile).

Log-probs follow SGLang's ``output_token_logprobs``: the model's own ``log_softmax`` at the
sampled token, *before* temperature and top-k/top-p filtering.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.qwen3 import apply, init_cache


@dataclasses.dataclass
class SampleOutput:
    """Per prompt: generated ids (stop token included when hit), their log-probs, and why it
    ended: ``"stop"`` (a stop token) or ``"length"`` (max_new_tokens)."""

    tokens: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]


def bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), minimum)
    return 1 << (n - 1).bit_length()


_BISECT_STEPS = 40


def _bisect(lo: jax.Array, hi: jax.Array, pred) -> tuple[jax.Array, jax.Array]:
    """Shrinks [lo, hi] (per row, [B, 1]) keeping ``pred(lo)`` true and ``pred(hi)`` false."""
    def body(_, lh):
        lo, hi = lh
        mid = lo + (hi - lo) / 2
        ok = pred(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
    return jax.lax.fori_loop(0, _BISECT_STEPS, body, (lo, hi))


def nucleus_mask(probs: jax.Array, top_p: jax.Array) -> jax.Array:
    """[B, V] bool: the top-p nucleus of ``probs`` (see :func:`filter_logits`), by bisection for
    the smallest v with P(tokens with prob > v) < top_p; tokens with prob >= v are kept."""
    pmax = jnp.max(probs, axis=-1, keepdims=True)
    _, v = _bisect(jnp.zeros_like(pmax), pmax,
                   lambda v: jnp.sum(jnp.where(probs > v, probs, 0.0), axis=-1,
                                     keepdims=True) >= top_p)
    return probs >= v


def filter_logits(logits: jax.Array, top_p: jax.Array, top_k: jax.Array) -> jax.Array:
    """Masks (to -inf) tokens outside top-k (``top_k <= 0``: off) and outside the top-p nucleus
    (``top_p >= 1``: off). ``logits`` [B, V] already temperature-scaled; top_p/top_k scalars.

    Nucleus rule (same as a sorted cumulative sum): token j is kept iff the total probability
    of tokens more likely than j is < top_p — the most likely token is always kept. Thresholds
    are found by bisection (O(V) per step, no sort of the vocabulary); ties at the threshold
    are all kept.
    """
    def topk(x):  # the largest t with count(x >= t) >= k is the k-th largest logit
        finite = jnp.isfinite(x)
        lo = jnp.min(jnp.where(finite, x, jnp.inf), axis=-1, keepdims=True)
        hi = jnp.max(jnp.where(finite, x, -jnp.inf), axis=-1, keepdims=True)
        kth, _ = _bisect(lo, hi + 1.0,
                         lambda t: jnp.sum(x >= t, axis=-1, keepdims=True) >= top_k)
        return jnp.where(x >= kth, x, -jnp.inf)

    def topp(x):
        return jnp.where(nucleus_mask(jax.nn.softmax(x, axis=-1), top_p), x, -jnp.inf)

    logits = jax.lax.cond(top_k > 0, topk, lambda x: x, logits)
    return jax.lax.cond(top_p < 1.0, topp, lambda x: x, logits)


_BLOCK = 256          # tokens per block of the two-level inverse-CDF search
_MAX_REJECT_ROUNDS = 16   # nucleus rejection rounds before the exact bisection fallback


def _inverse_cdf(probs: jax.Array, u: jax.Array) -> jax.Array:
    """Index of the first token whose cumulative (unnormalised) mass exceeds ``u * total``.

    probs [B, V] >= 0 (rows with positive mass), u [B] in [0, 1). Two levels — block sums, then
    one gathered block — so it costs one pass over [B, V] instead of a full-vocabulary cumsum.
    Zero-mass tokens are never chosen (a float round-off overshoot is clamped to the last
    positive token of the chosen block).
    """
    b, v = probs.shape
    nb = -(-v // _BLOCK)
    padded = jnp.pad(probs, ((0, 0), (0, nb * _BLOCK - v))).reshape(b, nb, _BLOCK)
    cum_blocks = jnp.cumsum(jnp.sum(padded, axis=-1), axis=-1)            # [B, nb]
    r = u * cum_blocks[:, -1]
    blk = jnp.minimum(jnp.sum(cum_blocks <= r[:, None], axis=-1), nb - 1)  # [B]
    before = jnp.where(blk > 0, jnp.take_along_axis(cum_blocks, jnp.maximum(blk - 1, 0)[:, None],
                                                    axis=-1)[:, 0], 0.0)
    block = jnp.take_along_axis(padded, blk[:, None, None], axis=1)[:, 0]  # [B, BLOCK]
    inner = jnp.sum(jnp.cumsum(block, axis=-1) <= (r - before)[:, None], axis=-1)
    last_pos = _BLOCK - 1 - jnp.argmax((block > 0)[:, ::-1], axis=-1)
    return (blk * _BLOCK + jnp.minimum(inner, last_pos)).astype(jnp.int32)


def _mass_above(probs: jax.Array, p: jax.Array) -> jax.Array:
    """Per row: total probability of the tokens strictly more likely than ``p`` [B]."""
    return jnp.sum(jnp.where(probs > p[:, None], probs, 0.0), axis=-1)


def _sample_nucleus(probs: jax.Array, rng: jax.Array, top_p: jax.Array) -> jax.Array:
    """Exact draw from ``probs`` [B, V] restricted to the top-p nucleus (rule of
    :func:`filter_logits`: token j is kept iff the mass of tokens more likely than j < top_p).

    Rejection sampling with a shrinking proposal (no sort, no bisection in the common case):
    draw from the tokens more likely than ``pivot`` (initially all); accept if the draw is in
    the nucleus, else raise ``pivot`` to the draw's probability. Every proposal set contains
    the nucleus, so an accepted draw is distributed exactly as the renormalised nucleus. Rows
    still unaccepted after ``_MAX_REJECT_ROUNDS`` (very peaked nucleus in a flat tail) draw
    from the nucleus found by the bisection of :func:`filter_logits`.
    """
    b = probs.shape[0]

    def cond(st):
        i, _, _, done = st
        return (i < _MAX_REJECT_ROUNDS) & ~jnp.all(done)

    def body(st):
        i, pivot, tok, done = st
        prop = jnp.where(probs > pivot[:, None], probs, 0.0)
        u = jax.random.uniform(jax.random.fold_in(rng, i), (b,))
        cand = _inverse_cdf(prop, u)
        p_cand = jnp.take_along_axis(probs, cand[:, None], axis=-1)[:, 0]
        ok = _mass_above(probs, p_cand) < top_p
        tok = jnp.where(done, tok, cand)
        pivot = jnp.where(done | ok, pivot, p_cand)
        return i + 1, pivot, tok, done | ok

    init = (jnp.int32(0), jnp.full((b,), -1.0, probs.dtype), jnp.zeros((b,), jnp.int32),
            jnp.zeros((b,), bool))
    _, _, tok, done = jax.lax.while_loop(cond, body, init)

    def fallback(tok):
        kept = nucleus_mask(probs, top_p)
        u = jax.random.uniform(jax.random.fold_in(rng, _MAX_REJECT_ROUNDS), (b,))
        return jnp.where(done, tok, _inverse_cdf(jnp.where(kept, probs, 0.0), u))

    return jax.lax.cond(jnp.all(done), lambda t: t, fallback, tok)


def sample_token(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array,
                 top_k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One sampling step. logits [B, V] float32 → (token [B] int32, logprob [B] float32).

    ``temperature == 0`` is greedy (argmax). The log-prob is the unscaled model log-softmax.
    Sampling draws one uniform per row and inverts the CDF (``_inverse_cdf``) — no [B, V]
    Gumbel noise — and applies top-p by exact rejection (``_sample_nucleus``), so it costs a
    few passes over the vocabulary instead of ~40 (see BENCHMARKS.md, decode with sampling).
    """
    logits = logits.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw(_):
        scaled = logits / jnp.maximum(temperature, 1e-6)
        scaled = jax.lax.cond(top_k > 0, lambda x: filter_logits(x, jnp.float32(1.0), top_k),
                              lambda x: x, scaled)
        probs = jax.nn.softmax(scaled, axis=-1)
        return jax.lax.cond(
            top_p < 1.0, lambda p: _sample_nucleus(p, rng, top_p),
            lambda p: _inverse_cdf(p, jax.random.uniform(rng, (p.shape[0],))), probs)

    # greedy skips the filters and the sampling passes entirely
    tok = jax.lax.cond(temperature <= 0, lambda _: greedy, draw, None)
    return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("config", "max_steps"))
def _generate(config: ModelConfig, params: Any, tokens: jax.Array, pad: jax.Array,
              max_new: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: jax.Array,
              stop_ids: jax.Array, rng: jax.Array, pad_id: jax.Array, *, max_steps: int):
    """tokens [B, P] left-padded with ``pad[b]`` pad slots; returns tokens/logprobs [B, T]
    (T = max_steps) and the number of valid tokens per row plus a stop flag per row."""
    b, p = tokens.shape
    s = p + max_steps
    slots = jnp.arange(s)
    kv_mask = (slots[None, :] >= pad[:, None]) & (slots[None, :] < p)
    positions = jnp.maximum(jnp.arange(p)[None, :] - pad[:, None], 0).astype(jnp.int32)
    cache = init_cache(config, b, s)
    logits, cache = apply(config, params, tokens, positions, cache=cache,
                          cache_index=jnp.int32(0), kv_mask=kv_mask, last_only=True)
    tok, lp = sample_token(logits[:, -1], jax.random.fold_in(rng, 0), temperature, top_p, top_k)
    out_tok = jnp.full((b, max_steps), pad_id, jnp.int32).at[:, 0].set(tok)
    out_lp = jnp.zeros((b, max_steps), jnp.float32).at[:, 0].set(lp)
    done = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
    stopped = done
    lengths = jnp.ones((b,), jnp.int32)
    prompt_len = (p - pad).astype(jnp.int32)

    def cond(state):
        t, _, _, _, _, _, done, _, _ = state
        return (t < max_new) & ~jnp.all(done)

    def body(state):
        t, cache, kv_mask, last, out_tok, out_lp, done, stopped, lengths = state
        slot = p + t - 1
        kv_mask = kv_mask.at[:, slot].set(True)
        pos = (prompt_len + t - 1)[:, None]
        logits, cache = apply(config, params, last[:, None], pos, cache=cache,
                              cache_index=slot, kv_mask=kv_mask)
        tok, lp = sample_token(logits[:, 0], jax.random.fold_in(rng, t), temperature, top_p,
                               top_k)
        tok = jnp.where(done, pad_id, tok)
        lp = jnp.where(done, 0.0, lp)
        out_tok = out_tok.at[:, t].set(tok)
        out_lp = out_lp.at[:, t].set(lp)
        lengths = lengths + (~done).astype(jnp.int32)
        hit = ~done & jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        return (t + 1, cache, kv_mask, tok, out_tok, out_lp, done | hit, stopped | hit, lengths)

    state = (jnp.int32(1), cache, kv_mask, tok, out_tok, out_lp, done, stopped, lengths)
    state = jax.lax.while_loop(cond, body, state)
    _, _, _, _, out_tok, out_lp, _, stopped, lengths = state
    return out_tok, out_lp, lengths, stopped


def generate(config: ModelConfig, params: Any, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = -1,
             stop_token_ids: Sequence[int] = (), rng: Optional[jax.Array] = None,
             pad_id: int = 0) -> SampleOutput:
    """Samples one continuation per prompt with a KV cache (see module docstring).

    Raises ``ValueError`` for empty prompts, out-of-vocab ids, bad sampling values, or a
    prompt + max_new_tokens longer than ``config.max_position_embeddings``.
    """
    if not prompts:
        return SampleOutput([], [], [])
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    lens = [len(p) for p in prompts]
    if min(lens) == 0:
        raise ValueError(f"prompt {lens.index(0)} is empty")
    vocab = config.vocab_size
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab}): {bad[:5]}")
    longest = max(lens) + max_new_tokens
    if longest > config.max_position_embeddings:
        raise ValueError(f"prompt ({max(lens)}) + max_new_tokens ({max_new_tokens}) = {longest} "
                         f"exceeds max_position_embeddings {config.max_position_embeddings}")
    n = len(prompts)
    bsz, plen, steps = bucket(n), bucket(max(lens), 16), bucket(max_new_tokens, 16)
    tokens = np.full((bsz, plen), pad_id, np.int32)
    pad = np.full((bsz,), plen - 1, np.int32)
    for i, p in enumerate(prompts):
        tokens[i, plen - len(p):] = np.asarray(p, np.int32)
        pad[i] = plen - len(p)
    stops = list(dict.fromkeys(int(s) for s in stop_token_ids))
    stop_arr = np.full((bucket(len(stops), 4),), -1, np.int32)
    stop_arr[:len(stops)] = stops
    rng = jax.random.key(0) if rng is None else rng
    out_tok, out_lp, lengths, stopped = _generate(
        config, params, jnp.asarray(tokens), jnp.asarray(pad), jnp.int32(max_new_tokens),
        jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k), jnp.asarray(stop_arr),
        rng, jnp.int32(pad_id), max_steps=steps)
    out_tok, out_lp, lengths, stopped = jax.device_get((out_tok, out_lp, lengths, stopped))
    toks, lps, reasons = [], [], []
    for i in range(n):
        k = int(lengths[i])
        toks.append([int(t) for t in out_tok[i, :k]])
        lps.append([float(x) for x in out_lp[i, :k]])
        reasons.append("stop" if stopped[i] else "length")
    return SampleOutput(toks, lps, reasons)

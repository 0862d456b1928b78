"""Per-token log-probs (and entropy) without ever materialising ``[B, L, V]`` logits.

The final-norm hidden states ``[B, L, D]`` are projected to the vocabulary chunk by chunk along
the length axis (a ``lax.map`` over ``C``-token chunks): each chunk's logits ``[B, C, V]`` live in
float32 only long enough for a ``logsumexp`` and a gather. The chunk body is wrapped in
``jax.checkpoint``, so the backward pass recomputes a chunk's logits instead of saving them —
forward and backward memory are both O(B·C·V), not O(B·L·V).

This lives in ``models/`` (it is the model's output head, applied piecewise) so that the rollout
layer can score tokens with it too; ``orchestra_jax.train.logprobs`` is the training-facing
entry point and re-exports it.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.qwen3 import apply, output_embedding
from orchestra_jax.sharding import constrain

Params = Any


def _check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def hidden_logprobs(config: ModelConfig, params: Params, hidden: jax.Array, targets: jax.Array,
                    *, chunk_size: int = 512, return_entropy: bool = False):
    """log p(targets[b, i]) under the next-token distribution at hidden state ``hidden[b, i]``.

    Args:
      hidden: ``[B, L, D]`` final-norm hidden states (``apply(..., return_hidden=True)``).
      targets: ``[B, L]`` int token ids in ``[0, vocab_size)`` (the caller masks positions
        whose target is meaningless; ids outside the vocabulary give NaN when traced).
      chunk_size: tokens per projected chunk; ``L`` need not be a multiple (padded).
      return_entropy: also return the entropy of the full next-token distribution.

    Returns ``logp [B, L] float32`` or ``(logp, entropy)`` (both ``[B, L]`` float32). The matmul
    runs in ``config.dtype`` with float32 accumulation, exactly like the model's logits.
    """
    chunk_size = _check_chunk(chunk_size)
    if hidden.ndim != 3 or hidden.shape[-1] != config.hidden_size:
        raise ValueError(f"hidden must be [batch, length, {config.hidden_size}], "
                         f"got shape {hidden.shape}")
    if targets.shape != hidden.shape[:2]:
        raise ValueError(f"targets shape {targets.shape} != hidden's [batch, length] "
                         f"{hidden.shape[:2]}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
    b, l, d = hidden.shape
    c = min(chunk_size, l)
    n = -(-l // c)
    pad = n * c - l
    dt = config.dtype
    w = output_embedding(config, params)                     # [D, V] param dtype
    h = hidden.astype(dt)
    t = targets.astype(jnp.int32)
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        t = jnp.pad(t, ((0, 0), (0, pad)))
    hc = jnp.moveaxis(h.reshape(b, n, c, d), 1, 0)            # [n, B, C, D]
    tc = jnp.moveaxis(t.reshape(b, n, c), 1, 0)               # [n, B, C]

    @jax.checkpoint
    def one_chunk(w, hx, tx):
        logits = jnp.einsum("bcd,dv->bcv", hx, w.astype(dt), preferred_element_type=jnp.float32)
        logits = constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))
        lse = jax.nn.logsumexp(logits, axis=-1)
        lp = jnp.take_along_axis(logits, tx[..., None], axis=-1)[..., 0] - lse
        if not return_entropy:
            return lp, jnp.zeros_like(lp)
        p = jnp.exp(logits - lse[..., None])
        return lp, lse - jnp.sum(p * logits, axis=-1)

    lp, ent = jax.lax.map(lambda xs: one_chunk(w, *xs), (hc, tc))   # [n, B, C] each
    lp = jnp.moveaxis(lp, 0, 1).reshape(b, n * c)[:, :l]
    if not return_entropy:
        return lp
    return lp, jnp.moveaxis(ent, 0, 1).reshape(b, n * c)[:, :l]


def token_logprobs(config: ModelConfig, params: Params, tokens: jax.Array, targets: jax.Array,
                   *, positions: Optional[jax.Array] = None,
                   segment_ids: Optional[jax.Array] = None,
                   chunk_size: int = 512, return_entropy: bool = False):
    """log p(targets[b,i] | tokens[b,:i+1]) for every position, [B, L] float32 (and entropy
    [B, L] f32 of the full next-token distribution when ``return_entropy``).

    Never materialises ``[B, L, V]`` logits: runs the model to its final-norm hidden states and
    projects them chunk by chunk (:func:`hidden_logprobs`). ``positions`` default to 0..L-1;
    ``segment_ids`` restrict attention to equal ids (packing), with per-segment ``positions``
    a packed row scores each sample exactly as if it were alone. Differentiable; jit it with
    ``config``, ``chunk_size`` and ``return_entropy`` static.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    targets = jnp.asarray(targets)
    if targets.shape != tokens.shape:
        raise ValueError(f"targets shape {targets.shape} != tokens shape {tokens.shape}")
    _check_chunk(chunk_size)
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    elif jnp.shape(positions) != tokens.shape:
        raise ValueError(f"positions shape {jnp.shape(positions)} != tokens shape {tokens.shape}")
    if segment_ids is not None and jnp.shape(segment_ids) != tokens.shape:
        raise ValueError(f"segment_ids shape {jnp.shape(segment_ids)} != tokens shape "
                         f"{tokens.shape}")
    hidden, _ = apply(config, params, tokens.astype(jnp.int32),
                      jnp.asarray(positions, jnp.int32), segment_ids, return_hidden=True)
    return hidden_logprobs(config, params, hidden, targets, chunk_size=chunk_size,
                           return_entropy=return_entropy)


def selected_hidden_logprobs(config: ModelConfig, params: Params, hidden: jax.Array,
                             targets: jax.Array, mask: jax.Array, *, max_tokens: int,
                             chunk_size: int = 512, return_entropy: bool = False):
    """:func:`hidden_logprobs` at the positions where ``mask`` is non-zero only.

    In agentic RL most tokens are context (prompts, tool observations) that only the attention
    needs: the vocabulary projection — the dominant cost of a small model with a 152k
    vocabulary — is computed for the trained positions alone. Up to ``max_tokens`` (static)
    masked positions are gathered (``[max_tokens, D]``), projected in chunks and scattered back;
    every other position gets log-prob (and entropy) 0. The caller guarantees that
    ``count_nonzero(mask) <= max_tokens`` (checked when concrete; traced callers check on the
    host: ``orchestra_jax.train.losses`` / the loops pick ``max_tokens`` from the batch).
    """
    chunk_size = _check_chunk(chunk_size)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if mask.shape != hidden.shape[:2] or targets.shape != hidden.shape[:2]:
        raise ValueError(f"mask {mask.shape} / targets {targets.shape} must match hidden's "
                         f"[batch, length] {hidden.shape[:2]}")
    if not isinstance(mask, jax.core.Tracer):
        n = int(jnp.count_nonzero(mask))
        if n > max_tokens:
            raise ValueError(f"{n} masked positions exceed max_tokens={max_tokens}")
    b, l, d = hidden.shape
    flat = (mask.reshape(-1) != 0)
    (idx,) = jnp.nonzero(flat, size=max_tokens, fill_value=0)
    valid = jnp.arange(max_tokens) < jnp.count_nonzero(flat)
    h = hidden.reshape(b * l, d)[idx][None]                     # [1, K, D]
    t = targets.reshape(b * l)[idx][None]
    out = hidden_logprobs(config, params, h, t, chunk_size=min(chunk_size, max_tokens),
                          return_entropy=return_entropy)

    def scatter(v):
        v = jnp.where(valid, v[0], 0.0)
        return jnp.zeros((b * l,), v.dtype).at[idx].add(v).reshape(b, l)
    if not return_entropy:
        return scatter(out)
    return scatter(out[0]), scatter(out[1])

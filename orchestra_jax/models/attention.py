"""Causal grouped-query attention behind one dispatch: ``attention(q, k, v, ..., impl=...)``.

Shapes: ``q [B, Lq, H, Dh]``, ``k``/``v`` ``[B, S, K, Dh]`` with ``H % K == 0`` (GQA); the output
is ``[B, Lq, H, Dh]`` in ``q``'s dtype. Which keys a query sees (never built up front — each impl
derives what it needs from these):

- causal by *slot*: query ``i`` sits at slot ``q_offset + i`` and sees key slots ``j <= q_offset + i``
  (``q_offset`` is ``None`` = 0 without a KV cache, the cache write index with one);
- ``kv_mask [B, S]`` (bool): key slots that hold real tokens (the KV cache's valid slots);
- ``q_segment_ids [B, Lq]`` / ``kv_segment_ids [B, S]``: packing — only equal ids attend.

A query with no visible key (only padding queries have none) gets a finite but unspecified
value (no NaN, so it cannot poison anything through a masked-out product); impls may differ there.

Implementations (``ModelConfig.attention_impl``):

``"xla"``
    Scores ``[B, K, G, Lq, S]`` in float32, one dense ``[B, Lq, S]`` mask, softmax, weighted sum.
    Memory O(Lq·S) per head.
``"blockwise"``
    Pure-JAX online softmax (flash-style): a ``lax.map`` over query blocks, each a ``lax.scan``
    over KV blocks carrying the running max / normaliser / accumulator in float32. Masks are made
    per ``[block, block]`` tile from slot indices, ``kv_mask`` and segment ids; KV blocks wholly
    in a query block's causal future are skipped (``lax.cond``). Query-block and KV-step bodies
    are ``jax.checkpoint``-ed, so forward *and* backward memory is O(L·block), not O(L²).
    Works for decode too (one query over the cache's slots, ``kv_mask`` per block).
``"cudnn"``
    ``jax.nn.dot_product_attention``. Without a cache and without segment ids it uses
    ``is_causal=True`` (no mask tensor; cuDNN skips the masked half); segment ids become its
    boolean ``mask`` argument ``[B, 1, Lq, S]`` (cuDNN turns it into an additive bias: O(L²)
    memory, like "xla"). It picks ``implementation="cudnn"`` on a GPU backend with bf16/f16
    inputs and otherwise XLA (``implementation=None``: what runs on CPU, and the path the unit
    tests exercise). With a KV cache (decode / prefill into a cache) it always runs
    ``jax.nn``'s XLA implementation with the dense ``[B, 1, Lq, S]`` mask: cuDNN has no
    offset-causal mask and a one-token query gains nothing from it.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from orchestra_jax.models.config import ATTENTION_IMPLS

_NEG = float(jnp.finfo(jnp.float32).min)


def _check(q, k, v, q_offset, q_segment_ids, kv_segment_ids, kv_mask):
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"attention wants q [B, Lq, H, Dh] and k = v [B, S, K, Dh]; got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    b, lq, h, dh = q.shape
    if k.shape[0] != b or k.shape[3] != dh or h % k.shape[2]:
        raise ValueError(f"q {q.shape} and k {k.shape}: batch/head_dim differ or heads "
                         f"{h} not a multiple of kv heads {k.shape[2]}")
    s = k.shape[1]
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    if q_segment_ids is not None and (q_segment_ids.shape != (b, lq)
                                      or kv_segment_ids.shape != (b, s)):
        raise ValueError(f"segment ids must be [B, Lq]={b, lq} and [B, S]={b, s}; got "
                         f"{q_segment_ids.shape}, {kv_segment_ids.shape}")
    if kv_mask is not None and kv_mask.shape != (b, s):
        raise ValueError(f"kv_mask must be [B, S]={b, s}, got {kv_mask.shape}")
    if q_offset is None and lq > s:
        raise ValueError(f"without q_offset queries are slots 0..{lq - 1}; only {s} keys")


def dense_mask(lq: int, s: int, q_offset=None, q_segment_ids=None, kv_segment_ids=None,
               kv_mask=None, batch: int = 1) -> jax.Array:
    """The ``[B, Lq, S]`` boolean mask the arguments describe (what "xla" and "cudnn" use)."""
    qslot = jnp.arange(lq) + (0 if q_offset is None else q_offset)
    mask = jnp.broadcast_to((jnp.arange(s)[None, :] <= qslot[:, None])[None], (batch, lq, s))
    if kv_mask is not None:
        mask = mask & kv_mask[:, None, :]
    if q_segment_ids is not None:
        mask = mask & (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])
    return mask


def _xla(q, k, v, mask):
    b, lq, h, dh = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, lq, kh, h // kh, dh)
    scores = jnp.einsum("blkgd,bskd->bkgls", qg, k.astype(q.dtype),
                        preferred_element_type=jnp.float32) * (dh ** -0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgls,bskd->blkgd", probs, v.astype(q.dtype))
    return out.reshape(b, lq, h, dh)


def _cudnn(q, k, v, q_offset, q_seg, kv_seg, kv_mask):
    b, lq, h, dh = q.shape
    s = k.shape[1]
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    cached = q_offset is not None or kv_mask is not None
    use_cudnn = (not cached and jax.default_backend() == "gpu"
                 and q.dtype in (jnp.bfloat16, jnp.float16))
    kw = dict(implementation="cudnn" if use_cudnn else None)
    if cached:
        kw["mask"] = dense_mask(lq, s, q_offset, q_seg, kv_seg, kv_mask, batch=b)[:, None]
    elif q_seg is not None:
        kw.update(is_causal=True,
                  mask=(q_seg[:, :, None] == kv_seg[:, None, :])[:, None])
    else:
        kw["is_causal"] = True
    return jax.nn.dot_product_attention(q, k, v, **kw).astype(q.dtype)


def _pad_to(x, n, axis, value=0):
    extra = n - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def _blockwise(q, k, v, q_offset, q_seg, kv_seg, kv_mask, block: int):
    b, lq, h, dh = q.shape
    s, kh = k.shape[1], k.shape[2]
    g = h // kh
    dt = q.dtype
    bq, bk = min(block, lq), min(block, s)
    nq, nk = -(-lq // bq), -(-s // bk)
    offset = jnp.int32(0) if q_offset is None else jnp.asarray(q_offset, jnp.int32)
    valid = jnp.ones((b, s), bool) if kv_mask is None else kv_mask
    valid = _pad_to(valid, nk * bk, 1, False)                       # padded keys never count
    seg = q_seg is not None
    if not seg:  # one dummy segment keeps a single code path (constant-folded by XLA)
        q_seg, kv_seg = jnp.zeros((b, lq), jnp.int32), jnp.zeros((b, s), jnp.int32)
    qb = _pad_to(q, nq * bq, 1).reshape(b, nq, bq, kh, g, dh)
    qsb = _pad_to(q_seg, nq * bq, 1).reshape(b, nq, bq)
    kb = _pad_to(k.astype(dt), nk * bk, 1).reshape(b, nk, bk, kh, dh)
    vb = _pad_to(v.astype(dt), nk * bk, 1).reshape(b, nk, bk, kh, dh)
    ksb = _pad_to(kv_seg, nk * bk, 1).reshape(b, nk, bk)
    vmb = valid.reshape(b, nk, bk)
    kv_xs = (jnp.moveaxis(kb, 1, 0), jnp.moveaxis(vb, 1, 0), jnp.moveaxis(ksb, 1, 0),
             jnp.moveaxis(vmb, 1, 0), jnp.arange(nk, dtype=jnp.int32))
    scale = dh ** -0.5

    @jax.checkpoint
    def kv_step(carry, xs, q_blk, qs_blk, qslot):
        m, l, acc = carry                      # [b,kh,g,bq], same, [b,kh,g,bq,dh] (float32)
        k_blk, v_blk, ks_blk, vm_blk, j = xs
        kslot = j * bk + jnp.arange(bk, dtype=jnp.int32)
        sc = jnp.einsum("bqkgd,bskd->bkgqs", q_blk, k_blk,
                        preferred_element_type=jnp.float32) * scale
        mask = (kslot[None, :] <= qslot[:, None])[None] & vm_blk[:, None, :]
        if seg:
            mask = mask & (qs_blk[:, :, None] == ks_blk[:, None, :])
        sc = jnp.where(mask[:, None, None], sc, _NEG)
        m_new = jnp.maximum(m, jnp.max(sc, axis=-1))
        corr = jnp.exp(m - m_new)
        p = jnp.exp(sc - m_new[..., None])
        l = l * corr + jnp.sum(p, axis=-1)
        pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(dt), v_blk,
                        preferred_element_type=jnp.float32)
        return (m_new, l, acc * corr[..., None] + pv), None

    @jax.checkpoint
    def q_block(xs):
        q_blk, qs_blk, i = xs
        qslot = offset + i * bq + jnp.arange(bq, dtype=jnp.int32)
        last = offset + i * bq + bq - 1        # the block's latest query slot

        def step(carry, kxs):
            # KV blocks wholly in this query block's future hold nothing it may see
            return jax.lax.cond(kxs[-1] * bk <= last,
                                lambda c: kv_step(c, kxs, q_blk, qs_blk, qslot),
                                lambda c: (c, None), carry)

        init = (jnp.full((b, kh, g, bq), _NEG, jnp.float32),
                jnp.zeros((b, kh, g, bq), jnp.float32),
                jnp.zeros((b, kh, g, bq, dh), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(step, init, kv_xs)
        # l >= 1: the running max always contributes exp(0)
        return jnp.moveaxis(acc / l[..., None], 3, 1).astype(dt)    # [b, bq, kh, g, dh]

    out = jax.lax.map(q_block, (jnp.moveaxis(qb, 1, 0), jnp.moveaxis(qsb, 1, 0),
                                jnp.arange(nq, dtype=jnp.int32)))   # [nq, b, bq, kh, g, dh]
    return jnp.moveaxis(out, 0, 1).reshape(b, nq * bq, h, dh)[:, :lq]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "xla",
              q_offset: Optional[jax.Array] = None,
              q_segment_ids: Optional[jax.Array] = None,
              kv_segment_ids: Optional[jax.Array] = None,
              kv_mask: Optional[jax.Array] = None, block_size: int = 512) -> jax.Array:
    """Causal GQA attention (see the module docstring for shapes, masking and impls).

    ``block_size`` is the query and KV tile of ``"blockwise"`` (ignored by the others).
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; expected one of {ATTENTION_IMPLS}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    _check(q, k, v, q_offset, q_segment_ids, kv_segment_ids, kv_mask)
    if impl == "blockwise":
        return _blockwise(q, k, v, q_offset, q_segment_ids, kv_segment_ids, kv_mask, block_size)
    if impl == "cudnn":
        return _cudnn(q, k, v, q_offset, q_segment_ids, kv_segment_ids, kv_mask)
    mask = dense_mask(q.shape[1], k.shape[1], q_offset, q_segment_ids, kv_segment_ids, kv_mask,
                      batch=q.shape[0])
    return _xla(q, k, v, mask)

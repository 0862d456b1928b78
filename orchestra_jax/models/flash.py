"""Blockwise (flash-style) causal GQA attention in pure JAX, with its own backward pass.

Used by :func:`orchestra_jax.models.attention.attention` for ``impl="blockwise"`` (see that module
for the masking semantics). Inputs arrive already cut into tiles::

    qb  [nq, B, bq, K, G, Dh]     kb, vb  [nk, B, bk, K, Dh]
    qsb [nq, B, bq] int           ksb     [nk, B, bk] int      vmb [nk, B, bk] bool
    offset: int32 scalar (slot of query 0)

Forward: for every query tile a ``lax.scan`` over KV tiles keeps the running max ``m``,
normaliser ``l`` and accumulator in float32 (online softmax); tiles wholly in the query tile's
causal future are skipped (``lax.cond``). It saves only the output and the per-row
log-sum-exp ``lse = m + log l``.

Backward (``jax.custom_vjp``): a scan over KV tiles, each an inner scan over query tiles that
recomputes ``P = exp(S - lse)`` tile by tile and accumulates ``dV += Pᵀ dO``,
``dS = P ⊙ (dO Vᵀ - rowsum(dO ⊙ O))``, ``dK += dSᵀ Q``, ``dQ += dS K`` (float32). Residuals
and temporaries are O(L·block) — never O(L²) — and the forward is not re-run.

A query with no visible key (padding-only rows, which occur with a KV cache, not in training)
gets a finite unspecified output and gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_NEG = float(jnp.finfo(jnp.float32).min)


def _tile_mask(qslot, kslot, qs_blk, ks_blk, vm_blk, seg: bool):
    mask = (kslot[None, :] <= qslot[:, None])[None] & vm_blk[:, None, :]      # [B, bq, bk]
    if seg:
        mask = mask & (qs_blk[:, :, None] == ks_blk[:, None, :])
    return mask[:, None, None]                                                # [B,1,1,bq,bk]


def _scores(q_blk, k_blk, mask, scale):
    sc = jnp.einsum("bqkgd,bskd->bkgqs", q_blk, k_blk,
                    preferred_element_type=jnp.float32) * scale
    return jnp.where(mask, sc, _NEG)


def _forward(static, qb, kb, vb, qsb, ksb, vmb, offset):
    seg, scale = static
    nq, b, bq, kh, g, dh = qb.shape
    bk = kb.shape[2]
    dt = qb.dtype

    def q_tile(xs):
        q_blk, qs_blk, i = xs
        qslot = offset + i * bq + jnp.arange(bq, dtype=jnp.int32)

        def step(carry, kxs):
            k_blk, v_blk, ks_blk, vm_blk, j = kxs

            def compute(c):
                m, l, acc = c
                kslot = j * bk + jnp.arange(bk, dtype=jnp.int32)
                sc = _scores(q_blk, k_blk, _tile_mask(qslot, kslot, qs_blk, ks_blk, vm_blk, seg),
                             scale)
                m_new = jnp.maximum(m, jnp.max(sc, axis=-1))
                corr = jnp.exp(m - m_new)
                p = jnp.exp(sc - m_new[..., None])
                pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(dt), v_blk,
                                preferred_element_type=jnp.float32)
                return m_new, l * corr + jnp.sum(p, axis=-1), acc * corr[..., None] + pv

            # KV tiles wholly in this query tile's future hold nothing it may see
            return jax.lax.cond(j * bk <= qslot[-1], compute, lambda c: c, carry), None

        init = (jnp.full((b, kh, g, bq), _NEG, jnp.float32),
                jnp.zeros((b, kh, g, bq), jnp.float32),
                jnp.zeros((b, kh, g, bq, dh), jnp.float32))
        (m, l, acc), _ = jax.lax.scan(step, init, (kb, vb, ksb, vmb,
                                                   jnp.arange(kb.shape[0], dtype=jnp.int32)))
        out = jnp.moveaxis(acc / l[..., None], 3, 1).astype(dt)   # l >= 1: the max adds exp(0)
        return out, m + jnp.log(l)

    return jax.lax.map(q_tile, (qb, qsb, jnp.arange(nq, dtype=jnp.int32)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def flash_attention_tiles(static, qb, kb, vb, qsb, ksb, vmb, offset):
    """Output tiles ``[nq, B, bq, K, G, Dh]``; ``static = (uses_segments, scale)``."""
    return _forward(static, qb, kb, vb, qsb, ksb, vmb, offset)[0]


def _fwd(static, qb, kb, vb, qsb, ksb, vmb, offset):
    out, lse = _forward(static, qb, kb, vb, qsb, ksb, vmb, offset)
    return out, (qb, kb, vb, qsb, ksb, vmb, offset, out, lse)


def _bwd(static, res, dout):
    seg, scale = static
    qb, kb, vb, qsb, ksb, vmb, offset, out, lse = res
    nq, b, bq, kh, g, dh = qb.shape
    bk = kb.shape[2]
    dt = qb.dtype
    dout = dout.astype(dt)
    # rowsum(dO ⊙ O) per query, laid out like lse: [nq, B, K, G, bq]
    delta = jnp.moveaxis(jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), -1), 2, -1)

    def kv_tile(dq, kxs):
        k_blk, v_blk, ks_blk, vm_blk, j = kxs
        kslot = j * bk + jnp.arange(bk, dtype=jnp.int32)

        def q_step(carry, qxs):
            q_blk, do_blk, lse_blk, dl_blk, qs_blk, dq_blk, i = qxs
            qslot = offset + i * bq + jnp.arange(bq, dtype=jnp.int32)

            def compute(args):
                dk, dv, dq_blk = args
                mask = _tile_mask(qslot, kslot, qs_blk, ks_blk, vm_blk, seg)
                p = jnp.exp(_scores(q_blk, k_blk, mask, scale) - lse_blk[..., None])
                dv = dv + jnp.einsum("bkgqs,bqkgd->bskd", p.astype(dt), do_blk,
                                     preferred_element_type=jnp.float32)
                dp = jnp.einsum("bqkgd,bskd->bkgqs", do_blk, v_blk,
                                preferred_element_type=jnp.float32)
                ds = (p * (dp - dl_blk[..., None])).astype(dt)
                dq_blk = dq_blk + scale * jnp.einsum("bkgqs,bskd->bqkgd", ds, k_blk,
                                                     preferred_element_type=jnp.float32)
                dk = dk + scale * jnp.einsum("bkgqs,bqkgd->bskd", ds, q_blk,
                                             preferred_element_type=jnp.float32)
                return dk, dv, dq_blk

            dk, dv, dq_blk = jax.lax.cond(j * bk <= qslot[-1], compute, lambda a: a,
                                          (*carry, dq_blk))
            return (dk, dv), dq_blk

        zeros = jnp.zeros((b, bk, kh, dh), jnp.float32)
        (dk, dv), dq = jax.lax.scan(q_step, (zeros, zeros),
                                    (qb, dout, lse, delta, qsb, dq,
                                     jnp.arange(nq, dtype=jnp.int32)))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(kv_tile, jnp.zeros(qb.shape, jnp.float32),
                                (kb, vb, ksb, vmb, jnp.arange(kb.shape[0], dtype=jnp.int32)))
    return (dq.astype(qb.dtype), dk.astype(kb.dtype), dv.astype(vb.dtype), None, None, None,
            None)


flash_attention_tiles.defvjp(_fwd, _bwd)

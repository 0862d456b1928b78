"""Qwen3 (and Llama-style, ``qk_norm=False``) decoder in Flax linen, functional API on top.

Parameter tree (``params``, plain arrays after :func:`init_params`; shapes in elements,
D=hidden, H=q heads, K=kv heads, Dh=head_dim, F=intermediate, V=vocab, N=num_layers)::

    embed                          [V, D]       ('vocab', 'embed')
    layers_{i}/                    (unscanned; with scan_layers one 'layers/' subtree whose
                                    leaves get a leading [N] axis named 'layers')
        input_norm/scale           [D]          ('norm',)
        attn/q_proj                [D, H, Dh]   ('embed', 'heads', 'head_dim')
        attn/k_proj                [D, K, Dh]   ('embed', 'kv_heads', 'head_dim')
        attn/v_proj                [D, K, Dh]   ('embed', 'kv_heads', 'head_dim')
        attn/o_proj                [H, Dh, D]   ('heads', 'head_dim', 'embed')
        attn/q_norm/scale          [Dh]         ('norm',)      (only when qk_norm)
        attn/k_norm/scale          [Dh]         ('norm',)      (only when qk_norm)
        post_attn_norm/scale       [D]          ('norm',)
        mlp/gate_proj              [D, F]       ('embed', 'mlp')
        mlp/up_proj                [D, F]       ('embed', 'mlp')
        mlp/down_proj              [F, D]       ('mlp', 'embed')
    final_norm/scale               [D]          ('norm',)
    lm_head                        [D, V]       ('embed', 'vocab')   (only when untied)

The KV cache is a dict ``{'k': [N, B, S, K, Dh], 'v': [N, B, S, K, Dh]}`` in the compute dtype;
a call with a cache writes the new tokens' keys/values at slots ``cache_index .. cache_index+L-1``
and attends to every slot ``j <= cache_index + i`` with ``kv_mask[b, j]`` true.

Attention runs through :func:`orchestra_jax.models.attention.attention`, implementation
``config.attention_impl``; the model passes it segment ids / ``kv_mask`` / the cache index and
never builds an ``[B, L, L]`` mask itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.ad_checkpoint import checkpoint_name

from orchestra_jax.models.attention import attention
from orchestra_jax.models.config import ModelConfig
from orchestra_jax.sharding import constrain, param_shardings, unbox

Params = Any
Cache = dict

_INIT = nn.initializers.normal(stddev=0.02)


def _param(mod: nn.Module, name: str, shape, names, dtype, init=_INIT):
    return mod.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, statistics in float32 (HF ``Qwen3RMSNorm`` semantics)."""

    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = _param(self, "scale", (x.shape[-1],), ("norm",), self.param_dtype,
                       nn.initializers.ones)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return y.astype(self.dtype) * scale.astype(self.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding, rotate-half convention. x [B, L, heads, Dh]; positions [B, L] int."""
    dh = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    ang = positions.astype(jnp.float32)[..., None] * inv_freq          # [B, L, Dh/2]
    cos = jnp.cos(jnp.concatenate([ang, ang], -1))[:, :, None, :]
    sin = jnp.sin(jnp.concatenate([ang, ang], -1))[:, :, None, :]
    xf = x.astype(jnp.float32)
    x1, x2 = jnp.split(xf, 2, axis=-1)
    rot = jnp.concatenate([-x2, x1], axis=-1)
    return (xf * cos + rot * sin).astype(x.dtype)


class Attention(nn.Module):
    """GQA self-attention with optional q/k RMSNorm and a functional KV cache."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask_args, kv_cache=None, cache_index=None, layer=None):
        """``mask_args = (segment_ids [B, L] or None, kv_mask [B, S] or None)``; segment ids
        apply without a cache, ``kv_mask`` with one (see :func:`attention`)."""
        c = self.config
        dt, pdt = c.dtype, c.param_dtype
        d, h, k, dh = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        wq = _param(self, "q_proj", (d, h, dh), ("embed", "heads", "head_dim"), pdt)
        wk = _param(self, "k_proj", (d, k, dh), ("embed", "kv_heads", "head_dim"), pdt)
        wv = _param(self, "v_proj", (d, k, dh), ("embed", "kv_heads", "head_dim"), pdt)
        wo = _param(self, "o_proj", (h, dh, d), ("heads", "head_dim", "embed"), pdt)
        q = jnp.einsum("bld,dhk->blhk", x, wq.astype(dt))
        kk = jnp.einsum("bld,dhk->blhk", x, wk.astype(dt))
        v = jnp.einsum("bld,dhk->blhk", x, wv.astype(dt))
        if c.qk_norm:
            q = RMSNorm(c.rms_norm_eps, dt, pdt, name="q_norm")(q)
            kk = RMSNorm(c.rms_norm_eps, dt, pdt, name="k_norm")(kk)
        q = rope(q, positions, c.rope_theta)
        kk = rope(kk, positions, c.rope_theta)
        q = constrain(checkpoint_name(q, "q"), ("activation_batch", "activation_length",
                                                  "activation_heads", "activation_head_dim"))
        kv_names = ("activation_batch", "activation_length", "activation_kv_heads",
                    "activation_head_dim")
        kk = constrain(checkpoint_name(kk, "k"), kv_names)
        v = constrain(checkpoint_name(v, "v"), kv_names)
        if kv_cache is not None:
            # write into the whole [N, B, S, K, Dh] cache in place (a loop-carried buffer: no
            # copy per decode step), then read this layer's slice back for attention
            ck, cv = kv_cache
            idx = (layer, 0, cache_index, 0, 0)
            ck = jax.lax.dynamic_update_slice(ck, kk.astype(ck.dtype)[None], idx)
            cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype)[None], idx)
            kk = jax.lax.dynamic_index_in_dim(ck, layer, 0, keepdims=False)
            v = jax.lax.dynamic_index_in_dim(cv, layer, 0, keepdims=False)
            kv_cache = (ck, cv)
        segment_ids, kv_mask = mask_args
        if kv_cache is None:
            out = attention(q, kk, v, impl=c.attention_impl, q_segment_ids=segment_ids,
                            kv_segment_ids=segment_ids, block_size=c.attention_block_size)
        else:
            out = attention(q, kk, v, impl=c.attention_impl, q_offset=cache_index,
                            kv_mask=kv_mask, block_size=c.attention_block_size)
        out = checkpoint_name(out, "attn_out")
        y = jnp.einsum("blhk,hkd->bld", out, wo.astype(dt))
        return y, kv_cache


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        dt, pdt = c.dtype, c.param_dtype
        d, f = c.hidden_size, c.intermediate_size
        wg = _param(self, "gate_proj", (d, f), ("embed", "mlp"), pdt)
        wu = _param(self, "up_proj", (d, f), ("embed", "mlp"), pdt)
        wd = _param(self, "down_proj", (f, d), ("mlp", "embed"), pdt)
        gate = jnp.einsum("bld,df->blf", x, wg.astype(dt))
        up = jnp.einsum("bld,df->blf", x, wu.astype(dt))
        hdn = constrain(jax.nn.silu(gate) * up,
                        ("activation_batch", "activation_length", "activation_mlp"))
        return jnp.einsum("blf,fd->bld", hdn, wd.astype(dt))


_ACT = ("activation_batch", "activation_length", "activation_embed")


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)); then + mlp(norm(.)).

    ``carry = (x, kv_cache)`` with ``kv_cache`` ``None`` or the whole ``(k, v)`` cache of all
    layers (this layer writes slice ``layer``); returns ``(carry, None)`` — the signature
    ``nn.scan`` needs (``layer`` is the scanned-over input).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, carry, positions, mask_args, cache_index, layer):
        c = self.config
        x, kv_cache = carry
        hn = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="input_norm")(x)
        a, kv_cache = Attention(c, name="attn")(hn, positions, mask_args, kv_cache, cache_index,
                                                layer)
        x = constrain(x + a, _ACT)
        hn = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="post_attn_norm")(x)
        x = constrain(x + MLP(c, name="mlp")(hn), _ACT)
        return (x, kv_cache), None


def _remat_policy(name: str):
    cp = jax.checkpoint_policies
    return {
        "full": cp.nothing_saveable,
        "dots_saveable": cp.dots_saveable,
        "dots_with_no_batch_dims_saveable": cp.dots_with_no_batch_dims_saveable,
        "save_attn_out": cp.save_only_these_names("attn_out"),
        "save_qkv_attn_out": cp.save_only_these_names("q", "k", "v", "attn_out"),
    }[name]


class Qwen3(nn.Module):
    """The full decoder: embed → N layers → final norm → logits (float32)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions, segment_ids=None, cache: Optional[Cache] = None,
                 cache_index=None, kv_mask=None, last_only: bool = False,
                 return_hidden: bool = False):
        c = self.config
        dt, pdt = c.dtype, c.param_dtype
        emb = _param(self, "embed", (c.vocab_size, c.hidden_size), ("vocab", "embed"), pdt)
        x = constrain(jnp.take(emb, tokens, axis=0).astype(dt), _ACT)
        b, l = tokens.shape
        if cache is None:  # causal over the L tokens (+ equal segment ids): no kv_mask
            mask_args = (segment_ids, None)
        else:  # causal by cache slot + valid slots; segment ids do not apply
            cache_index = jnp.int32(0) if cache_index is None else cache_index
            mask_args = (None, kv_mask)
        cls = DecoderLayer
        if c.remat_policy != "none":
            cls = nn.remat(cls, policy=_remat_policy(c.remat_policy),
                           prevent_cse=not c.scan_layers)
        kv = None if cache is None else (cache["k"], cache["v"])
        if c.scan_layers:
            stack = nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                            length=c.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            (x, kv), _ = stack(c, name="layers")((x, kv), positions, mask_args, cache_index,
                                                 jnp.arange(c.num_layers))
        else:
            for i in range(c.num_layers):
                (x, kv), _ = cls(c, name=f"layers_{i}")((x, kv), positions, mask_args,
                                                        cache_index, i)
        new_cache = None if kv is None else {"k": kv[0], "v": kv[1]}
        if last_only:  # prefill only needs the next-token logits: skip the [B, L, V] projection
            x = x[:, -1:]
        x = RMSNorm(c.rms_norm_eps, dt, pdt, name="final_norm")(x)
        if return_hidden:  # the caller projects to the vocabulary itself (chunked log-probs)
            if not c.tie_word_embeddings:  # create the head param so init sees it
                _param(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"), pdt)
            return constrain(x, _ACT), new_cache
        if c.tie_word_embeddings:
            logits = jnp.einsum("bld,vd->blv", x, emb.astype(dt),
                                preferred_element_type=jnp.float32)
        else:
            head = _param(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"), pdt)
            logits = jnp.einsum("bld,dv->blv", x, head.astype(dt),
                                preferred_element_type=jnp.float32)
        logits = constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))
        return logits, new_cache


# ------------------------------------------------------------------ functional API
def _dummy(config: ModelConfig):
    tok = jnp.zeros((1, 1), jnp.int32)
    return tok, tok


def _boxed_init(config: ModelConfig, rng):
    tok, pos = _dummy(config)
    return Qwen3(config).init(rng, tok, pos)["params"]


def abstract_params(config: ModelConfig) -> Params:
    """ShapeDtypeStructs of the (unboxed) param tree; allocates nothing."""
    return unbox(jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0)))


def param_logical_axes(config: ModelConfig) -> Params:
    """Tree (same structure as params) of ``PartitionSpec``s holding *logical* axis names."""
    boxed = jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0))
    return nn.get_partition_spec(boxed)


_FLAT_INIT_MAX = 1 << 26  # weights; above this the single flat draw compiles slowly on GPU


def init_params(config: ModelConfig, rng: jax.Array, mesh=None) -> Params:
    """Random params in ``param_dtype``: N(0, 0.02²) weights, norm scales 1.

    Small models without a mesh (≤ 64 M weights: tests, CPU demos) draw all weights in ONE flat
    normal cut into leaves (one RNG op: XLA:CPU compiles it ~10x faster than per-leaf draws).
    Otherwise leaves of equal shape share a draw of shape ``[count, *shape]``; with a ``mesh``
    it is constrained to the leaves' sharding, so every leaf is born in its shards (per-device
    temp ≈ 2x its param shard; never the whole model on one device). Values are deterministic
    in (config, rng) per path; the two paths give different, equally distributed values.
    """
    flat = traverse_util.flatten_dict(abstract_params(config))
    weights = [p for p in flat if p[-1] != "scale"]

    def ones():
        return {p: jnp.ones(leaf.shape, leaf.dtype) for p, leaf in flat.items()
                if p[-1] == "scale"}

    sizes = [math.prod(flat[p].shape) for p in weights]
    if mesh is None and sum(sizes) <= _FLAT_INIT_MAX:

        def fn(rng):
            out = ones()
            # the barrier stops XLA from fusing (and re-running) the RNG into every slice
            z = jax.lax.optimization_barrier(jax.random.normal(rng, (sum(sizes),), jnp.float32))
            off = 0
            for p, n in zip(weights, sizes):
                out[p] = (z[off:off + n].reshape(flat[p].shape) * 0.02).astype(flat[p].dtype)
                off += n
            return traverse_util.unflatten_dict(out)

        return jax.jit(fn)(rng)

    shard_flat = (traverse_util.flatten_dict(param_shardings_for(config, mesh))
                  if mesh is not None else None)
    groups: dict[tuple, list[tuple]] = {}
    for p in weights:
        spec = shard_flat[p].spec if mesh is not None else None
        groups.setdefault((tuple(flat[p].shape), spec), []).append(p)

    def fn_sharded(rng):
        out = ones()
        for gi, ((shape, spec), paths) in enumerate(groups.items()):
            z = jax.random.normal(jax.random.fold_in(rng, gi), (len(paths),) + shape, jnp.float32)
            z = jax.lax.optimization_barrier(z)
            if mesh is not None:
                z = jax.lax.with_sharding_constraint(z, jax.sharding.NamedSharding(
                    mesh, jax.sharding.PartitionSpec(None, *spec)))
            for i, p in enumerate(paths):
                out[p] = (z[i] * 0.02).astype(flat[p].dtype)
        return traverse_util.unflatten_dict(out)

    if mesh is None:
        return jax.jit(fn_sharded)(rng)
    return jax.jit(fn_sharded, out_shardings=traverse_util.unflatten_dict(shard_flat))(rng)


def param_shardings_for(config: ModelConfig, mesh) -> Params:
    """``NamedSharding`` tree for this config's params on ``mesh`` (logical rules table)."""
    return param_shardings(mesh, abstract_params(config), param_logical_axes(config))


def shard_params(config: ModelConfig, params: Params, mesh) -> Params:
    """Places an (unboxed) param tree on ``mesh`` per the logical rules table."""
    sh = param_shardings_for(config, mesh)
    return jax.tree.map(jax.device_put, params, sh)


def apply(config: ModelConfig, params: Params, tokens: jax.Array, positions: jax.Array,
          segment_ids: Optional[jax.Array] = None, cache: Optional[Cache] = None,
          cache_index: Optional[jax.Array] = None, kv_mask: Optional[jax.Array] = None,
          last_only: bool = False, return_hidden: bool = False):
    """Low-level call: returns ``(logits [B, L, V] float32, new_cache or None)``.

    ``return_hidden=True`` returns the final-norm hidden states ``[B, L, D]`` (compute dtype)
    instead of logits; :func:`output_embedding` gives the ``[D, V]`` matrix that projects them.

    ``last_only=True`` returns logits for the last position only (``[B, 1, V]``): a prefill
    then never materialises the full-vocabulary logits of the whole prompt.

    ``positions`` [B, L] int32 are the RoPE positions. Without a cache the attention is causal
    over the L tokens (restricted to equal ``segment_ids`` when given: packing / padding). With a
    cache see the module docstring.
    """
    return Qwen3(config).apply({"params": params}, tokens, positions, segment_ids, cache,
                               cache_index, kv_mask, last_only, return_hidden)


def output_embedding(config: ModelConfig, params: Params) -> jax.Array:
    """The ``[D, V]`` output projection in ``param_dtype`` (``embed.T`` when tied)."""
    if config.tie_word_embeddings:
        return params["embed"].T
    return params["lm_head"]


@functools.partial(jax.jit, static_argnums=0)
def _forward(config, params, tokens, positions, segment_ids):
    return apply(config, params, tokens, positions, segment_ids)[0]


def forward(config: ModelConfig, params: Params, tokens: jax.Array,
            positions: Optional[jax.Array] = None,
            segment_ids: Optional[jax.Array] = None) -> jax.Array:
    """Logits [B, L, V] float32 for int32 tokens [B, L]; positions default to 0..L-1 (causal)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    return _forward(config, params, tokens, jnp.asarray(positions, jnp.int32), segment_ids)


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype=None) -> Cache:
    """Zeroed KV cache {'k','v'}: [num_layers, batch, max_len, num_kv_heads, head_dim]."""
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    dt = dtype or config.dtype
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}

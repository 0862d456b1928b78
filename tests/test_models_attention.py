"""Attention dispatch (models/attention.py): every impl == the XLA path, in the model and sampler."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import ModelConfig, forward, init_params, presets
from orchestra_jax.models.attention import attention, dense_mask
from orchestra_jax.models.sampling import generate

B, L, H, K, DH, BLOCK = 2, 13, 4, 2, 8, 4   # GQA 4:2, 13 = 3 blocks of 4 + 1


def _qkv(seed, lq=L, s=L):
    r = np.random.default_rng(seed)   # numpy: jax.random's first eager use compiles for seconds
    return tuple(jnp.asarray(r.standard_normal(shape), jnp.float32)
                 for shape in ((B, lq, H, DH), (B, s, K, DH), (B, s, K, DH)))


# row 0 packs three samples; row 1 is one sample (= plain causal attention)
SEG = jnp.asarray([[1] * 5 + [2] * 6 + [3] * 2, [7] * 13])
# decode-style: 4 queries at slots 5..8 over 13 cache slots; row 0 has 2 left-pad slots
KV_MASK = jnp.asarray([[False, False] + [True] * 11, [True] * 13])
Q_OFFSET = 5


@functools.partial(jax.jit, static_argnums=0)
def _all_cases(impl, q, k, v, qc, cot):
    """Outputs for (segments, cache offset + kv_mask) and the segment case's grads."""
    f = functools.partial(attention, impl=impl, block_size=BLOCK)
    seg, vjp = jax.vjp(lambda q, k, v: f(q, k, v, q_segment_ids=SEG, kv_segment_ids=SEG),
                       q, k, v)
    cached = f(qc, k, v, q_offset=jnp.int32(Q_OFFSET), kv_mask=KV_MASK)
    plain = f(q, k, v)
    no_kv_mask = f(qc, k, v, q_offset=jnp.int32(Q_OFFSET))
    return seg, cached, vjp(cot), plain, no_kv_mask


@pytest.mark.parametrize("impl", ["blockwise", "cudnn"])
def test_impl_equals_xla_outputs_and_grads(impl):
    q, k, v = _qkv(0)
    qc = _qkv(1, lq=4)[0]
    cot = _qkv(2)[0]
    ref = _all_cases("xla", q, k, v, qc, cot)
    got = _all_cases(impl, q, k, v, qc, cot)
    for name, a, b in zip(("segments", "cache"), got[:2], ref[:2]):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert bool(jnp.all(jnp.isfinite(a))), name
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=f"{impl} {name}")
    for name, a, b in zip("qkv", got[2], ref[2]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=f"{impl} d{name}")
    # plain causal attention (no segment ids) == row 1, whose one segment changes nothing
    plain, no_kv_mask = got[3], got[4]
    np.testing.assert_allclose(plain[1], ref[0][1], atol=1e-5, rtol=0)
    np.testing.assert_allclose(no_kv_mask, ref[4], atol=1e-5, rtol=0)
    # the masks matter: segments / kv_mask change the result
    assert float(jnp.max(jnp.abs(plain[0] - ref[0][0]))) > 1e-2
    assert float(jnp.max(jnp.abs(ref[1] - no_kv_mask))) > 1e-2


def test_dense_mask_semantics():
    m = dense_mask(4, 13, Q_OFFSET, kv_mask=KV_MASK, batch=B)
    assert m.shape == (B, 4, 13)
    assert bool(m[1, 0, 5]) and not bool(m[1, 0, 6])          # causal by slot
    assert not bool(m[0, 3, 1]) and bool(m[1, 3, 1])          # kv_mask
    ms = dense_mask(L, L, q_segment_ids=SEG, kv_segment_ids=SEG, batch=B)
    assert not bool(ms[0, 6, 4]) and bool(ms[0, 6, 5]) and bool(ms[1, 6, 4])


def _temp_bytes(impl, length):
    q = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, length, 1, 16), jnp.float32)

    def loss(q, k, v):
        return jnp.sum(attention(q, k, v, impl=impl, block_size=64) ** 2)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return fn.lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_memory_grows_linearly():
    """Forward+backward temp memory: blockwise ~2x for 2x length (O(L·block)), XLA ~4x (O(L²))."""
    small, big = 512, 1024
    bw = _temp_bytes("blockwise", small), _temp_bytes("blockwise", big)
    xla = _temp_bytes("xla", small), _temp_bytes("xla", big)
    assert bw[1] / bw[0] < 2.5, (bw, xla)
    assert xla[1] / xla[0] > 3.0, (bw, xla)      # the measurement can see quadratic growth
    assert bw[1] < xla[1] / 4, (bw, xla)


def _model_temp_bytes(impl, length, scan_layers):
    """Temp bytes of value_and_grad of the real model (2 layers, remat full, scanned or not):
    attention inside a layer stack, q/k/v computed from the carried residual stream."""
    from orchestra_jax.models import forward
    cfg = presets["tiny"].replace(num_layers=2, attention_impl=impl, attention_block_size=64,
                                  scan_layers=scan_layers, remat_policy="full")
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)

    def loss(p, t):
        pos = jnp.arange(length, dtype=jnp.int32)[None]
        return jnp.sum(forward(cfg, p, t, pos, jnp.ones_like(t)).astype(jnp.float32) ** 2)

    fn = jax.jit(jax.value_and_grad(loss))
    return fn.lower(params, tokens).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("scan_layers", [True, False])
def test_blockwise_memory_linear_inside_the_layer_stack(scan_layers):
    """Regression: a custom_vjp flash backward was bypassed by JAX inside scanned / remat'd
    layers (q/k/v computed in the body), stacking every tile's probabilities — O(L²) memory
    (8B plan 41 -> 183 GiB/device at 32k). The whole model's step must grow ~linearly."""
    small, big = 1024, 2048
    bw = _model_temp_bytes("blockwise", small, scan_layers), \
        _model_temp_bytes("blockwise", big, scan_layers)
    xla = _model_temp_bytes("xla", small, scan_layers), _model_temp_bytes("xla", big, scan_layers)
    assert xla[1] / xla[0] > 3.0, (bw, xla)      # the measurement can see quadratic growth
    assert bw[1] / bw[0] < 2.6, (bw, xla)


def _cfg(impl, **kw):
    return presets["tiny"].replace(num_layers=1, attention_impl=impl, attention_block_size=BLOCK,
                                   **kw)


def test_model_forward_equal_across_impls():
    base = _cfg("xla", scan_layers=True, tie_word_embeddings=True)
    params = init_params(base, jax.random.key(5))
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 256, (B, L)), jnp.int32)
    pos = jnp.asarray([list(range(5)) + list(range(6)) + [0, 1], list(range(13))], jnp.int32)
    ref = forward(base, params, tokens, pos, SEG)      # row 1: one segment = plain causal
    for impl in ("blockwise", "cudnn"):
        cfg = base.replace(attention_impl=impl)
        np.testing.assert_allclose(forward(cfg, params, tokens, pos, SEG), ref, atol=1e-5,
                                   rtol=0, err_msg=impl)


def test_sampler_decode_with_blockwise():
    base = _cfg("xla")
    params = init_params(base, jax.random.key(6))
    prompts = [[5, 17, 99, 3, 250, 8, 1], [42, 7]]        # ragged: left padding in the cache
    ref = generate(base, params, prompts, max_new_tokens=9, temperature=0.0)
    got = generate(base.replace(attention_impl="blockwise"), params, prompts,
                   max_new_tokens=9, temperature=0.0)
    assert got.tokens == ref.tokens and got.finish_reasons == ref.finish_reasons
    assert all(len(t) == 9 for t in got.tokens)
    for a, b in zip(got.logprobs, ref.logprobs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_bad_config_and_arguments():
    with pytest.raises(ValueError, match="attention_impl"):
        presets["tiny"].replace(attention_impl="flash")
    with pytest.raises(ValueError, match="attention_block_size"):
        presets["tiny"].replace(attention_block_size=0)
    with pytest.raises(ValueError, match="attention_impl"):
        ModelConfig.from_hf_config(presets["tiny"].to_hf_config(), attention_impl="nope")
    q, k, v = _qkv(0)
    with pytest.raises(ValueError, match="unknown attention impl"):
        attention(q, k, v, impl="splash")
    with pytest.raises(ValueError, match="both"):
        attention(q, k, v, q_segment_ids=SEG)
    with pytest.raises(ValueError, match="kv_mask"):
        attention(q, k, v, kv_mask=KV_MASK[:, :3])
    with pytest.raises(ValueError, match="multiple"):
        attention(q[:, :, :3], k, v)
    with pytest.raises(ValueError, match="block_size"):
        attention(q, k, v, impl="blockwise", block_size=0)

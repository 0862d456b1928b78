"""Chunked log-probs (train/logprobs.py) == the full log-softmax of the model's logits."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import apply, forward, init_params, presets
from orchestra_jax.train.logprobs import hidden_logprobs, token_logprobs

TINY = presets["tiny"]


@functools.lru_cache(maxsize=None)
def _setup(tied: bool):
    cfg = TINY.replace(tie_word_embeddings=tied)
    params = init_params(cfg, jax.random.key(3 if tied else 4))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 13)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 13)), jnp.int32)
    return cfg, params, tokens, targets


def _full(cfg, params, tokens, targets, positions=None, segment_ids=None):
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    logits, _ = apply(cfg, params, tokens, positions, segment_ids)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], ent


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("chunk", [4, 5, 13, 512])  # ragged (13 = 3*4+1), exact, bigger than L
def test_equals_full_log_softmax(tied, chunk):
    cfg, params, tokens, targets = _setup(tied)
    f = jax.jit(functools.partial(token_logprobs, cfg, chunk_size=chunk, return_entropy=True))
    lp, ent = f(params, tokens, targets)
    assert lp.shape == ent.shape == tokens.shape and lp.dtype == ent.dtype == jnp.float32
    ref_lp, ref_ent = _full(cfg, params, tokens, targets)
    # also against the public forward() (independent of apply's arguments)
    ref2 = jnp.take_along_axis(jax.nn.log_softmax(forward(cfg, params, tokens), -1),
                               targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lp, ref2, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ent, ref_ent, atol=1e-5, rtol=0)
    assert float(jnp.min(ent)) > 0.0  # a real distribution, not a constant
    lp_only = jax.jit(functools.partial(token_logprobs, cfg, chunk_size=chunk))(
        params, tokens, targets)
    np.testing.assert_array_equal(lp_only, lp)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_gradients_equal_full_logits(tied):
    cfg, params, tokens, targets = _setup(tied)
    w = jnp.linspace(0.5, 1.5, tokens.size).reshape(tokens.shape)

    def chunked(p):
        lp, ent = token_logprobs(cfg, p, tokens, targets, chunk_size=4, return_entropy=True)
        return jnp.sum(lp * w) + 0.1 * jnp.sum(ent)

    def full(p):
        lp, ent = _full(cfg, p, tokens, targets)
        return jnp.sum(lp * w) + 0.1 * jnp.sum(ent)

    g1 = jax.jit(jax.grad(chunked))(params)
    g2 = jax.jit(jax.grad(full))(params)
    flat1, flat2 = jax.tree.leaves_with_path(g1), jax.tree.leaves(g2)
    assert len(flat1) == len(flat2)
    for (path, a), b in zip(flat1, flat2):
        scale = float(jnp.max(jnp.abs(b)))
        assert scale > 0, f"zero gradient at {jax.tree_util.keystr(path)}"
        err = float(jnp.max(jnp.abs(a - b))) / scale
        assert err <= 1e-5, f"{jax.tree_util.keystr(path)}: relative error {err:.2e}"


def test_packed_segments_equal_each_sample_alone():
    cfg, params, _, _ = _setup(False)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, cfg.vocab_size, 7), rng.integers(0, cfg.vocab_size, 6)
    ta, tb = rng.integers(0, cfg.vocab_size, 7), rng.integers(0, cfg.vocab_size, 6)
    # one row: [a (7) | b (6) | pad (3)], per-segment positions; pad is its own segment
    tokens = jnp.asarray(np.concatenate([a, b, [0, 0, 0]])[None], jnp.int32)
    targets = jnp.asarray(np.concatenate([ta, tb, [0, 0, 0]])[None], jnp.int32)
    seg = jnp.asarray([[1] * 7 + [2] * 6 + [0] * 3], jnp.int32)
    pos = jnp.asarray([list(range(7)) + list(range(6)) + [0, 1, 2]], jnp.int32)
    f = jax.jit(functools.partial(token_logprobs, cfg, chunk_size=5, return_entropy=True))
    lp, ent = f(params, tokens, targets, positions=pos, segment_ids=seg)
    for s, (x, t), sl in ((1, (a, ta), slice(0, 7)), (2, (b, tb), slice(7, 13))):
        alone, ent_alone = f(params, jnp.asarray(x[None], jnp.int32),
                             jnp.asarray(t[None], jnp.int32))
        np.testing.assert_allclose(lp[0, sl], alone[0], atol=1e-5, rtol=0, err_msg=f"seg {s}")
        np.testing.assert_allclose(ent[0, sl], ent_alone[0], atol=1e-5, rtol=0)
    # without segment ids sample b would see sample a: the check above can fail
    leaky = f(params, tokens, targets, positions=pos)[0]
    alone_b = f(params, jnp.asarray(b[None], jnp.int32), jnp.asarray(tb[None], jnp.int32))[0]
    assert float(jnp.max(jnp.abs(leaky[0, 7:13] - alone_b[0]))) > 1e-3


def test_never_materialises_full_logits():
    """The lowered program (forward and backward) has no [B, L, V] array; chunks are [B, C, V]."""
    cfg, params, tokens, targets = _setup(False)
    tokens = jnp.zeros((2, 64), jnp.int32)

    def loss(p):
        return jnp.sum(token_logprobs(cfg, p, tokens, tokens, chunk_size=16))

    text = jax.jit(jax.value_and_grad(loss)).lower(params).as_text()
    v = cfg.vocab_size
    assert f"tensor<2x16x{v}xf32>" in text
    assert f"2x64x{v}x" not in text
    full_text = jax.jit(lambda p: forward(cfg, p, tokens)).lower(params).as_text()
    assert f"tensor<2x64x{v}xf32>" in full_text  # the check can see a full-logits program


def test_hidden_logprobs_matches_and_validates():
    cfg, params, tokens, targets = _setup(False)
    pos = jnp.broadcast_to(jnp.arange(13), tokens.shape)
    hidden, _ = apply(cfg, params, tokens, pos, return_hidden=True)
    lp = hidden_logprobs(cfg, params, hidden, targets, chunk_size=3)
    np.testing.assert_allclose(lp, _full(cfg, params, tokens, targets)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk_size"):
        hidden_logprobs(cfg, params, hidden, targets, chunk_size=0)
    with pytest.raises(ValueError, match="targets shape"):
        hidden_logprobs(cfg, params, hidden, targets[:, :5])
    with pytest.raises(ValueError, match="integer"):
        hidden_logprobs(cfg, params, hidden, targets.astype(jnp.float32))
    with pytest.raises(ValueError, match="hidden must be"):
        hidden_logprobs(cfg, params, hidden[0], targets)
    with pytest.raises(ValueError, match="tokens must be"):
        token_logprobs(cfg, params, tokens[0], targets[0])
    with pytest.raises(ValueError, match="segment_ids shape"):
        token_logprobs(cfg, params, tokens, targets, segment_ids=tokens[:, :3])

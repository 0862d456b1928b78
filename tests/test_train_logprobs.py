"""Chunked log-probs (train/logprobs.py) == the full log-softmax of the model's logits."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import apply, forward, init_params, presets
from orchestra_jax.train.logprobs import hidden_logprobs, token_logprobs

TINY = presets["tiny"].replace(num_layers=1)  # one layer: half the compile time, same paths


@functools.lru_cache(maxsize=None)
def _setup(tied: bool):
    cfg = TINY.replace(tie_word_embeddings=tied)
    params = init_params(cfg, jax.random.key(3 if tied else 4))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 13)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 13)), jnp.int32)
    return cfg, params, tokens, targets


@functools.partial(jax.jit, static_argnums=0)
def _full(cfg, params, tokens, targets, positions=None, segment_ids=None):
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    logits, _ = apply(cfg, params, tokens, positions, segment_ids)
    logp = jax.nn.log_softmax(logits, axis=-1)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], ent


# ragged (13 = 3*4+1), one chunk, chunk bigger than L
@pytest.mark.parametrize("tied,chunk", [(False, 4), (True, 5), (False, 13), (True, 512)])
def test_equals_full_log_softmax(tied, chunk):
    cfg, params, tokens, targets = _setup(tied)
    f = jax.jit(functools.partial(token_logprobs, cfg, chunk_size=chunk, return_entropy=True))
    lp, ent = f(params, tokens, targets)
    assert lp.shape == ent.shape == tokens.shape and lp.dtype == ent.dtype == jnp.float32
    ref_lp, ref_ent = _full(cfg, params, tokens, targets)
    np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ent, ref_ent, atol=1e-5, rtol=0)
    assert float(jnp.min(ent)) > 0.0  # a real distribution, not a constant
    if chunk == 4:  # the log-prob-only path, and the public forward() as a second reference
        lp_only = jax.jit(functools.partial(token_logprobs, cfg, chunk_size=chunk))(
            params, tokens, targets)
        np.testing.assert_allclose(lp_only, lp, atol=1e-6, rtol=0)
        ref2 = jnp.take_along_axis(jax.nn.log_softmax(forward(cfg, params, tokens), -1),
                                   targets[..., None], -1)[..., 0]
        np.testing.assert_allclose(lp, ref2, atol=1e-5, rtol=0)


def test_gradients_equal_full_logits():
    # tied: the embedding's gradient gets both the input-lookup and the chunked-head paths
    cfg, params, tokens, targets = _setup(True)
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
    # "alone" = the sample at the start of its own row (right padding cannot affect it: causal)
    leaky, _ = f(params, tokens, targets, positions=pos)
    for s, (x, t), sl in ((1, (a, ta), slice(0, 7)), (2, (b, tb), slice(7, 13))):
        row = np.zeros((2, 16), np.int32)
        row[0, :len(x)], row[1, :len(t)] = x, t
        alone, ent_alone = f(params, jnp.asarray(row[:1]), jnp.asarray(row[1:]))
        n = len(x)
        np.testing.assert_allclose(lp[0, sl], alone[0, :n], atol=1e-5, rtol=0, err_msg=f"seg {s}")
        np.testing.assert_allclose(ent[0, sl], ent_alone[0, :n], atol=1e-5, rtol=0)
    # without segment ids sample b sees sample a: the check above can fail
    assert float(jnp.max(jnp.abs(leaky[0, 7:13] - alone[0, :6]))) > 1e-3


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


def test_bad_inputs_are_clear_errors():
    cfg, params, tokens, targets = _setup(False)
    hidden = jnp.zeros(tokens.shape + (cfg.hidden_size,), jnp.float32)
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


def test_rollout_scorers_use_chunked_logprobs():
    """rollout/logprob_check.recompute_logprobs and scripted_engine.score_tokens (KV-cache chunks,
    prefix reuse) equal the full log-softmax of one forward over prompt + completion."""
    from orchestra_jax.rollout.logprob_check import recompute_logprobs
    from orchestra_jax.rollout.scripted_engine import _PrefixCache, score_tokens

    cfg, params, _, _ = _setup(False)
    rng = np.random.default_rng(2)
    prompts = [list(rng.integers(0, 256, n)) for n in (5, 9, 3)]
    comps = [list(rng.integers(0, 256, n)) for n in (4, 2, 7)]
    got = recompute_logprobs(cfg, params, prompts, comps)

    def ref(p, c):  # one full-logits forward over the sequence, right-padded to 16 tokens
        seq = np.zeros((1, 17), np.int32)
        seq[0, :len(p) + len(c)] = p + c
        lp = _full(cfg, params, jnp.asarray(seq[:, :-1]), jnp.asarray(seq[:, 1:]))[0]
        return lp[0, len(p) - 1:len(p) - 1 + len(c)]

    pc = _PrefixCache()
    for p, c, g in zip(prompts, comps, got):
        np.testing.assert_allclose(g, ref(p, c), atol=1e-5, rtol=0)
        np.testing.assert_allclose(score_tokens(cfg, params, p, c, chunk=4), ref(p, c),
                                   atol=1e-5)
    # an extension of the previous sequence reuses the cached prefix and still agrees
    p, c = prompts[1], comps[1]
    score_tokens(cfg, params, p, c, chunk=4, prefix_cache=pc)
    p2 = p + c + [7]  # 15 tokens with the completion: the same 16-slot program
    np.testing.assert_allclose(score_tokens(cfg, params, p2, [1, 2, 3], chunk=4, prefix_cache=pc),
                               ref(p2, [1, 2, 3]), atol=1e-5)
    assert pc.valid > 0

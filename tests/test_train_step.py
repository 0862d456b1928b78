"""train/losses.py + train/step.py: GRPO and SFT losses, the one jitted step, on 8 fake devices.

Equality of meshes / micro-batches is checked on the loss, the new params AND the AdamW first
moment (mu = (1-b1)·clipped gradient after one step), which carries the gradient itself: with the
paper's lr 1e-6 the params move by ~1e-6 only, so the params alone would hide a wrong gradient.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import forward, init_params, presets
from orchestra_jax.rl.losses import PPOLossConfig, ppo_loss
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.losses import (GRPOLossConfig, grpo_loss, make_logprob_fn, sft_loss)
from orchestra_jax.train.state import (OptimizerConfig, make_optimizer, sharding_report,
                                       state_from_params, state_logical_axes, state_shardings)
from orchestra_jax.train.step import batch_sharding, make_train_step

CFG = presets["tiny"].replace(scan_layers=True)          # float32 compute
FAST = {"xla_backend_optimization_level": 0}              # CPU compile time, same numerics both sides
MESHES = [(1, 8, 1), (2, 2, 2), (1, 4, 2)]
R, L = 8, 32


def make_batch(seed: int, rows: int = R, length: int = L, max_segments: int = 2,
               params=None, cfg=CFG) -> dict:
    """A packed learner batch built by hand (the batch contract of train/batch.py).

    Each row holds 1..max_segments samples (prompt + response) and padding; targets are the next
    token of the same sample; loss on the response's targets; one advantage per sample;
    old log-probs = the model's own log-probs (if ``params``) plus N(0, 0.3) noise, so that some
    tokens clip.
    """
    rng = np.random.default_rng(seed)
    b = {k: np.zeros((rows, length), np.int32) for k in ("tokens", "targets", "positions",
                                                         "segment_ids")}
    b.update({k: np.zeros((rows, length), np.float32) for k in ("loss_mask", "advantages",
                                                                "old_logprobs")})
    for r in range(rows):
        pos = 0
        for s in range(1, int(rng.integers(1, max_segments + 1)) + 1):
            n = int(rng.integers(6, length // max_segments + 1))
            if pos + n > length:
                break
            toks = rng.integers(0, cfg.vocab_size, n)
            sl = slice(pos, pos + n)
            b["tokens"][r, sl] = toks
            b["targets"][r, pos:pos + n - 1] = toks[1:]
            b["positions"][r, sl] = np.arange(n)
            b["segment_ids"][r, sl] = s
            prompt = int(rng.integers(2, n // 2 + 1))
            b["loss_mask"][r, pos + prompt - 1:pos + n - 1] = 1.0     # targets = response tokens
            b["advantages"][r, sl] = rng.normal()
            pos += n
    if params is not None:
        lp = np.asarray(_logprobs(params, b))
        noise = rng.normal(scale=0.3, size=lp.shape).astype(np.float32)
        b["old_logprobs"] = np.where(b["loss_mask"] > 0, lp + noise, 0.0).astype(np.float32)
    return b


_logprobs = jax.jit(make_logprob_fn(CFG))


@jax.jit
def _logprobs_entropy(params, b):
    from orchestra_jax.train.logprobs import token_logprobs
    return token_logprobs(CFG, params, b["tokens"], b["targets"], positions=b["positions"],
                          segment_ids=b["segment_ids"], return_entropy=True)


@pytest.fixture(scope="module")
def setup():
    params = jax.device_get(init_params(CFG, jax.random.key(0)))
    ref = jax.tree.map(lambda p: p + 0.01 * np.sign(p).astype(p.dtype), params)
    batch = make_batch(0, params=params)
    return params, ref, batch


_RESULTS: dict = {}


def _loss_fn(kind):
    return grpo_loss(CFG) if kind == "grpo" else sft_loss(CFG)


def run_step(setup, kind: str, mesh_shape, micro_batches: int = 1):
    """One step on ``mesh_shape``; cached so tests share compiles. Returns host arrays."""
    key = (kind, tuple(mesh_shape), micro_batches)
    if key not in _RESULTS:
        params, ref, batch = setup
        mesh = make_mesh(mesh_shape)
        opt = make_optimizer(OptimizerConfig())
        sh = state_shardings(mesh, CFG, opt)
        state = state_from_params(params, CFG, opt, mesh)
        step = make_train_step(_loss_fn(kind), opt, sh, batch_sharding(mesh),
                               micro_batches=micro_batches, compiler_options=FAST)
        bsh = jax.device_put(batch, batch_sharding(mesh))
        ref_arg = jax.device_put(ref, sh.params) if kind == "grpo" else None
        new, metrics = step(state, bsh, ref_arg)
        # placement: every output leaf where the rules table puts it
        for leaf, s in zip(jax.tree.leaves(new), jax.tree.leaves(sh)):
            assert leaf.sharding.is_equivalent_to(s, leaf.ndim), (leaf.sharding, s)
        print(sharding_report(mesh, new, state_logical_axes(CFG, opt)))
        _RESULTS[key] = jax.device_get((new, metrics))
    return _RESULTS[key]


def _mu(state):
    return state.opt_state[1][0].mu


def _rel(a, b):
    a, b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)]), \
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _max_abs(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))


# ---------------------------------------------------------------------- the step across meshes
@pytest.mark.parametrize("kind", ["grpo", "sft"])
def test_step_same_on_every_mesh_as_on_one_device(setup, kind):
    base, mb = run_step(setup, kind, (1, 1, 1))
    assert int(base.step) == 1 and np.isfinite(mb["loss"]) and mb["grad_norm"] > 0
    assert mb["loss_weight"] == setup[2]["loss_mask"].sum()
    if kind == "sft":
        assert 5.0 < mb["loss"] < 6.0          # ~ln(256) for a random tiny model
    else:                                      # noisy old log-probs: some tokens clip
        assert 0 < mb["pg_clipfrac_low"] + mb["pg_clipfrac_high"] < 0.5
        assert mb["kl"] > 0 and mb["logprob_gap"] > 0.1
    for shape in MESHES:
        new, m = run_step(setup, kind, shape)
        assert abs(m["loss"] - mb["loss"]) <= 1e-5, (shape, m["loss"], mb["loss"])
        assert _max_abs(new.params, base.params) <= 1e-5, shape
        assert _max_abs(_mu(new), _mu(base)) <= 1e-5 * np.abs(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(_mu(base))])).max(), shape
        assert _rel(_mu(new), _mu(base)) <= 1e-5, shape
        for k in mb:
            assert np.allclose(m[k], mb[k], rtol=1e-4, atol=1e-6), (shape, k, m[k], mb[k])


@pytest.mark.parametrize("kind", ["grpo", "sft"])
def test_micro_batches_equal_full_batch(setup, kind):
    full, mf = run_step(setup, kind, (2, 2, 2), 1)
    new, m = run_step(setup, kind, (2, 2, 2), 2)
    assert abs(m["loss"] - mf["loss"]) <= 1e-6 * abs(mf["loss"])
    assert _rel(new.params, full.params) <= 1e-6
    assert _rel(_mu(new), _mu(full)) <= 1e-6
    assert m["loss_weight"] == mf["loss_weight"]
    # the update really moved the params, and AdamW's first moment is (1 - b1) * clipped grad
    params = setup[0]
    assert _max_abs(new.params, params) > 0
    gnorm = float(np.sqrt(sum(np.sum((x / 0.1) ** 2) for x in jax.tree.leaves(_mu(new)))))
    assert gnorm == pytest.approx(min(mf["grad_norm"], 1.0), rel=1e-4)


def test_step_rejects_indivisible_micro_batches(setup):
    params, _, batch = setup
    mesh = make_mesh((1, 1, 1))
    opt = make_optimizer()
    step = make_train_step(sft_loss(CFG), opt, state_shardings(mesh, CFG, opt),
                           batch_sharding(mesh), micro_batches=3, compiler_options=FAST)
    with pytest.raises(ValueError, match="cannot be split into 3 micro-batches"):
        step(state_from_params(params, CFG, opt, mesh), batch)
    with pytest.raises(ValueError, match="micro_batches"):
        make_train_step(sft_loss(CFG), opt, state_shardings(mesh, CFG, opt),
                        batch_sharding(mesh), micro_batches=0)


# ---------------------------------------------------------------------- losses (no optimizer)
@functools.lru_cache(maxsize=None)
def _jit_loss(loss_cfg):
    return jax.jit(grpo_loss(CFG, loss_cfg))


def _ppo(agg="token-mean", **kw):
    # one entropy coefficient everywhere so tests share compiles (and the bonus is exercised)
    return PPOLossConfig(loss_agg=agg, entropy_coef=0.01, **kw)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_grpo_loss_is_ppo_loss_per_sample(setup, agg):
    """One sample per row: sum / weight == rl.losses.ppo_loss on the same log-probs."""
    params, ref, _ = setup
    batch = make_batch(1, max_segments=1, params=params)
    ppo = _ppo(agg)
    s, w, aux = _jit_loss(GRPOLossConfig(ppo))(params, batch, ref)
    logp, ent = _logprobs_entropy(params, batch)
    ref_lp = _logprobs(ref, batch)
    want, diag = jax.jit(functools.partial(ppo_loss, cfg=ppo))(
        logp, batch["old_logprobs"], batch["advantages"], batch["loss_mask"] > 0,
        ref_logp=ref_lp, entropy=ent)
    assert float(s / w) == pytest.approx(float(want), rel=1e-5, abs=1e-7)
    # (ppo_loss aggregates its entropy diagnostic like the loss; ours is always a token mean)
    for k in ("pg_clipfrac_low", "pg_clipfrac_high", "approx_kl_old", "kl") + (
            ("entropy",) if agg == "token-mean" else ()):
        got = aux[k][0] / aux[k][1]
        assert float(got) == pytest.approx(float(diag[k]), rel=1e-5, abs=1e-7), k
    assert float(aux["pg_loss"][0] / aux["pg_loss"][1]) == pytest.approx(
        float(diag["pg_loss"]), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_loss_pairs_accumulate_exactly_over_row_splits(setup, agg):
    """Packed rows (2 samples each): Σ sums / Σ weights over row halves == the whole batch's, and
    seq modes count samples (segments), not rows."""
    params, ref, batch = setup
    fn = _jit_loss(GRPOLossConfig(_ppo(agg)))
    s, w, _ = fn(params, batch, ref)
    # a row subset = the other rows' loss masks zeroed (same shapes: no recompile)
    parts = [fn(params, dict(batch, loss_mask=batch["loss_mask"] * (np.arange(R) % 2 == i)[:, None]),
                ref) for i in range(2)]
    total = sum(float(p[0]) for p in parts) / sum(float(p[1]) for p in parts)
    assert total == pytest.approx(float(s / w), rel=1e-6)
    nonempty = len({(r, int(batch["segment_ids"][r, c]))
                    for r, c in zip(*np.nonzero(batch["loss_mask"]))})
    assert nonempty > R                                  # some rows hold two samples
    assert float(w) == (batch["loss_mask"].sum() if agg == "token-mean" else nonempty)


def test_recompute_old_logprobs_is_on_policy(setup):
    """recompute: ratio 1 (no clipping), pg = -token-mean(A), and the same loss and gradient as
    taking old log-probs from a trainer pre-pass (make_logprob_fn) with the same params."""
    params, ref, batch = setup
    rec = GRPOLossConfig(_ppo(), recompute_old_logprobs=True)
    s, w, aux = _jit_loss(rec)(params, batch, ref)
    m = batch["loss_mask"] > 0
    assert float(aux["ratio_mean"][0] / aux["ratio_mean"][1]) == pytest.approx(1.0, abs=1e-6)
    assert float(aux["pg_clipfrac_low"][0]) == 0 and float(aux["pg_clipfrac_high"][0]) == 0
    assert float(aux["pg_loss"][0] / aux["pg_loss"][1]) == pytest.approx(
        -batch["advantages"][m].mean(), rel=1e-5, abs=1e-6)
    # the batch's (noisy) log-probs become the rollout log-probs: their gap is reported
    assert float(aux["rollout_abs_logp_diff"][0] / aux["rollout_abs_logp_diff"][1]) > 0.1
    pre = dict(batch, old_logprobs=np.asarray(_logprobs(params, batch)))
    grads = jax.jit(lambda p: (jax.grad(lambda q: grpo_loss(CFG, rec)(q, batch, ref)[0])(p),
                               jax.grad(lambda q: grpo_loss(CFG, GRPOLossConfig(_ppo()))(
                                   q, pre, ref)[0])(p)))
    g_rec, g_pre = grads(params)
    s_pre, _, _ = _jit_loss(GRPOLossConfig(_ppo()))(params, pre, ref)
    assert float(s_pre) == pytest.approx(float(s), rel=1e-5)
    assert _rel(g_rec, g_pre) <= 1e-5
    # without recompute, old_logprobs are required
    with pytest.raises(ValueError, match="old_logprobs"):
        grpo_loss(CFG)(params, {k: v for k, v in batch.items() if k != "old_logprobs"}, ref)


def test_kl_path_uses_frozen_reference(setup):
    params, ref, batch = setup
    fn = _jit_loss(GRPOLossConfig(_ppo()))                   # kl_coef 1e-4 [C], k2
    s, w, aux = fn(params, batch, ref)
    logp, ref_lp = np.asarray(_logprobs(params, batch)), np.asarray(_logprobs(ref, batch))
    m = batch["loss_mask"] > 0
    want_kl = (0.5 * (logp - ref_lp) ** 2)[m].mean()
    assert want_kl > 1e-4
    assert float(aux["kl"][0] / aux["kl"][1]) == pytest.approx(want_kl, rel=1e-5)
    # precomputed ref log-probs in the batch == ref params
    s2, _, _ = fn(params, dict(batch, ref_logprobs=ref_lp), None)
    assert float(s2) == pytest.approx(float(s), rel=1e-6)
    # (that the KL term enters the loss as kl_coef * agg(k2) is checked against rl.losses.ppo_loss
    # in test_grpo_loss_is_ppo_loss_per_sample)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_params"):
        grpo_loss(CFG)(params, batch, None)
    # kl_coef 0: the reference is ignored entirely
    s0, _, aux0 = _jit_loss(GRPOLossConfig(_ppo(kl_coef=0.0)))(params, batch, None)
    assert "kl" not in aux0 and float(s0) == pytest.approx(float(aux["pg_loss"][0]) - 0.01 * float(
        aux["entropy"][0]), rel=1e-5)


def test_sft_loss_is_masked_cross_entropy(setup):
    params, _, batch = setup
    s, w, aux = jax.jit(sft_loss(CFG, chunk_size=8))(params, batch)
    logits = forward(CFG, params, batch["tokens"], batch["positions"], batch["segment_ids"])
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    tgt = np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
    m = batch["loss_mask"] > 0
    assert float(w) == m.sum() and aux == {}
    assert float(s / w) == pytest.approx(-tgt[m].mean(), rel=1e-5)


def test_bad_batches_fail_clearly(setup):
    params, ref, batch = setup
    with pytest.raises(ValueError, match=r"missing \['advantages'\]"):
        grpo_loss(CFG)(params, {k: v for k, v in batch.items() if k != "advantages"}, ref)
    with pytest.raises(ValueError, match="batch\\['loss_mask'\\] has shape"):
        sft_loss(CFG)(params, dict(batch, loss_mask=batch["loss_mask"][:, :-1]))
    with pytest.raises(TypeError, match="dict"):
        sft_loss(CFG)(params, [batch])
    with pytest.raises(ValueError, match="chunk_size"):
        GRPOLossConfig(chunk_size=0)

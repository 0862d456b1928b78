"""PPO clipped surrogate (asymmetric clip, dual clip, KL k1/k2/k3, entropy, TIS, aggregation modes)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl.losses import PPOLossConfig, aggregate, kl_penalty, ppo_loss

NO_KL = PPOLossConfig(kl_coef=0.0)

# One row, seven tokens, one per clipping region (eps_low .2, eps_high .28, dual clip c = 10).
#            high   low   dual  unclip unclip unclip unclip
RATIOS = [1.5, 0.5, 12.0, 5.0, 1.1, 0.5, 1.1]
ADVS = [1.0, -1.0, -2.0, -1.0, 1.0, 1.0, -1.0]
PG = [-1.28, 0.8, 20.0, 5.0, -1.1, -0.5, 1.1]          # per-token loss, hand-computed
GRAD = [0.0, 0.0, 0.0, 5.0, -1.1, -0.5, 1.1]           # d pg / d logp (= -A * ratio when unclipped)


def _region_inputs():
    logp = jnp.log(jnp.asarray([RATIOS]))                # old_logp = 0 -> ratio = exp(logp)
    return logp, jnp.zeros_like(logp), jnp.asarray([ADVS]), jnp.ones_like(logp, dtype=bool)


def test_each_clipping_region_value_and_gradient():
    logp, old, adv, mask = _region_inputs()
    loss, diag = ppo_loss(logp, old, adv, mask, cfg=NO_KL)
    np.testing.assert_allclose(float(loss), sum(PG) / 7, rtol=1e-5)
    grad = jax.grad(lambda lp: ppo_loss(lp, old, adv, mask, cfg=NO_KL)[0])(logp)
    np.testing.assert_allclose(np.asarray(grad)[0], np.asarray(GRAD) / 7, rtol=1e-5, atol=1e-7)
    for k in ("pg_clipfrac_low", "pg_clipfrac_high", "dual_clip_frac"):
        np.testing.assert_allclose(float(diag[k]), 1 / 7, rtol=1e-6)
    np.testing.assert_allclose(float(diag["ratio_max"]), 12.0, rtol=1e-5)
    np.testing.assert_allclose(float(diag["ratio_min"]), 0.5, rtol=1e-5)
    np.testing.assert_allclose(float(diag["ratio_mean"]), sum(RATIOS) / 7, rtol=1e-5)
    assert int(diag["num_tokens"]) == 7
    # without dual clip the A<0, ratio 12 token costs 2 * 12 = 24 and keeps its gradient
    loss_nd, diag_nd = ppo_loss(logp, old, adv, mask, cfg=PPOLossConfig(kl_coef=0.0, dual_clip=None))
    np.testing.assert_allclose(float(loss_nd), (sum(PG) - 20.0 + 24.0) / 7, rtol=1e-5)
    assert float(diag_nd["dual_clip_frac"]) == 0.0
    # symmetric clip 0.2 turns the high-clip token into -1.2
    loss_sym, _ = ppo_loss(logp, old, adv, mask, cfg=PPOLossConfig(kl_coef=0.0, clip_high=0.2))
    np.testing.assert_allclose(float(loss_sym), (sum(PG) + 0.08) / 7, rtol=1e-5)


def test_kl_estimators_golden():
    logp, ref = jnp.asarray([0.0, -1.0]), jnp.asarray([-0.5, -0.5])   # delta = +.5, -.5
    np.testing.assert_allclose(np.asarray(kl_penalty(logp, ref, "k1")), [0.5, -0.5])
    np.testing.assert_allclose(np.asarray(kl_penalty(logp, ref, "k2")), [0.125, 0.125])
    np.testing.assert_allclose(np.asarray(kl_penalty(logp, ref, "k3")),
                               [math.exp(-0.5) - 0.5, math.exp(0.5) - 1.5], rtol=1e-6)
    # in the loss: ratio 1, A 0 -> loss = coef * mean k2
    lp = jnp.asarray([[0.0, -1.0]])
    loss, diag = ppo_loss(lp, lp, jnp.zeros(1), jnp.ones((1, 2), bool),
                          ref_logp=jnp.asarray([[-0.5, -0.5]]), cfg=PPOLossConfig(kl_coef=0.1))
    np.testing.assert_allclose(float(loss), 0.1 * 0.125, rtol=1e-6)
    np.testing.assert_allclose(float(diag["kl"]), 0.125, rtol=1e-6)


def test_aggregation_modes_golden():
    x = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
    m = jnp.asarray([[1, 1, 1], [1, 0, 0], [0, 0, 0]], bool)             # row 2 is padding
    assert float(aggregate(x, m, "token-mean")) == pytest.approx(10 / 4)
    assert float(aggregate(x, m, "token-mean", denominator=8)) == pytest.approx(10 / 8)
    assert float(aggregate(x, m, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)
    assert float(aggregate(x, m, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(x, jnp.zeros_like(m), "seq-mean-token-mean")) == 0.0
    # micro-batches with a global denominator sum to the full-batch value, in every mode
    for mode, denom in (("token-mean", 4), ("seq-mean-token-sum", 2), ("seq-mean-token-mean", 2)):
        parts = sum(float(aggregate(x[i:i + 1], m[i:i + 1], mode, denominator=denom))
                    for i in range(3))
        assert parts == pytest.approx(float(aggregate(x, m, mode)))


def test_truncated_importance_sampling():
    lp = jnp.zeros((1, 2))
    rollout = jnp.asarray([[-1.0, -0.1]])            # w = min(exp(0 - rollout), 2) = [2, e^.1]
    cfg = PPOLossConfig(kl_coef=0.0, tis_cap=2.0)
    loss, diag = ppo_loss(lp, lp, jnp.ones(1), jnp.ones((1, 2), bool), rollout_logp=rollout, cfg=cfg)
    w = np.array([2.0, math.exp(0.1)])
    np.testing.assert_allclose(float(loss), -w.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(diag["tis_clipfrac"]), 0.5)
    np.testing.assert_allclose(float(diag["tis_weight_max"]), 2.0, rtol=1e-6)
    g_lp, g_roll = jax.grad(
        lambda a, r: ppo_loss(a, lp, jnp.ones(1), jnp.ones((1, 2), bool), rollout_logp=r,
                              cfg=cfg)[0], argnums=(0, 1))(lp, rollout)
    np.testing.assert_allclose(np.asarray(g_lp)[0], -w / 2, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(g_roll), 0.0)           # weight is stop-gradient


def _loss_fn(cfg):
    def f(logp, old, adv, mask, ref, rollout, ent):
        return ppo_loss(logp, old, adv, mask, ref_logp=ref, rollout_logp=rollout, entropy=ent,
                        cfg=cfg)[0]
    return f


@pytest.mark.parametrize("agg,kl_type", [("token-mean", "k2"), ("seq-mean-token-sum", "k3"),
                                         ("seq-mean-token-mean", "k1")])
def test_gradient_matches_finite_differences(agg, kl_type):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        b, l = 2, 5
        old = rng.normal(-1.0, 0.3, (b, l))
        # log-ratios chosen in all regions but >= 1e-2 away from every kink (0.8, 1.28, 10)
        logr = np.array([[0.1, -0.5, 0.4, 2.5, -0.05], [0.05, 0.3, -0.4, 0.0, 0.15]])
        logp = old + logr
        adv = np.array([[1.0, -1.0, 0.7, -2.0, 1.3], [-0.4, 1.0, 0.9, -1.0, 0.2]])
        mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
        ref = logp + rng.normal(0, 0.2, (b, l))
        rollout = old + rng.normal(0, 0.3, (b, l))
        ent = rng.random((b, l))
        for tis_cap in (1.2, None):
            cfg = PPOLossConfig(kl_coef=0.3, kl_type=kl_type, entropy_coef=0.05, loss_agg=agg,
                                tis_cap=tis_cap)
            f = jax.jit(_loss_fn(cfg))
            args = [jnp.asarray(a) for a in (logp, old, adv, mask, ref, rollout, ent)]
            g = np.asarray(jax.grad(f)(*args))
            assert g.dtype == np.float64
            h = 1e-6
            eye = np.eye(b * l).reshape(b * l, b, l) * h
            fv = jax.jit(jax.vmap(lambda lp: f(lp, *args[1:])))
            fd = (np.asarray(fv(jnp.asarray(logp + eye))) -
                  np.asarray(fv(jnp.asarray(logp - eye)))) / (2 * h)
            np.testing.assert_allclose(g.reshape(-1), fd, rtol=1e-6, atol=1e-9)
            assert np.abs(g).max() > 0.01
            np.testing.assert_array_equal(g[~mask], 0.0)
            # entropy bonus gradient: -coef * d agg / d entropy (checks sign of the bonus)
            ge = np.asarray(jax.grad(f, argnums=6)(*args))
            assert (ge[mask] < 0).all() and (ge[~mask] == 0).all()


def test_rollout_kl_is_kl_of_rollout_from_old_on_rollout_samples():
    """Tokens drawn from the rollout policy q: the diagnostic must estimate KL(q || p_old) (k3 with
    r = p_old/q), not KL(p_old || q). The two differ a lot for these distributions."""
    q = np.array([0.9, 0.05, 0.05])
    p = np.array([0.3, 0.1, 0.6])
    kl_qp = float(np.sum(q * np.log(q / p)))
    kl_pq = float(np.sum(p * np.log(p / q)))
    assert abs(kl_qp - kl_pq) > 0.1
    toks = np.random.default_rng(0).choice(3, size=100_000, p=q)
    rollout = jnp.asarray(np.log(q)[toks])[None]
    old = jnp.asarray(np.log(p)[toks])[None]
    _, diag = ppo_loss(old, old, jnp.ones(1), jnp.ones_like(old, dtype=bool), rollout_logp=rollout,
                       cfg=NO_KL)
    assert float(diag["rollout_kl"]) == pytest.approx(kl_qp, rel=0.03)
    assert float(diag["rollout_kl"]) >= 0


def test_sequence_advantages_broadcast_padding_jit_vmap():
    logp, old, adv, mask = _region_inputs()
    a_seq = jnp.asarray([0.7])
    l1, _ = ppo_loss(logp, old, a_seq, mask, cfg=NO_KL)
    l2, _ = ppo_loss(logp, old, jnp.full(logp.shape, 0.7), mask, cfg=NO_KL)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-6)
    # padding holding -inf / nan log-probs must not leak NaN into loss or gradient
    lp = jnp.concatenate([logp, jnp.full((1, 2), -jnp.inf)], axis=1)
    od = jnp.concatenate([old, jnp.full((1, 2), jnp.nan)], axis=1)
    mk = jnp.concatenate([mask, jnp.zeros((1, 2), bool)], axis=1)
    ad = jnp.concatenate([adv, jnp.zeros((1, 2))], axis=1)
    ref = jnp.concatenate([logp, jnp.full((1, 2), -jnp.inf)], axis=1)
    cfg = PPOLossConfig()
    f = jax.jit(functools.partial(lambda *a, cfg: ppo_loss(*a[:4], ref_logp=a[4], cfg=cfg)[0],
                                  cfg=cfg))
    loss = f(lp, od, ad, mk, ref)
    np.testing.assert_allclose(float(loss), sum(PG) / 7, rtol=1e-5)
    g = np.asarray(jax.grad(f)(lp, od, ad, mk, ref))
    assert np.isfinite(g).all()
    # vmap over micro-batches, diagnostics included
    stack = lambda x: jnp.stack([x, x])
    losses, diags = jax.vmap(lambda *a: ppo_loss(*a, cfg=NO_KL))(*map(stack, (logp, old, adv, mask)))
    np.testing.assert_allclose(np.asarray(losses), sum(PG) / 7, rtol=1e-5)
    assert diags["pg_clipfrac_high"].shape == (2,)


def test_bad_config_and_inputs_raise():
    logp, old, adv, mask = _region_inputs()
    with pytest.raises(ValueError, match="ref_logp is required"):
        ppo_loss(logp, old, adv, mask)                    # default kl_coef 1e-4 needs ref_logp
    with pytest.raises(ValueError, match="entropy is required"):
        ppo_loss(logp, old, adv, mask, cfg=PPOLossConfig(kl_coef=0.0, entropy_coef=0.1))
    with pytest.raises(ValueError, match="rollout_logp is required"):
        ppo_loss(logp, old, adv, mask, cfg=PPOLossConfig(kl_coef=0.0, tis_cap=2.0))
    with pytest.raises(ValueError, match="advantages must have shape"):
        ppo_loss(logp, old, jnp.ones(3), mask, cfg=NO_KL)
    with pytest.raises(ValueError, match="old_logp must have shape"):
        ppo_loss(logp, old[:, :3], adv, mask, cfg=NO_KL)
    with pytest.raises(ValueError, match="dual_clip"):
        PPOLossConfig(dual_clip=0.5)
    with pytest.raises(ValueError, match="kl_type"):
        PPOLossConfig(kl_type="k4")
    with pytest.raises(ValueError, match="loss_agg"):
        PPOLossConfig(loss_agg="sum")
    with pytest.raises(ValueError, match="clip_low"):
        PPOLossConfig(clip_low=1.5)


def test_asymmetric_clip_boundaries():
    # ratio 1.25 lies between 1 + eps_low and 1 + eps_high: NOT clipped for A > 0 (clip-higher),
    # ratio 0.75 < 1 - eps_low: clipped for A < 0, ratio 0.85 is not.
    ratios = [1.25, 0.75, 0.85, 1.25]
    advs = [1.0, -1.0, -1.0, -1.0]
    logp = jnp.log(jnp.asarray([ratios]))
    old, mask = jnp.zeros_like(logp), jnp.ones_like(logp, dtype=bool)
    loss, diag = ppo_loss(logp, old, jnp.asarray([advs]), mask, cfg=NO_KL)
    per_token = [-1.25, 0.8, 0.85, 1.25]
    np.testing.assert_allclose(float(loss), sum(per_token) / 4, rtol=1e-6)
    assert float(diag["pg_clipfrac_high"]) == 0.0
    np.testing.assert_allclose(float(diag["pg_clipfrac_low"]), 0.25)
    grad = jax.grad(lambda lp: ppo_loss(lp, old, jnp.asarray([advs]), mask, cfg=NO_KL)[0])(logp)
    np.testing.assert_allclose(np.asarray(grad)[0], np.array([-1.25, 0.0, 0.85, 1.25]) / 4,
                               rtol=1e-5, atol=1e-7)
    # symmetric 0.2 clips the first token at 1.2 (gradient 0)
    loss_s, diag_s = ppo_loss(logp, old, jnp.asarray([advs]), mask,
                              cfg=PPOLossConfig(kl_coef=0.0, clip_high=0.2))
    np.testing.assert_allclose(float(loss_s), (sum(per_token) + 0.05) / 4, rtol=1e-6)
    np.testing.assert_allclose(float(diag_s["pg_clipfrac_high"]), 0.25)

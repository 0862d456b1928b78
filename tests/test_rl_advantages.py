"""Group-relative advantages (paper Eq. 3, release std/eps/clip, Dr. GRPO) and the release boost."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl.advantages import (advantage_boost, group_mean, group_std,
                                         grpo_advantages)


def test_golden_sample_and_population_std():
    r = jnp.asarray([1.0, 0.0, 0.0, 0.0])
    # mean .25; sample var = (.5625 + 3*.0625)/3 = .25 -> std .5; population var .1875
    np.testing.assert_allclose(float(group_std(r)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(group_std(r, std="population")), math.sqrt(0.1875), rtol=1e-6)
    a = np.asarray(grpo_advantages(r))
    np.testing.assert_allclose(a, np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6), rtol=1e-6)
    a = np.asarray(grpo_advantages(r, std="population", eps=0.0))
    np.testing.assert_allclose(a, np.array([0.75, -0.25, -0.25, -0.25]) / math.sqrt(0.1875),
                               rtol=1e-6)


def test_clip_at_three():
    r = jnp.zeros(16).at[0].set(1.0)
    # mean 1/16, sample var = ((15/16)^2 + 15/256)/15 = 1/16 -> std .25 -> A0 = .9375/.25 = 3.75
    a = np.asarray(grpo_advantages(r, eps=0.0))
    np.testing.assert_allclose(a[0], 3.75, rtol=1e-6)
    a = np.asarray(grpo_advantages(r, eps=0.0, clip=3.0))
    assert a[0] == pytest.approx(3.0)
    np.testing.assert_allclose(a[1:], -0.0625 / 0.25, rtol=1e-6)


def test_drgrpo_no_std_division():
    a = np.asarray(grpo_advantages(jnp.asarray([[2.0, 1.0, 0.0]]), mode="drgrpo"))
    np.testing.assert_allclose(a, [[1.0, 0.0, -1.0]], rtol=1e-6)


def test_homogeneous_single_and_empty_groups_give_zero():
    # 0.1 * 7 does not average back to exactly 0.1 in float32: still exactly 0 advantage.
    r = jnp.asarray([[0.1] * 7, [0.0] * 7, [5.0] + [0.0] * 6])
    m = jnp.asarray([[1] * 7, [0] * 7, [1] + [0] * 6], bool)
    for eps in (1e-6, 0.0):
        a = np.asarray(grpo_advantages(r, m, eps=eps))
        assert not np.isnan(a).any()
        np.testing.assert_array_equal(a, np.zeros((3, 7)))
    np.testing.assert_allclose(np.asarray(group_mean(r, m)), [0.1, 0.0, 5.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(group_std(r, m)), [0.0, 0.0, 0.0])
    g = jax.grad(lambda x: grpo_advantages(x, m).sum())(r)       # no NaN gradients at std == 0
    assert not np.isnan(np.asarray(g)).any()


def test_ragged_mask_matches_unpadded():
    padded = jnp.asarray([[1.0, 0.0, 0.5, 99.0, -99.0]])
    mask = jnp.asarray([[True, True, True, False, False]])
    a = np.asarray(grpo_advantages(padded, mask, clip=3.0))
    ref = np.asarray(grpo_advantages(jnp.asarray([[1.0, 0.0, 0.5]]), clip=3.0))
    np.testing.assert_allclose(a[:, :3], ref, rtol=1e-6)
    np.testing.assert_array_equal(a[:, 3:], 0.0)
    np.testing.assert_allclose(ref, [[1.0, -1.0, 0.0]], rtol=1e-5)   # mean .5, sample std .5


def test_jit_vmap_and_batch_axes():
    r = jnp.asarray(np.random.default_rng(0).random((3, 4, 8)))
    f = jax.jit(lambda x: grpo_advantages(x, clip=3.0))
    a = np.asarray(f(r))
    b = np.asarray(jax.vmap(lambda x: grpo_advantages(x, clip=3.0))(r))
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(a.std(-1, ddof=1), 1.0, rtol=1e-4)


def test_boost_and_errors():
    a = np.asarray(advantage_boost(jnp.asarray([1.5, -0.5, 1.0, 0.99])))
    np.testing.assert_allclose(a, [1.6, -0.5, 1.1, 0.99], rtol=1e-6)
    a = np.asarray(advantage_boost(jnp.asarray([1.5, 2.0]), jnp.asarray([False, True]), value=1.0))
    np.testing.assert_allclose(a, [1.5, 3.0])
    with pytest.raises(ValueError, match="mode"):
        grpo_advantages(jnp.ones(3), mode="ppo")
    with pytest.raises(ValueError, match="std"):
        grpo_advantages(jnp.ones(3), std="unbiased")
    with pytest.raises(ValueError, match="mask must have shape"):
        grpo_advantages(jnp.ones((2, 3)), jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match="rank"):
        grpo_advantages(jnp.asarray(1.0))
    with pytest.raises(ValueError, match="finite"):
        grpo_advantages(jnp.asarray([1.0, jnp.nan]))

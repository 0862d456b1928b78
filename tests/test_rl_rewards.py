"""Preference reward (paper Eq. 2) and evaluation metric (App. L): goldens, ragged groups, properties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_jax.rl.rewards import (batched_preference_reward, normalised_features,
                                      preference_metric, preference_reward,
                                      ragged_preference_reward)

# Golden group: G=3, T=2.
COUNTS = [[1, 0], [2, 0], [0, 0]]
CORRECT = [True, True, False]
COST = [0.1, 0.3, 0.2]          # USD
LAT = [10.0, 5.0, 1.0]          # s
PREF = [0.5, 0.0, 1.0, 1.0, 1.0]


def test_golden_hand_computed():
    # col tool1 [1,2,0] -> [.5,1,0]; tool2 all 0 -> 0; outcome [1,1,0]; -cost [-.1,-.3,-.2] -> [1,0,.5];
    # -lat [-10,-5,-1] -> [0,5/9,1].  R0 = .25+1+1+0, R1 = .5+1+0+5/9, R2 = 0 (incorrect).
    r = np.asarray(preference_reward(COUNTS, CORRECT, COST, LAT, PREF))
    np.testing.assert_allclose(r, [2.25, 1.5 + 5 / 9, 0.0], rtol=1e-6)
    mn = np.asarray(normalised_features(COUNTS, CORRECT, COST, LAT))
    np.testing.assert_allclose(mn, [[.5, 0, 1, 1, 0], [1, 0, 1, 0, 5 / 9], [0, 0, 0, .5, 1]],
                               rtol=1e-6, atol=1e-7)


def test_cost_sign_follows_paper_not_release():
    # Only p_compute: the cheaper of two correct trajectories gets 1, the dearer 0 (release bug inverts).
    r = preference_reward(jnp.zeros((2, 0)), [True, True], [0.01, 0.5], [1.0, 1.0], [0, 1, 0])
    np.testing.assert_allclose(np.asarray(r), [1.0, 0.0])
    r = preference_reward(jnp.zeros((2, 0)), [True, True], [1.0, 1.0], [3.0, 60.0], [0, 0, 1])
    np.testing.assert_allclose(np.asarray(r), [1.0, 0.0])


def test_ties_get_equal_reward():
    r = np.asarray(preference_reward(jnp.zeros((3, 0)), [True, True, True], [0.2, 0.2, 0.5],
                                     [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]))
    np.testing.assert_allclose(r, [1.0, 1.0, 0.0])


def test_degenerate_columns_contribute_zero():
    # All correct (outcome column max == min), equal costs; only latency varies.
    r = np.asarray(preference_reward([[3], [3], [3]], [1, 1, 1], [0.4, 0.4, 0.4], [2.0, 4.0, 6.0],
                                     [1.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(r, [1.0, 0.5, 0.0])
    assert not np.isnan(r).any()


def test_single_trajectory_group_and_all_incorrect():
    r = np.asarray(preference_reward([[2, 1]], [True], [0.3], [7.0], [1, 1, 1, 1, 1]))
    np.testing.assert_array_equal(r, [0.0])          # every column degenerate
    r = np.asarray(preference_reward(COUNTS, [False] * 3, COST, LAT, PREF))
    np.testing.assert_array_equal(r, [0.0, 0.0, 0.0])
    r = np.asarray(preference_reward(jnp.zeros((0, 2)), jnp.zeros((0,), bool), jnp.zeros(0),
                                     jnp.zeros(0), PREF))
    assert r.shape == (0,)


def test_outcome_term_when_group_mixed():
    # 0 < #correct < G and p_outcome > 0: every correct trajectory gets p_outcome.
    r = np.asarray(preference_reward(jnp.zeros((4, 0)), [1, 0, 1, 0], [1.0] * 4, [1.0] * 4,
                                     [0.7, 0, 0]))
    np.testing.assert_allclose(r, [0.7, 0, 0.7, 0], rtol=1e-6)


def test_batched_and_ragged_match_per_group():
    rng = np.random.default_rng(0)
    b, g, t = 4, 5, 3
    counts = rng.integers(0, 4, (b, g, t))
    correct = rng.random((b, g)) < 0.6
    cost = rng.random((b, g))
    lat = rng.random((b, g)) * 100
    pref = rng.random((b, t + 3))
    out = np.asarray(batched_preference_reward(counts, correct, cost, lat, pref))
    for i in range(b):
        np.testing.assert_allclose(
            out[i], preference_reward(counts[i], correct[i], cost[i], lat[i], pref[i]), rtol=1e-6)
    # shared preference vector
    shared = np.asarray(batched_preference_reward(counts, correct, cost, lat, pref[0]))
    np.testing.assert_allclose(
        shared[2], preference_reward(counts[2], correct[2], cost[2], lat[2], pref[0]), rtol=1e-6)
    # ragged: padded slots carry extreme values that would change min/max if they counted
    mask = np.ones((b, g), bool)
    mask[1, 3:] = False
    mask[3, 1:] = False
    counts2, cost2, lat2 = counts.copy(), cost.copy(), lat.copy()
    counts2[~mask] = 99
    cost2[~mask] = 1e6
    lat2[~mask] = 1e6
    rag = np.asarray(ragged_preference_reward(counts2, correct, cost2, lat2, pref, mask))
    np.testing.assert_allclose(
        rag[1, :3], preference_reward(counts[1, :3], correct[1, :3], cost[1, :3], lat[1, :3],
                                      pref[1]), rtol=1e-6)
    assert (rag[~mask] == 0).all()
    assert (rag[3] == 0).all()                        # single valid trajectory -> 0
    feats = np.asarray(normalised_features(counts2[1], correct[1], cost2[1], lat2[1], mask[1]))
    np.testing.assert_array_equal(feats[3:], 0.0)     # padded rows carry no features
    np.testing.assert_allclose(feats[:3], normalised_features(counts[1, :3], correct[1, :3],
                                                              cost[1, :3], lat[1, :3]), rtol=1e-6)
    np.testing.assert_allclose(rag[0], out[0], rtol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        ragged_preference_reward(counts, correct, cost, lat, pref, None)


def test_jit_and_vmap():
    args = (jnp.asarray(COUNTS), jnp.asarray(CORRECT), jnp.asarray(COST), jnp.asarray(LAT),
            jnp.asarray(PREF))
    eager = preference_reward(*args)
    np.testing.assert_allclose(jax.jit(preference_reward)(*args), eager, rtol=1e-6)
    stacked = [jnp.stack([a, a]) for a in args]
    np.testing.assert_allclose(jax.vmap(preference_reward)(*stacked)[1], eager, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(batched_preference_reward)(*stacked)[0], eager, rtol=1e-6)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="preference must have shape"):
        preference_reward(COUNTS, CORRECT, COST, LAT, PREF[:-1])
    with pytest.raises(ValueError, match="cost must have shape"):
        preference_reward(COUNTS, CORRECT, COST[:2], LAT, PREF)
    with pytest.raises(ValueError, match="cost must be >= 0"):
        preference_reward(COUNTS, CORRECT, [-0.1, 0.3, 0.2], LAT, PREF)
    with pytest.raises(ValueError, match="latency must be finite"):
        preference_reward(COUNTS, CORRECT, COST, [np.nan, 1.0, 1.0], PREF)
    with pytest.raises(ValueError, match="preference must be <= 1"):
        preference_reward(COUNTS, CORRECT, COST, LAT, [2.0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="rank"):
        batched_preference_reward(COUNTS, CORRECT, COST, LAT, PREF)


def test_preference_metric_golden():
    # 3 examples, T=1. P = [p_tool, p_outcome, p_compute, p_latency] = [0.5, 1, 0.5, 0.25].
    counts, base_counts = [[4], [0], [1]], [[2], [3], [0]]
    correct, base_correct = [True, True, False], [True, False, True]
    cost, base_cost = [2.0, 0.5, 1.0], [4.0, 3.0, 1.0]
    lat, base_lat = [10.0, 3.0, 1.0], [20.0, 6.0, 2.0]
    pref = [0.5, 1.0, 0.5, 0.25]
    # e0: tool 4/2=2, outcome 1/1, cost 4/max(1,2)=2, lat 20/10=2 -> 1+1+1+.5 = 3.5
    # e1: tool 0/3=0, outcome 1/max(1,0)=1, cost 3/max(1,.5)=3, lat 6/3=2 -> 0+1+1.5+.5 = 3.0
    # e2: incorrect -> 0
    total, per = preference_metric(counts, correct, cost, lat, base_counts, base_correct,
                                   base_cost, base_lat, pref)
    np.testing.assert_allclose(np.asarray(per), [3.5, 3.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(float(total), 6.5, rtol=1e-6)
    total_m, _ = jax.jit(preference_metric)(
        *map(jnp.asarray, (counts, correct, cost, lat, base_counts, base_correct, base_cost,
                           base_lat, pref)), jnp.asarray([True, False, True]))
    np.testing.assert_allclose(float(total_m), 3.5, rtol=1e-6)
    with pytest.raises(ValueError, match="base_cost must have shape"):
        preference_metric(counts, correct, cost, lat, base_counts, base_correct, base_cost[:2],
                          base_lat, pref)


# ---------------- property tests (float64) ----------------
G, T = 6, 3
_counts = st.lists(st.lists(st.integers(0, 5), min_size=T, max_size=T), min_size=G, max_size=G)
_correct = st.lists(st.booleans(), min_size=G, max_size=G)
_cost = st.lists(st.integers(0, 1000).map(lambda k: k * 1e-3), min_size=G, max_size=G)
_lat = st.lists(st.integers(0, 1200).map(lambda k: k * 0.5), min_size=G, max_size=G)
_pref = st.lists(st.floats(0.0, 1.0), min_size=T + 3, max_size=T + 3)
_SETTINGS = settings(max_examples=30, deadline=None)


def _r(counts, correct, cost, lat, pref):
    return np.asarray(preference_reward(np.asarray(counts, np.float64), np.asarray(correct),
                                        np.asarray(cost, np.float64), np.asarray(lat, np.float64),
                                        np.asarray(pref, np.float64)))


@_SETTINGS
@given(_counts, _correct, _cost, _lat, _pref, st.floats(0.01, 100.0), st.floats(0.01, 100.0),
       st.floats(0.0, 50.0))
def test_invariances(counts, correct, cost, lat, pref, s_cost, s_lat, shift):
    with jax.enable_x64(True):
        base = _r(counts, correct, cost, lat, pref)
        scaled = _r(counts, correct, [c * s_cost for c in cost], [x * s_lat for x in lat], pref)
        shifted = _r(counts, correct, [c + shift for c in cost], lat, pref)
        shifted_lat = _r(counts, correct, cost, [x + shift for x in lat], pref)
    assert base.dtype == np.float64
    np.testing.assert_allclose(scaled, base, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shifted, base, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shifted_lat, base, rtol=1e-9, atol=1e-9)


@_SETTINGS
@given(_counts, _correct, _cost, _lat, _pref)
def test_range_and_incorrect_zero(counts, correct, cost, lat, pref):
    with jax.enable_x64(True):
        r = _r(counts, correct, cost, lat, pref)
    assert not np.isnan(r).any()
    assert (r >= -1e-12).all() and (r <= sum(pref) + 1e-9).all()
    assert (r[~np.asarray(correct)] == 0).all()


@_SETTINGS
@given(_counts, _correct, _cost, _lat, st.floats(0.01, 1.0))
def test_compute_only_cheaper_never_worse(counts, correct, cost, lat, p_compute):
    pref = [0.0] * T + [0.0, p_compute, 0.0]
    with jax.enable_x64(True):
        r = _r(counts, correct, cost, lat, pref)
    ok = np.flatnonzero(correct)
    for i in ok:
        for j in ok:
            if cost[i] < cost[j]:
                assert r[i] >= r[j]

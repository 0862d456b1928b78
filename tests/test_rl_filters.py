"""The three backward-pass filters of paper §4.3 (release turn-level semantics) and their counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl.filters import (apply_filters, format_filter, homogeneity_filter,
                                      invalid_output_filter)


def test_homogeneity_threshold():
    r = jnp.asarray([[1.0, 1.0, 1.0, 1.0],      # std 0 -> drop
                     [1.0, 0.0, 0.0, 0.0],      # sample std .5 -> keep
                     [0.1, 0.1, 0.2, 0.2],      # sample std .0577 -> drop
                     [0.2, 0.0, 0.0, 0.0]])     # sample std .1 exactly -> kept (paper: drop if < .1)
    keep = np.asarray(homogeneity_filter(r))
    np.testing.assert_array_equal(keep, [False, True, False, True])
    np.testing.assert_array_equal(np.asarray(homogeneity_filter(r, threshold=0.01)),
                                  [False, True, True, True])
    # ragged: the padded slot would make group 0 heterogeneous if it counted
    m = jnp.asarray([[1, 1, 1, 0]] * 4, bool)
    r2 = r.at[0, 3].set(50.0)
    assert not bool(homogeneity_filter(r2, m)[0])


def test_format_filter_turn_and_trajectory_modes():
    ok = jnp.asarray([[[True, False, True], [True, True, False]]])     # B=1, G=2, K=3
    exists = jnp.asarray([[[True, True, True], [True, True, False]]])  # traj 1 has 2 turns
    np.testing.assert_array_equal(np.asarray(format_filter(ok, exists)),
                                  [[[True, False, True], [True, True, False]]])
    np.testing.assert_array_equal(np.asarray(format_filter(ok, exists, mode="trajectory")),
                                  [[[False, False, False], [True, True, False]]])
    # "none" [ours]: malformed turns stay (they take their trajectory's advantage); padding never
    np.testing.assert_array_equal(np.asarray(format_filter(ok, exists, mode="none")),
                                  np.asarray(exists))
    with pytest.raises(ValueError, match="mode"):
        format_filter(ok, mode="token")


def test_invalid_output_filter():
    keep = invalid_output_filter(jnp.asarray([[True, False, True]]), jnp.asarray([[1, 1, 0]], bool))
    np.testing.assert_array_equal(np.asarray(keep), [[True, False, False]])


def _case():
    rewards = jnp.asarray([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])          # group 1 homogeneous
    fmt = jnp.asarray([[[True, True], [True, False], [False, False]],
                       [[True, True], [True, True], [True, True]]])
    valid = jnp.asarray([[True, True, False], [True, True, True]])
    turn_mask = jnp.asarray([[[True, True], [True, True], [True, False]],
                             [[True, True], [True, False], [True, True]]])
    return rewards, fmt, valid, turn_mask


def test_apply_filters_masks_and_counts():
    rewards, fmt, valid, turn_mask = _case()
    res = apply_filters(rewards, fmt, valid, turn_mask=turn_mask)
    np.testing.assert_array_equal(np.asarray(res.group_keep), [True, False])
    np.testing.assert_array_equal(np.asarray(res.turn_keep),
                                  [[[True, True], [True, False], [False, False]],
                                   [[False, False], [False, False], [False, False]]])
    np.testing.assert_array_equal(np.asarray(res.traj_keep), [[True, True, False], [False] * 3])
    counts = {k: int(v) for k, v in res.counts.items()}
    assert counts == {
        "groups": 2, "groups_homogeneous": 1, "trajectories": 6,
        "trajectories_invalid_output": 1, "trajectories_in_homogeneous_groups": 3,
        "trajectories_format_broken": 2, "trajectories_kept": 2,
        "turns": 10, "turns_format_broken": 2, "turns_kept": 3}
    res_t = apply_filters(rewards, fmt, valid, turn_mask=turn_mask, format_mode="trajectory")
    assert int(res_t.counts["turns_kept"]) == 2                         # traj (0,1) dropped whole


def test_apply_filters_jit_and_errors():
    rewards, fmt, valid, turn_mask = _case()
    f = jax.jit(lambda r, o, v, t: apply_filters(r, o, v, turn_mask=t, threshold=0.1))
    res = f(rewards, fmt, valid, turn_mask)
    eager = apply_filters(rewards, fmt, valid, turn_mask=turn_mask)
    np.testing.assert_array_equal(np.asarray(res.turn_keep), np.asarray(eager.turn_keep))
    with pytest.raises(ValueError, match="format_ok must have shape"):
        apply_filters(rewards, fmt[:1], valid)
    with pytest.raises(ValueError, match="valid_output must have shape"):
        apply_filters(rewards, fmt, valid[:, :2])
    with pytest.raises(ValueError, match="threshold"):
        homogeneity_filter(rewards, threshold=-1.0)


def test_apply_filters_vmap_over_steps():
    rewards, fmt, valid, turn_mask = _case()
    stack = lambda x: jnp.stack([x, x, x])
    res = jax.vmap(lambda r, o, v, t: apply_filters(r, o, v, turn_mask=t))(
        *map(stack, (rewards, fmt, valid, turn_mask)))
    assert res.turn_keep.shape == (3, 2, 3, 2)
    np.testing.assert_array_equal(np.asarray(res.counts["turns_kept"]), [3, 3, 3])
    keep = jax.vmap(homogeneity_filter)(stack(rewards))
    np.testing.assert_array_equal(np.asarray(keep), [[True, False]] * 3)


def test_invalid_output_drops_well_formatted_turns_of_a_kept_group():
    # Every turn is well formatted and the group is heterogeneous: only the invalid-output filter
    # can drop trajectory 1 (in _case() it is also format-broken, which would hide a missing filter).
    rewards = jnp.asarray([[1.0, 0.0, 0.5]])
    fmt = jnp.ones((1, 3, 2), bool)
    valid = jnp.asarray([[True, False, True]])
    res = apply_filters(rewards, fmt, valid)
    np.testing.assert_array_equal(np.asarray(res.turn_keep)[0],
                                  [[True, True], [False, False], [True, True]])
    np.testing.assert_array_equal(np.asarray(res.traj_keep), [[True, False, True]])
    assert int(res.counts["trajectories_invalid_output"]) == 1
    assert int(res.counts["turns_kept"]) == 4

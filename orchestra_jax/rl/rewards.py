"""Preference-aware trajectory rewards (paper §3.2, Eq. 2) and the evaluation metric (App. L, Eqs. 5-6).

Training reward, for one task's group (the paper's "rollout batch T") of G trajectories and T tools:

    M[g]  = [count_1 .. count_T, outcome (1/0), -cost (USD), -latency (s)]           shape [T+3]
    Mn[g] = (M[g] - min_g' M[g']) / (max_g' M - min_g' M)  per column; a column with max == min -> 0
    R[g]  = Mn[g] . P  if trajectory g is correct, else 0

Cost and latency are negated *before* normalisation and the negated values are used consistently, so a
cheaper/faster correct trajectory gets the larger term (the official release mixes signs here; we follow
the paper). Min/max run over every (valid) trajectory of the group, correct or not, and tool counts of
zero are included (the release skips them; the paper does not).

Everything is jit/vmap-able and never produces NaN for finite input. Shapes are checked on every call;
values (finite, non-negative, P in [0, 1]) are checked only on eager calls.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.rl import _checks

Array = jax.Array


def _float_dtype(*xs: Any) -> jnp.dtype:
    """Result float dtype: float32 unless an input is float64 and x64 is enabled."""
    return jnp.result_type(*[jnp.asarray(x).dtype for x in xs], jnp.float32)


def _check_group(tool_counts: Any, correct: Any, cost: Any, latency: Any, preference: Any,
                 mask: Any, batch: tuple[int, ...]) -> None:
    nb = len(batch)
    _checks.check_ndim("tool_counts", tool_counts, nb + 2)
    shape = tuple(jnp.shape(tool_counts))
    if shape[:nb] != batch:
        raise ValueError(f"tool_counts leading dims {shape[:nb]} do not match batch {batch}")
    g, t = shape[nb], shape[nb + 1]
    for name, x in (("correct", correct), ("cost", cost), ("latency", latency)):
        _checks.check_shape(name, x, batch + (g,))
    if mask is not None:
        _checks.check_shape("mask", mask, batch + (g,))
    pshape = tuple(jnp.shape(preference))
    if pshape not in ((t + 3,), batch + (t + 3,)):
        raise ValueError(f"preference must have shape {(t + 3,)} or {batch + (t + 3,)} "
                         f"([p_tool_1..p_tool_T, p_outcome, p_compute, p_latency]), got {pshape}")
    _checks.check_values("tool_counts", tool_counts, lo=0)
    _checks.check_values("cost", cost, lo=0)
    _checks.check_values("latency", latency, lo=0)
    _checks.check_values("preference", preference, lo=0, hi=1)


def _feature_matrix(tool_counts: Array, correct: Array, cost: Array, latency: Array,
                    dtype: jnp.dtype) -> Array:
    """M = [counts, outcome, -cost, -latency], shape [..., G, T+3]."""
    return jnp.concatenate([
        jnp.asarray(tool_counts, dtype),
        jnp.asarray(correct, bool).astype(dtype)[..., None],
        -jnp.asarray(cost, dtype)[..., None],
        -jnp.asarray(latency, dtype)[..., None],
    ], axis=-1)


def _minmax_normalise(m: Array, valid: Array) -> Array:
    """Column-wise min-max over the valid rows of m [G, K]; degenerate columns and invalid rows -> 0."""
    inf = jnp.asarray(jnp.inf, m.dtype)
    mn = jnp.min(jnp.where(valid[:, None], m, inf), axis=0, initial=inf)
    mx = jnp.max(jnp.where(valid[:, None], m, -inf), axis=0, initial=-inf)
    ok = mx > mn                                   # False for max == min and for an empty group
    lo = jnp.where(ok, mn, 0.0)
    span = jnp.where(ok, mx - mn, 1.0)
    return jnp.where(ok[None, :] & valid[:, None], (m - lo) / span, 0.0)


def normalised_features(tool_counts: Any, correct: Any, cost: Any, latency: Any,
                        mask: Any = None) -> Array:
    """Min-max-normalised feature matrix Mn of one group, shape [G, T+3], values in [0, 1].

    Args: as `preference_reward` (without `preference`). Useful for logging which terms drive R.
    """
    _check_group(tool_counts, correct, cost, latency, jnp.zeros(jnp.shape(tool_counts)[-1] + 3),
                 mask, ())
    dtype = _float_dtype(tool_counts, cost, latency)
    g = jnp.shape(correct)[0]
    valid = jnp.ones((g,), bool) if mask is None else jnp.asarray(mask, bool)
    return _minmax_normalise(_feature_matrix(tool_counts, correct, cost, latency, dtype), valid)


def _reward_one_group(tool_counts: Array, correct: Array, cost: Array, latency: Array,
                      preference: Array, valid: Array) -> Array:
    dtype = _float_dtype(tool_counts, cost, latency, preference)
    mn = _minmax_normalise(_feature_matrix(tool_counts, correct, cost, latency, dtype), valid)
    r = mn @ jnp.asarray(preference, dtype)
    return jnp.where(jnp.asarray(correct, bool) & valid, r, 0.0)


def preference_reward(tool_counts: Any, correct: Any, cost: Any, latency: Any, preference: Any,
                      mask: Any = None) -> Array:
    """Paper Eq. 2 reward for one task's group of G trajectories.

    Args:
      tool_counts: [G, T] number of calls of each of the T tools in each trajectory (>= 0).
      correct: [G] bool, r_outcome (the trajectory solved the task).
      cost: [G] total monetary cost of the trajectory in USD (>= 0); enters as r_compute = -cost.
      latency: [G] wall-clock time of the trajectory in seconds (>= 0); enters as r_latency = -latency.
      preference: [T+3] P = [p_tool_1..p_tool_T, p_outcome, p_compute, p_latency], each in [0, 1].
      mask: optional [G] bool; False slots are padding: excluded from min/max and given reward 0.
    Returns:
      [G] rewards in [0, sum(P)]; exactly 0 for incorrect (or masked) trajectories.
    """
    _check_group(tool_counts, correct, cost, latency, preference, mask, ())
    g = jnp.shape(correct)[0]
    valid = jnp.ones((g,), bool) if mask is None else jnp.asarray(mask, bool)
    return _reward_one_group(tool_counts, correct, cost, latency, preference, valid)


def batched_preference_reward(tool_counts: Any, correct: Any, cost: Any, latency: Any,
                              preference: Any, mask: Any = None) -> Array:
    """`preference_reward` for B groups at once (vmap over the leading axis).

    Args:
      tool_counts [B, G, T]; correct, cost (USD), latency (s) [B, G]; preference [B, T+3] (one P per
      task) or [T+3] (shared); mask optional [B, G] bool validity of each slot (ragged groups).
    Returns:
      [B, G] rewards; each group is normalised only over its own valid trajectories.
    """
    b = jnp.shape(tool_counts)[0] if jnp.ndim(tool_counts) == 3 else -1
    _check_group(tool_counts, correct, cost, latency, preference, mask, (b,))
    g = jnp.shape(correct)[1]
    valid = jnp.ones((b, g), bool) if mask is None else jnp.asarray(mask, bool)
    pref = jnp.asarray(preference)
    p_axis = 0 if pref.ndim == 2 else None
    return jax.vmap(_reward_one_group, in_axes=(0, 0, 0, 0, p_axis, 0))(
        tool_counts, correct, cost, latency, pref, valid)


def ragged_preference_reward(tool_counts: Any, correct: Any, cost: Any, latency: Any,
                             preference: Any, mask: Any) -> Array:
    """Ragged groups: like `batched_preference_reward` but the [B, G] validity `mask` is required.

    Invalid slots (padding for groups with fewer than G trajectories) do not take part in the
    min/max of their group and get reward 0.
    """
    if mask is None:
        raise ValueError("ragged_preference_reward needs a [B, G] bool validity mask")
    return batched_preference_reward(tool_counts, correct, cost, latency, preference, mask)


def preference_metric(tool_counts: Any, correct: Any, cost: Any, latency: Any,
                      base_tool_counts: Any, base_correct: Any, base_cost: Any, base_latency: Any,
                      preference: Any, mask: Any = None) -> tuple[Array, Array]:
    """Evaluation-time preference-aware score of paper App. L (Eqs. 5-6), relative to a baseline run.

    For every example e, with M = [counts, outcome, cost, latency] of the evaluated checkpoint (s) and
    of the starting checkpoint (0) on the same example (cost and latency as positive magnitudes):
        Mn[k] = M_s[k] / max(1, M_0[k])   for tool counts and outcome
        Mn[k] = M_0[k] / max(1, M_s[k])   for cost and latency
        R^e   = Mn . P  if example e is solved by checkpoint s, else 0
    and the score is sum_e R^e. The max(1, .) floor makes the metric depend on the units; the paper does
    not fix them, so pass cost and latency in the units you report (e.g. cents and minutes).

    Args:
      tool_counts: [N, T] tool-call counts of the evaluated run on each of N examples.
      correct: [N] bool, the evaluated run solved the example.
      cost: [N] cost of the evaluated run (>= 0, caller's unit). latency: [N] (>= 0, caller's unit).
      base_tool_counts, base_correct, base_cost, base_latency: the same for the baseline run.
      preference: [N, T+3] per-example P or [T+3] shared; entries in [0, 1].
      mask: optional [N] bool; False examples contribute 0.
    Returns:
      (score: scalar sum over examples, per_example: [N] R^e).
    """
    _checks.check_ndim("tool_counts", tool_counts, 2)
    n, t = jnp.shape(tool_counts)
    _checks.check_shape("base_tool_counts", base_tool_counts, (n, t))
    for name, x in (("correct", correct), ("cost", cost), ("latency", latency),
                    ("base_correct", base_correct), ("base_cost", base_cost),
                    ("base_latency", base_latency)):
        _checks.check_shape(name, x, (n,))
    if mask is not None:
        _checks.check_shape("mask", mask, (n,))
    if tuple(jnp.shape(preference)) not in ((t + 3,), (n, t + 3)):
        raise ValueError(f"preference must have shape {(t + 3,)} or {(n, t + 3)}, "
                         f"got {tuple(jnp.shape(preference))}")
    for name, x in (("tool_counts", tool_counts), ("cost", cost), ("latency", latency),
                    ("base_tool_counts", base_tool_counts), ("base_cost", base_cost),
                    ("base_latency", base_latency)):
        _checks.check_values(name, x, lo=0)
    _checks.check_values("preference", preference, lo=0, hi=1)

    dtype = _float_dtype(tool_counts, cost, latency, base_cost, base_latency, preference)
    ok = jnp.asarray(correct, bool)
    m_s = jnp.concatenate([jnp.asarray(tool_counts, dtype), ok.astype(dtype)[:, None]], axis=1)
    m_0 = jnp.concatenate([jnp.asarray(base_tool_counts, dtype),
                           jnp.asarray(base_correct, bool).astype(dtype)[:, None]], axis=1)
    eff_s = jnp.stack([jnp.asarray(cost, dtype), jnp.asarray(latency, dtype)], axis=1)
    eff_0 = jnp.stack([jnp.asarray(base_cost, dtype), jnp.asarray(base_latency, dtype)], axis=1)
    mn = jnp.concatenate([m_s / jnp.maximum(1.0, m_0), eff_0 / jnp.maximum(1.0, eff_s)], axis=1)
    pref = jnp.broadcast_to(jnp.asarray(preference, dtype), (n, t + 3))
    keep = ok if mask is None else ok & jnp.asarray(mask, bool)
    per_example = jnp.where(keep, jnp.sum(mn * pref, axis=1), 0.0)
    return jnp.sum(per_example), per_example

"""Group-relative advantages (paper Eq. 3; release normalisation and clipping).

    A = (R - mean_group(R)) / (std_group(R) + eps)        mode="grpo"   (paper Eq. 3, eps from [C])
    A =  R - mean_group(R)                                mode="drgrpo" (Dr. GRPO: no std division)
    A = clip(A, -clip, clip)                              when clip is set (release: 3.0)

The group is the last axis (the G trajectories of one task). `mask` marks which slots of a padded
(ragged) group exist; masked-out slots are excluded from mean/std and get advantage 0. Note the release
keeps trajectories that are later filtered out (no answer, bad format) *inside* the mean and std: pass
those as valid here and drop them with `filters.py` afterwards.

Unitless (rewards are unitless). A single-trajectory or empty group gives A = 0, never NaN.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.rl import _checks

Array = jax.Array

STD_KINDS = ("sample", "population")
MODES = ("grpo", "drgrpo")


def _prepare(rewards: Any, mask: Any) -> tuple[Array, Array]:
    r = jnp.asarray(rewards)
    if r.ndim < 1:
        raise ValueError(f"rewards must have a group axis (rank >= 1), got shape {r.shape}")
    r = r.astype(jnp.result_type(r.dtype, jnp.float32))
    if mask is None:
        m = jnp.ones(r.shape, bool)
    else:
        _checks.check_shape("mask", mask, r.shape)
        m = jnp.asarray(mask, bool)
    _checks.check_values("rewards", rewards)
    return r, m


def _constant(r: Array, m: Array) -> Array:
    """[...] True where all valid rewards of the group are exactly equal (or the group is empty).

    Used to return exactly 0 for homogeneous groups: their float mean can be off by an ulp, which
    would otherwise turn into a spurious ±O(1) advantage when eps is tiny.
    """
    hi = jnp.max(jnp.where(m, r, -jnp.inf), axis=-1, initial=-jnp.inf)
    lo = jnp.min(jnp.where(m, r, jnp.inf), axis=-1, initial=jnp.inf)
    return ~(hi > lo)


def group_mean(rewards: Any, mask: Any = None) -> Array:
    """Mean over the valid slots of the last axis; shape rewards.shape[:-1]; 0 for an empty group."""
    r, m = _prepare(rewards, mask)
    n = jnp.sum(m, axis=-1)
    return jnp.sum(jnp.where(m, r, 0.0), axis=-1) / jnp.maximum(n, 1)


def group_std(rewards: Any, mask: Any = None, *, std: str = "sample") -> Array:
    """Std over the valid slots of the last axis; shape rewards.shape[:-1].

    std="sample" divides by n-1 (Python `statistics.stdev`, as the release), "population" by n.
    Groups with fewer than 2 valid slots give 0.
    """
    _checks.check_choice("std", std, STD_KINDS)
    r, m = _prepare(rewards, mask)
    n = jnp.sum(m, axis=-1)
    mean = jnp.sum(jnp.where(m, r, 0.0), axis=-1) / jnp.maximum(n, 1)
    sq = jnp.sum(jnp.where(m, (r - mean[..., None]) ** 2, 0.0), axis=-1)
    denom = jnp.maximum(n - 1, 1) if std == "sample" else jnp.maximum(n, 1)
    var = jnp.where((n >= 2) & ~_constant(r, m), sq / denom, 0.0)
    pos = var > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)   # NaN-free gradient at 0


def grpo_advantages(rewards: Any, mask: Any = None, *, std: str = "sample", eps: float = 1e-6,
                    clip: float | None = None, mode: str = "grpo") -> Array:
    """Group-relative advantages over the last axis.

    Args:
      rewards: [..., G] trajectory rewards (e.g. [B, G] for B tasks of G rollouts).
      mask: optional [..., G] bool, valid slots of ragged groups (invalid -> advantage 0).
      std: "sample" (n-1, release) or "population" (n) standard deviation.
      eps: added to the std before dividing (release: 1e-6).
      clip: if set, advantages are clipped to [-clip, clip] (release: 3.0).
      mode: "grpo" (divide by std + eps) or "drgrpo" (Dr. GRPO, mean-centring only).
    Returns:
      [..., G] advantages, 0 where masked and for groups with < 2 valid trajectories.
    """
    _checks.check_choice("mode", mode, MODES)
    _checks.check_choice("std", std, STD_KINDS)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    r, m = _prepare(rewards, mask)
    n = jnp.sum(m, axis=-1, keepdims=True)
    centred = jnp.where(_constant(r, m)[..., None], 0.0, r - group_mean(r, m)[..., None])
    if mode == "grpo":
        s = group_std(r, m, std=std)[..., None]
        denom = s + eps
        adv = centred / jnp.where(denom > 0, denom, 1.0)   # eps=0 and std=0: centred is 0 anyway
    else:
        adv = centred
    if clip is not None:
        adv = jnp.clip(adv, -clip, clip)
    return jnp.where(m & (n >= 2), adv, 0.0)


def advantage_boost(advantages: Any, mask: Any = None, *, value: float = 0.1,
                    threshold: float = 1.0) -> Array:
    """Release tweak (`correct_sample_advantage_boost_value`): add `value` where A >= threshold.

    Not in the paper; the release applies it to the clipped z-score with value 0.1, threshold 1.0.
    Masked-out slots stay unchanged.
    """
    a = jnp.asarray(advantages)
    a = a.astype(jnp.result_type(a.dtype, jnp.float32))
    hit = a >= threshold
    if mask is not None:
        _checks.check_shape("mask", mask, a.shape)
        hit = hit & jnp.asarray(mask, bool)
    return jnp.where(hit, a + value, a)

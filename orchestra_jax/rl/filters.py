"""The three sample filters of paper §4.3, as boolean keep-masks plus counts.

Filtered samples are removed from the backward pass (no gradient), not penalised:
  1. homogeneity: drop a whole group whose reward std is < threshold (paper: 0.1);
  2. format consistency: drop turns whose output breaks the tool-call format;
  3. invalid output: drop trajectories that produced no valid answer / output.

Release semantics ([C], official_release.md §3.3): each orchestrator *turn* is one training sample; a
turn is kept iff its group passes (1), its trajectory passes (3) and *that turn* is format-valid (2).
`format_mode="trajectory"` instead drops every turn of a trajectory with any malformed turn.
Boundary: the paper drops std < threshold, so std == threshold is kept (the release keeps std > 0.1).

Shapes: B tasks, G trajectories per task, K turns per trajectory (padded). All functions are
jit/vmap-able; counts are int32 scalars.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from orchestra_jax.rl import _checks
from orchestra_jax.rl.advantages import group_std

Array = jax.Array

FORMAT_MODES = ("turn", "trajectory", "none")


class FilterResult(NamedTuple):
    """Keep-masks (True = sample takes part in the loss) and int32 counts of what was dropped."""
    group_keep: Array      # [B]
    traj_keep: Array       # [B, G]  trajectory has at least one kept turn
    turn_keep: Array       # [B, G, K]
    counts: dict[str, Array]


def homogeneity_filter(rewards: Any, mask: Any = None, *, threshold: float = 0.1,
                       std: str = "sample") -> Array:
    """Keep-mask [B] for groups: True iff the std of the group's (valid) rewards is >= threshold.

    Args: rewards [B, G]; mask optional [B, G] bool valid slots; std "sample" (release) / "population".
    """
    _checks.check_ndim("rewards", rewards, 2)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return group_std(rewards, mask, std=std) >= threshold


def format_filter(format_ok: Any, turn_mask: Any = None, *, mode: str = "turn") -> Array:
    """Keep-mask [B, G, K] for turns from per-turn format flags.

    Args:
      format_ok: [B, G, K] bool, the turn's output followed the tool-call format.
      turn_mask: optional [B, G, K] bool, which turn slots exist (padding False -> never kept).
      mode: "turn" (release: drop only the malformed turns), "trajectory" (drop all turns of a
        trajectory that has any malformed turn) or "none" ([ours]: keep malformed turns, so they
        take their trajectory's — usually negative — advantage and the policy learns to avoid
        them; for small policies whose main failure is the format).
    """
    _checks.check_choice("mode", mode, FORMAT_MODES)
    _checks.check_ndim("format_ok", format_ok, 3)
    ok = jnp.asarray(format_ok, bool)
    if turn_mask is None:
        exists = jnp.ones(ok.shape, bool)
    else:
        _checks.check_shape("turn_mask", turn_mask, ok.shape)
        exists = jnp.asarray(turn_mask, bool)
    if mode == "none":
        return exists
    if mode == "turn":
        return ok & exists
    clean = jnp.all(ok | ~exists, axis=-1, keepdims=True)
    return exists & clean


def invalid_output_filter(valid_output: Any, mask: Any = None) -> Array:
    """Keep-mask [B, G] for trajectories: True iff the trajectory produced a valid answer/output.

    Args: valid_output [B, G] bool; mask optional [B, G] bool valid slots.
    """
    _checks.check_ndim("valid_output", valid_output, 2)
    keep = jnp.asarray(valid_output, bool)
    if mask is not None:
        _checks.check_shape("mask", mask, keep.shape)
        keep = keep & jnp.asarray(mask, bool)
    return keep


def apply_filters(rewards: Any, format_ok: Any, valid_output: Any, *, mask: Any = None,
                  turn_mask: Any = None, threshold: float = 0.1, std: str = "sample",
                  format_mode: str = "turn") -> FilterResult:
    """All three filters combined into one turn-level keep-mask, with counts.

    Args:
      rewards: [B, G] trajectory rewards (for the homogeneity filter).
      format_ok: [B, G, K] bool per-turn format flags.
      valid_output: [B, G] bool, trajectory produced a valid answer/output.
      mask: optional [B, G] bool, which trajectory slots exist.
      turn_mask: optional [B, G, K] bool, which turn slots exist (AND-ed with `mask`).
      threshold, std: homogeneity filter settings; format_mode: see `format_filter`.
    Returns:
      FilterResult. counts (int32): groups, groups_homogeneous, trajectories,
      trajectories_invalid_output, trajectories_in_homogeneous_groups, trajectories_format_broken
      (>= 1 malformed turn), trajectories_kept, turns, turns_format_broken, turns_kept. Each
      "_..." drop count is that filter's own count; a sample may be dropped by several filters.
    """
    _checks.check_ndim("rewards", rewards, 2)
    b, g = jnp.shape(rewards)
    _checks.check_ndim("format_ok", format_ok, 3)
    if tuple(jnp.shape(format_ok))[:2] != (b, g):
        raise ValueError(f"format_ok must have shape ({b}, {g}, K), got {tuple(jnp.shape(format_ok))}")
    _checks.check_shape("valid_output", valid_output, (b, g))
    slot = jnp.ones((b, g), bool) if mask is None else jnp.asarray(mask, bool)
    if mask is not None:
        _checks.check_shape("mask", mask, (b, g))
    exists = slot[..., None] & (jnp.ones(jnp.shape(format_ok), bool) if turn_mask is None
                                else jnp.asarray(turn_mask, bool))
    if turn_mask is not None:
        _checks.check_shape("turn_mask", turn_mask, tuple(jnp.shape(format_ok)))

    group_keep = homogeneity_filter(rewards, slot, threshold=threshold, std=std)
    has_any = jnp.any(slot, axis=-1)
    group_keep = group_keep & has_any
    out_keep = invalid_output_filter(valid_output, slot)
    fmt_keep = format_filter(format_ok, exists, mode=format_mode)
    turn_keep = fmt_keep & out_keep[..., None] & group_keep[:, None, None]
    traj_keep = jnp.any(turn_keep, axis=-1)

    ok = jnp.asarray(format_ok, bool)
    i32 = lambda x: jnp.sum(x).astype(jnp.int32)
    counts = {
        "groups": i32(has_any),
        "groups_homogeneous": i32(has_any & ~group_keep),
        "trajectories": i32(slot),
        "trajectories_invalid_output": i32(slot & ~out_keep),
        "trajectories_in_homogeneous_groups": i32(slot & ~group_keep[:, None]),
        "trajectories_format_broken": i32(slot & jnp.any(exists & ~ok, axis=-1)),
        "trajectories_kept": i32(traj_keep),
        "turns": i32(exists),
        "turns_format_broken": i32(exists & ~ok),
        "turns_kept": i32(turn_keep),
    }
    return FilterResult(group_keep=group_keep, traj_keep=traj_keep, turn_keep=turn_keep,
                        counts=counts)

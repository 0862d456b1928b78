"""One GRPO step's scoring: groups of trajectories → Eq. 2 rewards → filters → advantages →
training samples. Plain glue around the pure math in ``orchestra_jax.rl``.

Per group (one task's randomised setup, G rollouts): :func:`rollout.trajectory.reward_inputs`
gives the Eq. 2 features and the validity mask (infrastructure failures are left out of the
group, never negative samples); ``rl.rewards.preference_reward`` scores the valid rollouts
with the group's P; ``rl.filters.apply_filters`` drops homogeneous groups (reward std < 0.1),
invalid outputs and malformed turns; ``rl.advantages.grpo_advantages`` (+ the release's
optional boost) gives one advantage per trajectory, broadcast to its tokens by
``train.batch.trajectory_samples``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from orchestra_jax.rl.advantages import advantage_boost, grpo_advantages
from orchestra_jax.rl.filters import apply_filters
from orchestra_jax.rl.rewards import preference_reward
from orchestra_jax.rollout.trajectory import Trajectory, reward_inputs
from orchestra_jax.train.batch import Sample, trajectory_samples


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """The reward / filter / advantage knobs (names and tags as in ``rl/config.py``)."""

    homogeneity_threshold: float = 0.1      # [P] drop groups with reward std < 0.1
    format_filter_mode: str = "turn"        # [C]
    adv_mode: str = "grpo"                  # [P]
    adv_std: str = "sample"                 # [C]
    adv_eps: float = 1e-6                   # [C]
    adv_clip: float | None = 3.0            # [C]
    adv_boost_value: float = 0.0            # [C] release-only tweak; 0 = off (paper-faithful)
    adv_boost_threshold: float = 1.0        # [C]
    unit: str = "turn"                      # [C] release's training unit; or "trajectory"
    drop_invalid_output: bool = True        # [P] invalid-output filter

    @classmethod
    def from_rl_config(cls, c: Any, **kw) -> "ScoringConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: c[k] for k in names if k in c}
        d.update(kw)
        return cls(**d)


@dataclasses.dataclass
class GroupScore:
    trajectories: list[Trajectory]
    rewards: np.ndarray        # [G] Eq. 2 reward (0 for invalid rollouts)
    valid: np.ndarray          # [G] entered the group statistics
    advantages: np.ndarray     # [G]
    turn_keep: list[list[bool]]  # per trajectory, per turn
    kept: bool                 # the group survived the homogeneity filter
    counts: dict[str, int]


def score_group(trajs: Sequence[Trajectory], cfg: ScoringConfig,
                default_preference: Sequence[float] | None) -> GroupScore:
    """Rewards, filters and advantages of one group (see module docstring)."""
    trajs = list(trajs)
    g = len(trajs)
    inp = reward_inputs(trajs, default_preference)
    valid = np.asarray(inp["mask"], bool)
    if valid.any():
        r = np.asarray(preference_reward(inp["tool_counts"], inp["correct"], inp["cost"],
                                         inp["latency"], inp["preference"], mask=valid),
                       np.float32)
        r = np.where(valid, r, 0.0)
    else:
        r = np.zeros(g, np.float32)
    k = max(1, max((len(t.turns) for t in trajs), default=1))
    fmt = np.zeros((1, g, k), bool)
    exists = np.zeros((1, g, k), bool)
    for i, t in enumerate(trajs):
        for j, turn in enumerate(t.turns):
            fmt[0, i, j] = bool(turn.format_ok)
            exists[0, i, j] = turn.response_span[1] > turn.response_span[0]
    valid_out = np.asarray([[bool(t.answer_valid) or not cfg.drop_invalid_output
                             for t in trajs]], bool)
    res = apply_filters(r[None], fmt, valid_out & valid[None], mask=valid[None],
                        turn_mask=exists, threshold=cfg.homogeneity_threshold, std=cfg.adv_std,
                        format_mode=cfg.format_filter_mode)
    adv = grpo_advantages(r[None], valid[None], std=cfg.adv_std, eps=cfg.adv_eps,
                          clip=cfg.adv_clip, mode=cfg.adv_mode)
    if cfg.adv_boost_value:
        adv = advantage_boost(adv, valid[None], value=cfg.adv_boost_value,
                              threshold=cfg.adv_boost_threshold)
    turn_keep = np.asarray(res.turn_keep)[0]
    counts = {k_: int(v) for k_, v in res.counts.items()}
    counts["trajectories_infra_error"] = int((~valid).sum())
    return GroupScore(trajectories=trajs, rewards=r, valid=valid,
                      advantages=np.asarray(adv, np.float32)[0],
                      turn_keep=[[bool(turn_keep[i, j]) for j in range(len(t.turns))]
                                 for i, t in enumerate(trajs)],
                      kept=bool(np.asarray(res.group_keep)[0]), counts=counts)


def group_samples(score: GroupScore, unit: str) -> list[Sample]:
    """Training samples of the kept turns of a scored group."""
    out: list[Sample] = []
    for t, adv, keep in zip(score.trajectories, score.advantages, score.turn_keep):
        if not any(keep):
            continue
        required = getattr(t, "required_unit", None)
        if required and required != unit:
            raise ValueError(f"trajectory {t.task_id} was rolled out with context_mode "
                             f"{getattr(t, 'context_mode', '?')!r}, which needs unit "
                             f"{required!r} (configured {unit!r})")
        if unit == "turn":
            samples = trajectory_samples(t, float(adv), unit="turn")
            by_turn = {s.source: s for s in samples}
            for turn, k in zip(t.turns, keep):
                s = by_turn.get(f"{t.task_id}/turn{turn.index}")
                if k and s is not None:
                    out.append(s)
        else:
            # one sequence; malformed turns (not kept) are masked out of the loss
            t2 = dataclasses.replace(t, loss_mask=list(t.loss_mask))
            for turn, k in zip(t.turns, keep):
                if not k:
                    s0, e0 = turn.response_span
                    t2.loss_mask[s0:e0] = [0] * (e0 - s0)
            turns = [tr for tr, k in zip(t.turns, keep) if k]
            t2 = dataclasses.replace(t2, turns=turns, rollout_logprobs=[
                lp if m else 0.0 for lp, m in zip(t.rollout_logprobs, t2.loss_mask)])
            out.extend(trajectory_samples(t2, float(adv), unit="trajectory"))
    return out


def summarize_scores(scores: Sequence[GroupScore]) -> dict[str, float]:
    """Step metrics from the scored groups: reward/accuracy/cost/latency means over valid
    rollouts, filter counts, finish-reason counts, the context-finish rate."""
    trajs = [t for s in scores for t in s.trajectories]
    valid = np.concatenate([s.valid for s in scores]) if scores else np.zeros(0, bool)
    rewards = np.concatenate([s.rewards for s in scores]) if scores else np.zeros(0)
    out: dict[str, float] = {}
    n = max(int(valid.sum()), 1)
    vt = [t for t, v in zip(trajs, valid) if v]
    out["reward_mean"] = float(rewards[valid].sum() / n)
    out["accuracy"] = float(sum(bool(t.correct) for t in vt) / n)
    out["cost_usd_mean"] = float(sum(t.cost_usd for t in vt) / n)
    out["latency_s_mean"] = float(sum(t.latency_s for t in vt) / n)
    out["turns_mean"] = float(sum(t.num_turns for t in vt) / n)
    out["episodes"] = len(trajs)
    out["groups_kept"] = sum(s.kept for s in scores)
    for s in scores:
        for k, v in s.counts.items():
            out[f"filter/{k}"] = out.get(f"filter/{k}", 0) + v
    for t in trajs:
        key = f"finish/{t.finish_reason or 'none'}"
        out[key] = out.get(key, 0) + 1
    out["context_finish_rate"] = float(sum(t.finish_reason == "context" for t in trajs) /
                                       max(len(trajs), 1))
    return out


def tool_share(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Share of all counted calls per tool key (basic tools and concrete models)."""
    totals: dict[str, float] = {}
    for t in trajs:
        for name, c in zip(t.tool_names, t.tool_counts):
            totals[name] = totals.get(name, 0.0) + float(c)
    s = sum(totals.values())
    return {k: (v / s if s else 0.0) for k, v in sorted(totals.items())}

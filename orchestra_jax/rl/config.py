"""Every RL knob in one ml_collections block, with the paper [P] / release [C] defaults.

Tags: [P] stated in the paper (arXiv 2511.21689); [C] taken from the official release's
`training/train_orchestrator.sh` / verl fork where the paper is silent or differs; [ours] a choice of
this project (the paper and the release are silent). See shared/reference/paper_spec.md §4.2.
This is the only module in orchestra_jax/rl that imports ml_collections.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from orchestra_jax.rl import _checks
from orchestra_jax.rl.advantages import MODES, STD_KINDS
from orchestra_jax.rl.filters import FORMAT_MODES
from orchestra_jax.rl.losses import PPOLossConfig


def get_rl_config() -> ml_collections.ConfigDict:
    """The default RL configuration (flat ConfigDict; units in the comments)."""
    c = ml_collections.ConfigDict()
    # ---- batch / rollout ----
    c.group_size = 8                  # [P] rollout batch size: trajectories per task (GRPO group)
    c.tasks_per_batch = 16            # [P] training batch size: tasks (prompts) per step
    c.max_turns = 50                  # [P] max orchestrator turns per trajectory ([C] uses 30)
    c.max_prompt_tokens = 24_000      # [P] max input sequence length (tokens)
    c.max_response_tokens = 8_000     # [P] max generation length per turn (tokens; [C] 8768)
    c.rollout_temperature = 1.0       # [C] training sampling temperature
    c.rollout_top_p = 1.0             # [C]
    c.val_temperature = 0.6           # [C] validation sampling temperature
    c.val_samples = 4                 # [C] validation n
    # ---- reward (paper Eq. 2) ----
    # Default P when an example has no preference instruction (paper: NOT FOUND). It must weigh
    # cost and latency: with only p_outcome the reward of a group is binary correctness.
    # Same values as orchestra_jax.data.preferences.default_preference (tested).
    c.default_p_tool = 0.0            # [ours] P for each tool when an example has no preference
    c.default_p_outcome = 1.0         # [ours] (paper: a default is NOT FOUND)
    c.default_p_compute = 0.5         # [ours] cheaper correct trajectories rank higher
    c.default_p_latency = 0.5         # [ours] faster correct trajectories rank higher
    # ---- advantages (paper Eq. 3) ----
    c.adv_mode = "grpo"               # [P] GRPO; "drgrpo" drops the std division
    c.adv_std = "sample"              # [C] statistics.stdev (n-1); paper just says "std"
    c.adv_eps = 1e-6                  # [C] A = (R - mean)/(std + eps)
    c.adv_clip = 3.0                  # [C] clip A to [-3, 3]
    c.adv_boost_value = 0.0           # [C] release-only correct_sample_advantage_boost_value (the
                                      #     release ran 0.1; not in the paper, so off by default)
    c.adv_boost_threshold = 1.0       # [C] boost applies where A >= threshold
    # ---- filters (paper §4.3) ----
    c.homogeneity_threshold = 0.1     # [P] drop groups with reward std < 0.1
    c.format_filter_mode = "turn"     # [C] drop only malformed turns ("trajectory": whole trajectory)
    c.min_samples_per_step = 16       # [C] skip the step if fewer turn-samples survive (= #GPUs)
    c.sample_multiple = 16            # [C] truncate surviving samples to a multiple of this
    # ---- loss (paper Eq. 4 + release extras) ----
    c.clip_low = 0.2                  # [C] clip_ratio_low (paper: ε unspecified)
    c.clip_high = 0.28                # [C] clip_ratio_high
    c.dual_clip = 10.0                # [C] clip_ratio_c (dual clip for A < 0)
    c.kl_type = "k2"                  # [C] kl_loss_type=mse -> ½(logp - ref_logp)²
    c.kl_coef = 1e-4                  # [C] kl_loss_coef
    c.entropy_coef = 0.0              # [C] entropy_coeff
    c.loss_agg = "token-mean"         # [C] verl default loss_agg_mode
    c.tis_cap = config_dict.placeholder(float)  # [ours] truncated-IS cap; None = off (e.g. 2.0)
    # ---- optimisation ----
    c.learning_rate = 1e-6            # [P]
    c.lr_schedule = "constant"        # [C] no warmup, constant
    c.warmup_steps = 0                # [C]
    c.weight_decay = 0.01             # [C] AdamW
    c.adam_b1 = 0.9                   # [C] torch AdamW default
    c.adam_b2 = 0.999                 # [C] torch AdamW default
    c.adam_eps = 1e-8                 # [C] torch AdamW default
    c.grad_clip_norm = 1.0            # [C] global-norm gradient clipping
    c.ppo_epochs = 1                  # [C]
    c.ppo_mini_batch_size = 16        # [C] turn-samples per optimizer update
    c.total_epochs = 10               # [C] passes over the training data
    c.seed = 0                        # [ours]
    return c


def validate_rl_config(c: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first knob with an invalid value."""
    for name in ("group_size", "tasks_per_batch", "max_turns", "max_prompt_tokens",
                 "max_response_tokens", "ppo_epochs", "ppo_mini_batch_size", "sample_multiple"):
        if int(c[name]) < 1:
            raise ValueError(f"{name} must be >= 1, got {c[name]}")
    for name in ("default_p_tool", "default_p_outcome", "default_p_compute", "default_p_latency"):
        if not 0.0 <= float(c[name]) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {c[name]}")
    _checks.check_choice("adv_mode", c.adv_mode, MODES)
    _checks.check_choice("adv_std", c.adv_std, STD_KINDS)
    _checks.check_choice("format_filter_mode", c.format_filter_mode, FORMAT_MODES)
    if c.adv_clip is not None and float(c.adv_clip) <= 0:
        raise ValueError(f"adv_clip must be > 0 or None, got {c.adv_clip}")
    if float(c.homogeneity_threshold) < 0:
        raise ValueError(f"homogeneity_threshold must be >= 0, got {c.homogeneity_threshold}")
    if float(c.learning_rate) <= 0:
        raise ValueError(f"learning_rate must be > 0, got {c.learning_rate}")
    ppo_loss_config(c)   # validates the loss knobs


def ppo_loss_config(c: ml_collections.ConfigDict) -> PPOLossConfig:
    """The hashable `PPOLossConfig` for `losses.ppo_loss` from an RL ConfigDict."""
    return PPOLossConfig(
        clip_low=float(c.clip_low), clip_high=float(c.clip_high),
        dual_clip=None if c.dual_clip is None else float(c.dual_clip),
        kl_type=str(c.kl_type), kl_coef=float(c.kl_coef), entropy_coef=float(c.entropy_coef),
        loss_agg=str(c.loss_agg), tis_cap=None if c.tis_cap is None else float(c.tis_cap))

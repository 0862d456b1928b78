"""orchestra_jax.rl: pure jax/numpy RL math (paper §3-4): rewards, advantages, filters, PPO loss.

The configuration block lives in `orchestra_jax.rl.config` (the only module importing ml_collections).
"""
from orchestra_jax.rl.advantages import advantage_boost, group_mean, group_std, grpo_advantages
from orchestra_jax.rl.filters import (FilterResult, apply_filters, format_filter,
                                      homogeneity_filter, invalid_output_filter)
from orchestra_jax.rl.losses import PPOLossConfig, aggregate, kl_penalty, ppo_loss
from orchestra_jax.rl.rewards import (batched_preference_reward, normalised_features,
                                      preference_metric, preference_reward,
                                      ragged_preference_reward)

__all__ = [
    "advantage_boost", "group_mean", "group_std", "grpo_advantages",
    "FilterResult", "apply_filters", "format_filter", "homogeneity_filter",
    "invalid_output_filter",
    "PPOLossConfig", "aggregate", "kl_penalty", "ppo_loss",
    "batched_preference_reward", "normalised_features", "preference_metric", "preference_reward",
    "ragged_preference_reward",
]

"""RL defaults (rewards, advantages, filters, PPO/GRPO loss, optimiser) of the paper and release.

Run:  .venv/bin/python configs/rl_defaults.py
Expect: the flat ConfigDict printed (group_size: 8, tasks_per_batch: 16, clip_low: 0.2, clip_high: 0.28,
dual_clip: 10.0, kl_type: k2, kl_coef: 0.0001, adv_clip: 3.0, learning_rate: 1.0e-06, ...), validated.
Use from code: `get_config()`; every knob's provenance ([P] paper / [C] release / [ours]) is commented
in orchestra_jax/rl/config.py. Override with ml_collections config flags, e.g. `--config.kl_coef=0`.
"""
import ml_collections

from orchestra_jax.rl.config import get_rl_config, validate_rl_config


def get_config() -> ml_collections.ConfigDict:
    """The validated default RL config."""
    c = get_rl_config()
    validate_rl_config(c)
    return c


if __name__ == "__main__":
    print(get_config())

"""orchestra_jax.train — the learner: train state, losses, the one jitted step (and, in their own
modules, batches, checkpoints, metrics, multi-process set-up and the SFT/GRPO loops).

Training core::

    from orchestra_jax.train import (OptimizerConfig, make_optimizer, TrainState, init_state,
                                     state_from_params, state_shardings, sharding_report,
                                     GRPOLossConfig, grpo_loss, sft_loss, make_train_step,
                                     batch_sharding)
"""
from orchestra_jax.train.losses import (GRPOLossConfig, grpo_loss, make_logprob_fn,
                                        sft_loss)
from orchestra_jax.train.state import (OptimizerConfig, ShardingFallbackError, TrainState,
                                       abstract_state, init_state, make_optimizer,
                                       sharding_report, state_from_params, state_logical_axes,
                                       state_shardings)
from orchestra_jax.train.step import TrainStep, batch_sharding, make_train_step

__all__ = [
    "OptimizerConfig", "make_optimizer", "TrainState", "abstract_state", "state_logical_axes",
    "state_shardings", "init_state", "state_from_params", "sharding_report",
    "ShardingFallbackError", "GRPOLossConfig", "grpo_loss", "sft_loss", "make_logprob_fn",
    "TrainStep", "make_train_step", "batch_sharding",
]

"""Rollout-loop overhead (episode loop + runner, instant tools) vs pure generation of the same
tokens by the same engine; GRPO step time split from a tiny train_grpo.py run.

Run:    .venv/bin/python experiments/bench_rollout.py --config=configs/bench_rollout.py
        (--config.grpo=False to skip the GRPO run)
Expect: ~1-3 min on the 2-core CPU box (tiny-hd128 policy, greedy, 8 episodes x 4 turns): the
        loop's overhead in % (goal <= 5%), whether the replay produced the same tokens (True),
        the top Python frames of the loop, then the GRPO split in seconds per step (rollout,
        scoring, update, sync).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.preset = "tiny-hd128"        # random policy with the real Qwen3 vocabulary
    c.episodes = 8
    c.max_turns = 4
    c.new_tokens = 32              # per turn (a random policy rarely stops earlier)
    c.max_prompt_tokens = 2048
    c.repeats = 3
    c.profile = True               # cProfile of one episodes run
    c.profile_top = 8
    c.grpo = True
    c.grpo_config = "configs/grpo_cpu_demo.py"
    c.grpo_steps = 2
    # extra --config.K=V for train_grpo.py: a small run (2 tasks x 2 rollouts, 2 eval tasks)
    c.grpo_overrides = {"tasks_per_step": 2, "group_size": 2, "eval_limit": 2}
    c.grpo_timeout_s = 600.0
    return c

"""GRPO of Qwen3-0.6B on one GPU (the same code path as the 8B run, sized for one device).

Run:  python experiments/train_grpo.py --config=configs/grpo_gpu_small.py --workdir=runs/grpo06 \
        --config.policy.checkpoint=/path/to/Qwen3-0.6B
      (rollouts in process with the local JAX engine; experts = SmolLM2 in process, or point
       rollout.expert_specs at OpenAI-compatible endpoints)
Expect: 8 tasks x 8 rollouts per step on the demo task family (or rollout.tasks=FILE), turn
samples packed into 8k-token rows, ~1-3 min per step on one H100; metrics.jsonl as in
configs/grpo_cpu_demo.py.
"""
import importlib.util
import pathlib

import ml_collections

_spec = importlib.util.spec_from_file_location(
    "grpo_cpu_demo", pathlib.Path(__file__).with_name("grpo_cpu_demo.py"))
grpo_cpu_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grpo_cpu_demo)


def get_config() -> ml_collections.ConfigDict:
    c = grpo_cpu_demo.get_config()
    c.total_steps = 100
    c.tasks_per_step = 8
    c.group_size = 8                  # [P]
    c.rows = 8
    c.seq_len = 8192
    c.chunk_size = 1024
    c.deterministic_rollouts = False
    c.default_preference = ()
    c.concurrency = 64
    c.mesh = "(1,-1,1)"
    c.policy.preset = "qwen3-0.6b"
    c.policy.overrides = ml_collections.ConfigDict(
        {"dtype": "bfloat16", "remat_policy": "full", "scan_layers": True,
         "attention_impl": "cudnn"})
    c.optimizer.learning_rate = 1e-6  # [P]
    c.loss.kl_coef = 1e-4             # [C]
    c.rollout.max_prompt_tokens = 6144
    c.rollout.max_new_tokens_per_turn = 2048
    c.rollout.max_context = 8192
    c.rollout.max_turns = 10
    return c

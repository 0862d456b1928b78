"""SFT of a tiny Qwen3 (real 151,936-token vocabulary) on CPU.

Run:  .venv/bin/python experiments/train_sft.py --config=configs/sft_cpu_demo.py \
        --workdir=runs/sft_demo --config.data=FILE.jsonl
      FILE: trajectory JSONL (what experiments/rollout_*.py write; only policy tokens are
      trained) or chat JSONL ({"messages": [...], "tools": [...]}; loss on assistant turns).
Expect: ~1-3 s per step on 2 CPU cores at 8 x 512 tokens; metrics.jsonl gains one row per step
(loss, grad_norm, param_norm, tokens_per_s, step_s, ...) and heldout_loss every eval_every steps,
falling from ~12 (random init over the full vocabulary) within a few dozen steps; DIR/hf holds
the fine-tuned policy in transformers format at the end. Kill it and rerun the same command: it
resumes from the last checkpoint.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = ""                       # required: trajectory or chat JSONL
    c.eval_data = ""                  # "" = hold out eval_fraction of data
    c.eval_fraction = 0.1
    c.seq_len = 512                   # tokens per packed row
    c.rows = 8                        # packed rows per step (global, all processes)
    c.micro_batches = 1               # gradient accumulation (exact: scan over (loss·w, w))
    c.total_steps = 60
    c.eval_every = 10
    c.checkpoint_every = 10
    c.max_to_keep = 2
    c.seed = 0
    c.mesh = "(1,-1,1)"               # (data, fsdp, tensor); -1 = the remaining devices
    c.chunk_size = 256                # vocabulary-projection chunk (tokens) of the log-probs
    c.export_hf = True
    c.strict_sharding = False
    c.policy = ml_collections.ConfigDict()
    c.policy.checkpoint = ""          # "" = a random model of the preset below
    c.policy.preset = "tiny-h64"
    c.policy.overrides = ml_collections.ConfigDict()
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-2  # [ours] a tiny model from scratch (the paper has no SFT)
    c.optimizer.weight_decay = 0.01   # [C]
    c.optimizer.grad_clip_norm = 1.0  # [C]
    c.optimizer.warmup_steps = 0
    return c

"""Train step: ours (train.step + sft_loss, jitted) vs HF transformers + torch AdamW, and MFU.

Run:    .venv/bin/python experiments/bench_train.py --config=configs/bench_train.py
        (--config.model=toy for a seconds-long smoke run)
Expect: ~2-4 min on the 2-core CPU box for the ~100M Qwen3 (batch 8 x 256): the step time of both
        sides, tokens/s, our speed-up over HF (goal >= 1.2x), model FLOPs per step (formula in
        bench_util.train_flops) and MFU against the same run's jitted 2048^3 f32 matmul
        (goal >= 80%), the first-step loss of both sides (equal weights -> equal to ~1e-4),
        and the top XLA ops of our step. Results: BENCHMARKS.md.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "100m"               # bench_util.MODELS key ("100m" | "toy")
    c.rows = 8
    c.length = 256
    c.chunk_size = 512             # [ours] tokens per chunk of the vocabulary projection
    c.attention_impl = "xla"       # "xla" | "blockwise" | "cudnn"
    c.remat_policy = "none"
    c.lr = 1e-4
    c.repeats = 3                  # interleaved timed calls per side (after one warm-up)
    c.matmul_n = 2048              # the peak: one jitted f32 n^3 matmul
    c.matmul_calls = 3             # matmuls per timed peak sample
    c.profile = True               # top XLA ops of our step (jax.profiler)
    c.profile_top = 8
    c.xla_opt_level = -1           # -1: XLA default; 0 compiles faster (smoke tests only)
    return c

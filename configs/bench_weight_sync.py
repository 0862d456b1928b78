"""Weight-sync time trainer → sglang-jax rollout server (export + in-process swap / restart), CPU.

Run:    .venv/bin/python experiments/bench_weight_sync.py --config=configs/bench_weight_sync.py
        (--config.model=qwen3-0.6b for a bigger model; --config.jit_cache_dir='' to disable the
        persistent XLA compilation cache the restarted server reuses)
Expect: per mode, one line per sync: export seconds (save_hf_checkpoint to /dev/shm), update
        seconds (in-process leaf swap, or server restart until /health), first /generate latency
        after the sync and whether greedy outputs equal the local sampler's. Measured on the
        2-core CPU box, tiny-hd128 (19.8M params): export 0.7-1.0 s; in-process update ~0.15 s
        (first /generate after it ~0.1 s: no recompile); restart 9.4-10.5 s (first /generate
        after it 3.6 s without / 1.1 s with a warm XLA compilation cache).
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "tiny-hd128"        # a key of orchestra_jax.models.presets (random weights)
    c.modes = ("inprocess", "restart")  # weight_sync.WeightSync modes to measure
    c.syncs = 3
    c.prompts = 4
    c.prompt_len = 24
    c.max_new_tokens = 16
    c.check_parity = True         # compare greedy outputs with LocalJaxEngine after each sync
    c.jit_cache_dir = "runs/xla_cache_sglang_jax"  # JAX_COMPILATION_CACHE_DIR for the server ('' = off;
                                                   # also removes the server config's own setting)
    c.server = "configs/sglang_cpu.py"
    return c

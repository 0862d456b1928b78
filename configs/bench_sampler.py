"""Throughput of the KV-cache sampler (orchestra_jax.models.sampling) on random weights.

Run:    .venv/bin/python experiments/bench_sampler.py --config=configs/bench_sampler.py
        (e.g. --config.model=qwen3-0.6b --config.batch_sizes='(1,8,64)' on a GPU)
Expect: one line per batch size: compile time of the first call, then the steady-state wall
        time of a call, generated tokens/s and the per-step decode latency. On the 2-core CPU
        box the default 'tiny-hd128' preset runs in well under a minute.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "tiny-hd128"          # a key of orchestra_jax.models.presets (random weights)
    c.compute_dtype = "float32"     # bfloat16 on accelerators
    c.param_dtype = "float32"
    c.scan_layers = False
    c.batch_sizes = (1, 8)
    c.prompt_len = 128
    c.max_new_tokens = 64
    c.temperature = 1.0
    c.top_p = 1.0
    c.repeats = 2                   # steady-state calls timed after the compile call
    return c

"""Sampler throughput benchmark (config: configs/bench_sampler.py).

Times ``orchestra_jax.models.sampling.generate`` (jitted prefill + while-loop decode) for each
batch size on random weights of a preset. Stop tokens are disabled, so every row generates
exactly ``max_new_tokens`` tokens.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from orchestra_jax.models import init_params, presets
from orchestra_jax.models.sampling import generate


def bench(cfg) -> list[dict]:
    """Runs the benchmark; returns one dict per batch size (seconds, tokens/s)."""
    config = presets[cfg.model].replace(dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
                                        scan_layers=cfg.scan_layers)
    t0 = time.perf_counter()
    params = jax.block_until_ready(init_params(config, jax.random.key(0)))
    print(f"  init_params {time.perf_counter() - t0:.1f} s (compile included)")
    rs = np.random.RandomState(0)
    rows = []
    for bsz in cfg.batch_sizes:
        prompts = [list(map(int, rs.randint(0, config.vocab_size, cfg.prompt_len)))
                   for _ in range(bsz)]
        kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                  top_p=cfg.top_p, rng=jax.random.key(1))
        t0 = time.perf_counter()
        generate(config, params, prompts, **kw)
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            out = generate(config, params, prompts, **kw)
            best = min(best, time.perf_counter() - t0)
        n = sum(len(t) for t in out.tokens)
        rows.append({"batch": bsz, "first_call_s": first, "call_s": best, "new_tokens": n,
                     "tokens_per_s": n / best, "ms_per_step": 1e3 * best / cfg.max_new_tokens})
    return rows


def main(_):
    cfg = _CONFIG.value
    print(f"{cfg.model} on {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), "
          f"prompt {cfg.prompt_len}, {cfg.max_new_tokens} new tokens, "
          f"compute {cfg.compute_dtype}, temperature {cfg.temperature}")
    for r in bench(cfg):
        print(f"  batch {r['batch']:4d}: first call {r['first_call_s']:6.2f} s, call "
              f"{r['call_s']:7.3f} s, {r['tokens_per_s']:8.0f} tok/s, "
              f"{r['ms_per_step']:6.2f} ms/step (prefill included)")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", "configs/bench_sampler.py")
    app.run(main)

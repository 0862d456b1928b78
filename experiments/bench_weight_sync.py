"""Measures weight sync into an sglang-jax server (config: configs/bench_weight_sync.py).

sglang-jax 0.1.0rc0 has no /update_weights_* endpoint, so a sync = export the params as an HF
checkpoint (save_hf_checkpoint, /dev/shm) + either the in-process leaf swap of sgl_jax_server.py
(mode "inprocess") or a server restart on the checkpoint (mode "restart"); see
orchestra_jax/rollout/weight_sync.py. Prints export/update seconds, the first /generate latency
after the sync, and greedy parity with the in-process sampler.
"""
from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location("server_cfg", REPO / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def bench(cfg) -> dict:
    """Runs the syncs; returns ``{"rows": [per sync: mode, export_s, update_s, total_s,
    first_generate_s, greedy_equal], "param_bytes", "num_params", "startup_s": {mode: s},
    "estimate_8b": {...}}``. The 8B estimate scales each mode's median export / in-process
    update time by bytes (qwen3-8b bf16 export / f32 params vs this model's); a restart's
    time is dominated by server start-up + compile, which grow with the model too (not
    estimated here)."""
    import jax
    import numpy as np

    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.engine import SamplingParams
    from orchestra_jax.rollout.launcher import SGLangServer
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    from orchestra_jax.rollout.sglang_client import SGLangEngine
    from orchestra_jax.rollout.weight_sync import WeightSync, export_checkpoint

    config = presets[cfg.model].replace(dtype="float32",
                                        max_position_embeddings=min(4096, presets[cfg.model]
                                                                    .max_position_embeddings))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_weight_sync_"))
    out = {"rows": [], "startup_s": {}, "num_params": config.num_params,
           "param_bytes": config.num_params * 4}
    try:
        tok_dir = tmp / "tokenizer"
        load_tokenizer().save_pretrained(str(tok_dir))

        def params_for(seed):  # x10 init scale: clear greedy margins (see tests/test_sglang_server.py)
            p = init_params(config, jax.random.key(seed))
            return jax.tree_util.tree_map_with_path(
                lambda path, x: x if any(getattr(k, "key", None) == "scale" for k in path) else x * 10, p)

        params = params_for(0)
        ckpt = export_checkpoint(config, params, tmp / "ckpt0", tokenizer_dir=tok_dir)
        server_cfg = _load_config(cfg.server)
        server_cfg.model_path = str(ckpt)
        server_cfg.log_dir = str(tmp / "logs")
        env = {k: v for k, v in dict(server_cfg.env).items() if k != "JAX_COMPILATION_CACHE_DIR"}
        if cfg.jit_cache_dir:
            env.update(JAX_COMPILATION_CACHE_DIR=cfg.jit_cache_dir,
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        server_cfg.env = env
        rng = np.random.default_rng(0)
        prompts = [rng.integers(0, 151643, size=cfg.prompt_len).tolist() for _ in range(cfg.prompts)]
        sp = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
        print(f"model {cfg.model} ({config.num_params / 1e6:.1f}M params), jit cache "
              f"{'on' if cfg.jit_cache_dir else 'off'}", flush=True)
        for mode in cfg.modes:
            server_cfg.weight_update = mode
            with SGLangServer(server_cfg) as server:
                out["startup_s"][mode] = server.startup_s
                print(f"[{mode}] initial start: {server.startup_s:.2f} s", flush=True)
                sync = WeightSync([server], mode=mode, tokenizer_dir=tok_dir)
                for i in range(1, cfg.syncs + 1):
                    params = params_for(i)
                    res = sync.sync(config, params)
                    t0 = time.perf_counter()
                    remote = SGLangEngine([server.url]).generate_sync(prompts, sp)
                    first = time.perf_counter() - t0
                    same = None
                    if cfg.check_parity:
                        local = asyncio.run(LocalJaxEngine(config, params).generate(prompts, sp))
                        same = all(r.token_ids == l.token_ids for r, l in zip(remote, local))
                    out["rows"].append({"mode": mode, "sync": i, "export_s": res.export_s,
                                        "update_s": res.update_s, "total_s": res.total_s,
                                        "first_generate_s": first, "greedy_equal": same})
                    print(f"[{mode}] sync {i}: export {res.export_s:.2f} s, update {res.update_s:.2f} s, "
                          f"total {res.total_s:.2f} s; first /generate after sync {first:.2f} s; "
                          f"greedy == local: {same}", flush=True)
            sync.close(remove_all=True)  # the server is stopped: drop the served export too
    finally:  # checkpoints + tokenizer: never leave them in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
    big = presets["qwen3-8b"]
    scale = big.num_params / config.num_params
    est = {"model": "qwen3-8b", "num_params": big.num_params, "bytes_ratio": scale}
    for mode in cfg.modes:
        rows = [r for r in out["rows"] if r["mode"] == mode]
        if rows:
            exp = sorted(r["export_s"] for r in rows)[len(rows) // 2]
            upd = sorted(r["update_s"] for r in rows)[len(rows) // 2]
            est[f"{mode}_export_s"] = exp * scale
            if mode == "inprocess":
                est["inprocess_update_s"] = upd * scale
    out["estimate_8b"] = est
    return out


def main(_):
    r = bench(_CONFIG.value)
    e = r["estimate_8b"]
    print(f"8B estimate (x{e['bytes_ratio']:.0f} the bytes, linear): " +
          ", ".join(f"{k} {v:.0f} s" for k, v in e.items() if k.endswith("_s")))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "bench_weight_sync.py"))
    app.run(main)

"""Ahead-of-time memory plan of THE train step (configs: plan_grpo_8b.py, plan_memory_8b.py).

Lowers and compiles ``train.step.make_train_step`` — the same jitted step training runs — with
the GRPO loss (``train.losses.grpo_loss``: chunked log-probs, PPO clip, and the frozen reference
policy's forward pass when ``kl_coef > 0``) or the SFT loss, AdamW + global-norm clip, donated
state, on ``jax.ShapeDtypeStruct`` inputs carrying the rules table's shardings (state from
``train.state.abstract_state``/``state_shardings``, batch rows over ``('data', 'fsdp')``).
Nothing is allocated; ``compiled.memory_analysis()`` gives per-device bytes. On CPU the mesh is
made of ``fake_cpu_devices`` fake host devices. ``execute=True`` also runs it on random arrays.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # fake CPU devices must be requested before jax starts
    _n = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config.fake_cpu_devices=")),
              None)
    if _n is None:  # the config file's default
        _cfg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")),
                    "configs/plan_grpo_8b.py")
        import importlib.util
        _spec = importlib.util.spec_from_file_location("_plan_cfg", _cfg.split(":")[0])
        _mod = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_mod)
        _n = str(_mod.get_config().fake_cpu_devices)
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={_n}").strip()

import time
from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.models import presets
from orchestra_jax.models.config import to_dtype
from orchestra_jax.rl.losses import PPOLossConfig
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.losses import GRPOLossConfig, grpo_loss, sft_loss
from orchestra_jax.train.state import (OptimizerConfig, abstract_state, make_optimizer,
                                       state_shardings)
from orchestra_jax.train.step import batch_sharding, make_train_step

GiB = 2 ** 30
_INT_KEYS = ("tokens", "targets", "positions", "segment_ids")


def _get(cfg, name, default):
    return cfg[name] if name in cfg else default


def build(cfg: Any):
    """(model config, mesh, step, abstract state, abstract batch, abstract ref params or None)."""
    config = presets[cfg.model].replace(
        param_dtype=cfg.param_dtype, dtype=cfg.compute_dtype, remat_policy=cfg.remat_policy,
        scan_layers=cfg.scan_layers, attention_impl=_get(cfg, "attention_impl", "xla"),
        attention_block_size=int(_get(cfg, "attention_block_size", 512)))
    mesh = make_mesh(tuple(cfg.mesh))
    opt = make_optimizer(OptimizerConfig(learning_rate=cfg.learning_rate,
                                         weight_decay=cfg.weight_decay,
                                         grad_clip_norm=_get(cfg, "grad_clip_norm", 1.0)))
    loss = _get(cfg, "loss", "sft")
    chunk = int(_get(cfg, "logprob_chunk_size", 512))
    kl_coef = float(_get(cfg, "kl_coef", 0.0))
    if loss == "grpo":
        loss_fn = grpo_loss(config, GRPOLossConfig(PPOLossConfig(kl_coef=kl_coef),
                                                   chunk_size=chunk))
    elif loss == "sft":
        loss_fn = sft_loss(config, chunk_size=chunk)
    else:
        raise ValueError(f"config.loss must be 'grpo' or 'sft', got {loss!r}")
    sh = state_shardings(mesh, config, opt)
    ab = abstract_state(config, opt)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), ab, sh)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    rows = int(_get(cfg, "rows", cfg.per_device_batch * dp if "per_device_batch" in cfg else dp))
    bsh = batch_sharding(mesh)
    keys = _INT_KEYS + ("loss_mask",) + (("advantages", "old_logprobs") if loss == "grpo" else ())
    batch = {k: jax.ShapeDtypeStruct((rows, cfg.seq_len),
                                     jnp.int32 if k in _INT_KEYS else jnp.float32, sharding=bsh)
             for k in keys}
    ref = None
    if loss == "grpo" and kl_coef > 0:
        rdt = to_dtype(_get(cfg, "ref_param_dtype", cfg.param_dtype))
        ref = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, rdt, sharding=s),
                           ab.params, sh.params)
    level = _get(cfg, "xla_backend_optimization_level", None)   # tests: 0 compiles faster
    step = make_train_step(loss_fn, opt, sh, bsh, micro_batches=int(_get(cfg, "micro_batches", 1)),
                           compiler_options=None if level is None else
                           {"xla_backend_optimization_level": int(level)})
    return config, mesh, step, state, batch, ref


def plan(cfg: Any) -> dict:
    """Compiles the step for ``cfg`` (fields as in configs/plan_grpo_8b.py); returns byte counts
    per device plus ``compile_s`` and the model/mesh/batch description."""
    config, mesh, step, state, batch, ref = build(cfg)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, ref).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    rows, seq = batch["tokens"].shape
    out = {
        "model": cfg.model, "num_params": config.num_params, "mesh": dict(mesh.shape),
        "platform": jax.devices()[0].platform, "loss": _get(cfg, "loss", "sft"),
        "reference_model": ref is not None, "global_batch": rows, "seq_len": seq,
        "micro_batches": step.micro_batches, "attention_impl": config.attention_impl,
        "remat_policy": config.remat_policy,
        "argument_bytes": m.argument_size_in_bytes, "output_bytes": m.output_size_in_bytes,
        "alias_bytes": m.alias_size_in_bytes, "temp_bytes": m.temp_size_in_bytes,
        "generated_code_bytes": m.generated_code_size_in_bytes, "compile_s": compile_s,
    }
    out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] +
                          out["temp_bytes"] + out["generated_code_bytes"])
    if _get(cfg, "execute", False):
        out.update(_execute(cfg, config, mesh, step, batch, ref))
    return out


def _execute(cfg, config, mesh, step, batch, ref, steps: int = 3) -> dict:
    """Really runs the step (random params, random tokens, loss on the last
    ``response_tokens`` of each row): wall time per step and, where the backend reports it, the
    device's peak bytes in use (to check the plan against)."""
    from orchestra_jax.train.state import init_state
    state = init_state(config, step.optimizer, 0, mesh)
    rows, seq = batch["tokens"].shape
    resp = int(_get(cfg, "response_tokens", seq // 4))
    k = jax.random.split(jax.random.key(1), 3)
    toks = jax.random.randint(k[0], (rows, seq), 0, config.vocab_size, jnp.int32)
    mask = jnp.broadcast_to((jnp.arange(seq) >= seq - resp - 1) & (jnp.arange(seq) < seq - 1),
                            (rows, seq)).astype(jnp.float32)
    host = {"tokens": toks, "targets": jnp.roll(toks, -1, axis=1),
            "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (rows, seq)),
            "segment_ids": jnp.ones((rows, seq), jnp.int32), "loss_mask": mask,
            "advantages": jax.random.normal(k[1], (rows, seq)),
            "old_logprobs": mask * -jnp.log(float(config.vocab_size))}
    b = jax.device_put({n: host[n] for n in batch}, step.batch_sharding)
    ref_params = None
    if ref is not None:
        ref_params = jax.tree.map(lambda p, a: p.astype(a.dtype), state.params, ref)
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, b, ref_params)
        losses.append(float(metrics["loss"]))           # blocks until the step is done
        times.append(time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats() or {}
    step_s = min(times[1:]) if len(times) > 1 else times[0]
    flops = 6 * config.num_params * rows * seq          # dense matmul FLOPs, attention excluded
    return {"step_s": step_s, "losses": losses, "peak_bytes": stats.get("peak_bytes_in_use"),
            "tokens_per_s": rows * seq / step_s, "model_tflops_per_s": flops / step_s / 1e12}


def report(r: dict) -> str:
    """Human-readable table of :func:`plan`'s result (GiB per device)."""
    rows = [("arguments (params + opt state + batch" + (" + ref" if r["reference_model"] else "")
             + ")", r["argument_bytes"]),
            ("outputs", r["output_bytes"]), ("aliased (donated, counted once)", r["alias_bytes"]),
            ("temporaries", r["temp_bytes"]), ("generated code", r["generated_code_bytes"]),
            ("TOTAL per device", r["total_bytes"])]
    head = (f"{r['model']} ({r['num_params'] / 1e9:.2f} B params) {r['loss'].upper()} step"
            f"{' + reference model' if r['reference_model'] else ''} on mesh {r['mesh']} "
            f"[{r['platform']}], {r['global_batch']} rows x {r['seq_len']} tokens in "
            f"{r['micro_batches']} micro-batch(es), attention {r['attention_impl']}, remat "
            f"{r['remat_policy']}, compile {r['compile_s']:.1f} s")
    lines = [head] + [f"  {k:<44s} {v / GiB:9.3f} GiB" for k, v in rows]
    if "step_s" in r:
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / GiB:.3f} GiB"
        lines.append(f"  executed: step {r['step_s']:.3f} s, {r['tokens_per_s']:.0f} tok/s, "
                     f"{r['model_tflops_per_s']:.1f} model TFLOP/s (6*N*tokens), measured peak "
                     f"device memory {peak}, losses {[round(x, 3) for x in r['losses']]}")
    return "\n".join(lines)


def main(_):
    print(report(plan(_CONFIG.value)))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", "configs/plan_grpo_8b.py")
    app.run(main)

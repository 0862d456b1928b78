"""Ahead-of-time memory plan of one training step (config: configs/plan_memory_8b.py).

Lowers and compiles ``jit(train_step)`` — forward, backward, AdamW (optax) update, donated
params/optimizer state — on ``jax.ShapeDtypeStruct`` inputs carrying the mesh shardings of the
logical rules table. Nothing is allocated; ``compiled.memory_analysis()`` gives per-device bytes.
On CPU the mesh is made of ``fake_cpu_devices`` fake host devices.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # fake CPU devices must be requested before jax starts
    _n = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config.fake_cpu_devices=")),
              "8")
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={_n}").strip()

import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from orchestra_jax.models import apply, presets
from orchestra_jax.models.qwen3 import abstract_params, param_shardings_for
from orchestra_jax.sharding import make_mesh

GiB = 2 ** 30


def _loss(config, params, tokens, targets):
    b, l = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    logits, _ = apply(config, params, tokens, positions)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def plan(cfg: Any) -> dict:
    """Compiles the step for ``cfg`` (fields as in configs/plan_memory_8b.py); returns byte counts
    per device plus ``compile_s`` and the model/mesh description."""
    config = presets[cfg.model].replace(param_dtype=cfg.param_dtype, dtype=cfg.compute_dtype,
                                        remat_policy=cfg.remat_policy,
                                        scan_layers=cfg.scan_layers)
    mesh = make_mesh(tuple(cfg.mesh))
    p_sh = param_shardings_for(config, mesh)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_params(config), p_sh)
    opt = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    opt_abs = jax.eval_shape(opt.init, params)
    replicated = NamedSharding(mesh, P())
    o_sh = optax.tree_map_params(opt, lambda _, s: s, opt_abs, p_sh,
                                 transform_non_params=lambda _: replicated)
    opt_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             opt_abs, o_sh)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    gb = cfg.per_device_batch * dp
    b_sh = NamedSharding(mesh, P(("data", "fsdp"), None))
    batch = jax.ShapeDtypeStruct((gb, cfg.seq_len), jnp.int32, sharding=b_sh)

    def train_step(params, opt_state, tokens, targets):
        loss, grads = jax.value_and_grad(lambda p: _loss(config, p, tokens, targets))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, in_shardings=(p_sh, o_sh, b_sh, b_sh),
                   out_shardings=(p_sh, o_sh, replicated), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = step.lower(params, opt_state, batch, batch).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    out = {
        "model": cfg.model, "num_params": config.num_params, "mesh": dict(mesh.shape),
        "platform": jax.devices()[0].platform, "global_batch": gb, "seq_len": cfg.seq_len,
        "argument_bytes": m.argument_size_in_bytes, "output_bytes": m.output_size_in_bytes,
        "alias_bytes": m.alias_size_in_bytes, "temp_bytes": m.temp_size_in_bytes,
        "generated_code_bytes": m.generated_code_size_in_bytes, "compile_s": compile_s,
    }
    out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] +
                          out["temp_bytes"] + out["generated_code_bytes"])
    if getattr(cfg, "execute", False):
        out.update(_execute(config, mesh, opt, o_sh, compiled, gb, cfg.seq_len))
    return out


def _execute(config, mesh, opt, o_sh, compiled, gb, seq_len, steps: int = 3) -> dict:
    """Really runs the compiled step (random params and tokens): wall time per step and, where
    the backend reports it, the device's peak bytes in use (to check the plan against)."""
    from orchestra_jax.models import init_params
    params = init_params(config, jax.random.key(0), mesh=mesh)
    opt_state = jax.jit(opt.init, out_shardings=o_sh)(params)
    b_sh = NamedSharding(mesh, P(("data", "fsdp"), None))
    toks = jax.device_put(jax.random.randint(jax.random.key(1), (gb, seq_len), 0,
                                             config.vocab_size, jnp.int32), b_sh)
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, toks, toks)
        losses.append(float(loss))                      # blocks until the step is done
        times.append(time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats() or {}
    step_s = min(times[1:]) if len(times) > 1 else times[0]
    flops = 6 * config.num_params * gb * seq_len        # dense matmul FLOPs, attention excluded
    return {"step_s": step_s, "losses": losses, "peak_bytes": stats.get("peak_bytes_in_use"),
            "tokens_per_s": gb * seq_len / step_s, "model_tflops_per_s": flops / step_s / 1e12}


def report(r: dict) -> str:
    """Human-readable table of :func:`plan`'s result (GiB per device)."""
    rows = [("arguments (params + opt state + batch)", r["argument_bytes"]),
            ("outputs", r["output_bytes"]), ("aliased (donated, counted once)", r["alias_bytes"]),
            ("temporaries", r["temp_bytes"]), ("generated code", r["generated_code_bytes"]),
            ("TOTAL per device", r["total_bytes"])]
    head = (f"{r['model']} ({r['num_params'] / 1e9:.2f} B params) on mesh {r['mesh']} "
            f"[{r['platform']}], global batch {r['global_batch']} x {r['seq_len']} tokens, "
            f"compile {r['compile_s']:.1f} s")
    lines = [head] + [f"  {k:<40s} {v / GiB:9.3f} GiB" for k, v in rows]
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
    _CONFIG = config_flags.DEFINE_config_file("config", "configs/plan_memory_8b.py")
    app.run(main)

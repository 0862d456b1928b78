"""Train-step benchmark (config: configs/bench_train.py): our jitted step vs a Hugging Face
transformers + ``torch.optim.AdamW`` step, and model-FLOP utilisation vs the machine's f32
matmul peak — all three timed interleaved in one run.

Same weights on both sides: transformers writes a random Qwen3 checkpoint, we load it. Ours is
``train.step.make_train_step`` with ``train.losses.sft_loss`` (token cross-entropy over chunked
log-probs: the step GRPO and SFT training run), AdamW + global-norm clip 1.0; the peer is
``model(input_ids, labels=input_ids).loss.backward()`` + ``clip_grad_norm_(1.0)`` +
``AdamW.step()`` + ``zero_grad``. Both see the same random tokens (batch ``rows x length``, loss
on every next token). MFU = model FLOPs per step (``bench_util.train_flops``) / step time /
(2·n³ / time of one jitted n³ f32 matmul).
"""
from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _our_step(config, params, rows, length, chunk, lr, opt_level=-1):
    from orchestra_jax.sharding import make_mesh
    from orchestra_jax.train.losses import sft_loss
    from orchestra_jax.train.state import (OptimizerConfig, make_optimizer, state_from_params,
                                           state_shardings)
    from orchestra_jax.train.step import batch_sharding, make_train_step
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    opt = make_optimizer(OptimizerConfig(learning_rate=lr, weight_decay=0.01, grad_clip_norm=1.0))
    state = state_from_params(params, config, opt, mesh)
    step = make_train_step(sft_loss(config, chunk_size=chunk), opt,
                           state_shardings(mesh, config, opt), batch_sharding(mesh),
                           compiler_options=None if opt_level < 0 else
                           {"xla_backend_optimization_level": int(opt_level)})
    return mesh, step, state


def bench(cfg) -> dict:
    """Runs the benchmark; returns a dict of fields (see ``FIELDS``)."""
    import torch
    threads = bu.set_torch_threads()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        hf = bu.write_hf_model(cfg.model, tmp / "ckpt", seed=0)
        config, params = bu.load_ours(tmp / "ckpt", attention_impl=cfg.attention_impl,
                                      remat_policy=cfg.remat_policy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows, length = int(cfg.rows), int(cfg.length)
    rs = np.random.RandomState(0)
    toks = rs.randint(0, config.vocab_size, (rows, length)).astype(np.int32)
    mask = np.ones((rows, length), np.float32)
    mask[:, -1] = 0.0
    host = {"tokens": toks, "targets": np.roll(toks, -1, axis=1),
            "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(),
            "segment_ids": np.ones((rows, length), np.int32), "loss_mask": mask}

    mesh, step, state = _our_step(config, params, rows, length, int(cfg.chunk_size), cfg.lr,
                                  int(cfg.get("xla_opt_level", -1)))
    batch = jax.device_put(host, step.batch_sharding)
    compiled = step.lower(state, batch).compile()
    hlo = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
    holder = {"state": state, "loss": None}

    def ours():
        with jax.set_mesh(mesh):
            holder["state"], m = compiled(holder["state"], batch)
        loss = float(m["loss"])          # blocks
        if holder["loss"] is None:
            holder["loss"] = loss

    hf.train()
    topt = torch.optim.AdamW(hf.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=0.01)
    ttoks = torch.tensor(toks, dtype=torch.long)
    hf_loss = {}

    def peer():
        out = hf(input_ids=ttoks, labels=ttoks)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        topt.step()
        topt.zero_grad(set_to_none=True)
        hf_loss.setdefault("first", float(out.loss))

    mm, mm_flops = bu.matmul_peak_fn(int(cfg.matmul_n))
    mm_reps = max(1, int(cfg.matmul_calls))

    def peak():
        for _ in range(mm_reps):
            mm()

    times = bu.interleave({"ours": ours, "hf": peer, "matmul": peak}, int(cfg.repeats))
    t_ours, t_hf = bu.med(times["ours"]), bu.med(times["hf"])
    t_mm = bu.med(times["matmul"]) / mm_reps
    flops = bu.train_flops(config, rows, length)
    peak_flops_s = mm_flops / t_mm
    out = {
        "model_params": config.num_params, "matmul_params": bu.num_matmul_params(config),
        "rows": rows, "length": length, "tokens_per_step": rows * length,
        "attention_impl": config.attention_impl, "remat_policy": config.remat_policy,
        "torch_threads": threads,
        "ours_step_s": t_ours, "hf_step_s": t_hf, "ours_tokens_per_s": rows * length / t_ours,
        "hf_tokens_per_s": rows * length / t_hf, "speedup_vs_hf": t_hf / t_ours,
        "model_flops_per_step": flops, "xla_flops_per_step": xla_flops,
        "matmul_peak_flops_per_s": peak_flops_s, "ours_flops_per_s": flops / t_ours,
        "mfu": flops / t_ours / peak_flops_s, "hf_mfu": flops / t_hf / peak_flops_s,
        "loss_ours_first": holder["loss"], "loss_hf_first": hf_loss.get("first"),
        "times": times,
    }
    if cfg.profile:
        out["profile"] = bu.xla_op_profile(ours, hlo, top=int(cfg.profile_top))
    return out


FIELDS = ("speedup_vs_hf", "mfu", "ours_tokens_per_s", "hf_tokens_per_s",
          "matmul_peak_flops_per_s", "loss_ours_first", "loss_hf_first")


def main(_):
    r = bench(_CONFIG.value)
    print(f"train step {r['rows']}x{r['length']} ({r['model_params'] / 1e6:.1f}M params, "
          f"attention {r['attention_impl']}, remat {r['remat_policy']}) on {bu.cpu_info()}")
    print(f"  ours {r['ours_step_s']:.3f} s ({r['ours_tokens_per_s']:.0f} tok/s), HF torch "
          f"{r['hf_step_s']:.3f} s ({r['hf_tokens_per_s']:.0f} tok/s) -> {r['speedup_vs_hf']:.2f}x")
    print(f"  model FLOPs/step {r['model_flops_per_step'] / 1e9:.1f} G (XLA counts "
          f"{r['xla_flops_per_step'] / 1e9:.1f} G); matmul peak "
          f"{r['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s; MFU {100 * r['mfu']:.1f}% "
          f"(HF {100 * r['hf_mfu']:.1f}%)")
    print(f"  first-step loss: ours {r['loss_ours_first']:.4f}, HF {r['loss_hf_first']:.4f}")
    if "profile" in r:
        print("  top XLA ops: " + bu.format_ops(r["profile"], 8))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", str(bu.REPO / "configs" /
                                                            "bench_train.py"))
    app.run(main)

"""One prepared accelerator benchmark (config: configs/bench_gpu.py), <= 5 min on one H100/H200.

1. Train-step MFU of a Qwen3-1.7B config: ``train.step.make_train_step`` + ``sft_loss`` (chunked
   log-probs), f32 master weights + AdamW, bf16 compute, ``attention_impl`` (cudnn | blockwise),
   ``remat_policy``, scanned layers, random tokens. MFU = ``bench_util.train_flops`` (6·N·T +
   attention) / step time / the device's dense bf16 peak (table below, or ``peak_tflops``).
2. Decode tokens/s of ``models.sampling.generate`` (bf16 params) at each batch size.

Results are printed, written as JSON to ``out_dir`` (when set: ``$OUT`` on a lent machine), and
appended as a row to the "Accelerator runs" section of BENCHMARKS.md with the device named.
``--config.tiny=True`` runs the same code on the tiny preset (CPU smoke test; the peak is then
the same run's f32 matmul rate).
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# dense (no sparsity) bf16 peak FLOP/s by device_kind substring (vendor data sheets, SXM parts)
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
             "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v4": 275e12}


def device_peak(cfg) -> tuple[float, str]:
    if cfg.peak_tflops:
        return float(cfg.peak_tflops) * 1e12, "config.peak_tflops"
    kind = jax.devices()[0].device_kind
    for k, v in BF16_PEAK.items():
        if k.lower() in kind.lower():
            return v, f"bf16 data-sheet peak of {k}"
    fn, flops = bu.matmul_peak_fn(512 if cfg.tiny else 4096)
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    return 3 * flops / (time.perf_counter() - t0), "measured f32 matmul (unknown device)"


def bench_train(cfg, peak: float) -> dict:
    from orchestra_jax.models import presets
    from orchestra_jax.sharding import make_mesh
    from orchestra_jax.train.losses import sft_loss
    from orchestra_jax.train.state import (OptimizerConfig, init_state, make_optimizer,
                                           state_shardings)
    from orchestra_jax.train.step import batch_sharding, make_train_step
    name = "tiny" if cfg.tiny else cfg.model
    config = presets[name].replace(
        dtype="float32" if cfg.tiny else cfg.compute_dtype, param_dtype="float32",
        scan_layers=True, remat_policy=cfg.remat_policy,
        attention_impl="blockwise" if cfg.tiny and cfg.attention_impl == "cudnn" else
        cfg.attention_impl, attention_block_size=int(cfg.attention_block_size))
    rows, length = (2, 64) if cfg.tiny else (int(cfg.rows), int(cfg.seq_len))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    opt = make_optimizer(OptimizerConfig(learning_rate=1e-5))
    state = init_state(config, opt, 0, mesh)
    level = int(cfg.get("xla_opt_level", -1))
    step = make_train_step(sft_loss(config, chunk_size=int(cfg.chunk_size)), opt,
                           state_shardings(mesh, config, opt), batch_sharding(mesh),
                           compiler_options=None if level < 0 else
                           {"xla_backend_optimization_level": level})
    k = jax.random.split(jax.random.key(1), 2)
    toks = jax.random.randint(k[0], (rows, length), 0, config.vocab_size, jnp.int32)
    batch = {"tokens": toks, "targets": jnp.roll(toks, -1, axis=1),
             "positions": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length)),
             "segment_ids": jnp.ones((rows, length), jnp.int32),
             "loss_mask": jnp.ones((rows, length), jnp.float32).at[:, -1].set(0.0)}
    batch = jax.device_put(batch, step.batch_sharding)
    t0 = time.perf_counter()
    state, m = step(state, batch)
    float(m["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(int(cfg.train_steps)):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        float(m["loss"])
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    flops = bu.train_flops(config, rows, length)
    stats = jax.devices()[0].memory_stats() or {}
    return {"model": name, "params": config.num_params, "rows": rows, "seq_len": length,
            "attention_impl": config.attention_impl, "remat_policy": config.remat_policy,
            "compute_dtype": jnp.dtype(config.dtype).name, "compile_s": compile_s,
            "step_s": step_s, "tokens_per_s": rows * length / step_s,
            "model_tflops_per_s": flops / step_s / 1e12, "mfu": flops / step_s / peak,
            "loss": float(m["loss"]), "peak_bytes": stats.get("peak_bytes_in_use")}


def bench_decode(cfg) -> list[dict]:
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.models.sampling import generate
    name = "tiny" if cfg.tiny else cfg.model
    dt = "float32" if cfg.tiny else cfg.compute_dtype
    config = presets[name].replace(dtype=dt, param_dtype=dt, scan_layers=bool(cfg.decode_scan))
    params = init_params(config, jax.random.key(0))
    plen, new = (16, 16) if cfg.tiny else (int(cfg.prompt_len), int(cfg.new_tokens))
    rs = np.random.RandomState(0)
    rows = []
    for b in cfg.decode_batches:
        prompts = rs.randint(0, config.vocab_size, (int(b), plen)).tolist()
        kw = dict(max_new_tokens=new, temperature=float(cfg.temperature), top_p=float(cfg.top_p),
                  rng=jax.random.key(1))
        t0 = time.perf_counter()
        generate(config, params, prompts, **kw)
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(int(cfg.decode_repeats)):
            t0 = time.perf_counter()
            out = generate(config, params, prompts, **kw)
            best = min(best, time.perf_counter() - t0)
        n = sum(len(t) for t in out.tokens)
        rows.append({"batch": int(b), "tokens_per_s": n / best, "call_s": best,
                     "first_call_s": first, "ms_per_step": 1e3 * best / new})
    return rows


def markdown_row(r: dict, command: str) -> str:
    t = r["train"]
    dec = {d["batch"]: d["tokens_per_s"] for d in r["decode"]}
    decs = " / ".join(f"{dec[b]:,.0f}" for b in sorted(dec))
    return (f"| {r['date']} | {r['device']} | {t['model']} {t['rows']}x{t['seq_len']} "
            f"{t['compute_dtype']}, {t['attention_impl']}, remat {t['remat_policy']} | "
            f"{t['step_s']:.3f} s, {t['tokens_per_s']:,.0f} tok/s | {t['model_tflops_per_s']:.1f} | "
            f"**{100 * t['mfu']:.1f}%** of {r['peak_tflops']:.0f} ({r['peak_source']}) | "
            f"{'/'.join(str(b) for b in sorted(dec))}: {decs} | `{command}` |")


GPU_HEADER = ("| date | device | train config | step | model TFLOP/s | MFU (goal >= 45%) | "
              "decode tok/s by batch | command |\n|---|---|---|---|---|---|---|---|")


def append_to_benchmarks(row: str, path: pathlib.Path) -> None:
    """Appends ``row`` to the marked "Accelerator runs" table of BENCHMARKS.md (creating the
    section when missing); the rest of the file is left as it is."""
    begin, end = "<!-- bench_gpu:begin -->", "<!-- bench_gpu:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin not in text:
        text = (text.rstrip("\n") + "\n\n## Accelerator runs (`experiments/bench_gpu.py`)\n\n"
                "Appended by the script itself, one row per run, on the device named.\n\n"
                f"{begin}\n{GPU_HEADER}\n{end}\n")
    a, b = text.index(begin), text.index(end)
    body = text[a + len(begin):b].rstrip("\n")
    text = text[:a + len(begin)] + body + "\n" + row + "\n" + text[b:]
    path.write_text(text)


def bench(cfg) -> dict:
    peak, src = device_peak(cfg)
    r = {"date": bu.today(), "device": bu.device_name(), "jax": jax.__version__,
         "peak_tflops": peak / 1e12, "peak_source": src}
    r["train"] = bench_train(cfg, peak)
    r["decode"] = bench_decode(cfg)
    return r


def main(argv):
    cfg = _CONFIG.value
    r = bench(cfg)
    t = r["train"]
    print(f"{r['device']} (jax {r['jax']}), peak {r['peak_tflops']:.1f} TFLOP/s ({r['peak_source']})")
    print(f"  train {t['model']} {t['rows']}x{t['seq_len']} {t['compute_dtype']} "
          f"{t['attention_impl']} remat {t['remat_policy']}: step {t['step_s']:.3f} s "
          f"(compile {t['compile_s']:.0f} s), {t['tokens_per_s']:.0f} tok/s, "
          f"{t['model_tflops_per_s']:.1f} TFLOP/s, MFU {100 * t['mfu']:.1f}%")
    for d in r["decode"]:
        print(f"  decode batch {d['batch']:3d}: {d['tokens_per_s']:9.0f} tok/s "
              f"({d['ms_per_step']:.2f} ms/step, first call {d['first_call_s']:.1f} s)")
    command = "python " + " ".join(["experiments/bench_gpu.py"] + [a for a in sys.argv[1:]])
    row = markdown_row(r, command)
    if cfg.out_dir:
        out = pathlib.Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu.json").write_text(json.dumps(r, indent=1, default=str))
        (out / "bench_gpu_row.md").write_text(row + "\n")
    if cfg.benchmarks_md:
        append_to_benchmarks(row, bu.REPO / cfg.benchmarks_md)
        print(f"  appended to {cfg.benchmarks_md}")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", str(bu.REPO / "configs" / "bench_gpu.py"))
    app.run(main)

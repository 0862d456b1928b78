"""Decode benchmark (config: configs/bench_decode.py): our KV-cache sampler
(``models.sampling.generate``) vs HF ``generate`` on the same weights, vs the weight-streaming
bound, with sampling on, and vs the sglang-jax server — timed interleaved in one run.

* greedy: ``generate(temperature=0)`` vs ``model.generate(do_sample=False)``, batch x prompt
  tokens, ``new_tokens`` new tokens each (no stop token: both produce exactly that many).
* sampling: T = 1, top-p 0.95 on both sides (HF ``top_k=0``: no extra top-k filter).
* weight-streaming bound: one jitted loop of ``new_tokens`` steps doing only a decode step's
  dense matmuls ([batch, d] through every layer's q/k/v/o/gate/up/down and the output
  projection) — what a decode step cannot beat; the ratio is bound / our decode time (ours
  minus our own prefill-only call).
* sglang-jax: needs head_dim 128, so it runs on a variant checkpoint of the same size
  (``sglang_model``: half the heads at twice the head_dim) that both our sampler and the server
  load; batch requests sent concurrently to ``/generate``.
"""
from __future__ import annotations

import asyncio
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def matmul_bound_fn(config, params, batch: int, steps: int):
    """Zero-arg callable: ``steps`` iterations of a decode step's dense matmuls only."""
    d, v = config.hidden_size, config.vocab_size
    mats = [w for w in jax.tree.leaves(params) if w.ndim == 2]

    @jax.jit
    def run(mats, x):
        def step(_, x):
            act = {d: x}
            logits = None
            for w in mats:
                if w.shape == (v, d):                  # tied output projection
                    logits = act[d] @ w.T
                    continue
                z = act.get(w.shape[0])
                if z is None:
                    z = jnp.ones((x.shape[0], w.shape[0]), x.dtype)
                act[w.shape[1]] = jnp.tanh(z @ w)
            tail = 0.0 if logits is None else jnp.mean(logits)
            return act[d] * 0.5 + x * 0.5 + tail * 1e-6
        return jax.lax.fori_loop(0, steps, step, x)

    x0 = jax.random.normal(jax.random.key(0), (batch, d), jnp.float32)
    return lambda: run(mats, x0).block_until_ready()


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of each row's tokens before the first mismatch."""
    fr = []
    for x, y in zip(a, b):
        n = min(len(x), len(y))
        k = next((i for i in range(n) if x[i] != y[i]), n)
        fr.append(k / max(n, 1))
    return float(np.mean(fr))


def bench(cfg) -> dict:
    import torch
    from orchestra_jax.models.sampling import generate
    threads = bu.set_torch_threads()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_decode_"))
    try:
        hf = bu.write_hf_model(cfg.model, tmp / "ckpt", seed=0)
        config, params = bu.load_ours(tmp / "ckpt")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, plen, new = int(cfg.batch), int(cfg.prompt_len), int(cfg.new_tokens)
    rs = np.random.RandomState(0)
    prompts = rs.randint(0, config.vocab_size, (b, plen)).astype(np.int32)
    plist = prompts.tolist()
    ttoks = torch.tensor(prompts, dtype=torch.long)
    res = {}

    def ours(temperature, top_p, max_new=new, key="ours"):
        def f():
            res[key] = generate(config, params, plist, max_new_tokens=max_new,
                                temperature=temperature, top_p=top_p, rng=jax.random.key(1))
        return f

    def peer(sample: bool, key):
        kw = dict(do_sample=True, temperature=1.0, top_p=float(cfg.top_p), top_k=0) if sample \
            else dict(do_sample=False)

        def f():
            with torch.no_grad():
                out = hf.generate(ttoks, attention_mask=torch.ones_like(ttoks), max_new_tokens=new,
                                  min_new_tokens=new, eos_token_id=None, pad_token_id=0, **kw)
            res[key] = out[:, plen:].tolist()
        return f

    fns = {"ours_greedy": ours(0.0, 1.0, key="ours_greedy"),
           "hf_greedy": peer(False, "hf_greedy"),
           "ours_prefill": ours(0.0, 1.0, max_new=1, key="ours_prefill"),
           "bound": matmul_bound_fn(config, params, b, new)}
    if cfg.sampling:
        fns["ours_sample"] = ours(1.0, float(cfg.top_p), key="ours_sample")
        fns["hf_sample"] = peer(True, "hf_sample")
    times = bu.interleave(fns, int(cfg.repeats))
    t = {k: bu.med(v) for k, v in times.items()}
    decode = max(t["ours_greedy"] - t["ours_prefill"], 1e-9)
    n_tok = b * new
    out = {"batch": b, "prompt_len": plen, "new_tokens": new, "model_params": config.num_params,
           "torch_threads": threads, "times": times,
           "ours_greedy_tokens_per_s": n_tok / t["ours_greedy"],
           "hf_greedy_tokens_per_s": n_tok / t["hf_greedy"],
           "speedup_vs_hf_greedy": t["hf_greedy"] / t["ours_greedy"],
           "ours_decode_step_ms": 1e3 * decode / new, "bound_step_ms": 1e3 * t["bound"] / new,
           "bound_ratio": t["bound"] / decode,
           "greedy_agreement_with_hf": _agreement(res["ours_greedy"].tokens, res["hf_greedy"]),
           "ours_generated": sum(len(x) for x in res["ours_greedy"].tokens)}
    if cfg.sampling:
        out.update({"ours_sample_tokens_per_s": n_tok / t["ours_sample"],
                    "hf_sample_tokens_per_s": n_tok / t["hf_sample"],
                    "speedup_vs_hf_sample": t["hf_sample"] / t["ours_sample"],
                    "sampling_slowdown": t["ours_sample"] / t["ours_greedy"],
                    "hf_sampling_slowdown": t["hf_sample"] / t["hf_greedy"]})
    if cfg.profile:
        from orchestra_jax.models import sampling
        kw = dict(max_new_tokens=new, temperature=0.0, top_p=1.0, top_k=-1, rng=jax.random.key(1))
        hlo = ""
        try:   # the jitted decode program (same bucket sizes as generate uses)
            bs, pl, st = sampling.bucket(b), sampling.bucket(plen, 16), sampling.bucket(new, 16)
            toks = jnp.zeros((bs, pl), jnp.int32)
            hlo = sampling._generate.lower(
                config, params, toks, jnp.zeros((bs,), jnp.int32), jnp.int32(new),
                jnp.float32(0), jnp.float32(1), jnp.int32(-1), jnp.full((4,), -1, jnp.int32),
                jax.random.key(1), jnp.int32(0), max_steps=st).compile().as_text()
        except Exception as e:  # the profile is a diagnostic: never fail the bench on it
            print(f"  (no HLO for the profile: {e})")
        out["profile"] = bu.xla_op_profile(
            lambda: generate(config, params, plist, **kw), hlo, top=int(cfg.profile_top))
    if cfg.sglang:
        try:
            out.update(_bench_sglang(cfg, prompts))
        except Exception as e:   # recorded, not fatal: the server is an optional peer
            out["sglang_error"] = f"{type(e).__name__}: {e}"[:500]
    return out


def bench_sglang(cfg) -> dict:
    """Only the sglang-jax comparison (bench_all runs it as its own section)."""
    rs = np.random.RandomState(0)
    prompts = rs.randint(0, 32000, (int(cfg.batch), int(cfg.prompt_len))).astype(np.int32)
    try:
        return _bench_sglang(cfg, prompts)
    except Exception as e:   # recorded in BENCHMARKS.md, not fatal
        return {"sglang_error": f"{type(e).__name__}: {e}"[-700:]}


def _bench_sglang(cfg, prompts: np.ndarray) -> dict:
    """Ours vs the sglang-jax server on one head_dim-128 checkpoint (greedy, batch concurrent)."""
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models.sampling import generate
    from orchestra_jax.rollout.engine import SamplingParams
    from orchestra_jax.rollout.launcher import SGLangServer
    from orchestra_jax.rollout.sglang_client import SGLangEngine
    new = int(cfg.new_tokens)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_decode_sgl_"))
    try:
        ckpt = tmp / "ckpt"
        bu.write_hf_model(bu.hf_model_kwargs(cfg.sglang_model), ckpt, seed=0)
        tok = load_tokenizer()
        tok.save_pretrained(str(ckpt))
        config, params = bu.load_ours(ckpt)
        plist = (prompts % config.vocab_size).tolist()
        scfg = bu.load_config_file(cfg.sglang_server)
        scfg.model_path = str(ckpt)
        scfg.log_dir = str(tmp / "logs")
        scfg.context_length = max(int(scfg.context_length), prompts.shape[1] + new + 16)
        scfg.max_total_tokens = max(int(scfg.max_total_tokens),
                                    prompts.shape[0] * (prompts.shape[1] + new + 16))
        scfg.max_running_requests = max(int(scfg.max_running_requests), prompts.shape[0])
        scfg.mem_fraction_static = max(float(scfg.mem_fraction_static),
                                       float(cfg.get("sglang_mem_fraction", 0.0)))
        sp = SamplingParams(max_new_tokens=new, temperature=0.0)
        res = {}
        with SGLangServer(scfg) as server:
            eng = SGLangEngine([server.url], vocab_size=config.vocab_size)

            def theirs():
                res["sgl"] = eng.generate_sync(plist, sp)

            def ours():
                res["ours"] = generate(config, params, plist, max_new_tokens=new,
                                       temperature=0.0)

            times = bu.interleave({"ours": ours, "sglang": theirs}, int(cfg.repeats))
            startup = server.startup_s
        errs = [o.error for o in res["sgl"] if getattr(o, "finish_reason", "") == "error"]
        if errs:
            raise RuntimeError(f"sglang-jax returned errors: {errs[:2]}")
        n = sum(len(o.token_ids) for o in res["sgl"])
        t_o, t_s = bu.med(times["ours"]), bu.med(times["sglang"])
        return {"sglang_tokens_per_s": n / t_s,
                "sglang_ours_tokens_per_s": sum(len(x) for x in res["ours"].tokens) / t_o,
                "speedup_vs_sglang": t_s / t_o, "sglang_startup_s": startup,
                "sglang_greedy_agreement": _agreement(res["ours"].tokens,
                                                      [o.token_ids for o in res["sgl"]]),
                "sglang_times": times, "sglang_model_params": config.num_params}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


FIELDS = ("speedup_vs_hf_greedy", "bound_ratio", "ours_greedy_tokens_per_s",
          "hf_greedy_tokens_per_s", "greedy_agreement_with_hf")


def main(_):
    cfg = _CONFIG.value
    r = bench(cfg)
    print(f"decode batch {r['batch']} x prompt {r['prompt_len']} + {r['new_tokens']} new "
          f"({r['model_params'] / 1e6:.1f}M params) on {bu.cpu_info()}")
    print(f"  greedy: ours {r['ours_greedy_tokens_per_s']:.0f} tok/s, HF "
          f"{r['hf_greedy_tokens_per_s']:.0f} tok/s -> {r['speedup_vs_hf_greedy']:.2f}x; "
          f"token agreement with HF {r['greedy_agreement_with_hf']:.2f}")
    print(f"  decode step {r['ours_decode_step_ms']:.2f} ms vs matmul-only bound "
          f"{r['bound_step_ms']:.2f} ms -> {100 * r['bound_ratio']:.0f}% of the bound")
    if "ours_sample_tokens_per_s" in r:
        print(f"  T=1 top-p {cfg.top_p}: ours {r['ours_sample_tokens_per_s']:.0f} tok/s "
              f"({r['sampling_slowdown']:.2f}x greedy time), HF {r['hf_sample_tokens_per_s']:.0f} "
              f"tok/s -> {r['speedup_vs_hf_sample']:.2f}x")
    if "speedup_vs_sglang" in r:
        print(f"  sglang-jax: {r['sglang_tokens_per_s']:.0f} tok/s vs ours "
              f"{r['sglang_ours_tokens_per_s']:.0f} tok/s -> {r['speedup_vs_sglang']:.2f}x "
              f"(agreement {r['sglang_greedy_agreement']:.2f})")
    elif "sglang_error" in r:
        print(f"  sglang-jax: {r['sglang_error']}")
    if "profile" in r:
        print("  top XLA ops (greedy call): " + bu.format_ops(r["profile"], 6))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", str(bu.REPO / "configs" /
                                                            "bench_decode.py"))
    app.run(main)

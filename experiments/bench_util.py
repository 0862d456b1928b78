"""Shared pieces of the benchmarks (experiments/bench_*.py): the benchmark model written by
transformers, interleaved timing, the machine's matmul peak, and profile summaries.

Every figure the benchmarks report is a *ratio of two timings taken in the same run*, with the
two sides interleaved (A, B, B, A, A, B, ...) so a noisy shared machine loads both sides alike.
"""
from __future__ import annotations

import collections
import cProfile
import glob
import io
import pathlib
import pstats
import re
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

# The benchmark model: Qwen3, hidden 768, 12 layers, 12 q / 4 kv heads, head_dim 64,
# MLP 2048, vocab 32000, tied embeddings, float32 (~100M params). TOY: smoke tests.
MODEL_100M = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, head_dim=64,
                  tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                  max_position_embeddings=4096)
MODEL_TOY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=True, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                 max_position_embeddings=1024)
MODELS = {"100m": MODEL_100M, "toy": MODEL_TOY}


def hf_model_kwargs(name_or_dict: Any) -> dict:
    """A key of :data:`MODELS` or an explicit transformers ``Qwen3Config`` kwargs mapping."""
    if isinstance(name_or_dict, str):
        if name_or_dict not in MODELS:
            raise ValueError(f"unknown benchmark model {name_or_dict!r}; known: {sorted(MODELS)}")
        return dict(MODELS[name_or_dict])
    return dict(name_or_dict)


def write_hf_model(model: Any, path: pathlib.Path, seed: int = 0):
    """Builds a random transformers Qwen3 (float32, eval mode), saves it to ``path`` with
    ``save_pretrained`` and returns the torch model — both sides then run these weights."""
    import torch
    import transformers
    torch.manual_seed(seed)
    kw = hf_model_kwargs(model)
    m = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw)).float().eval()
    m.save_pretrained(path)
    return m


def load_ours(path: pathlib.Path, **overrides):
    """``load_hf_checkpoint`` in float32 compute, plus ModelConfig overrides (attention_impl,
    scan_layers, remat_policy ...)."""
    from orchestra_jax.models import load_hf_checkpoint
    config, params = load_hf_checkpoint(path, compute_dtype=jnp.float32)
    if overrides:
        config = config.replace(**overrides)
        if overrides.get("scan_layers"):
            raise ValueError("load_ours: scan_layers=True needs stacked params; keep it False")
    return config, params


def set_torch_threads() -> int:
    """torch uses every core, like XLA's CPU thread pool does."""
    import os
    import torch
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(n)
    return n


def interleave(fns: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1
               ) -> dict[str, list[float]]:
    """Wall seconds of each zero-arg callable, ``repeats`` times each, interleaved with the order
    reversed every round (A B, B A, ...). Each callable must block until its work is done."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            out[n].append(time.perf_counter() - t0)
    return out


def med(xs) -> float:
    return float(statistics.median(xs))


def matmul_peak_fn(n: int = 2048) -> tuple[Callable[[], Any], float]:
    """(zero-arg callable running one jitted f32 n³ matmul, its FLOPs = 2·n³)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    return (lambda: f(a, b).block_until_ready()), 2.0 * n ** 3


# ------------------------------------------------------------------ profiles
_HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+(?:\[[^\]]*\])?(?:\{[^}]*\})?\s+"
                       r"([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]+)"')


def hlo_index(hlo_text: str) -> dict[str, tuple[str, str]]:
    """instruction name → (opcode, JAX op_name from the metadata, shortened) of a compiled
    module's HLO text."""
    out = {}
    for line in hlo_text.splitlines():
        m = _HLO_LINE.match(line)
        if not m:
            continue
        op = _OP_NAME.search(line)
        name = op.group(1) if op else ""
        name = re.sub(r"^jit\([^)]*\)/", "", name)
        out[m.group(1)] = (m.group(2), name[-90:])
    return out


def xla_op_profile(run: Callable[[], Any], hlo_text: str = "", top: int = 8) -> dict:
    """Runs ``run`` once under ``jax.profiler`` and sums device-thread time per HLO op.

    Returns ``{"total_ms", "ops": [{"op", "opcode", "jax_op", "ms", "share"}...]}`` (top ops by
    time; ``jax_op`` from ``hlo_text``'s metadata when the op is found there).
    """
    idx = hlo_index(hlo_text) if hlo_text else {}
    d = tempfile.mkdtemp(prefix="bench_prof_")
    jax.profiler.start_trace(d)
    try:
        run()
    finally:
        jax.profiler.stop_trace()
    files = glob.glob(d + "/**/*.xplane.pb", recursive=True)
    per_op: collections.Counter = collections.Counter()
    if files:
        pd = jax.profiler.ProfileData.from_file(files[0])
        for plane in pd.planes:
            for line in plane.lines:
                if line.name == "python":
                    continue
                for ev in line.events:
                    stats = dict(ev.stats)
                    op = stats.get("hlo_op")
                    if op and not ev.name.startswith("end:"):
                        per_op[op] += ev.duration_ns / 1e6
    import shutil
    shutil.rmtree(d, ignore_errors=True)
    total = sum(per_op.values())
    ops = []
    for op, ms in per_op.most_common(top):
        opcode, jax_op = idx.get(op, ("", ""))
        ops.append({"op": op, "opcode": opcode, "jax_op": jax_op, "ms": round(ms, 2),
                    "share": round(ms / total, 3) if total else 0.0})
    return {"total_ms": round(total, 1), "ops": ops}


_WAITS = ("'poll' of", "'select' of", "'acquire' of", "'wait' of")   # blocked, not working


def python_profile(run: Callable[[], Any], top: int = 8) -> list[dict]:
    """cProfile of ``run`` (this thread): the top frames by self time (``{"frame", "cum_s",
    "tot_s"}``), leaving out waits (epoll/select/lock acquire: blocked on other threads)."""
    pr = cProfile.Profile()
    pr.enable()
    try:
        run()
    finally:
        pr.disable()
    st = pstats.Stats(pr, stream=io.StringIO())
    rows = []
    for (file, line, fn), (_, _, tt, ct, _) in st.stats.items():
        if any(w in fn for w in _WAITS):
            continue
        short = f"{pathlib.Path(file).name}:{line}({fn})"
        rows.append({"frame": short, "cum_s": round(ct, 3), "tot_s": round(tt, 3)})
    rows.sort(key=lambda r: -r["tot_s"])
    return rows[:top]


def format_ops(profile: dict, n: int = 5) -> str:
    """One line: the top XLA ops and their share of device time."""
    parts = []
    for o in profile.get("ops", [])[:n]:
        what = o["jax_op"] or o["opcode"] or o["op"]
        parts.append(f"{o['share'] * 100:.0f}% {o['op']} ({what})")
    return "; ".join(parts)


def today() -> str:
    return time.strftime("%Y-%m-%d")


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.device_kind} ({d.platform}) x{jax.device_count()}"


def num_matmul_params(cfg) -> int:
    """Weights that take part in a matmul per token: every layer's q/k/v/o and MLP matrices plus
    the output projection (V·d; the embedding lookup itself is no matmul)."""
    d, f, h, kv, hd = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads,
                       cfg.num_kv_heads, cfg.head_dim)
    return cfg.num_layers * (2 * d * h * hd + 2 * d * kv * hd + 3 * d * f) + cfg.vocab_size * d


def train_flops(cfg, rows: int, length: int) -> float:
    """Model FLOPs of one training step: 6·N·T + 12·layers·heads·head_dim·L·T (PaLM App. B:
    fwd+bwd of every matmul weight incl. the output projection, plus the QKᵀ and AV products
    over the full L×L score matrix), T = rows·L tokens."""
    t = rows * length
    return 6.0 * num_matmul_params(cfg) * t + 12.0 * cfg.num_layers * cfg.num_heads * \
        cfg.head_dim * length * t


def cpu_info() -> str:
    try:
        txt = pathlib.Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", txt)
        import os
        n = len(os.sched_getaffinity(0))
        return f"{model.group(1).strip() if model else 'cpu'}, {n} cores"
    except OSError:
        return "cpu"


def load_config_file(path: str):
    """``get_config()`` of a config file (path relative to the repo root or absolute)."""
    import importlib.util
    p = pathlib.Path(path)
    p = p if p.is_absolute() else REPO / p
    spec = importlib.util.spec_from_file_location(f"_cfg_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def maybe(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)

"""Start an SGLang / sglang-jax rollout server from a config and keep it up until Ctrl-C.

    .venv/bin/python experiments/serve_sglang.py --config=configs/sglang_cpu.py \
        --config.model_path=/path/to/checkpoint [--serve_s=60]

With an empty ``config.model_path`` a tiny random Qwen3 ('tiny-hd128' preset, real Qwen3
tokenizer) is written to runs/sglang_demo_ckpt first and served. Prints the native (/generate) and
OpenAI-compatible (/v1) URLs, sends one greedy /generate through SGLangEngine as a smoke test, then
waits. The whole server process group is torn down on exit.
"""
from __future__ import annotations

import pathlib
import signal
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def write_demo_checkpoint(path: pathlib.Path) -> pathlib.Path:
    """A tiny random Qwen3 (head_dim 128, Qwen3 vocab + tokenizer) for trying the server out."""
    import jax

    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.weight_sync import export_checkpoint

    if (path / "config.json").exists():
        return path
    config = presets["tiny-hd128"].replace(dtype="float32", max_position_embeddings=4096)
    tok_dir = path.parent / (path.name + "_tokenizer")
    load_tokenizer().save_pretrained(str(tok_dir))
    return export_checkpoint(config, init_params(config, jax.random.key(0)), path,
                             tokenizer_dir=tok_dir)


def main(_):
    from orchestra_jax.rollout.engine import SamplingParams
    from orchestra_jax.rollout.launcher import SGLangServer
    from orchestra_jax.rollout.sglang_client import SGLangEngine

    cfg = _CONFIG.value
    if not cfg.model_path:
        cfg.model_path = str(write_demo_checkpoint(REPO / "runs" / "sglang_demo_ckpt"))
    with SGLangServer(cfg) as server:
        print(f"server up in {server.startup_s:.1f} s: native {server.url}/generate, "
              f"OpenAI {server.url}/v1 (log {server.log_path})", flush=True)
        t0 = time.perf_counter()
        [out] = SGLangEngine([server.url]).generate_sync(
            [[9707, 11, 1879, 0]], SamplingParams(max_new_tokens=8, temperature=0.0))
        print(f"smoke /generate: {out.token_ids} ({out.finish_reason}, "
              f"{time.perf_counter() - t0:.2f} s incl. first-call JIT)", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        try:
            stop.wait(_SERVE_S.value if _SERVE_S.value > 0 else None)
        except KeyboardInterrupt:
            pass
    print("server stopped", flush=True)


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "sglang_cpu.py"))
    _SERVE_S = flags.DEFINE_float("serve_s", 0.0, "seconds to serve before exiting (0 = until Ctrl-C)")
    app.run(main)

"""Serve a local GGUF chat model (default SmolLM2-135M-Instruct) at an OpenAI-compatible /v1.

    .venv/bin/python experiments/serve_local_llm.py --config=configs/serve_local_llm.py \
        [--serve_s=60]

Loads the model with ``LocalChatModel.from_gguf`` (our JAX KV-cache sampler), starts
``rollout.openai_server.OpenAIChatServer``, prints the base URL, asks the smoke question through
the toolset's ``OpenAIChatClient`` and serves until Ctrl-C / SIGTERM (or ``--serve_s``).
"""
from __future__ import annotations

import asyncio
import pathlib
import signal
import sys
import threading
import time

from absl import app, flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "serve_local_llm.py"))
_SERVE_S = flags.DEFINE_float("serve_s", 0.0, "stop after this many seconds (0 = until Ctrl-C)")


def main(_):
    from orchestra_jax.rollout.local_expert import LocalChatModel
    from orchestra_jax.rollout.openai_server import OpenAIChatServer
    from orchestra_jax.tools.llm_client import ExpertConfig, OpenAIChatClient
    from orchestra_jax.tools.pricing import PriceSheet

    cfg = _CONFIG.value
    t0 = time.perf_counter()
    prices = PriceSheet.load("paper_eval")
    model = LocalChatModel.from_gguf(cfg.gguf_path or None, model=cfg.model,
                                     prices=prices if prices.has(cfg.model) else None,
                                     max_new_tokens_cap=cfg.max_new_tokens_cap,
                                     engine_kwargs={"max_batch": cfg.max_batch})
    print(f"loaded {cfg.model} in {time.perf_counter() - t0:.1f} s", flush=True)
    with OpenAIChatServer(model, host=cfg.host, port=cfg.port,
                          request_timeout_s=cfg.request_timeout_s) as server:
        print(f"OpenAI base_url {server.base_url} (model {cfg.model!r})", flush=True)
        if cfg.smoke_question:
            client = OpenAIChatClient(ExpertConfig(base_url=server.base_url, model=cfg.model,
                                                   timeout_s=cfg.request_timeout_s,
                                                   max_retries=0), prices=prices)
            t1 = time.perf_counter()
            resp = asyncio.run(client.chat([{"role": "user", "content": cfg.smoke_question}],
                                           max_tokens=64, temperature=0.0))
            print(f"smoke: {cfg.smoke_question!r} -> {resp.text!r} ({resp.prompt_tokens}+"
                  f"{resp.completion_tokens} tokens, ${resp.cost_usd or 0:.2e}, "
                  f"{time.perf_counter() - t1:.1f} s incl. JIT)", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        try:
            stop.wait(_SERVE_S.value if _SERVE_S.value > 0 else None)
        except KeyboardInterrupt:
            pass
    print("server stopped", flush=True)


if __name__ == "__main__":
    app.run(main)

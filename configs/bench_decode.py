"""Decode: our KV-cache sampler vs HF generate, vs the weight-streaming bound, sampling on, and
vs the sglang-jax server.

Run:    .venv/bin/python experiments/bench_decode.py --config=configs/bench_decode.py
        (--config.model=toy --config.sglang=False for a quick smoke run)
Expect: ~3-6 min on the 2-core CPU box: greedy tokens/s of both sides and our speed-up
        (goal >= 2x), our decode step vs a loop of only its dense matmuls (goal >= 70%),
        T=1/top-p 0.95 tokens/s and its cost relative to greedy, and (needs .venv-sglang)
        tokens/s of the sglang-jax server on a head_dim-128 variant of the same size.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "100m"             # bench_util.MODELS key
    c.batch = 8
    c.prompt_len = 64
    c.new_tokens = 128
    c.top_p = 0.95               # sampling row: temperature 1, this top-p
    c.sampling = True
    c.repeats = 3                # interleaved timed calls per side (after one warm-up)
    c.profile = True
    c.profile_top = 8
    c.sglang = True              # also time the sglang-jax server (needs .venv-sglang)
    # "100m" with head_dim 128 (sglang-jax needs it: 6 q / 2 kv heads x 128) and the real Qwen3
    # vocabulary (the server loads the Qwen3 tokenizer): ~192M params, ours and the server alike
    c.sglang_model = dict(vocab_size=151936, hidden_size=768, intermediate_size=2048,
                          num_hidden_layers=12, num_attention_heads=6, num_key_value_heads=2,
                          head_dim=128, tie_word_embeddings=True, rope_theta=1_000_000.0,
                          rms_norm_eps=1e-6, max_position_embeddings=4096)
    c.sglang_server = "configs/sglang_cpu.py"
    c.sglang_mem_fraction = 0.2    # the server's mem_fraction_static (0.05 of sglang_cpu.py is too
                                   # little for this model's f32 weights: "Not enough memory")
    return c

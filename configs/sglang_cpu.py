"""sglang-jax rollout server on CPU (a tiny Qwen3 for tests and local development).

Command (starts the server on a checkpoint, prints its URL, serves until Ctrl-C):

    .venv/bin/python experiments/serve_sglang.py --config=configs/sglang_cpu.py \
        --config.model_path=/path/to/qwen3-checkpoint

Expect: "/health" ready ~7-10 s after launch on 2 CPU cores; the first /generate of a new shape
JIT-compiles for ~3 s, later ones take tens of ms for a tiny model. The checkpoint must have
head_dim 128 (sglang-jax pads the KV cache to 128 and fails otherwise) and is patched in place for
transformers 4.57 (rope_theta/torch_dtype, tokenizer_class). The memory limits below are required:
with the defaults the native attention backend tries to allocate ~70 GB on the first request.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.backend = "sglang_jax"          # 'sglang_jax' (CPU/TPU) or 'sglang' (upstream, GPU)
    c.python = ".venv-sglang/bin/python"  # relative to the repo root, or absolute; '' = this python
    c.model_path = ""                 # checkpoint directory (config.json, safetensors, tokenizer)
    c.host = "127.0.0.1"
    c.port = 0                        # 0 = pick a free port
    c.device = "cpu"
    c.dtype = "float32"
    c.attention_backend = "native"
    c.tp_size = None
    # Memory flags (feasibility §3): without them the first request OOMs on CPU.
    c.mem_fraction_static = 0.05
    c.max_total_tokens = 2048         # KV-cache slots (tokens) across all running requests
    c.max_running_requests = 8
    c.chunked_prefill_size = 256
    c.context_length = 512            # prompt + generated tokens per request
    c.random_seed = 0
    c.disable_precompile = True       # precompiling every bucket takes minutes on 2 cores
    c.skip_server_warmup = True
    c.disable_radix_cache = False     # weights change only via restart here, so the cache stays valid
    # sglang-jax 0.1.0rc0 on CPU: with the overlap scheduler, concurrent (batched) greedy requests
    # sometimes decode different tokens than the same requests sent one at a time (a race; seen in
    # 3 of 7 runs under CPU load, 0 of 5 with this flag). Correctness first: keep it disabled.
    c.disable_overlap_schedule = True
    c.skip_tokenizer_init = False     # False: /v1/chat/completions works (needs a tokenizer)
    c.log_level = "info"
    c.tokenizer_path = None
    c.extra_args = []
    # Extra environment for the server process (relative paths are under the repo root). The
    # persistent XLA cache makes the first request after a restart (weight sync) ~1 s, not ~3.6 s.
    c.env = {"JAX_PLATFORMS": "cpu",
             "JAX_COMPILATION_CACHE_DIR": "runs/xla_cache_sglang_jax",
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    c.log_dir = ""                    # '' = <repo>/runs/sglang_logs
    c.startup_timeout_s = 180.0
    c.restart_grace_s = 1.0           # SIGTERM→SIGKILL wait when restarting (weight sync), seconds
    c.shutdown_grace_s = 10.0
    # How weight_sync.WeightSync updates this server: 'inprocess' (the hook in
    # orchestra_jax/rollout/sgl_jax_server.py swaps weights inside the running server, ~0.15 s for
    # the test model) or 'restart' (restart on the new checkpoint, ~10 s).
    c.weight_update = "inprocess"
    c.stock_entry = False             # True: plain `-m sgl_jax.launch_server` (no hook, no watchdog)
    c.prepare_checkpoint = True       # patch config.json/tokenizer_config.json for transformers 4.57
    return c

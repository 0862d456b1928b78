"""Upstream SGLang rollout server on one or more NVIDIA GPUs (not runnable on the CPU machines).

Command (needs an environment with `sglang` installed, e.g. `pip install "sglang[all]"`, and CUDA):

    .venv/bin/python experiments/serve_sglang.py --config=configs/sglang_gpu.py \
        --config.model_path=/path/to/Qwen3-8B --config.python=/opt/sglang-venv/bin/python

Expect: ready after model load + CUDA-graph capture (tens of seconds for 8B); weight sync goes through
POST /update_weights_from_disk (see orchestra_jax/rollout/weight_sync.py) with the exported checkpoint
on /dev/shm. Leave memory to the trainer with mem_fraction_static when colocated.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.backend = "sglang"
    c.python = ""                     # interpreter that has `sglang`; '' = this python
    c.model_path = ""
    c.host = "127.0.0.1"
    c.port = 0
    c.device = None                   # cuda is the default
    c.dtype = "bfloat16"
    c.attention_backend = None        # server default (flashinfer / fa3)
    c.tp_size = 1
    c.mem_fraction_static = 0.85
    c.max_total_tokens = None
    c.max_running_requests = None
    c.chunked_prefill_size = None
    c.context_length = None
    c.random_seed = 0
    c.disable_precompile = False      # sglang-jax-only flag; ignored (False) here
    c.skip_server_warmup = False
    c.disable_radix_cache = False     # weight_sync flushes the cache after every update
    c.disable_overlap_schedule = False
    c.skip_tokenizer_init = False
    c.enable_deterministic_inference = False
    c.log_level = "info"
    c.tokenizer_path = None
    c.extra_args = []
    # log-probs of the model's own distribution (pre-temperature), like the trainer's; the rollout
    # builder (orchestra_jax/rollout/build.py) sets it too and records the convention.
    c.env = {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1"}
    c.log_dir = ""
    c.startup_timeout_s = 900.0
    c.restart_grace_s = 1.0           # SIGTERM→SIGKILL wait when restarting (weight sync), seconds
    c.shutdown_grace_s = 30.0
    c.prepare_checkpoint = False
    return c

"""AOT memory plan of one Qwen3-8B SFT step (train.step: fwd + bwd + AdamW), nothing allocated.

(The paper's GRPO step at 32k tokens per sample: configs/plan_grpo_8b.py.)

Run:    .venv/bin/python experiments/plan_memory.py --config=configs/plan_memory_8b.py
        (override e.g. --config.mesh='(2,4,1)' --config.seq_len=2048 --config.model=qwen3-1.7b)
Expect: ~20 s-2 min of XLA compile on 8 fake CPU devices, then a table of per-device bytes from
        compiled.memory_analysis(): arguments (f32 params + AdamW mu/nu shards + batch), outputs,
        aliased (donated) bytes, temps, generated code, and the total in GiB — for qwen3-8b on a
        (1,8,1) FSDP mesh, 1 sequence x 4096 tokens per device, bf16 compute, remat 'full',
        XLA attention, chunked log-probs: 11.45 GiB of params+optimizer state per device
        (8.19 B x 12 bytes / 8) plus the temporaries (see BENCHMARKS.md).
        The measured figures are recorded in BENCHMARKS.md.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "qwen3-8b"            # a key of orchestra_jax.models.presets
    c.loss = "sft"                  # "sft" | "grpo" (see configs/plan_grpo_8b.py)
    c.mesh = (1, 8, 1)              # (data, fsdp, tensor); -1 = the remaining devices
    c.fake_cpu_devices = 8          # CPU only: fake device count (set before jax starts)
    c.per_device_batch = 1          # sequences per device (global batch = this * data * fsdp)
    c.seq_len = 4096                # tokens per sequence
    c.param_dtype = "float32"       # master weights + AdamW state
    c.compute_dtype = "bfloat16"
    c.remat_policy = "full"         # see orchestra_jax.models.REMAT_POLICIES
    c.scan_layers = True
    c.attention_impl = "xla"        # "xla" | "blockwise" | "cudnn"
    c.logprob_chunk_size = 512      # tokens per vocabulary-projection chunk
    c.learning_rate = 1e-6
    c.weight_decay = 0.01
    c.execute = False               # True: also run the step on real (random) arrays and report
                                    # step time + the device's measured peak memory
    return c

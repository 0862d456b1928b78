"""AOT memory plan of the paper's GRPO step for Qwen3-8B (nothing allocated).

Run:    .venv/bin/python experiments/plan_memory.py --config=configs/plan_grpo_8b.py
        (override e.g. --config.mesh='(1,8,1)' --config.fake_cpu_devices=8 --config.micro_batches=2)
Expect: a few minutes of XLA compile on 16 fake CPU devices (2 cores), then a table of per-device
        bytes from compiled.memory_analysis() for ONE optimizer update of train.step (the same
        jitted step training runs): 16 `turn` samples of 24,000 prompt + 8,000 response tokens
        (rows of 32,000 tokens), GRPO loss over chunked log-probs, the frozen reference policy's
        forward pass (KL, coef 1e-4), AdamW + clip, f32 master weights and moments, bf16 compute,
        blockwise attention, remat 'full'. On the (1,16,1) FSDP mesh (the paper's 16 x H100)
        the total is ~32 GiB per device: the step fits 80 GB. Figures are in BENCHMARKS.md.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "qwen3-8b"              # a key of orchestra_jax.models.presets
    c.mesh = (1, 16, 1)               # (data, fsdp, tensor); -1 = the remaining devices
    c.fake_cpu_devices = 16           # CPU only: fake device count (set before jax starts)
    c.loss = "grpo"                   # "grpo" | "sft"
    c.rows = 16                       # [C] ppo_mini_batch_size: turn-samples per optimizer update
    c.micro_batches = 1               # [ours] gradient-accumulation steps (rows % (k*dp) == 0)
    c.seq_len = 32_000                # [P] 24,000 prompt + 8,000 response tokens per sample
    c.response_tokens = 8_000         # [P] (execute=True: loss on these tokens of each row)
    c.kl_coef = 1e-4                  # [C] > 0: the reference model's forward pass is in the step
    c.ref_param_dtype = "bfloat16"    # [ours] frozen reference stored in the compute dtype
                                      # (lossless: every matmul casts to bf16 anyway)
    c.param_dtype = "float32"         # master weights + AdamW state
    c.compute_dtype = "bfloat16"
    c.remat_policy = "full"           # see orchestra_jax.models.REMAT_POLICIES
    c.scan_layers = True              # fast AOT compile
    c.attention_impl = "blockwise"    # O(L·block) attention memory (models/attention.py)
    c.attention_block_size = 512
    c.logprob_chunk_size = 512        # tokens per vocabulary-projection chunk
    c.learning_rate = 1e-6            # [P]
    c.weight_decay = 0.01             # [C]
    c.grad_clip_norm = 1.0            # [C]
    c.execute = False                 # True: also run the step on random arrays (GPU) and report
                                      # step time + the device's measured peak memory
    return c

"""One accelerator benchmark: Qwen3-1.7B train-step MFU + decode tokens/s at batch 1/8/64.

Run:    python experiments/bench_gpu.py --config=configs/bench_gpu.py --config.out_dir=$OUT
        (CPU smoke test: --config.tiny=True --config.benchmarks_md='')
Expect: <= 5 min on one H100/H200: XLA compile of the 1.7B step (~1 min), 3 timed steps, then
        decode at each batch size (compile + 2 timed calls each); prints step time, tokens/s,
        model TFLOP/s and MFU against the bf16 data-sheet peak (goal >= 45%; the naive-attention
        full-logits step measured 121 TFLOP/s ~ 15% on an H200), then decode tokens/s; appends
        a row naming the device to BENCHMARKS.md and writes bench_gpu.json to out_dir.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.tiny = False                 # True: the tiny preset in f32 (CPU smoke test)
    c.model = "qwen3-1.7b"
    c.compute_dtype = "bfloat16"
    c.attention_impl = "cudnn"     # "cudnn" (jax.nn.dot_product_attention) | "blockwise"
    c.attention_block_size = 512
    c.remat_policy = "dots_with_no_batch_dims_saveable"   # see models.REMAT_POLICIES
    c.rows = 4
    c.seq_len = 4096
    c.chunk_size = 1024            # tokens per chunk of the vocabulary projection
    c.train_steps = 3
    c.peak_tflops = 0.0            # 0: from the device table in bench_gpu.BF16_PEAK
    c.decode_batches = (1, 8, 64)
    c.prompt_len = 512
    c.new_tokens = 256
    c.decode_scan = True
    c.decode_repeats = 2
    c.temperature = 1.0
    c.top_p = 1.0
    c.xla_opt_level = -1           # -1: XLA default; 0 compiles faster (CPU smoke tests only)
    c.out_dir = ""                 # also write bench_gpu.json + the markdown row here ($OUT)
    c.benchmarks_md = "BENCHMARKS.md"   # '' = do not append
    return c

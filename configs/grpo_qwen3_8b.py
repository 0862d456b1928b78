"""The paper's run: GRPO of Qwen3-8B as the orchestrator (paper §4; paper_spec §4.2).

Run (16 GPUs = 2 nodes x 8 H100 80 GB, same command on every process; workdir on shared storage):
  ORCHESTRA_COORDINATOR=node0:12355 ORCHESTRA_NUM_PROCESSES=2 ORCHESTRA_PROCESS_ID=$RANK \
  python experiments/train_grpo.py --config=configs/grpo_qwen3_8b.py --workdir=/shared/runs/orch8b \
      --config.policy.checkpoint=/shared/models/Qwen3-8B \
      --config.rollout.sglang_urls='http://rollout0:30000,http://rollout1:30000'
(under SLURM `srun` sets the process ids itself; see README "Scale-out".) SGLang servers run on
separate GPUs (`python experiments/serve_sglang.py --config=configs/sglang_gpu.py`), launched with
SGLANG_RETURN_ORIGINAL_LOGPROB=1 so their log-probs are the model's own; weights are synced
after every step through HF safetensors + /update_weights_from_disk.
Expect: per step 16 tasks x 8 rollouts, multi-turn tool episodes (<= 50 turns, 24k-token
prompts, 8k new tokens per turn), turn-unit samples packed into 32k-token rows; the 8B plan in
BENCHMARKS.md shows the step fits 16 x 80 GB with fsdp=16. Paper: training reward rises over
~O(100) steps; evaluation with experiments/evaluate.py.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.total_steps = 200               # [ours] the paper reports curves, not a step count
    c.tasks_per_step = 16             # [P] training batch: 16 tasks
    c.group_size = 8                  # [P] 8 rollouts per task
    c.mini_batch_samples = 16         # [C] ppo_mini_batch_size (turn samples per update)
    c.ppo_epochs = 1                  # [C]
    c.rows = 16                       # one 32k row per GPU per update
    c.seq_len = 32_768                # [P] 24k prompt + 8k generation
    c.micro_batches = 1
    c.chunk_size = 1024
    c.recompute_old_logprobs = False  # [ours]; the release recomputes with the trainer
    c.deterministic_rollouts = False
    c.default_preference = ()         # the preference source's default [ours]
    c.concurrency = 128
    c.demo_tasks = False
    c.eval_tasks = ""
    c.eval_every = 0
    c.eval_limit = 0
    c.checkpoint_every = 10
    c.max_to_keep = 3
    c.save_trajectories = True
    c.export_hf = True
    c.seed = 0
    c.mesh = "(1,16,1)"               # FSDP over all 16 GPUs
    c.policy = ml_collections.ConfigDict()
    c.policy.checkpoint = ""          # required: Qwen3-8B in HF format
    c.policy.preset = "qwen3-8b"
    c.policy.overrides = ml_collections.ConfigDict(
        {"dtype": "bfloat16", "remat_policy": "full", "scan_layers": True,
         "attention_impl": "cudnn"})
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-6  # [P] constant
    c.optimizer.weight_decay = 0.01   # [C]
    c.optimizer.grad_clip_norm = 1.0  # [C]
    c.scoring = ml_collections.ConfigDict()
    c.scoring.unit = "turn"                 # [C]
    c.scoring.homogeneity_threshold = 0.1   # [P]
    c.scoring.format_filter_mode = "turn"   # [C]
    c.scoring.adv_std = "sample"            # [C]
    c.scoring.adv_clip = 3.0                # [C]
    c.scoring.adv_boost_value = 0.0         # [C] release-only boost; off (paper-faithful)
    c.loss = ml_collections.ConfigDict()
    c.loss.clip_low = 0.2             # [C]
    c.loss.clip_high = 0.28           # [C]
    c.loss.dual_clip = 10.0           # [C]
    c.loss.kl_coef = 1e-4             # [C] k2 against the initial policy
    c.loss.kl_type = "k2"             # [C]
    c.loss.loss_agg = "token-mean"    # [C]
    c.rollout = ml_collections.ConfigDict()
    c.rollout.env = "qa"              # QA/ToolScale mixture: run one config per source
    c.rollout.tasks = ""              # a QA JSONL (e.g. GeneralThought subset); "" = FRAMES
    c.rollout.engine = "sglang"
    c.rollout.sglang_urls = ""        # comma-separated; or sglang_server to launch them
    c.rollout.sglang_request_timeout_s = 1800.0
    c.rollout.expert_specs = "configs/experts.json"   # OpenAI-compatible expert endpoints
    c.rollout.mapping = "sampled"     # [P] random alias -> model draw per task
    c.rollout.pricing = "sampled"     # [P] random provider price sheet per task
    c.rollout.tool_subset = "random"  # [P] random tool subset per task
    c.rollout.preference = "train"    # [P] a sampled (instruction, P) pair per task
    c.rollout.search_backend = "local_then_web"
    c.rollout.max_turns = 50          # [P]
    c.rollout.max_prompt_tokens = 24_000   # [P]
    c.rollout.max_new_tokens_per_turn = 8_000   # [P]
    c.rollout.max_context = 32_768
    c.rollout.temperature = 1.0       # [C]
    c.rollout.strip_thinking = False  # True drops earlier turns' <think> (needs unit "turn")
    return c

"""FRAMES evaluation (also HLE / GeneralThought: --config.benchmark=hle --config.tasks=FILE).

Run:  .venv/bin/python experiments/evaluate.py --config=configs/eval_frames.py \
          --config.out=DIR [--config.limit=N] [--config.tasks=FILE]
      e.g. the paper's setting: --config.policy=/ckpt/Orchestrator-8B --config.model_label=Orchestrator-8B
           --config.expert_specs=experts.json --config.judge=gpt-5 --config.index_dir=runs/index/wiki
Expect: DIR/records.jsonl (one line per question: judged outcome, cost in USD, latency in s, calls
per alias / model / basic tool, tokens), DIR/summary.json, DIR/viewer.html. With the defaults (a
random tiny Qwen3 as policy, experts and judge; FAISS over the bundled mini corpus) 2 questions take
~1-2 min on 2 CPU cores and score 0 (the random policy writes no valid call). Re-running resumes.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.benchmark = "frames"               # frames | hle | generalthought (the last two: tasks=FILE)
    c.tasks = ""                         # "" = ../shared/data/frames/frames.jsonl
    c.limit = 2                          # 0 = all
    c.num_trials = 1
    c.out = "runs/eval/frames"
    c.method = "orchestrator"            # orchestrator | llm_orchestrator | basic_tools | no_tool
    c.model_label = "ours"
    c.policy = "preset:tiny-hd128"       # HF checkpoint dir | training workdir | preset:<name>
    c.engine = "local"
    c.sglang_urls = ""
    c.max_context = 32768
    c.seed = 0
    c.tool_config = "paper_eval"         # paper_eval | unseen (Table 2)
    c.prices = "paper_eval"              # paper_eval | unseen_deepinfra (Table 4)
    c.policy_price_model = "Qwen/Qwen3-8B"   # [C]
    c.expert_specs = ""
    c.local_experts = "policy"
    c.local_expert_max_new_tokens = 32   # [ours] CPU cap
    c.judge = "policy"                   # [C] gpt-5 judge; here policy | ckpt | spec name | none
    c.judge_max_new_tokens = 64
    c.index_dir = ""                     # a saved LocalSearchIndex; "" = build from corpus
    c.corpus = ""                        # corpus JSONL; "" = the bundled mini corpus
    c.search_backend = "local"           # local | web | local_then_web
    c.top_k_docs = 5
    c.search_once = True                 # [C] FRAMES eval drops search once documents exist
    c.answer_requires_documents = True   # [C] tools.json
    c.preference_set = ""
    c.max_turns = 3                      # [ours] CPU demo value; paper 50
    c.max_prompt_tokens = 24000          # [P]
    c.max_new_tokens_per_turn = 32       # [ours] CPU demo value; paper 8000
    c.temperature = 0.0                  # [P]
    c.top_p = 1.0
    c.observation_role = "user"          # [P]
    c.turn_timeout_s = 600.0
    c.episode_timeout_s = 3600.0
    c.concurrency = 2
    c.progress = True
    return c

"""QA rollouts (FRAMES by default): policy episodes over search / enhance_reasoning / answer.

Run:  .venv/bin/python experiments/rollout_qa.py --config=configs/rollout_qa.py
      (e.g. --config.policy_checkpoint=/path/Qwen3-8B --config.limit=50
       --config.index_dir=runs/index/wiki --config.expert_specs=experts.json
       --config.judge=gpt-5 --config.out=runs/rollout_qa/frames.jsonl)
Expect: with the defaults (a random tiny Qwen3 with the real 151,936-token vocab, every expert alias
served by that same model in-process — the release's "basic tools" ablation — and the bundled
mini corpus) 4 FRAMES questions run in ~1-3 min on 2 CPU cores; the random policy mostly writes
malformed turns, so expect finish reasons "max_turns" and accuracy 0. Each task gets its own
randomised setup (mapping / price sheet / tool subset / a train-split preference appended to the
question; see orchestra_jax/rollout/build.py). One JSON line per episode (tokens, loss mask,
rollout log-probs, turns, paper-keyed tool counts, cost, latency, grade, P, mapping, price-sheet
id, engine, log-prob convention, infra_error) is appended to ``out`` as soon as it finishes, then
a summary is printed. Every key here is a RolloutSpec field except ``group_size`` and ``out``.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # tasks: JSONL rows {"id", "question", "answer"}; "" = FRAMES from ../shared/data
    c.tasks = ""
    c.limit = 4
    # policy: "" = random tiny Qwen3 preset below, else a HF checkpoint dir (tokenizer from it too)
    c.policy_checkpoint = ""
    c.tiny_preset = "tiny-hd128"
    c.seed = 0
    c.max_context = 4096                 # engine context (tokens)
    # experts: "" = every concrete model served by the policy model in-process (LocalChatModel);
    # else a JSON file {model name: ExpertConfig fields} for OpenAI-compatible servers
    c.expert_specs = ""
    c.local_expert_max_new_tokens = 32   # cap for in-process experts (CPU)
    # per-task randomisation (paper §5.4; distributions are ours, see rollout/build.py)
    c.mapping = "paper_eval"             # paper_eval | unseen | sampled | sampled_counts
    c.pricing = "configs/pricing/paper_eval.json"   # a sheet, or "sampled" (provider sheets)
    c.tool_subset = "all"                # all | random (answer always kept)
    c.preference = "train"               # none | default | train | test (instruction + P)
    c.engine = "local"                   # local (in-process JAX) | sglang
    c.sglang_urls = []                   # engine=sglang: running servers, else launch from:
    c.sglang_server = {}                 # a launcher config dict (configs/sglang_*.py fields)
    c.sglang_num_servers = 1
    c.search_backend = "local"           # local | web | local_then_web
    c.index_dir = ""                     # "" = build from the bundled mini corpus
    c.top_k_docs = 3
    # release rules (off = the paper's training loop): FRAMES eval drops search once a document
    # is retrieved; tools.json forbids answer while no document is retrieved
    c.search_once = False
    c.answer_requires_documents = False
    c.judge = ""                         # "" = exact match only; else a model name in expert_specs
    # episode (paper: 50 turns, 24k prompt, 8k per turn, temperature 1.0)
    c.max_turns = 3
    c.max_prompt_tokens = 3800
    c.max_new_tokens_per_turn = 48
    c.temperature = 1.0
    c.observation_role = "user"          # user (paper) | tool (Qwen3 <tool_response>)
    c.strip_thinking = False             # Qwen3-style prompts without earlier <think> (turn unit)
    c.policy_model = "Qwen/Qwen3-8B"     # the orchestrator's price in the episode's sheet [C]
    c.concurrency = 2
    c.group_size = 1                     # rollouts per task (GRPO group)
    c.out = "runs/rollout_qa/trajectories.jsonl"
    return c

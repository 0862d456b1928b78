"""Write LLM-as-tool capability descriptions the paper's way (§3.1; paper_spec §2.5).

For each expert model: sample `n_tasks` training tasks (seeded), run the model on them with the
answer meta-tool's prompt, score each by normalised exact match against the reference, then ask
the `describer` LLM to write a capability profile from the instructions, the model's responses and
whether it succeeded. Prices/latencies are not part of the text (the meta-tool table adds them).

Run (every endpoint is OpenAI-compatible: vLLM / SGLang / sglang-jax / an API):
  .venv/bin/python experiments/describe_models.py --config=configs/describe_models.py \
    --config.experts_json='{"Qwen/Qwen3-32B": {"base_url": "http://127.0.0.1:30000/v1"}}' \
    --config.describer.base_url=https://api.openai.com/v1 --config.describer.model=gpt-5 \
    --config.describer.api_key_env=OPENAI_API_KEY
Expect: one line per model ("Qwen/Qwen3-32B: 4/10 correct, mean latency 3.2 s") and
`out_path` in the configs/model_descriptions.json format (role "answer" and "default" text, measured
average latency); merge entries you like into configs/model_descriptions.json by hand.
"""
import ml_collections

DESCRIBER_PROMPT = (
    "You are writing the description of a language model that another AI (an orchestrator) will "
    "read when deciding which model to call as a tool. Below are {n} tasks the model was given, "
    "its responses, and whether each final answer was correct.\n\n{trajectories}\n\n"
    "Write 1-3 sentences describing the model's capabilities: the domains and task types it "
    "handles well, where it fails, and how reliable it is. Write in the third person without "
    "naming the model, starting with a verb phrase (for example 'can solve ...' or "
    "'demonstrates ...'). Output only the description inside <description></description>.")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.tasks_path = "../shared/data/frames/frames.jsonl"  # JSONL with question/answer fields
    c.question_key = "question"
    c.answer_key = "answer"
    c.n_tasks = 10
    c.seed = 0
    # {model name: ExpertConfig fields (base_url, model, api_key_env, timeout_s, max_retries)}
    c.experts_json = "{}"
    c.describer = ml_collections.ConfigDict({"base_url": "", "model": "", "api_key_env": "",
                                             "timeout_s": 300.0, "max_retries": 2})
    c.prompt = DESCRIBER_PROMPT
    c.max_tokens = 2048
    c.describer_max_tokens = 512
    c.temperature = 0.0
    c.response_chars = 1500      # each response is cut to this many characters for the describer
    c.out_path = "runs/model_descriptions.generated.json"
    return c

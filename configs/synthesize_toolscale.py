"""ToolScale domain synthesis (paper §3.3 / App. I).

    .venv/bin/python experiments/synthesize_toolscale.py --config=configs/synthesize_toolscale.py \
        --config.domain=bank --config.driver=programmatic --config.num_tasks=20 --config.out=/tmp/bank

Writes OUT/{db.json, policy.md, tools.json, tasks.json, split_tasks.json, synthesis_report.json};
`orchestra_jax.envs.tau2.load_domain(OUT)` loads it. Programmatic driver: no model, ~5-30 s of
CPU per domain for 20 tasks (the DB size dominates: bank's 1.6 MB DB is the slowest). LLM
driver (`--config.driver=llm --config.base_url=http://HOST:PORT/v1 --config.model=NAME`): any
OpenAI-compatible server; resumable (OUT/journal.jsonl), invalid outputs counted and dropped.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.domain = "bank"              # seed ToolScale domain (db.json + policy.md) / name of the output domain
    c.source = ""                  # seed dir or name; default = domain
    c.out = ""                     # required: output domain folder
    c.driver = "programmatic"      # programmatic | llm
    c.num_tasks = 20
    c.seed = 0
    c.oversample = 2               # [ours] candidates per requested task
    c.evolve_fraction = 0.5        # [ours] share of candidates made harder (paper Table 13)
    c.evolve_rounds = 1            # [P] Fig. 4 "x n" (n not given)
    c.max_tools = 25               # [P] Table 5: 14-25 tools per domain
    # LLM driver ([C] the release used GPT-5 / o3; any OpenAI-compatible endpoint works)
    c.base_url = ""
    c.model = ""
    c.api_key_env = ""
    c.temperature = 1.0
    c.max_tokens = 1024
    c.max_retries = 2              # [ours] re-asks after an invalid output, then dropped
    c.timeout_s = 120.0
    c.llm_num_intents = 8
    c.llm_validate_sample = 8      # [ours] entries the LLM validator checks (paper Table 9)
    c.llm_tools_fallback = True    # [ours] no valid LLM tools -> schema-derived tools
    return c

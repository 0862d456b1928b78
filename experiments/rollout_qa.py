"""Runs QA episodes (FRAMES by default) and writes trajectory JSONL (config: configs/rollout_qa.py)."""
import asyncio
import json
import pathlib
import time

from absl import app
from ml_collections import config_flags

from orchestra_jax.chat.assembly import ContextLimits
from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.envs.qa import QAEnv, load_frames, load_qa_jsonl
from orchestra_jax.rollout.episode import EpisodeConfig
from orchestra_jax.rollout.local_engine import LocalJaxEngine
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.runner import run_episodes, summarize
from orchestra_jax.rollout.trajectory import TrajectoryWriter
from orchestra_jax.tools.aliases import ModelMapping
from orchestra_jax.tools.llm_client import build_expert_clients
from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
from orchestra_jax.tools.pricing import PriceSheet
from orchestra_jax.tools.retrieval import LocalSearchIndex

_CONFIG = config_flags.DEFINE_config_file("config", "configs/rollout_qa.py")
MINI_CORPUS = pathlib.Path(__file__).resolve().parents[1] / "orchestra_jax/tools/data/mini_corpus.jsonl"


def build_policy(c):
    import jax
    from orchestra_jax.models import init_params, load_hf_checkpoint, presets
    if c.policy_checkpoint:
        config, params = load_hf_checkpoint(c.policy_checkpoint)
        return config, params, load_tokenizer(c.policy_checkpoint)
    config = presets[c.tiny_preset]
    return config, init_params(config, jax.random.key(c.seed)), load_tokenizer()


def main(argv) -> None:
    del argv
    c = _CONFIG.value
    t0 = time.perf_counter()
    tasks = load_qa_jsonl(c.tasks, c.limit) if c.tasks else load_frames(limit=c.limit)
    config, params, tok = build_policy(c)
    engine = LocalJaxEngine(config, params, max_context=c.max_context, seed=c.seed)
    prices = PriceSheet.load(c.pricing)
    mapping = {"paper_eval": ModelMapping.paper_eval, "unseen": ModelMapping.unseen,
               "sampled": lambda: ModelMapping.sample(c.seed)}[c.mapping]()
    if c.expert_specs:
        experts = build_expert_clients(json.loads(pathlib.Path(c.expert_specs).read_text()),
                                       prices=prices)
    else:
        local = LocalChatModel(engine, tok, model="policy-self",
                               max_new_tokens_cap=c.local_expert_max_new_tokens, seed=c.seed)
        experts = {m: local for m in mapping.models()}
    judge = experts[c.judge] if c.judge else None
    index = LocalSearchIndex.load(c.index_dir) if c.index_dir else LocalSearchIndex.build(MINI_CORPUS)
    tk_cfg = QAToolkitConfig(top_k_docs=c.top_k_docs, search_once=c.search_once,
                             answer_requires_documents=c.answer_requires_documents)
    print(f"setup {time.perf_counter() - t0:.1f}s: {len(tasks)} tasks, policy "
          f"{c.policy_checkpoint or c.tiny_preset}, experts "
          f"{'remote' if c.expert_specs else 'in-process'}")

    def env_for(task):
        return lambda: QAEnv(task, QAToolkit(mapping=mapping, experts=experts, prices=prices,
                                             index=index, config=tk_cfg), judge=judge)

    ep = EpisodeConfig(max_turns=c.max_turns, temperature=c.temperature,
                       observation_role=c.observation_role, seed=c.seed,
                       limits=ContextLimits(max_prompt_tokens=c.max_prompt_tokens,
                                            max_new_tokens_per_turn=c.max_new_tokens_per_turn))
    with TrajectoryWriter(c.out) as writer:
        trajs = asyncio.run(run_episodes(engine, tok, [env_for(t) for t in tasks], ep,
                                         concurrency=c.concurrency, writer=writer))
    for t in trajs:
        print(f"{t.task_id}: {t.finish_reason}, {t.num_turns} turns, {len(t.tokens)} tokens "
              f"({t.num_policy_tokens} policy), correct={t.correct}, ${t.cost_usd:.6f}, "
              f"tools {t.latency_s:.1f}s" + (f", error: {t.error}" if t.error else ""))
    print(json.dumps(summarize(trajs), indent=1))
    print(f"wrote {len(trajs)} trajectories to {c.out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    app.run(main)

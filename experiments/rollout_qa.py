"""Runs QA episodes (FRAMES by default) and writes trajectory JSONL (config: configs/rollout_qa.py).

All wiring (engine, tokenizer, experts, judge, index, per-task randomisation) is
orchestra_jax.rollout.build; this script only loops over tasks and groups.
"""
import asyncio
import json
import random
import time

from absl import app
from ml_collections import config_flags

from orchestra_jax.data.preferences import TemplatePreferences
from orchestra_jax.rollout.build import build_rollout
from orchestra_jax.rollout.runner import run_episodes, summarize
from orchestra_jax.rollout.trajectory import TrajectoryWriter

_CONFIG = config_flags.DEFINE_config_file("config", "configs/rollout_qa.py")


def main(argv) -> None:
    del argv
    c = _CONFIG.value
    t0 = time.perf_counter()
    parts = build_rollout(c, preferences=TemplatePreferences())
    try:
        tasks = parts.load_tasks()
        rng = random.Random(c.seed)
        envs, metas = [], []
        for i, task in enumerate(tasks):
            setup = parts.randomise(rng)
            e, m = parts.group(task, setup, group_id=f"{task.get('id', i)}", size=c.group_size)
            envs += e
            metas += m
        print(f"setup {time.perf_counter() - t0:.1f}s: {len(tasks)} tasks x {c.group_size}, "
              f"engine {parts.engine.name if hasattr(parts.engine, 'name') else type(parts.engine).__name__}, "
              f"experts {'remote' if c.expert_specs else 'in-process'}")
        with TrajectoryWriter(c.out) as writer:
            trajs = asyncio.run(run_episodes(parts.engine, parts.tokenizer, envs,
                                             parts.episode_config, concurrency=c.concurrency,
                                             writer=writer, metas=metas))
    finally:
        parts.close()
    for t in trajs:
        print(f"{t.task_id}[{t.rollout_index}]: {t.finish_reason}, {t.num_turns} turns, "
              f"{len(t.tokens)} tokens ({t.num_policy_tokens} policy), correct={t.correct}, "
              f"${t.cost_usd:.6f}, tools {t.latency_s:.1f}s, pref {t.preference_kind or '-'}"
              + (f", infra: {t.infra_reason}" if t.infra_error else "")
              + (f", error: {t.error}" if t.error else ""))
    print(json.dumps(summarize(trajs), indent=1))
    print(f"wrote {len(trajs)} trajectories to {c.out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    app.run(main)

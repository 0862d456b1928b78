"""Rollout-loop overhead (config: configs/bench_rollout.py) and the GRPO step's time split.

Overhead: ``rollout.runner.run_episodes`` (the episode loop: chat template, token assembly,
tool-call parsing, asyncio runner) over envs whose tools answer instantly, vs *pure generation
of the same tokens by the same engine*: every ``generate`` call the episodes made is recorded
(prompt ids + sampling params) and replayed, the calls of one turn index concurrently so the
engine batches them as it did in the episodes. Greedy decoding, so the replay produces exactly
the same tokens (checked). Overhead = episodes time / replay time - 1, interleaved in one run.

GRPO split: a tiny ``experiments/train_grpo.py`` run (configs/grpo_cpu_demo.py, a few steps) in
a subprocess; the per-phase seconds (``time/rollout_s``, ``time/scoring_s``, ``time/update_s``,
``time/sync_s``) are read from its ``metrics.jsonl``.
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_util as bu  # noqa: E402

import jax  # noqa: E402

from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep  # noqa: E402

_TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "Look a fact up.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}


class InstantToolEnv:
    """An env whose tool answers instantly: every turn gets one fixed observation back; the
    episode ends at the loop's ``max_turns`` (or the context limit)."""

    def __init__(self, i: int):
        self.task_id = f"bench-{i}"
        self.tool_names = ["lookup"]
        self.i = i

    async def reset(self) -> EnvStart:
        return EnvStart(messages=[
            {"role": "system", "content": "You answer questions using the lookup tool."},
            {"role": "user", "content": f"Question {self.i}: what is the capital of country "
                                        f"number {self.i}?"}], tools=[_TOOL])

    async def step(self, turn) -> EnvStep:
        return EnvStep(observations=[f"lookup result {self.i}: nothing found"], latency_s=0.0)

    async def finish(self, finish_reason: str) -> EnvOutcome:
        return EnvOutcome(reward=0.0, correct=False)


class RecordingEngine:
    """Proxies an engine and records every ``generate`` call (prompts, sampling params)."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[list[list[int]], object, int]] = []
        self.outputs: list[list[list[int]]] = []
        self.version = getattr(engine, "version", None)

    async def generate(self, prompts, params):
        self.calls.append(([list(p) for p in prompts], params, id(asyncio.current_task())))
        out = await self.engine.generate(prompts, params)
        self.outputs.append([list(o.token_ids) for o in out])
        return out


def _turn_groups(calls) -> list[list[int]]:
    """Call indices grouped by turn: the i-th call of each episode (calls carry the id of the
    asyncio task — one per episode — that made them)."""
    groups: list[list[int]] = []
    seen: dict[int, int] = {}
    for k, (_, _, task) in enumerate(calls):
        turn = seen.get(task, 0)
        seen[task] = turn + 1
        while len(groups) <= turn:
            groups.append([])
        groups[turn].append(k)
    return groups


def bench_overhead(cfg) -> dict:
    from orchestra_jax.chat.assembly import ContextLimits
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.episode import EpisodeConfig
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    from orchestra_jax.rollout.runner import run_episodes

    config = presets[cfg.preset].replace(dtype="float32")
    params = init_params(config, jax.random.key(0))
    tok = load_tokenizer()
    engine = LocalJaxEngine(config, params, max_batch=int(cfg.episodes))
    ep_cfg = EpisodeConfig(max_turns=int(cfg.max_turns), temperature=0.0,
                           limits=ContextLimits(max_prompt_tokens=int(cfg.max_prompt_tokens),
                                                max_new_tokens_per_turn=int(cfg.new_tokens)),
                           turn_timeout_s=None, episode_timeout_s=None)
    n = int(cfg.episodes)
    rec = RecordingEngine(engine)
    state = {}

    def episodes():
        rec.calls.clear()
        rec.outputs.clear()
        state["trajs"] = asyncio.run(run_episodes(
            rec, tok, [InstantToolEnv(i) for i in range(n)], ep_cfg, concurrency=n,
            progress=False))
        state["calls"] = list(rec.calls)
        state["outputs"] = list(rec.outputs)

    episodes()   # records the calls the replay will make
    groups = _turn_groups(state["calls"])

    def replay():
        async def go():
            outs = {}
            for g in groups:
                res = await asyncio.gather(*(engine.generate(*state["calls"][k][:2]) for k in g))
                for k, r in zip(g, res):
                    outs[k] = [list(o.token_ids) for o in r]
            return outs
        state["replay"] = asyncio.run(go())

    times = bu.interleave({"episodes": episodes, "replay": replay}, int(cfg.repeats))
    same = all(state["replay"][k] == state["outputs"][k] for k in range(len(state["outputs"])))
    gen_tokens = sum(len(o) for outs in state["outputs"] for o in outs)
    t_e, t_r = bu.med(times["episodes"]), bu.med(times["replay"])
    out = {"episodes": n, "engine_calls": len(state["calls"]), "turn_groups": len(groups),
           "generated_tokens": gen_tokens, "episodes_s": t_e, "replay_s": t_r,
           "overhead": t_e / t_r - 1.0, "same_tokens": same, "times": times,
           "turns_per_episode": sum(len(t.turns) for t in state["trajs"]) / max(n, 1),
           "finish_reasons": sorted({t.finish_reason for t in state["trajs"]})}
    if cfg.profile:
        out["python_profile"] = bu.python_profile(episodes, top=int(cfg.profile_top))
    return out


def bench_grpo_split(cfg) -> dict:
    """Runs a tiny GRPO training (subprocess) and reads the per-phase seconds per step."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    cmd = [sys.executable, str(bu.REPO / "experiments" / "train_grpo.py"),
           f"--config={bu.REPO / cfg.grpo_config}", f"--workdir={work}",
           f"--config.total_steps={int(cfg.grpo_steps)}", "--config.checkpoint_every=1000",
           "--config.export_hf=False", "--config.save_trajectories=False"]
    cmd += [f"--config.{k}={v}" for k, v in dict(cfg.grpo_overrides).items()]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=str(bu.REPO), capture_output=True, text=True,
                           timeout=float(cfg.grpo_timeout_s))
        if p.returncode != 0:
            return {"grpo_error": f"train_grpo.py exited {p.returncode}: "
                                  f"{(p.stderr or p.stdout)[-600:]}"}
        rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    except subprocess.TimeoutExpired:
        return {"grpo_error": f"train_grpo.py did not finish in {cfg.grpo_timeout_s} s"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    steps = [r for r in rows if "time/rollout_s" in r]
    if not steps:
        return {"grpo_error": f"no step rows with time/* in metrics.jsonl ({len(rows)} rows)"}
    phases = ("rollout", "scoring", "update", "sync")
    tot = {ph: sum(float(r.get(f"time/{ph}_s", 0.0)) for r in steps) for ph in phases}
    all_s = sum(tot.values())
    return {"grpo_steps": len(steps), "grpo_wall_s": time.perf_counter() - t0,
            "grpo_split_s": {ph: tot[ph] / len(steps) for ph in phases},
            "grpo_split_share": {ph: (tot[ph] / all_s if all_s else 0.0) for ph in phases},
            "grpo_skipped_steps": sum(1 for r in steps if r.get("skipped")),
            "grpo_trained_tokens": sum(int(r.get("trained_tokens", 0)) for r in steps)}


def bench(cfg) -> dict:
    out = bench_overhead(cfg)
    if cfg.grpo:
        out.update(bench_grpo_split(cfg))
    return out


FIELDS = ("overhead", "same_tokens", "episodes_s", "replay_s", "generated_tokens")


def main(_):
    cfg = _CONFIG.value
    r = bench(cfg)
    print(f"rollout loop: {r['episodes']} episodes x {r['turns_per_episode']:.1f} turns, "
          f"{r['engine_calls']} engine calls, {r['generated_tokens']} tokens ({cfg.preset})")
    print(f"  episodes {r['episodes_s']:.3f} s vs replay of the same calls {r['replay_s']:.3f} s "
          f"-> overhead {100 * r['overhead']:.1f}% (same tokens: {r['same_tokens']})")
    for f in r.get("python_profile", [])[:6]:
        print(f"    {f['tot_s']:7.3f} s self  {f['cum_s']:7.3f} s cum  {f['frame']}")
    if "grpo_split_s" in r:
        s = r["grpo_split_s"]
        print(f"  GRPO step split over {r['grpo_steps']} steps (s/step): " +
              ", ".join(f"{k} {v:.2f}" for k, v in s.items()) +
              f"; skipped steps {r['grpo_skipped_steps']}")
    elif "grpo_error" in r:
        print(f"  GRPO split: {r['grpo_error']}")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags
    _CONFIG = config_flags.DEFINE_config_file("config", str(bu.REPO / "configs" /
                                                            "bench_rollout.py"))
    app.run(main)

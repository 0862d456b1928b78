"""GRPO end to end (issue: GRPO loop): one full step on 8 fake devices with real tools and a
real expert (FAISS search + SmolLM2-135M-Instruct), a failing expert that costs only the
affected episodes, records that carry everything, and train_grpo.py's exact resume after kill -9.

The policy in the in-process test writes scripted tool sequences (a random tiny policy never
writes a valid call) whose log-probs come from the real trainable model, so the update, the
weight sync and every metric are the real ones.
"""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable

REQUIRED = ("reward_mean", "accuracy", "cost_usd_mean", "latency_s_mean", "kl", "entropy",
            "pg_clipfrac_low", "pg_clipfrac_high", "logprob_gap", "loss", "grad_norm",
            "param_norm", "policy_version", "samples", "filter/groups_homogeneous",
            "filter/trajectories_infra_error", "finish/done", "context_finish_rate",
            "time/rollout_s", "time/update_s", "time/sync_s", "step_s", "tokens_per_s")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.envs.qa import load_qa_jsonl
    from orchestra_jax.models.gguf_io import load_gguf
    from orchestra_jax.rollout.local_engine import LocalJaxEngine
    from orchestra_jax.rollout.local_expert import LocalChatModel
    from orchestra_jax.tools.aliases import SMOLLM2
    from orchestra_jax.tools.llm_cache import CachedChatModel
    from orchestra_jax.tools.pricing import PriceSheet
    from orchestra_jax.tools.retrieval import LocalSearchIndex
    from orchestra_jax.train import demo
    d = tmp_path_factory.mktemp("grpo")
    cfg = demo.DemoConfig(workdir=str(d), num_lookup=6, seq_len=1024, concurrency=8,
                          max_turns=3)
    paths = demo.write_demo_data(d / "data", seed=0, num_lookup=6)
    e_cfg, e_params, info = load_gguf(scan_layers=True)
    engine = LocalJaxEngine(e_cfg, e_params, max_context=2048, max_batch=8, pad_batch=True)
    expert = CachedChatModel(LocalChatModel(engine, info.load(), model=SMOLLM2,
                                            max_new_tokens_cap=24),
                             model=SMOLLM2, path=d / "expert_cache.jsonl")
    return demo.Shared(paths=paths, train=load_qa_jsonl(paths["train"]),
                       heldout=load_qa_jsonl(paths["heldout"]),
                       index=LocalSearchIndex.build(paths["corpus"]), expert=expert,
                       prices=PriceSheet.load("paper_eval"), tokenizer=load_tokenizer(), cfg=cfg)


class _FlakyExpert:
    """Fault injection around the real expert: fails every call for one question while
    ``armed`` (a failing expert server, as the toolkit sees it)."""

    def __init__(self, inner, needle):
        self.inner, self.needle, self.armed, self.failed = inner, needle, True, 0
        self.model = inner.model

    async def chat(self, messages, **kw):
        from orchestra_jax.tools.llm_client import ExpertError
        if self.armed and any(self.needle in m.get("content", "") for m in messages):
            self.failed += 1
            raise ExpertError("expert server unavailable (injected)", model=self.model)
        return await self.inner.chat(messages, **kw)


def test_one_grpo_step_on_8_devices(shared, tmp_path):
    import jax
    from orchestra_jax.rl.losses import PPOLossConfig
    from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine
    from orchestra_jax.rollout.trajectory import read_trajectories
    from orchestra_jax.tools.aliases import SMOLLM2
    from orchestra_jax.train import demo, grpo_loop, runtime
    from orchestra_jax.train.grpo_scoring import ScoringConfig
    from orchestra_jax.train.metrics import read_metrics
    assert len(jax.devices()) == 8
    tasks = [t for t in shared.train if t["kind"] == "lookup"][:2] + \
            [t for t in shared.train if t["kind"] == "known"][:1]
    flaky = _FlakyExpert(shared.expert, tasks[2]["question"])
    rng = random.Random(0)

    def script(prompt, i):
        text = shared.tokenizer.decode(prompt[-400:])
        if "Found" in text or "No new documents" in text:
            return demo.ANSWER
        return demo.SEARCH if rng.random() < 0.5 else demo.ANSWER

    class Trainable(ScriptedPolicyEngine):
        version = 0
        name, logprob_convention = "ScriptedPolicyEngine", "pre_temperature"

        def update_params(self, params):
            self.params = params
            self.version += 1

    engines = []

    def build(engine, tok):
        eng = Trainable(engine.config, engine.params, script, tok)
        engines.append(eng)
        parts = demo.make_parts(shared, eng, shared.cfg, prefer_fraction=0.5)
        parts.experts = {SMOLLM2: flaky}
        parts.shared = shared
        parts.load_tasks = lambda: tasks
        return parts

    steps_seen = []

    def on_step(n, row):
        steps_seen.append(row)
        flaky.armed = False          # the failure hits step 1 only

    cfg = grpo_loop.GRPOConfig(
        rollout=tuple(sorted(__import__("dataclasses").asdict(demo.spec(shared.cfg)).items())),
        total_steps=2, tasks_per_step=3, group_size=4, scoring=ScoringConfig(unit="turn"),
        loss=PPOLossConfig(kl_coef=1e-3), mini_batch_samples=64, rows=8, seq_len=1024,
        chunk_size=128, checkpoint_every=1, concurrency=8, seed=0, mesh=(1, 8, 1),
        policy=runtime.PolicySource(preset="tiny-h64"), export_hf=False)
    grpo_loop.run_grpo(cfg, str(tmp_path / "run"), build_parts=build, on_step=on_step)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
    # the injected failure: its episodes are infra errors, out of the statistics, step 1 only
    assert flaky.failed > 0
    assert rows[0]["filter/trajectories_infra_error"] == 4
    assert rows[1]["filter/trajectories_infra_error"] == 0
    # an update happened on at least one step: params moved, the engine's version increments
    updated = [r for r in rows if r.get("updates")]
    assert updated, rows
    assert all(r["update_norm"] > 0 for r in updated)
    assert engines[0].version == len(updated)
    assert [r["policy_version"] for r in rows] == list(
        np.cumsum([1 if r.get("updates") else 0 for r in rows]))
    # records carry the run metadata
    trajs = list(read_trajectories(tmp_path / "run" / "trajectories" / "step_00001.jsonl"))
    assert len(trajs) == 12
    for t in trajs:
        assert t.group_id and t.rollout_index is not None
        assert t.preference is not None and len(t.preference) == len(t.tool_names) + 3
        assert t.model_mapping == {"search-1": SMOLLM2, "answer-1": SMOLLM2}
        assert t.price_sheet_id and t.sampling and t.engine == "ScriptedPolicyEngine"
        assert t.logprob_convention == "pre_temperature"
        assert all(turn.policy_version == 0 for turn in t.turns)
    bad = [t for t in trajs if t.task_id == tasks[2]["id"]]
    assert bad and all(t.infra_error for t in bad)
    prefs = {t.preference_instruction for t in trajs}
    assert "" in prefs or len(prefs) >= 1


@pytest.fixture(scope="module")
def sft_policy(sft_trained):
    """A tiny policy warm-started by train_sft.py on recorded demonstrations (conftest)."""
    return sft_trained / "hf"


def _grpo(workdir, ckpt, cache, steps=2):
    return [PY, "experiments/train_grpo.py", "--config=configs/grpo_cpu_demo.py",
            f"--workdir={workdir}", f"--config.policy.checkpoint={ckpt}",
            f"--config.total_steps={steps}", "--config.tasks_per_step=2",
            "--config.group_size=4", "--config.checkpoint_every=1", "--config.eval_limit=2",
            "--config.seq_len=1024", "--config.rollout.max_prompt_tokens=1024",
            "--config.rollout.max_context=1100", "--config.rollout.max_turns=3",
            "--config.rollout.local_expert_max_new_tokens=24",
            f"--config.rollout.expert_cache={cache}"]


def _stable(row):
    skip = ("step_s", "tokens_per_s", "time/", "latency")
    return {k: v for k, v in row.items() if not any(s in k for s in skip)}


@pytest.mark.timeout(1800)   # may include conftest's sft_trained run (first user)
def test_train_grpo_resumes_exactly_after_kill9(sft_policy, tmp_path):
    """On one CPU device (the 8-device step is test_one_grpo_step_on_8_devices)."""
    from multiprocess_util import one_device_env
    from orchestra_jax.train.metrics import read_metrics
    env = one_device_env()
    cache = tmp_path / "expert_cache.jsonl"
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = subprocess.run(_grpo(ref, sft_policy, cache), cwd=ROOT, capture_output=True, text=True,
                       timeout=1500, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen(_grpo(cut, sft_policy, cache), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 900
    while time.time() < deadline:
        f = cut / "metrics.jsonl"
        steps = [x["step"] for x in read_metrics(f)] if f.exists() else []
        if steps and max(steps) >= 1:
            break
        if p.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    r = subprocess.run(_grpo(cut, sft_policy, cache), cwd=ROOT, capture_output=True, text=True,
                       timeout=1500, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_metrics(ref / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert [x["step"] for x in a] == [x["step"] for x in b] == [0, 1, 2]
    for ra, rb in zip(a, b):
        assert _stable(ra) == _stable(rb), (ra, rb)
    assert any(x.get("updates") for x in a[1:]), "no step updated the policy"

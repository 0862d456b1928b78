"""Evaluation runner end to end with a tiny random Qwen3 checkpoint (written by
save_hf_checkpoint) as the method, user simulator, experts and judge:

* tau2 airline via experiments/evaluate.py (the command-line contract), killed with SIGKILL after
  its first record, then re-run: it resumes, writes one record per task with every field and no
  duplicates, and the first record is not redone; make_tables.py renders from the records;
* FRAMES with local retrieval (FAISS over the bundled corpus) and the local judge: a scripted
  policy (real model log-probs) calls search then answer, the tiny model writes the query and the
  answer, the judge grades it.

The checkpoint is 1 layer / 1 head so the ~4.5k-token airline prompt prefills in seconds on CPU;
a shared JAX compilation cache lets the resumed process skip recompiling.
"""
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import pytest

from orchestra_jax.eval.records import RECORD_FIELDS, load_records, load_trajectories
from orchestra_jax.eval.runner import EvalSpec, evaluate
from orchestra_jax.models import init_params, presets, save_hf_checkpoint

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[1]
AIRLINE = REPO.parent / "shared" / "data" / "tau2" / "domains" / "airline" / "tasks.json"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    cfg = dataclasses.replace(presets["tiny-hd128"], num_layers=1, num_heads=1, num_kv_heads=1,
                              head_dim=64, hidden_size=64, intermediate_size=128,
                              max_position_embeddings=32768)
    d = tmp_path_factory.mktemp("ckpt")
    save_hf_checkpoint(cfg, init_params(cfg, jax.random.key(0)), d)
    return d


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def _cmd(ckpt, tasks, out):
    return [sys.executable, "experiments/evaluate.py", "--config=configs/eval_tau2.py",
            "--config.domain=airline", f"--config.tasks={tasks}", f"--config.out={out}",
            "--config.limit=3", f"--config.policy={ckpt}", "--config.concurrency=1",
            "--config.max_turns=1", "--config.max_new_tokens_per_turn=8",
            "--config.user_max_new_tokens=8", "--config.progress=False"]


def test_tau2_airline_kill9_resume(ckpt, jax_cache, tmp_path):
    if not AIRLINE.is_file():
        pytest.fail(f"tau2 airline tasks not found at {AIRLINE}")
    tasks = tmp_path / "airline_tasks.json"
    chosen = json.loads(AIRLINE.read_text())[:3]
    tasks.write_text(json.dumps(chosen))
    keys = sorted(f"{t['id']}#0" for t in chosen)
    out = tmp_path / "run"
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(jax_cache))
    proc = subprocess.Popen(_cmd(ckpt, tasks, out), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    recs = out / "records.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if recs.is_file() and recs.read_text().count("\n") >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"run ended before the kill:\n{proc.stdout.read()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    first = recs.read_text().splitlines()
    assert 1 <= len(first) < 3, "the kill must interrupt the run"
    res = subprocess.run(_cmd(ckpt, tasks, out), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = recs.read_text().splitlines()
    assert lines[:len(first)] == first                   # not redone
    rows = [json.loads(x) for x in lines]
    assert sorted(r["key"] for r in rows) == keys        # one per task, no duplicates
    for r in rows:
        assert set(RECORD_FIELDS) <= set(r), set(RECORD_FIELDS) - set(r)
        assert r["benchmark"] == "tau2-airline" and r["method"] == "orchestrator"
        assert r["toolset"] == "full" and r["prices"] == "paper_eval"
        assert r["finish_reason"] == "max_turns" and r["outcome"] == 0.0 and not r["correct"]
        assert r["infra_error"] is None, r["infra_error"]
        assert r["cost_usd"] > 0 and r["tokens"]["policy_prompt"] > 1000
        assert r["user_cost_usd"] > 0                      # the local user simulator spoke
        assert set(r["tool_calls"]) >= {"get_reservation_details", "gpt-5", "Qwen/Qwen3-32B"}
        assert r["mapping"]["expert-1"] == "gpt-5"
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["pass_hat_k"] == {"1": 0.0}
    assert summary["resumed_skipped"] == len(first)
    trajs = load_trajectories(out)
    assert sorted({t["key"] for t in trajs}) == keys
    assert (out / "viewer.html").is_file()
    # the tables script renders from these records
    res = subprocess.run([sys.executable, "experiments/make_tables.py", f"--records={out}",
                          f"--out={tmp_path / 'tables'}"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| ours |" in (tmp_path / "tables" / "table16.md").read_text()
    # a different run into the same directory is refused, not mixed in
    with pytest.raises(ValueError, match="different run"):
        evaluate(EvalSpec(benchmark="tau2", domain="airline", tasks=str(tasks), out=str(out),
                          method="basic_tools", policy=str(ckpt), progress=False))


def test_frames_local_retrieval_and_local_judge(ckpt, tmp_path):
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import load_hf_checkpoint
    from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine

    tasks = tmp_path / "qa.jsonl"
    tasks.write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "question": "What is the capital city of Australia?", "answer": "Canberra"},
        {"id": "q2", "question": "Which planet is known as the Red Planet?", "answer": "Mars"}]))

    def call(name, **args):
        return ("<tool_call>\n" + json.dumps({"name": name, "arguments": args}) +
                "\n</tool_call><|im_end|>")

    def script(prompt, i):   # search first, then answer (the episode then ends)
        return call("answer", model="answer-4") if "Found " in tok.decode(prompt[-400:]) \
            else call("search", model="search-3")

    tok = load_tokenizer()
    cfg, params = load_hf_checkpoint(ckpt)
    engine = ScriptedPolicyEngine(cfg, params, script, tok)
    out = tmp_path / "frames"
    spec = EvalSpec(benchmark="frames", tasks=str(tasks), out=str(out), policy=str(ckpt),
                    judge="policy", judge_max_new_tokens=8, local_expert_max_new_tokens=8,
                    top_k_docs=2, max_turns=4, max_new_tokens_per_turn=64, concurrency=2,
                    answer_requires_documents=True, progress=False,
                    preference_set=str(REPO / "configs" / "preferences" / "eval_example.jsonl"))
    summary = evaluate(spec, policy_engine=engine)
    recs = {r["task_id"]: r for r in load_records(out)}
    assert set(recs) == {"q1", "q2"} and summary["n"] == 2
    for r in recs.values():
        assert r["finish_reason"] == "done", r["error"]
        assert r["basic_calls"]["local_search"] == 1
        # paper-keyed tool counts: the basic tool + the concrete model behind each alias
        assert r["tool_calls"]["local_search"] == 1 and r["tool_calls"]["Qwen/Qwen3-32B"] == 2
        assert r["model_calls"] == {"Qwen/Qwen3-32B": 2}     # query writer + answerer
        assert r["tokens"]["by_model"]["Qwen/Qwen3-32B"]["prompt_tokens"] > 0
        assert r["reference"] in ("Canberra", "Mars")
        assert r["preference"]["tool_names"] == list(r["tool_calls"])
        assert len(r["preference"]["vector"]) == len(r["tool_calls"]) + 3
    trajs = {t["task_id"]: t for t in load_trajectories(out)}
    for t in trajs.values():
        grade = t["info"]["grade"]
        # the tiny model's answer is not the reference: the local judge was asked (or the
        # answer was empty/invalid, which needs no judge)
        assert grade["method"] in ("judge", "invalid"), grade
        docs = t["turns"][0]["tool_results"][0]["extra"]["doc_ids"]
        assert len(docs) == 2                                  # FAISS top-k over the corpus
        user_msg = next(m for m in t["info"]["opening_messages"] if m["role"] == "user")
        assert user_msg["content"].endswith(recs[t["task_id"]]["preference"]["instruction"])
    assert any(t["info"]["grade"]["method"] == "judge" for t in trajs.values()) or all(
        not (t.get("answer") or "").strip() for t in trajs.values())

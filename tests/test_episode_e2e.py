"""End-to-end episodes with a tiny random Qwen3 (real 151,936-token vocab) through the real engine,
the real sandbox, real retrieval over the bundled mini corpus, and a tau2 airline task.

* scripted QA episode: ScriptedPolicyEngine (fixed turns, log-probs from the real model) runs
  search -> enhance_reasoning (the expert is the tiny model via LocalChatModel; its garbage code
  really runs in the sandbox) -> answer;
* random QA episode: the tiny model itself (LocalJaxEngine) until max turns / format errors;
* scripted airline episode with a ScriptedUser: gold actions -> tau2 reward 1.0;
* runner: concurrency, JSONL records, one failing episode isolated.
"""
import asyncio
import json
import pathlib

import jax
import numpy as np
import pytest

import orchestra_jax.tools as tools_pkg
from orchestra_jax.chat.assembly import ContextLimits
from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.envs.qa import QAEnv, grade_answer, load_frames, normalize_answer
from orchestra_jax.models import init_params, presets
from orchestra_jax.rollout.episode import EpisodeConfig, run_episode
from orchestra_jax.rollout.local_engine import LocalJaxEngine
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.runner import run_episodes, summarize
from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine, score_tokens
from orchestra_jax.rollout.trajectory import TrajectoryWriter, read_trajectories
from orchestra_jax.tools.aliases import ModelMapping
from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
from orchestra_jax.tools.pricing import PriceSheet, pricing_dir
from orchestra_jax.tools.retrieval import LocalSearchIndex

pytestmark = pytest.mark.slow

TASK = {"id": "qa-canberra", "question": "What is the capital city of Australia?",
        "answer": "Canberra"}


def call(name, **args):
    return ("<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"
            "<|im_end|>")


@pytest.fixture(scope="module")
def world():
    tok = load_tokenizer()
    cfg = presets["tiny-hd128"]
    assert cfg.vocab_size == 151936
    params = init_params(cfg, jax.random.key(0))
    engine = LocalJaxEngine(cfg, params, max_context=4096, seed=0)
    index = LocalSearchIndex.build(pathlib.Path(tools_pkg.__file__).parent / "data" /
                                   "mini_corpus.jsonl")
    return dict(tok=tok, cfg=cfg, params=params, engine=engine, index=index,
                prices=PriceSheet.load(pricing_dir() / "paper_eval.json"),
                mapping=ModelMapping.paper_eval())


def make_toolkit(w):
    plain = LocalChatModel(w["engine"], w["tok"], model="local-tiny", max_new_tokens_cap=16, seed=1)
    # Pre-filling "```python" makes the tiny model's garbage a code block the sandbox really runs.
    coder = LocalChatModel(w["engine"], w["tok"], model="local-tiny", max_new_tokens_cap=16,
                           response_prefix="```python\n", response_suffix="\n```", seed=2)
    experts = {m: plain for m in w["mapping"].models()}
    for alias in ("reasoner-1", "reasoner-2", "reasoner-3"):
        experts[w["mapping"].model_of(alias)] = coder
    cfg = QAToolkitConfig(expert_temperature=1.0, sandbox_timeout_s=20, search_max_tokens=16,
                          reasoner_max_tokens=16, answer_max_tokens=16, top_k_docs=3)
    return QAToolkit(mapping=w["mapping"], experts=experts, prices=w["prices"], index=w["index"],
                     config=cfg)


EP_CFG = EpisodeConfig(max_turns=6, limits=ContextLimits(max_prompt_tokens=3800,
                                                         max_new_tokens_per_turn=64),
                       turn_timeout_s=300, episode_timeout_s=900, seed=0)


def test_scripted_qa_episode_search_reason_answer(world, tmp_path):
    w = world
    script = ["<think>\nI need documents first.\n</think>\n\n" + call("search", model="search-3"),
              call("enhance_reasoning", model="reasoner-3"),
              call("answer", model="answer-4")]
    engine = ScriptedPolicyEngine(w["cfg"], w["params"], script, w["tok"])
    env = QAEnv(TASK, make_toolkit(w))
    traj = asyncio.run(run_episode(engine, w["tok"], env, EP_CFG))
    assert traj.error is None, traj.error
    traj.validate()
    assert traj.finish_reason == "done" and traj.num_turns == 3, [t.errors for t in traj.turns]
    assert traj.format_ok_all, [(t.errors, t.observations) for t in traj.turns]
    names = [t.calls[0]["name"] for t in traj.turns]
    assert names == ["search", "enhance_reasoning", "answer"]
    counts = dict(zip(traj.tool_names, traj.tool_counts))
    # paper-keyed counts: search-3 and answer-4 are both Qwen3-32B; search used the local index,
    # reasoner-3 (Qwen2.5-Coder-32B) the code interpreter
    assert {k: v for k, v in counts.items() if v} == {
        "local_search": 1, "code_interpreter": 1, "Qwen/Qwen3-32B": 2,
        "Qwen/Qwen2.5-Coder-32B-Instruct": 1}
    assert traj.info["alias_counts"] == {"search-3": 1, "reasoner-3": 1, "answer-4": 1}
    # search hit the real index: the Canberra document was retrieved
    search = traj.turns[0].tool_results[0]
    assert any("canberra" in d for d in search["extra"]["doc_ids"])
    assert "Canberra" in traj.turns[0].observations[0]
    # the local expert's code really ran in the sandbox (garbage -> an error, which is fine)
    reason = traj.turns[1].tool_results[0]
    assert reason["extra"]["executed"] is True and "Execution output" in reason["observation"]
    assert reason["extra"]["sandbox_seconds"] > 0
    # the episode's tokens: policy spans are exactly the scripted turns, log-probs are the model's
    tok = w["tok"]
    for t, text in zip(traj.turns, script):
        s, e = t.response_span
        assert traj.tokens[s:e] == tok.encode(text, add_special_tokens=False)
        assert traj.loss_mask[s:e] == [1] * (e - s)
        ref = score_tokens(w["cfg"], w["params"], traj.tokens[:s], traj.tokens[s:e])
        np.testing.assert_allclose(traj.rollout_logprobs[s:e], ref, atol=1e-5)
        assert all(lp < 0 for lp in traj.rollout_logprobs[s:e])
    assert traj.num_policy_tokens == sum(e - s for s, e in (t.response_span for t in traj.turns))
    # observations are user turns in the token stream
    text = tok.decode(traj.tokens)
    assert "<|im_start|>user\nSearch query:" in text
    # cost: policy tokens at $0.2/M + expert tokens + search + sandbox; latency = tool time
    policy_usd = sum((t.prompt_tokens + t.completion_tokens) * 0.2 / 1e6 for t in traj.turns)
    tool_usd = sum(r["cost_usd"] for t in traj.turns for r in t.tool_results)
    assert traj.cost_usd == pytest.approx(policy_usd + tool_usd)
    assert tool_usd > 0 and traj.latency_s > 0
    assert traj.latency_s == pytest.approx(sum(r["latency_s"] for t in traj.turns
                                               for r in t.tool_results))
    # outcome: the tiny expert's answer is garbage -> wrong, recorded with its grade
    assert traj.correct is False and traj.reward == 0.0
    assert traj.info["grade"]["method"] in ("invalid", "no_judge")
    # JSONL round trip
    path = tmp_path / "traj.jsonl"
    with TrajectoryWriter(path) as wr:
        wr.write(traj)
    (back,) = list(read_trajectories(path))
    assert back.to_json() == json.loads(json.dumps(traj.to_json()))


def test_random_tiny_policy_qa_episode(world):
    w = world
    env = QAEnv(TASK, make_toolkit(w))
    cfg = EpisodeConfig(max_turns=3, limits=ContextLimits(max_prompt_tokens=3800,
                                                          max_new_tokens_per_turn=16), seed=0)
    traj = asyncio.run(run_episode(w["engine"], w["tok"], env, cfg))
    assert traj.error is None, traj.error
    traj.validate()
    assert traj.finish_reason in ("max_turns", "done", "context")
    assert 1 <= traj.num_turns <= 3
    for t in traj.turns:
        s, e = t.response_span
        assert 1 <= e - s <= 16
        if not t.format_ok:  # garbage -> a clear format-error observation, not a crash
            assert t.errors and t.observations[0].startswith("Format error")
    # rollout log-probs of sampled tokens agree with the trainer-side forward
    s, e = traj.turns[0].response_span
    ref = score_tokens(w["cfg"], w["params"], traj.tokens[:s], traj.tokens[s:e])
    np.testing.assert_allclose(traj.rollout_logprobs[s:e], ref, atol=2e-3)
    assert traj.cost_usd > 0 and traj.wall_s > 0


def test_scripted_airline_episode_scores_gold(world):
    from orchestra_jax.envs.tau2.env import FunctionCallingEnv
    from orchestra_jax.envs.user_sim import ScriptedUser
    from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
    w = world
    user = ScriptedUser(["Hi, I'm Ethan Martin (user id ethan_martin_2396). My flight HAT039 "
                         "from ATL to SEA was delayed and I want compensation.",
                         "Thank you!"])
    env = Tau2EpisodeEnv(FunctionCallingEnv("airline", "27", user))
    script = [
        "<think>\nLook the user up.\n</think>\n\n" + call("get_user_details",
                                                         user_id="ethan_martin_2396"),
        call("send_certificate", user_id="ethan_martin_2396", amount=150),
        "<message>I have issued a $150 certificate to your account for the delay.</message>"
        "<|im_end|>",
        "<message>Have a nice day!</message><|im_end|>",
    ]
    engine = ScriptedPolicyEngine(w["cfg"], w["params"], script, w["tok"])
    cfg = EpisodeConfig(max_turns=8, observation_role="tool",
                        limits=ContextLimits(max_prompt_tokens=8000, max_new_tokens_per_turn=64))
    traj = asyncio.run(run_episode(engine, w["tok"], env, cfg))
    assert traj.error is None, traj.error
    traj.validate()
    assert traj.finish_reason == "done" and traj.num_turns == 4
    assert traj.reward == 1.0 and traj.correct is True
    assert traj.info["termination_reason"] == "user_stop"
    counts = dict(zip(traj.tool_names, traj.tool_counts))
    assert counts["get_user_details"] == 1 and counts["send_certificate"] == 1
    text = w["tok"].decode(traj.tokens)
    assert "<tool_response>\n" in text and "ethan_martin_2396" in text
    assert "<|im_start|>user\nThank you!<|im_end|>" in text  # the user's reply as a user turn
    assert traj.turns[2].message.startswith("I have issued")


def test_runner_concurrency_jsonl_and_failure_isolation(world, tmp_path):
    w = world

    class Broken:
        task_id, tool_names = "broken", []

        async def reset(self):
            raise RuntimeError("env could not start")

        async def step(self, turn):
            raise AssertionError("never reached")

        async def finish(self, reason):
            from orchestra_jax.envs.base import EnvOutcome
            return EnvOutcome(reward=0.0, correct=False)

    def script(prompt, i):
        return call("answer", model="answer-2")

    engine = ScriptedPolicyEngine(w["cfg"], w["params"], script, w["tok"])
    envs = [lambda: QAEnv(dict(TASK, id="a"), make_toolkit(w)), Broken(),
            lambda: QAEnv(dict(TASK, id="b"), make_toolkit(w))]
    path = tmp_path / "out.jsonl"
    with TrajectoryWriter(path) as wr:
        trajs = asyncio.run(run_episodes(engine, w["tok"], envs, EP_CFG, concurrency=2,
                                         writer=wr, progress=False))
    assert [t.task_id for t in trajs] == ["a", "broken", "b"]
    assert trajs[1].finish_reason == "error" and "env could not start" in trajs[1].error
    assert all(t.finish_reason == "done" and t.error is None for t in (trajs[0], trajs[2]))
    back = list(read_trajectories(path))
    assert sorted(t.task_id for t in back) == ["a", "b", "broken"]
    s = summarize(trajs)
    assert s["n"] == 3 and s["errors"] == 1 and s["finish_reasons"] == {"done": 2, "error": 1}


def test_grading_rules_and_local_judge(world):
    w = world
    assert normalize_answer("The  Charlotte Brontë!") == "charlotte brontë"
    assert asyncio.run(grade_answer("the canberra.", "Canberra")).method == "exact"
    assert asyncio.run(grade_answer("", "x")).valid is False
    assert asyncio.run(grade_answer("word " * 501, "word")).method == "invalid"
    # the judge path with a real local ChatModel (scripted engine emits the verdict)
    # (a reply without the tag is no verdict: an infrastructure error, not a wrong answer)
    for verdict, want in (("<correct>True</correct>", ("judge", True, None)),
                          ("<correct>False</correct>", ("judge", False, None)),
                          ("no tag at all", ("judge_no_verdict", False, "no <correct> verdict"))):
        judge = LocalChatModel(ScriptedPolicyEngine(w["cfg"], w["params"], [verdict + "<|im_end|>"],
                                                    w["tok"]), w["tok"], model="judge")
        g = asyncio.run(grade_answer("the capital is Canberra, ACT", "Canberra",
                                     "What is the capital of Australia?", judge=judge))
        assert (g.method, g.correct) == want[:2]
        assert (g.infra_error is None) if want[2] is None else (want[2] in g.infra_error)


def test_frames_loader(shared_data):
    rows = load_frames(shared_data / "frames" / "frames.jsonl")
    assert len(rows) == 824 and all(r["question"] and r["answer"] for r in rows)
    assert len(load_frames(shared_data / "frames" / "frames.jsonl", limit=5)) == 5
    with pytest.raises(FileNotFoundError):
        load_frames(shared_data / "nope.jsonl")


def test_runner_gives_each_episode_of_a_group_its_own_noise(world):
    w = world
    cfg = EpisodeConfig(max_turns=1, limits=ContextLimits(max_new_tokens_per_turn=8), seed=7)
    envs = [lambda: QAEnv(TASK, make_toolkit(w)) for _ in range(2)]
    a, b = asyncio.run(run_episodes(w["engine"], w["tok"], envs, cfg, progress=False))
    sa, sb = a.turns[0].response_span, b.turns[0].response_span
    assert a.tokens[:sa[0]] == b.tokens[:sb[0]]  # same task, same prompt
    assert a.tokens[sa[0]:sa[1]] != b.tokens[sb[0]:sb[1]]  # different samples
    again = asyncio.run(run_episodes(w["engine"], w["tok"], envs[:1], cfg, progress=False))[0]
    assert again.tokens == a.tokens  # seeded -> reproducible

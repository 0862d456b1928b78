"""Episode-loop control: finish reasons (context, max_turns, timeout, error), sandbox-backed
enhance_reasoning with a scripted local expert, and trajectory invariants. Fast (no retrieval)."""
import asyncio
import json
import time

import jax
import pytest

from orchestra_jax.chat.assembly import ContextLimits
from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.envs.qa import QAEnv
from orchestra_jax.models import init_params, presets
from orchestra_jax.rollout.episode import EpisodeConfig, run_episode
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine
from orchestra_jax.tools.aliases import ModelMapping
from orchestra_jax.tools.meta_tools import QAToolkit, QAToolkitConfig
from orchestra_jax.tools.pricing import PriceSheet, pricing_dir

TASK = {"id": "six-times-seven", "question": "What is 6 times 7?", "answer": "42"}


def call(name, **args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call><|im_end|>"


@pytest.fixture(scope="module")
def world():
    tok = load_tokenizer()
    cfg = presets["tiny-hd128"]
    params = init_params(cfg, jax.random.key(1))
    return tok, cfg, params


def qa_env(world, expert_script):
    tok, cfg, params = world
    mapping = ModelMapping.paper_eval()
    expert = LocalChatModel(ScriptedPolicyEngine(cfg, params, expert_script, tok), tok,
                            model="scripted-expert")
    return QAEnv(TASK, QAToolkit(mapping=mapping, experts={m: expert for m in mapping.models()},
                                 prices=PriceSheet.load(pricing_dir() / "paper_eval.json"),
                                 config=QAToolkitConfig(tools=("enhance_reasoning", "answer"),
                                                        sandbox_timeout_s=20)))


def run(world, policy_script, expert_script=(), **cfg):
    tok, mcfg, params = world
    engine = ScriptedPolicyEngine(mcfg, params, policy_script, tok)
    return asyncio.run(run_episode(engine, tok, qa_env(world, list(expert_script)),
                                   EpisodeConfig(**cfg)))


def test_reason_then_answer_correct_with_real_sandbox(world):
    traj = run(world, [call("enhance_reasoning", model="reasoner-2"), call("answer", model="answer-4")],
               ["```python\nprint(6 * 7)\n```<|im_end|>", "So it is \\boxed{42}.<|im_end|>"])
    assert traj.error is None and traj.finish_reason == "done"
    traj.validate()
    out = traj.turns[0].tool_results[0]
    assert out["extra"]["executed"] and out["extra"]["returncode"] == 0
    assert "42" in traj.turns[0].observations[0]
    assert traj.answer == "42" and traj.correct is True and traj.reward == 1.0
    assert traj.info["grade"]["method"] == "exact"
    # counts keyed the paper's way: the concrete model + the basic tool it used
    counts = dict(zip(traj.tool_names, traj.tool_counts))
    assert counts == {"code_interpreter": 1, "gpt-5-mini": 1, "Qwen/Qwen3-32B": 1,
                      **{k: 0 for k in traj.tool_names
                         if k not in ("code_interpreter", "gpt-5-mini", "Qwen/Qwen3-32B")}}
    assert traj.info["alias_counts"] == {"reasoner-2": 1, "answer-4": 1}
    assert traj.info["policy_price"]["source"] == "paper_eval:Qwen/Qwen3-8B"
    assert not traj.infra_error and traj.engine == "ScriptedPolicyEngine"
    assert traj.logprob_convention == "pre_temperature"
    # the expert's code output is in the policy's next prompt (a user turn)
    tok = world[0]
    s, _ = traj.turns[1].prompt_span
    assert "42" in tok.decode(traj.tokens[s:traj.turns[1].response_span[0]])
    # cost by hand from the recorded counts, paper prices typed here ($ per 1M tokens):
    # policy Qwen3-8B 0.2/0.2; reasoner-2 = gpt-5-mini 0.25/2.0 + sandbox $8.3e-6/s;
    # answer-4 = Qwen3-32B 0.8/0.8
    (reason,), (answer,) = traj.turns[0].tool_results, traj.turns[1].tool_results
    (r_use,) = reason["usage"].values()
    (a_use,) = answer["usage"].values()
    assert list(reason["usage"]) == ["gpt-5-mini"] and list(answer["usage"]) == ["Qwen/Qwen3-32B"]
    hand = sum((t.prompt_tokens + t.completion_tokens) * 0.2 for t in traj.turns) / 1e6
    hand += (r_use["prompt_tokens"] * 0.25 + r_use["completion_tokens"] * 2.0) / 1e6
    hand += reason["extra"]["sandbox_seconds"] * 8.3e-6
    hand += (a_use["prompt_tokens"] + a_use["completion_tokens"]) * 0.8 / 1e6
    assert r_use["prompt_tokens"] > 0 and a_use["completion_tokens"] > 0
    assert traj.cost_usd == pytest.approx(hand, rel=1e-9)


def test_context_limit_stops_the_episode(world):
    tok = world[0]
    probe = run(world, [call("answer", model="answer-1")], ["\\boxed{1}<|im_end|>"])
    first_prompt = probe.turns[0].prompt_tokens
    traj = run(world, [call("enhance_reasoning", model="reasoner-1")] * 3,
               ["```python\nprint('x' * 50)\n```<|im_end|>"] * 3,
               limits=ContextLimits(max_prompt_tokens=first_prompt + 40))
    assert traj.finish_reason == "context" and traj.num_turns == 1 and traj.error is None
    assert len(traj.tokens) > first_prompt + 40
    assert traj.reward == 0.0 and traj.answer_valid is False


def test_max_turns_with_format_errors(world):
    traj = run(world, ['<tool_call>{"name": "answer"}</tool_call><|im_end|>'] * 2, max_turns=2)
    assert traj.finish_reason == "max_turns" and traj.num_turns == 2
    assert not traj.format_ok_all
    assert all("keys must be exactly" in t.errors[0] for t in traj.turns)
    assert traj.turns[0].observations[0].startswith("Format error")
    assert sum(traj.tool_counts) == 0
    traj.validate()


def test_turn_timeout_and_engine_error_are_recorded(world):
    def slow(prompt, i):
        time.sleep(3)
        return call("answer", model="answer-1")

    traj = run(world, slow, turn_timeout_s=0.5)
    assert traj.finish_reason == "timeout" and "generation exceeded" in traj.error
    traj = run(world, [])  # exhausted script -> engine error, recorded, not raised
    assert traj.finish_reason == "error" and "script exhausted" in traj.error
    assert traj.reward == 0.0


def test_tau2_call_expert_with_local_expert_model(world):
    """tau2 expert mode: the policy calls call_expert(expert-2); a local expert model (LocalChatModel
    over a scripted engine) answers with a <tool_call> that the env executes as the agent's action."""
    from orchestra_jax.envs.tau2.env import FunctionCallingEnv
    from orchestra_jax.envs.user_sim import ScriptedUser
    from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
    tok, cfg, params = world
    create = {"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}
    expert = LocalChatModel(ScriptedPolicyEngine(
        cfg, params, ["<tool_call>\n" + json.dumps(create) + "\n</tool_call><|im_end|>"], tok), tok,
        model="Qwen/Qwen3-32B")
    fc = FunctionCallingEnv("mock", "create_task_1", ScriptedUser(["Please create it.", "Thanks"]),
                            experts={"expert-2": expert},
                            prices=PriceSheet.load(pricing_dir() / "paper_eval.json"))
    env = Tau2EpisodeEnv(fc)
    # experts are counted by their concrete model (no mapping given: the client's model name)
    assert "Qwen/Qwen3-32B" in env.tool_names and "call_expert" not in env.tool_names
    policy = [call("call_expert", expert="expert-2"),
              "<message>The agent confirmed the task was created successfully.</message><|im_end|>",
              "<message>Bye!</message><|im_end|>"]
    traj = asyncio.run(run_episode(ScriptedPolicyEngine(cfg, params, policy, tok), tok, env,
                                   EpisodeConfig(observation_role="tool", max_turns=6)))
    assert traj.error is None, traj.error
    traj.validate()
    assert traj.finish_reason == "done" and traj.reward == 1.0 and traj.correct
    counts = dict(zip(traj.tool_names, traj.tool_counts))
    assert counts["Qwen/Qwen3-32B"] == 1 and counts.get("create_task", 0) == 0
    assert traj.info["alias_counts"] == {"expert-2": 1}
    assert traj.info["executed_calls"] == [create]
    # the expert's tokens are priced (Qwen3-32B at $0.8/M in and out) into the turn's cost
    exp = traj.turns[0].tool_results[0]["expert_call"]
    assert exp["prompt_tokens"] > 0 and exp["cost_usd"] == pytest.approx(
        (exp["prompt_tokens"] + exp["completion_tokens"]) * 0.8 / 1e6)
    assert traj.cost_usd > exp["cost_usd"]


def test_tau2_episode_cut_by_the_loop_scores_zero(world):
    """An episode the loop ends (max_turns / context / timeout / error) before the user or agent
    stops is a tau2 ``max_steps`` termination: reward 0 even when the DB already matches gold."""
    from orchestra_jax.envs.tau2.env import FunctionCallingEnv
    from orchestra_jax.envs.user_sim import ScriptedUser
    from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
    tok, cfg, params = world
    create = {"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}
    policy = ["<tool_call>\n" + json.dumps(create) + "\n</tool_call><|im_end|>",
              "<message>The agent confirmed the task was created successfully.</message><|im_end|>",
              "<message>Bye!</message><|im_end|>"]

    def episode(max_turns):
        fc = FunctionCallingEnv("mock", "create_task_1", ScriptedUser(["Please create it.", "Thanks"]))
        return asyncio.run(run_episode(ScriptedPolicyEngine(cfg, params, policy, tok), tok,
                                       Tau2EpisodeEnv(fc), EpisodeConfig(max_turns=max_turns)))

    full = episode(6)
    assert full.finish_reason == "done" and full.reward == 1.0 and full.correct
    cut = episode(2)
    assert cut.finish_reason == "max_turns" and cut.error is None
    assert cut.info["executed_calls"] == [create]       # the gold write did happen ...
    assert cut.info["reward_info"]["db_match"] is None  # ... but a cut episode is not scored
    assert cut.reward == 0.0 and cut.correct is False and cut.answer_valid is False
    assert cut.info["termination_reason"] == "max_steps"


def test_runner_keeps_exactly_concurrency_episodes_in_flight(world):
    """run_episodes overlaps episodes up to `concurrency` and never beyond (asyncio semaphore)."""
    from orchestra_jax.envs.base import EnvOutcome
    from orchestra_jax.rollout.runner import run_episodes
    tok, cfg, params = world
    live = {"now": 0, "peak": 0}

    class SlowStart:
        tool_names: list = []

        def __init__(self, i):
            self.task_id = f"slow-{i}"

        async def reset(self):
            live["now"] += 1
            live["peak"] = max(live["peak"], live["now"])
            await asyncio.sleep(0.05)
            live["now"] -= 1
            raise RuntimeError("stop after the overlap window")

        async def finish(self, reason):
            return EnvOutcome(reward=0.0, correct=False)

    engine = ScriptedPolicyEngine(cfg, params, [], tok)
    for concurrency in (1, 3):
        live["peak"] = 0
        trajs = asyncio.run(run_episodes(engine, tok, [SlowStart(i) for i in range(6)],
                                         EpisodeConfig(), concurrency=concurrency, progress=False))
        assert live["peak"] == concurrency
        assert [t.task_id for t in trajs] == [f"slow-{i}" for i in range(6)]
        assert all(t.finish_reason == "error" and "overlap window" in t.error for t in trajs)


@pytest.mark.parametrize("kw,needle", [
    ({"turn_timeout_s": 0}, "turn_timeout_s must be > 0"),
    ({"episode_timeout_s": -1.0}, "episode_timeout_s must be > 0"),
    ({"temperature": -0.5}, "temperature must be >= 0"),
    ({"policy_usd_per_1m_output_tokens": float("nan")}, "policy_usd_per_1m_output_tokens"),
    ({"max_turns": 0}, "max_turns must be >= 1"),
    ({"observation_role": "system"}, "observation_role"),
])
def test_bad_episode_config_is_a_clear_error(kw, needle):
    with pytest.raises(ValueError, match=needle):
        EpisodeConfig(**kw)
    with pytest.raises(TypeError, match="limits must be a ContextLimits"):
        EpisodeConfig(limits={"max_prompt_tokens": 10})
    assert EpisodeConfig(turn_timeout_s=None, episode_timeout_s=None).turn_timeout_s is None

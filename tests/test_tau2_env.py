"""FunctionCallingEnv episodes with ScriptedUser and scripted agent actions, expert mode
(call_expert), limits, and the LLM user simulator's prompt/stop handling."""

import asyncio
import json

import pytest

from orchestra_jax.envs.tau2 import load_domain, replay
from orchestra_jax.envs.tau2.env import (EXPERT_POLICY, FORMAT_INSTRUCTION, GREETING,
                                         FunctionCallingEnv, rewrite_policy_for_experts)
from orchestra_jax.envs.user_sim import (STOP, TRANSFER, LLMUserSimulator, ScriptedUser,
                                         load_simulation_guidelines, render_user_scenario)
from orchestra_jax.tools.llm_client import ChatResponse


def run(coro):
    return asyncio.run(coro)


class ScriptedChatModel:
    """A ChatModel stand-in that returns fixed responses and records what it was sent."""

    def __init__(self, responses, model="scripted"):
        self.responses = list(responses)
        self.model = model
        self.requests = []

    async def chat(self, messages, *, max_tokens=1024, temperature=0.0, tools=None):
        self.requests.append({"messages": [dict(m) for m in messages], "tools": tools,
                              "max_tokens": max_tokens})
        r = self.responses.pop(0)
        if isinstance(r, Exception):
            raise r
        return r


@pytest.fixture(scope="module")
def airline():
    return load_domain("airline")


@pytest.fixture(scope="module")
def write_task(airline):
    """The first airline task whose gold actions include a successful DB write."""
    writes = airline.tools.write_tool_names()
    for task in airline.tasks:
        acts = [{"name": a["name"], "arguments": a["arguments"]}
                for a in task["evaluation_criteria"]["actions"]]
        _, _, res = replay(airline, acts)
        if any(a["name"] in writes and r.ok for a, r in zip(acts, res)):
            return task, acts
    pytest.fail("no airline task with a write action")


def _final_message(task):
    info = task["evaluation_criteria"].get("communicate_info") or []
    return "All done. " + " ".join(info)


async def _scripted_episode(env, actions, final_text):
    obs = await env.reset()
    assert obs["messages"][0]["role"] == "system"
    assert obs["messages"][1] == {"role": "assistant", "content": GREETING}
    assert obs["messages"][2]["role"] == "user"
    for a in actions:
        observations, done, info = await env.step({"tool_calls": [a]})
        assert not done and observations[0]["role"] == "tool"
    observations, done, _ = await env.step(final_text)
    assert observations[-1]["role"] == "user"
    if not done:
        observations, done, _ = await env.step("Is there anything else?")
    assert done and env.termination_reason == "user_stop"
    return env.final_reward()


def test_scripted_episode_gold_scores_one(airline, write_task):
    task, acts = write_task
    user = ScriptedUser(["Hi, I need help with my reservation.", "Yes, please go ahead."])
    env = FunctionCallingEnv(airline, task, user)
    assert "transfer_to_human_agents" in env.tools.names()
    assert "<policy>" in env.system_prompt and airline.policy in env.system_prompt
    assert run(_scripted_episode(env, acts, _final_message(task))) == 1.0
    assert [c.name for c in env.executed_calls] == [a["name"] for a in acts]
    assert all(c.by == "agent" for c in env.executed_calls)
    rec = env.record()
    assert rec["task_id"] == task["id"] and json.dumps(rec)


def test_scripted_episode_missing_write_scores_zero(airline, write_task):
    task, acts = write_task
    writes = airline.tools.write_tool_names()
    partial = [a for a in acts if a["name"] not in writes]
    env = FunctionCallingEnv(airline, task, ScriptedUser(["Hi.", "Yes."]))
    assert run(_scripted_episode(env, partial, _final_message(task))) == 0.0


def test_bad_actions_are_observations_and_limits(airline, write_task):
    task, _ = write_task
    env = FunctionCallingEnv(airline, task, ScriptedUser(["Hi."]), max_errors=3)

    async def go():
        await env.reset()
        obs, done, _ = await env.step({"tool_calls": [{"name": "nope", "arguments": {}}]})
        assert obs[0]["content"].startswith("Error: Tool 'nope' not found") and not done
        obs, done, _ = await env.step({"tool_calls": [{"name": "get_user_details",
                                                       "arguments": "{bad json"}]})
        assert "not valid JSON" in obs[0]["content"] and not done
        obs, done, _ = await env.step({"tool_calls": [{"name": "get_user_details",
                                                       "arguments": {"user_id": "zz"}}]})
        assert obs[0]["content"] == "Error: User zz not found"
        assert done and env.termination_reason == "too_many_errors"
        with pytest.raises(RuntimeError, match="already finished"):
            await env.step("hello")
    run(go())
    assert env.final_reward() == 0.0
    env = FunctionCallingEnv(airline, task, ScriptedUser(["a", "b", "c", "d"]), max_steps=5)

    async def chat():
        await env.reset()                      # greeting + user = 2 steps
        _, done, _ = await env.step("hello")   # +2
        assert not done
        _, done, _ = await env.step("again")   # +2 -> 6 >= 5
        assert done and env.termination_reason == "max_steps"
    run(chat())
    assert env.final_reward() == 0.0


@pytest.mark.parametrize("call,needle", [
    ({"name": "get_user_details", "arguments": [1, 2]}, "arguments must be a JSON object, got list"),
    ({"name": "get_user_details", "arguments": "[1]"}, "arguments must be a JSON object, got list"),
    ({"name": ["get_user_details"], "arguments": {}}, "tool name must be a string"),
    ({"name": None, "arguments": {}}, "tool name must be a string"),
    ({"name": "get_user_details", "arguments": {}, "parse_error": "arguments are not valid JSON: x"},
     "arguments are not valid JSON: x"),
    ("not a call", "not a call object"),
])
def test_malformed_calls_are_error_observations(airline, write_task, call, needle):
    """Wrongly shaped calls (e.g. from an expert's response) are specific error observations,
    never exceptions, and never reach the domain (nothing to replay)."""
    env = FunctionCallingEnv(airline, write_task[0], ScriptedUser(["Hi."]))

    async def go():
        await env.reset()
        obs, done, _ = await env.step({"tool_calls": [call]})
        assert len(obs) == 1 and obs[0]["role"] == "tool" and not done
        assert obs[0]["content"].startswith("Error: ") and needle in obs[0]["content"], obs
        assert env.n_errors == 1 and env.executed_calls == []
    run(go())


def test_policy_rewrite_for_experts(airline):
    text = rewrite_policy_for_experts(airline.policy)
    assert EXPERT_POLICY in text
    assert "human agent if and only if" not in text
    assert "YOU ARE BEING TRANSFERRED" not in text and "transfer_to_human_agents" not in text
    assert "calling an expert is needed" in text
    assert "Each extra baggage is 50 dollars." in text      # the rest is untouched


def test_expert_mode_call_expert_replaces_action(airline, write_task):
    from orchestra_jax.tools.aliases import ModelMapping
    from orchestra_jax.tools.pricing import PriceSheet, pricing_dir

    task, acts = write_task
    writes = airline.tools.write_tool_names()
    i = max(k for k, a in enumerate(acts) if a["name"] in writes)
    expert_call = acts[i]
    gpt5 = ScriptedChatModel([
        ChatResponse(text="", tool_calls=[expert_call], prompt_tokens=1000, completion_tokens=200),
        ChatResponse(text="Your request is complete.", prompt_tokens=3000, completion_tokens=50)])
    qwen = ScriptedChatModel([RuntimeError("server down")])
    prices = PriceSheet.load(pricing_dir() / "paper_eval.json")
    env = FunctionCallingEnv(airline, task, ScriptedUser(["Hi.", "Yes.", "Thanks."]),
                             experts={"expert-1": gpt5, "expert-3": qwen},
                             mapping=ModelMapping.paper_eval(), prices=prices)
    names = env.tools.names()
    assert "call_expert" in names and "transfer_to_human_agents" not in names
    schema = next(t for t in env.tools_openai() if t["function"]["name"] == "call_expert")
    assert schema["function"]["parameters"]["properties"]["expert"]["enum"] == ["expert-1",
                                                                                  "expert-3"]
    assert EXPERT_POLICY in env.system_prompt and FORMAT_INSTRUCTION in env.system_prompt

    async def go():
        await env.reset()
        for a in acts[:i]:
            await env.step({"tool_calls": [a]})
        obs, done, info = await env.step({"tool_calls": [{"name": "call_expert",
                                                          "arguments": {"expert": "expert-1"}}]})
        assert obs[0]["name"] == "call_expert" and expert_call["name"] in obs[0]["content"]
        assert obs[1]["role"] == "tool" and info["expert"]["alias"] == "expert-1"
        # the expert saw the ORIGINAL policy and the ORIGINAL tools (transfer included)
        req = gpt5.requests[0]
        assert req["messages"][0]["content"] == env.original_system_prompt
        assert EXPERT_POLICY not in req["messages"][0]["content"]
        assert "transfer_to_human_agents" in [t["function"]["name"] for t in req["tools"]]
        assert req["messages"][1:] == env.history[:len(req["messages"]) - 1]
        # failing expert: an error observation, the episode goes on
        obs, done, _ = await env.step({"tool_calls": [{"name": "call_expert",
                                                       "arguments": {"expert": "expert-3"}}]})
        assert "Error: expert expert-3 failed" in obs[0]["content"] and not done
        obs, done, _ = await env.step({"tool_calls": [{"name": "call_expert",
                                                       "arguments": {"expert": "expert-9"}}]})
        assert "unknown expert 'expert-9'" in obs[0]["content"]
        for a in acts[i + 1:]:
            await env.step({"tool_calls": [a]})
        # a text answer from the expert goes to the user as the agent's message
        obs, done, _ = await env.step({"tool_calls": [{"name": "call_expert",
                                                       "arguments": {"expert": "expert-1"}}]})
        assert "<message>Your request is complete.</message>" in obs[0]["content"]
        assert obs[1]["role"] == "user"
        await env.step(_final_message(task))
        while not env.done:
            await env.step("Anything else?")
    run(go())
    by_expert = [c for c in env.executed_calls if c.by == "expert-1"]
    assert [(c.name, c.arguments) for c in by_expert] == [(expert_call["name"],
                                                           expert_call["arguments"])]
    # gpt-5 at $1.25 / $10 per 1M tokens: (1000·1.25 + 200·10)/1e6 + (3000·1.25 + 50·10)/1e6
    assert env.cost_usd == pytest.approx((1000 * 1.25 + 200 * 10 + 3000 * 1.25 + 50 * 10) / 1e6)
    assert [e.model for e in env.expert_calls] == ["gpt-5", "Qwen/Qwen3-32B", "gpt-5"]
    assert env.expert_calls[1].error and env.expert_calls[1].cost_usd == 0.0
    assert env.final_reward() == 1.0


def test_parsed_turn_actions(airline, write_task):
    from orchestra_jax.chat.parser import parse_tool_calls

    task, acts = write_task
    env = FunctionCallingEnv(airline, task, ScriptedUser(["Hi."]))
    call = json.dumps({"name": acts[0]["name"], "arguments": acts[0]["arguments"]})

    async def go():
        await env.reset()
        turn = parse_tool_calls(f"<think>look it up</think><tool_call>{call}</tool_call>",
                                env.tools, allow_message=True)
        assert turn.format_ok, turn.errors
        obs, _, _ = await env.step(turn)
        assert obs[0]["role"] == "tool" and not obs[0]["content"].startswith("Error")
        turn = parse_tool_calls("<message>Anything else?</message>", env.tools,
                                allow_message=True, require_call=False)
        obs, done, _ = await env.step(turn)
        assert obs[0] == {"role": "user", "content": STOP} and done
    run(go())
    assert env.agent_messages == ["Anything else?"]


def test_llm_user_simulator_prompt_and_stop(airline, write_task):
    task, _ = write_task
    model = ScriptedChatModel([
        ChatResponse(text="Hi, I'd like to change my flight.", prompt_tokens=10,
                     completion_tokens=5, cost_usd=0.001),
        ChatResponse(text="Thanks, that's all. ###STOP###")])
    user = LLMUserSimulator(model)
    guidelines = load_simulation_guidelines()
    env = FunctionCallingEnv(airline, task, user)

    async def go():
        obs = await env.reset()
        assert obs["messages"][-1]["content"] == "Hi, I'd like to change my flight."
        sys_prompt = model.requests[0]["messages"][0]["content"]
        assert sys_prompt.startswith(guidelines)
        assert f"<scenario>\n{render_user_scenario(task['user_scenario'])}\n</scenario>" in sys_prompt
        assert "Instructions:\n\tDomain: airline\n\tReason for call:" in sys_prompt
        # roles are flipped for the simulator: the agent greets as "user"
        assert model.requests[0]["messages"][1] == {"role": "user", "content": GREETING}
        _, done, _ = await env.step("Done!")
        assert done and env.termination_reason == "user_stop"
    run(go())
    assert env.user_cost_usd == pytest.approx(0.001)


def test_scripted_user_transfer_token():
    async def go():
        u = ScriptedUser(["hello", f"ok {TRANSFER}", "never"])
        await u.reset({})
        assert (await u.respond("hi")).done is False
        t = await u.respond("transferring")
        assert t.done and t.stop_reason == TRANSFER
    run(go())


def test_llm_nl_judge_through_env():
    from orchestra_jax.envs.tau2 import LLMNLJudge

    mock = load_domain("mock")
    task = json.loads(json.dumps(mock.task("create_task_1_nl_eval")))
    task["evaluation_criteria"]["reward_basis"] = ["DB", "NL_ASSERTION"]
    verdict = {"results": [{"expectedOutcome": a, "reasoning": "ok", "metExpectation": True}
                           for a in task["evaluation_criteria"]["nl_assertions"]]}
    judge_model = ScriptedChatModel([ChatResponse(text="```json\n" + json.dumps(verdict) + "\n```"),
                                     ChatResponse(text="not json at all")])
    judge = LLMNLJudge(judge_model)
    env = FunctionCallingEnv(mock, task, ScriptedUser(["Create a task please, and compliment me"]),
                             nl_judge=judge)

    async def go():
        await env.reset()
        await env.step({"tool_calls": [{"name": "create_task", "arguments": {
            "user_id": "user_1", "title": "Important Meeting"}}]})
        await env.step("Created! You are doing great.")
        info = await env.final_reward_info_async()
        # no gold actions and no env assertions (None): tau2 counts the DB as matched
        assert "actions" not in task["evaluation_criteria"]
        assert info.breakdown == {"DB": 1.0, "NL_ASSERTION": 1.0} and info.reward == 1.0
        convo = judge_model.requests[0]["messages"][1]["content"]
        assert "assistant: Created! You are doing great." in convo
        assert "user: Create a task please" in convo
        info = await env.final_reward_info_async()                   # unparsable -> not met
        assert info.breakdown["NL_ASSERTION"] == 0.0
    run(go())
    with pytest.raises(TypeError, match="evaluate_async"):
        env.final_reward()


def test_message_history_task_through_env():
    mock = load_domain("mock")
    task = mock.task("update_task_with_message_history")
    env = FunctionCallingEnv(mock, task, ScriptedUser(["Now mark it completed, please."]))

    async def go():
        obs = await env.reset()
        roles = [m["role"] for m in obs["messages"]]
        # system + the 4 history messages (user, assistant tool call, tool, assistant) + reply
        assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
        assert obs["messages"][3]["tool_call_id"] == "call_1"
        assert env.db["tasks"]["task_2"]["status"] == "pending"      # history call replayed
        await env.step({"tool_calls": [{"name": "update_task_status",
                                        "arguments": {"task_id": "task_2", "status": "completed"}}]})
        # communicate_info is matched literally (lower-cased, commas removed)
        info = " ".join(task["evaluation_criteria"]["communicate_info"])
        _, done, _ = await env.step(f"Summary: {info.upper()}.")
        assert done
    run(go())
    info = env.final_reward_info()
    assert info.reward == 1.0, info


def test_user_simulator_failure_is_flagged(airline, write_task):
    task, _ = write_task
    user = LLMUserSimulator(ScriptedChatModel([ChatResponse(text="Hi."),
                                               RuntimeError("rate limited")]),
                            guidelines="be a user")
    env = FunctionCallingEnv(airline, task, user)

    async def go():
        await env.reset()
        obs, done, info = await env.step("How can I help?")
        assert obs == [] and done
        assert env.termination_reason == "user_error" and "rate limited" in info["error"]
    run(go())


def test_outer_loop_cut_scores_zero(airline, write_task):
    task, acts = write_task
    env = FunctionCallingEnv(airline, task, ScriptedUser(["Hi.", "Yes."]))
    assert run(_scripted_episode(env, acts, _final_message(task))) == 1.0
    assert env.final_reward(termination_reason="max_steps") == 0.0

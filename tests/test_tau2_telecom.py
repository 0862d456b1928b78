"""tau2 telecom: agent + user (device) tools, env sync, evaluator and dual-control episodes."""

from __future__ import annotations

import asyncio
import copy

import pytest

from orchestra_jax.envs.tau2 import db_hash, evaluate, load_domain, replay
from orchestra_jax.envs.tau2.env import FunctionCallingEnv
from orchestra_jax.envs.user_sim import LLMUserSimulator, ScriptedUser, UserTurn


@pytest.fixture(scope="module")
def tel(shared_data):
    return load_domain("telecom")


def _gold(task):
    return [{"name": a["name"], "arguments": a["arguments"], "requestor": a["requestor"]}
            for a in task["evaluation_criteria"]["actions"] or []]


def _task(tel, prefix):
    return next(t for t in tel.tasks if t["id"].startswith(prefix))


def test_every_task_gold_replay_scores_one(tel):
    assert len(tel.tasks) >= 50
    n_user = 0
    for task in tel.tasks:
        crit = task["evaluation_criteria"]
        gold = _gold(task)
        n_user += sum(a["requestor"] == "user" for a in gold)
        info = evaluate(tel, task, gold, list(crit.get("communicate_info") or []),
                        termination_reason="user_stop")
        assert info.reward == 1.0, (task["id"], info.breakdown, info.notes)
        assert info.env_assertion_checks and all(c["met"] for c in info.env_assertion_checks)
        assert not info.gold_errors, (task["id"], info.gold_errors)
        # doing nothing never passes: the initial state is broken on purpose
        assert evaluate(tel, task, [], []).reward == 0.0, task["id"]
    assert n_user > len(tel.tasks)                  # most fixes are the user's, on the device


def test_dropped_state_changing_gold_action_scores_below_one(tel):
    writes = tel.tools.write_tool_names() | tel.user_tools.write_tool_names()
    checked = 0
    for task in tel.tasks:
        gold = _gold(task)
        init = task.get("initial_state")
        g_db, g_user, _ = replay(tel, gold, initial_state=init)
        for i, a in enumerate(gold):
            if a["name"] not in writes:
                continue
            dropped = gold[:i] + gold[i + 1:]
            p_db, p_user, _ = replay(tel, dropped, initial_state=init)
            if db_hash([p_db, p_user]) == db_hash([g_db, g_user]):
                continue                             # e.g. a second reboot that changes nothing
            assert evaluate(tel, task, dropped, []).reward < 1.0, (task["id"], a["name"])
            checked += 1
    assert checked >= 2 * len(tel.tasks)


def test_user_actions_run_on_the_user_side_and_sync(tel):
    task = _task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded[PERSONA:None]")
    init = task["initial_state"]
    db, user, _ = replay(tel, [], initial_state=init)
    assert user["device"]["data_enabled"] is False                      # turn_data_off ran
    assert user["surroundings"]["phone_number"] == "555-123-2002"      # set_user_info ran
    assert user["surroundings"]["mobile_data_usage_exceeded"] is True  # synced from the agent DB
    # a user action made by the agent fails: the agent has no such tool
    db2, user2, res = replay(tel, [{"name": "toggle_data", "arguments": {},
                                    "requestor": "assistant"}], initial_state=init)
    assert not res[0].ok and user2["device"]["data_enabled"] is False
    db3, user3, res = replay(tel, [{"name": "toggle_data", "arguments": {}, "requestor": "user"},
                                   {"name": "refuel_data", "requestor": "assistant", "arguments":
                                    {"customer_id": "C1001", "line_id": "L1002",
                                     "gb_amount": 2.0}}], initial_state=init)
    assert all(r.ok for r in res) and "Mobile Data is now ON." in res[0].observation
    assert user3["surroundings"]["mobile_data_usage_exceeded"] is False   # synced after refuel
    line = next(line for line in db3["lines"] if line["line_id"] == "L1002")
    assert line["data_refueling_gb"] == 2.0
    draft = next(b for b in db3["bills"] if b["customer_id"] == "C1001" and b["status"] == "Draft")
    assert draft["line_items"][-1]["description"] == "Data refueling: 2.0 GB at $2.0/GB"


def test_action_reward_ignores_requestor_and_env_assertion_honours_assert_value(tel):
    task = copy.deepcopy(_task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded"))
    crit = task["evaluation_criteria"]
    crit["reward_basis"] = ["ACTION"]
    flipped = [dict(a, requestor="assistant" if a["requestor"] == "user" else "user")
               for a in _gold(task)]
    assert evaluate(tel, task, flipped, []).reward == 1.0       # tau2: name + arguments only
    crit["reward_basis"] = ["ENV_ASSERTION"]
    for a in crit["env_assertions"]:
        a["assert_value"] = False                          # "must NOT hold"
    assert evaluate(tel, task, _gold(task), []).reward == 0.0   # gold makes them all hold
    assert evaluate(tel, task, [], []).reward == 1.0            # untouched: none of them holds


def test_payment_request_flow_through_sync(tel):
    task = _task(tel, "[service_issue]break_apn_settings|overdue_bill_suspension")
    gold = _gold(task)
    i_pay = next(i for i, a in enumerate(gold) if a["name"] == "make_payment")
    _, user, res = replay(tel, gold[:i_pay], initial_state=task["initial_state"])
    req = user["surroundings"]["payment_request"]
    assert req is not None and req["paid"] is False and isinstance(req["amount_due"], float)
    db, user, res = replay(tel, gold[:i_pay + 1], initial_state=task["initial_state"])
    assert res[-1].observation.startswith("Payment of ")
    assert user["surroundings"]["payment_request"] is None
    assert next(b for b in db["bills"] if b["bill_id"] == req["bill_id"])["status"] == "Paid"


def test_user_tool_observations_and_broken_calls(tel):
    udb = tel.fresh_user_db()
    tools = tel.user_tools
    assert tools.execute(udb, "check_status_bar", {}).observation == \
        "Status Bar: 📶³ Good | 5G | 📱 Data Enabled | 🔋 80%"
    assert tools.execute(udb, "run_speed_test", {}).observation.startswith(
        "Speed Test Result: ")
    bad = tools.execute(udb, "set_network_mode_preference", {"mode": "6g"})
    assert bad.ok and bad.observation.startswith("Failed to set network mode: '6g'")
    assert not tools.execute(udb, "toggle_data", {"x": 1}).ok               # unexpected argument
    assert not tools.execute(udb, "grant_app_permission", {"app_name": "x"}).ok   # missing one
    assert tools.execute(udb, "set_apn_settings", {"apn_settings": {"apn_name": "nope"}}).ok \
        is False


def test_dual_control_episode_with_scripted_user(tel):
    task = _task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded[PERSONA:None]")
    user = ScriptedUser(["My mobile data does not work. Phone 555-123-2002.",
                         {"tool_calls": [{"name": "toggle_data", "arguments": {}}]},
                         "I turned mobile data on, it still does not work.",
                         "Thanks, it works now. ###STOP###"])
    env = FunctionCallingEnv(tel, task, user)

    async def run():
        await env.reset()
        obs, done, _ = await env.step("Please turn your mobile data on.")
        assert not done and obs[-1]["content"].startswith("I turned mobile data on")
        assert "Mobile Data is now ON." in user.tool_results[0]["content"]   # the user saw it
        obs, done, _ = await env.step({"tool_calls": [{"name": "refuel_data", "arguments": {
            "customer_id": "C1001", "line_id": "L1002", "gb_amount": 2.0}}]})
        assert obs[0]["content"].startswith("{") and not done
        obs, done, info = await env.step("I added 2 GB of data.")
        assert done and info["termination_reason"] == "user_stop"

    asyncio.run(run())
    assert [(a["name"], a.get("requestor", "assistant")) for a in env.recorded_actions()] == [
        ("toggle_data", "user"), ("refuel_data", "assistant")]
    # the agent never sees the user's tool calls, only their words
    assert all(m.get("name") != "toggle_data" for m in env.messages)
    assert env.user_db["device"]["data_enabled"] is True
    assert env.final_reward() == 1.0
    assert len(env.tools) == 13 and len(env.user_tools) == 30


class _ToolCallingChat:
    """A deterministic chat model speaking the ChatModel protocol (no LLM offline): first a
    device tool call, then a message quoting the tool result it was handed back."""

    def __init__(self):
        self.seen = []

    async def chat(self, messages, *, max_tokens, temperature, tools=None):
        self.seen.append((list(messages), tools))
        if messages[-1]["role"] == "tool":
            return _Resp(f"My phone says: {messages[-1]['content']}")
        return _Resp("", [{"name": "check_status_bar", "arguments": {}}])


class _Resp:
    def __init__(self, text, tool_calls=()):
        self.text, self.tool_calls = text, list(tool_calls)
        self.prompt_tokens = self.completion_tokens = 1
        self.cost_usd, self.latency_s = 0.0, 0.0


def test_llm_user_simulator_gets_device_tools_and_tool_results(tel):
    task = _task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded[PERSONA:None]")
    chat = _ToolCallingChat()
    sim = LLMUserSimulator(chat)
    env = FunctionCallingEnv(tel, task, sim)
    asyncio.run(env.reset())
    msgs, tools = chat.seen[0]
    assert {t["function"]["name"] for t in tools} >= {"toggle_data", "check_status_bar"}
    assert "tool" in sim.guidelines.lower()                       # tools guidelines variant
    reply = env.history[-1]
    assert reply["role"] == "user" and "Data Disabled" in reply["content"]
    assert env.recorded_actions() == [{"name": "check_status_bar", "arguments": {},
                                       "requestor": "user"}]
    assert sim.messages[-2]["role"] == "tool" and sim.messages[-3]["tool_calls"]


def test_agent_calling_a_device_tool_fails_but_counts_for_action(tel):
    """tau2 keeps every call in the trajectory: the agent's toggle_data fails (not its tool),
    yet ACTION matches it by name; the state is unchanged so ENV_ASSERTION still fails."""
    task = copy.deepcopy(_task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded"))
    env = FunctionCallingEnv(tel, task, ScriptedUser(["hi", "bye ###STOP###"]))

    async def run():
        await env.reset()
        obs, _, _ = await env.step({"tool_calls": [{"name": "toggle_data", "arguments": {}},
                                                   {"name": "refuel_data", "arguments": {
                                                       "customer_id": "C1001",
                                                       "line_id": "L1002", "gb_amount": 2.0}}]})
        assert obs[0]["content"].startswith("Error: Tool 'toggle_data' not found")
        await env.step("done")

    asyncio.run(run())
    assert env.recorded_actions()[0] == {"name": "toggle_data", "arguments": {}}
    task["evaluation_criteria"]["reward_basis"] = ["ACTION"]
    assert env.final_reward() == 1.0
    task["evaluation_criteria"]["reward_basis"] = ["ENV_ASSERTION", "ACTION"]
    assert env.final_reward() == 0.0


def test_runaway_user_tool_loop_ends_the_episode(tel):
    task = _task(tel, "[mobile_data_issue]data_mode_off|data_usage_exceeded[PERSONA:None]")
    loop = ScriptedUser([{"tool_calls": [{"name": "check_status_bar"}]}] * 50)
    env = FunctionCallingEnv(tel, task, loop, max_user_tool_rounds=3)
    asyncio.run(env.reset())
    assert env.done and env.termination_reason == "user_error" and "tool-call rounds" in env.error


def test_user_turn_default_has_no_tool_calls():
    assert UserTurn("hi").tool_calls == []

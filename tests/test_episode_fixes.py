"""Review fixes in the episode loop (issue 11 item 4) and the v2 trajectory record: env-reported
latency (a tau2 user simulator's time is not tool latency), plain-text tau2 replies without the
<message> instruction, call_expert counting, Qwen3-style thinking stripping (turn unit), user
simulator failure = infra_error, reading v1 records. Tiny real model, tau2 mock domain."""
import asyncio
import json
import time

import jax
import pytest

from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.envs.tau2.env import FunctionCallingEnv
from orchestra_jax.envs.user_sim import ScriptedUser
from orchestra_jax.models import init_params, presets
from orchestra_jax.rollout.episode import EpisodeConfig, run_episode
from orchestra_jax.rollout.local_expert import LocalChatModel
from orchestra_jax.rollout.scripted_engine import ScriptedPolicyEngine
from orchestra_jax.rollout.tau2_adapter import Tau2EpisodeEnv
from orchestra_jax.rollout.trajectory import Trajectory, group_validity

CREATE = {"name": "create_task", "arguments": {"user_id": "user_1", "title": "Important Meeting"}}
END = "<|im_end|>"


@pytest.fixture(scope="module")
def world():
    tok = load_tokenizer()
    cfg = presets["tiny-hd128"]
    return tok, cfg, init_params(cfg, jax.random.key(3))


class SlowUser(ScriptedUser):
    """A scripted user that takes ``delay_s`` of wall-clock per reply (like a remote LLM) and
    optionally fails on reply number ``fail_at``."""

    def __init__(self, messages, delay_s=0.0, fail_at=None):
        super().__init__(messages)
        self.delay_s, self.fail_at, self.n = delay_s, fail_at, 0

    async def respond(self, agent_message):
        self.n += 1
        if self.fail_at is not None and self.n >= self.fail_at:
            raise ConnectionError("user simulator endpoint is down")
        await asyncio.sleep(self.delay_s)
        turn = await super().respond(agent_message)
        turn.latency_s = self.delay_s
        return turn


def episode(world, policy, user, *, experts=None, **cfg):
    tok, mcfg, params = world
    engine = ScriptedPolicyEngine(mcfg, params, policy, tok)
    env = Tau2EpisodeEnv(FunctionCallingEnv("mock", "create_task_1", user, experts=experts))
    return asyncio.run(run_episode(engine, tok, env, EpisodeConfig(**cfg))), engine


def test_user_time_is_not_tool_latency_and_plain_text_is_a_message(world):
    """Basic tools (no call_expert, so the prompt never asks for <message>): an untagged reply is
    the message; the 0.4 s the user simulator takes per reply is not tool latency."""
    policy = ["<tool_call>\n" + json.dumps(CREATE) + "\n</tool_call>" + END,
              "The agent confirmed the task was created successfully." + END, "Goodbye!" + END]
    traj, _ = episode(world, policy, SlowUser(["Please create it.", "Thanks"], delay_s=0.4),
                      max_turns=6)
    assert traj.error is None and traj.finish_reason == "done", traj.error
    assert traj.format_ok_all and [t.message for t in traj.turns[1:]] == [
        "The agent confirmed the task was created successfully.", "Goodbye!"]
    assert traj.reward == 1.0 and traj.correct and not traj.infra_error
    assert traj.info["agent_messages"] == [
        "The agent confirmed the task was created successfully.", "Goodbye!"]
    assert traj.info["user_latency_s"] == pytest.approx(1.2)   # greeting reply + 2 replies
    msg_turns = traj.turns[1:]
    assert all(t.tool_latency_s < 0.05 for t in msg_turns), [t.tool_latency_s for t in msg_turns]
    assert traj.latency_s < 0.1 < 1.2 < traj.wall_s


def test_tagged_prompt_requires_tags_and_call_expert_counts_only_the_expert(world):
    """Expert mode asks for <message> tags: untagged text is a format error. A turn that lists a
    domain call before call_expert runs only the expert, and only the expert is counted."""
    tok, mcfg, params = world
    expert = LocalChatModel(ScriptedPolicyEngine(mcfg, params, ["I can help." + END], tok), tok,
                            model="Qwen/Qwen3-32B")
    both = ("<tool_call>\n" + json.dumps(CREATE) + "\n</tool_call>\n<tool_call>\n"
            + json.dumps({"name": "call_expert", "arguments": {"expert": "expert-1"}})
            + "\n</tool_call>" + END)
    traj, _ = episode(world, ["Hello there." + END, both], ScriptedUser(["Hi", "ok"]),
                      experts={"expert-1": expert}, max_turns=2)
    assert not traj.turns[0].format_ok and "no <message>" in traj.turns[0].errors[0]
    assert traj.turns[1].format_ok
    counts = dict(zip(traj.tool_names, traj.tool_counts))
    assert counts["Qwen/Qwen3-32B"] == 1 and counts["create_task"] == 0
    assert traj.info["executed_calls"] == []     # the listed create_task never ran


def test_strip_thinking_prompts_drop_earlier_thinking(world):
    """strip_thinking: turn 2's prompt (what the engine really got) has no trace of turn 1's
    <think> block, the transcript keeps it, and the record requires the turn unit."""
    tok = world[0]
    seen = []

    def policy(prompt, i):
        seen.append(list(prompt))
        return ["<think>\nSECRET-PLAN-XYZ\n</think>\n\n<message>Hello</message>" + END,
                "<think>\nok\n</think>\n\n<message>Bye</message>" + END][i]

    traj, _ = episode(world, policy, ScriptedUser(["Create my task please.", "Thanks"]), max_turns=2,
                      strip_thinking=True, enable_thinking=True,
                      turn_timeout_s=120, episode_timeout_s=300)
    assert traj.error is None and traj.num_turns == 2, traj.error
    traj.validate()
    assert traj.context_mode == "strip_thinking" and traj.required_unit == "turn"
    assert [traj.turn_prompt(i) for i in range(2)] == seen
    assert "SECRET-PLAN-XYZ" in tok.decode(traj.tokens)
    assert "SECRET-PLAN-XYZ" not in tok.decode(seen[1]) and "Hello" in tok.decode(seen[1])
    assert traj.turns[1].prompt_tokens == len(seen[1]) < traj.turns[1].response_span[0]
    toks, mask, lps = traj.turn_arrays(1)
    s, e = traj.turns[1].response_span
    assert toks == seen[1] + traj.tokens[s:e] and sum(mask) == e - s
    assert lps[len(seen[1]):] == traj.rollout_logprobs[s:e]
    bad = Trajectory.from_json(traj.to_json())
    bad.required_unit = None
    with pytest.raises(ValueError, match="turn unit"):
        bad.validate()


def test_user_simulator_failure_is_infra_and_excluded(world):
    policy = ["<message>How can I help?</message>" + END] * 2
    traj, _ = episode(world, policy, SlowUser(["Hi"], fail_at=2), experts=None, max_turns=3)
    assert traj.infra_error and "user simulator failed" in traj.infra_reason
    assert traj.info["termination_reason"] == "user_error"
    ok, _ = episode(world, ["<message>Hi</message>" + END] * 2, ScriptedUser(["Hi"]), max_turns=2)
    assert list(group_validity([traj, ok])) == [False, True]


def test_v1_records_still_load(world):
    traj, _ = episode(world, ["<message>Hi</message>" + END], ScriptedUser(["x"]), max_turns=1)
    d = traj.to_json()
    assert d["schema_version"] == 2 and d["engine"] == "ScriptedPolicyEngine"
    assert d["sampling"]["temperature"] == 1.0 and d["turns"][0]["policy_version"] is None
    v2_only = ("group_id", "rollout_index", "preference", "preference_instruction",
               "preference_kind", "model_mapping", "price_sheet_id", "sampling", "engine",
               "logprob_convention", "infra_error", "infra_reason", "context_mode",
               "required_unit")
    old = {k: v for k, v in d.items() if k not in v2_only}
    old["schema_version"] = 1
    for t in old["turns"]:
        for k in ("policy_version", "prompt_base", "prompt_suffix", "infra_error"):
            t.pop(k)
    back = Trajectory.from_json(json.dumps(old))
    back.validate()
    assert back.schema_version == 1 and back.infra_error is False and back.preference is None
    assert back.tokens == traj.tokens and back.turn_prompt(0) == traj.turn_prompt(0)

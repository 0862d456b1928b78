"""Runs a tau2 :class:`~orchestra_jax.envs.tau2.env.FunctionCallingEnv` under the episode loop.

Agent turn text -> parser (``allow_message=True``): ``<message>…</message>`` goes to the user,
``<tool_call>`` blocks to the domain tools (or ``call_expert``). The env's replies come back as
tool observations (``{"role": "tool"}``: tool outputs, expert notes) and the simulated user's
reply (``{"role": "user"}``), appended as the next turns (use
``EpisodeConfig(observation_role="tool")`` for Qwen3 ``<tool_response>`` blocks, as the release's
vLLM-served orchestrator saw them). The reward is tau2's evaluator on the recorded calls and
agent messages; ``correct`` = reward > 0 (release rule). An episode the loop cuts before the env
is done (max turns, context, timeout, error) is scored as tau2's ``max_steps`` termination (0).

A turn with neither a valid call nor a message is still passed to the env (so its ``max_errors``
limit applies), but the observation shown is the parser's specific format error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from orchestra_jax.chat.parser import ParsedTurn
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep


class Tau2EpisodeEnv:
    """Adapter: FunctionCallingEnv -> :class:`orchestra_jax.envs.base.EpisodeEnv`.

    tool_names (tool-count vector order): the domain tools offered, with ``call_expert``
    replaced by its expert aliases (each expert is a separately priced tool, paper §3.2).
    """

    def __init__(self, env: Any, *, task_id: Optional[str] = None):
        self.env = env
        self.task_id = str(task_id if task_id is not None else env.task.get("id", ""))
        names = [n for n in env.tools.names() if n != "call_expert"]
        self.tool_names = names + sorted(getattr(env, "experts", {}) or {})
        self._cost = 0.0
        self._latency = 0.0

    async def reset(self) -> EnvStart:
        obs = await self.env.reset()
        self._cost, self._latency = self.env.cost_usd, self.env.latency_s
        return EnvStart(messages=list(obs["messages"]), tools=list(obs["tools"]),
                        schemas=obs["tools"], allow_message=True)

    async def step(self, turn: ParsedTurn) -> EnvStep:
        step = EnvStep()
        if self.env.done:
            step.done = True
            return step
        if turn.calls:
            action: Any = {"tool_calls": turn.calls}
        elif turn.message:
            action = {"message": turn.message}
        else:
            action = {"message": ""}
        observations, done, info = await self.env.step(action)
        malformed = not turn.calls and not turn.message
        for m in observations:
            if m.get("role") == "user":
                step.user_message = str(m.get("content") or "")
            elif not malformed:
                step.observations.append(str(m.get("content") or ""))
        for c in turn.calls:
            if c["name"] == "call_expert":
                step.tool_keys.append(str(c["arguments"].get("expert")))
                break  # the env runs only call_expert when it is present
            step.tool_keys.append(c["name"])
        step.cost_usd = self.env.cost_usd - self._cost
        step.latency_s = self.env.latency_s - self._latency
        self._cost, self._latency = self.env.cost_usd, self.env.latency_s
        step.done = bool(done)
        step.info = {k: v for k, v in info.items() if k != "expert"}
        if "expert" in info:
            step.tool_results.append({"expert_call": info["expert"]})
        return step

    async def finish(self, finish_reason: str) -> EnvOutcome:
        """tau2 reward of the episode. If the loop ended it (``max_turns``, ``context``,
        ``timeout``, ``error``) before the env was done, tau2 counts that as a ``max_steps``
        termination: reward 0, whatever the DB looks like."""
        reason = self.env.termination_reason
        if not self.env.done:
            reason = "max_steps"
        ri = await self.env.final_reward_info_async(reason)
        return EnvOutcome(reward=float(ri.reward), correct=ri.reward > 0, answer=None,
                          answer_valid=reason not in ("too_many_errors", "max_steps"),
                          info={"reward_info": dataclasses.asdict(ri),
                                "termination_reason": reason,
                                "loop_finish_reason": finish_reason,
                                "user_cost_usd": self.env.user_cost_usd,
                                "user_latency_s": self.env.user_latency_s,
                                "executed_calls": self.env.recorded_actions(),
                                "agent_messages": list(self.env.agent_messages)})

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

Plain text: when the system prompt does not ask for ``<message>`` tags (basic tools, no
``call_expert``: ``FunctionCallingEnv`` adds the format instruction only in expert mode), an
untagged reply is the message to the user, as in tau2-bench's own agent protocol
(``EnvStart.plain_text_message``); with the instruction, tags are required.

Counts (paper way): domain functions by name, experts by their concrete model. When a turn
holds ``call_expert`` only the expert runs (the env drops the other calls), so only the expert
is counted. Latency is the env's tool + expert time; the user simulator's time is not tool
latency (it is in ``info["user_latency_s"]``). A failing user simulator or expert is an
infrastructure error. A preference instruction is appended to the agent's system prompt.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from orchestra_jax.chat.parser import ParsedTurn
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep
from orchestra_jax.envs.tau2.agent_protocol import FORMAT_INSTRUCTION


class Tau2EpisodeEnv:
    """Adapter: FunctionCallingEnv -> :class:`orchestra_jax.envs.base.EpisodeEnv`.

    tool_names (tool-count vector order): the domain tools offered, then the concrete models
    behind the ``call_expert`` aliases (each a separately priced tool, paper §3.2).
    preference_instruction: the user's preference, appended to the agent's system prompt.
    expert_error_is_infra: a failing expert call marks the turn ``infra_error`` [ours].
    """

    def __init__(self, env: Any, *, task_id: Optional[str] = None,
                 preference_instruction: str = "", expert_error_is_infra: bool = True):
        self.env = env
        self.task_id = str(task_id if task_id is not None else env.task.get("id", ""))
        names = [n for n in env.tools.names() if n != "call_expert"]
        self.expert_models = {a: self._model(a) for a in sorted(getattr(env, "experts", {}) or {})}
        self.tool_names = names + sorted(set(self.expert_models.values()))
        self.preference_instruction = str(preference_instruction or "").strip()
        self.expert_error_is_infra = expert_error_is_infra
        self.prices = getattr(env, "prices", None)
        self._cost = 0.0
        self._latency = 0.0

    def _model(self, alias: str) -> str:
        mapping = getattr(self.env, "mapping", None)
        if mapping is not None:
            try:
                return str(mapping.model_of(alias))
            except KeyError:
                pass
        return str(getattr(self.env.experts[alias], "model", alias))

    async def reset(self) -> EnvStart:
        obs = await self.env.reset()
        self._cost, self._latency = self.env.cost_usd, self.env.latency_s
        messages = [dict(m) for m in obs["messages"]]
        if self.preference_instruction and messages and messages[0].get("role") == "system":
            messages[0]["content"] = (f"{messages[0]['content']}\n\n<user_preference>\n"
                                      f"{self.preference_instruction}\n</user_preference>")
        tagged = FORMAT_INSTRUCTION in str(getattr(self.env, "system_prompt", ""))
        return EnvStart(messages=messages, tools=list(obs["tools"]), schemas=obs["tools"],
                        allow_message=True, plain_text_message=not tagged)

    async def step(self, turn: ParsedTurn) -> EnvStep:
        step = EnvStep(latency_s=0.0)
        if self.env.done:
            step.done = True
            return step
        n_expert_calls = len(getattr(self.env, "expert_calls", ()))
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
        expert = next((c for c in turn.calls if c["name"] == "call_expert"), None)
        if expert is not None:   # the env runs only call_expert: the other calls never ran
            alias = str(expert["arguments"].get("expert"))
            if alias in self.expert_models:
                step.tool_keys.append(self.expert_models[alias])
                step.info["aliases"] = [alias]
        else:
            step.tool_keys.extend(c["name"] for c in turn.calls)
        for rec in list(getattr(self.env, "expert_calls", ()))[n_expert_calls:]:
            if rec.error and self.expert_error_is_infra and step.infra_error is None:
                step.infra_error = f"expert {rec.alias} ({rec.model}) failed: {rec.error}"
        step.cost_usd = self.env.cost_usd - self._cost
        step.latency_s = self.env.latency_s - self._latency
        self._cost, self._latency = self.env.cost_usd, self.env.latency_s
        step.done = bool(done)
        step.info.update({k: v for k, v in info.items() if k != "expert"})
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
        infra = (f"user simulator failed: {self.env.error}" if reason == "user_error" else None)
        return EnvOutcome(reward=float(ri.reward), correct=ri.reward > 0, answer=None,
                          answer_valid=reason not in ("too_many_errors", "max_steps"),
                          infra_error=infra,
                          info={"reward_info": dataclasses.asdict(ri),
                                "termination_reason": reason,
                                "loop_finish_reason": finish_reason,
                                "user_cost_usd": self.env.user_cost_usd,
                                "user_latency_s": self.env.user_latency_s,
                                "executed_calls": self.env.recorded_actions(),
                                "agent_messages": list(self.env.agent_messages)})

"""A tau2-style function-calling episode: agent ⇄ domain tools ⇄ simulated user.

Protocol (gym-like, async)::

    env = FunctionCallingEnv(domain, task, user, experts={"expert-1": chat_model, ...})
    obs = await env.reset()          # {"messages": [system, assistant greeting, user], "tools": [...]}
    while True:
        action = ...                 # agent text, {"tool_calls": [...]} or a parsed turn
        observations, done, info = await env.step(action)
        if done: break
    reward = env.final_reward()      # tau2 evaluator on the recorded calls and messages

An *action* is either a message to the user (``str``, ``{"content": str}`` / ``{"message": str}``,
or an object with ``.message``/``.content``) or tool calls (``{"tool_calls": [{"name",
"arguments"}]}`` or an object with ``.calls``, e.g. :class:`orchestra_jax.chat.parser.ParsedTurn`).
Tool calls are executed in order and each gives a ``{"role": "tool"}`` observation; a message
gets the user's reply as a ``{"role": "user"}`` observation. When both are given the calls run and
the text is dropped (tau2: one or the other per turn; ``info["warnings"]`` says so).

Expert mode (``experts`` given; paper_spec §2.5, official_release §2.2):
``transfer_to_human_agents`` is removed, the policy's transfer paragraph is rewritten to "call an
expert when not confident", and ``call_expert(expert)`` is added. Calling it hands the turn to the
chosen expert (a ChatModel: ``async chat(messages, *, max_tokens, temperature, tools)`` →
ChatResponse with ``text``, ``tool_calls``, ``prompt_tokens``, ``completion_tokens``): it sees the
original system prompt (original policy), the conversation so far and the original domain tools,
and *its* message or tool calls become the agent's action for that turn. Expert tokens are
priced with the response's ``cost_usd`` or, failing that, ``prices`` (a
:class:`~orchestra_jax.tools.pricing.PriceSheet`) for the alias's model in ``mapping``.

Dual control (telecom): when the domain has user tools the user simulator gets them
(``set_tools``) and may answer with tool calls instead of a message; they run on the user's
device DB (requestor ``"user"``, followed by the env sync), their results go back to the
simulator (``respond_to_tools``) until it speaks to the agent. The agent never sees those calls
(only the user's words); they are recorded for the evaluator (``recorded_actions`` marks them
``"requestor": "user"``) and in ``user_calls``. Every tool call (agent's or user's) is followed by
the domain's env sync, as tau2 does.

Episode ends (``done``) when the user emits ``###STOP###``/``###TRANSFER###``/``###OUT-OF-SCOPE###``
(``termination_reason`` ``user_stop``), the agent says ``###STOP###`` (``agent_stop``), after
``max_steps`` messages (``max_steps``, reward 0 as in tau2) or ``max_errors`` failed tool calls
(``too_many_errors``, reward 0). A failing user simulator ends the episode with
``termination_reason == "user_error"`` and ``error`` set (an infrastructure failure: drop such
episodes rather than train on them). Cost is in US dollars, latency in wall-clock seconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Mapping, Optional, Sequence, Union

from orchestra_jax.envs.tau2.agent_protocol import (AGENT_INSTRUCTION, EXPERT_POLICY,
                                                    FORMAT_INSTRUCTION, GREETING, _call_id,
                                                    _normalise_calls, _split_action,
                                                    agent_system_prompt, call_expert_schema,
                                                    rewrite_policy_for_experts)
from orchestra_jax.envs.tau2.domain import Domain, load_domain
from orchestra_jax.envs.tau2.evaluator import (RewardInfo, apply_initial_state, evaluate,
                                               evaluate_async, execute_call)
from orchestra_jax.envs.tau2.toolset import GENERIC, FunctionTool, ToolSet
from orchestra_jax.envs.user_sim import STOP, UserSimulator

__all__ = ["FunctionCallingEnv", "ExecutedCall", "ExpertCall", "AGENT_INSTRUCTION",
           "EXPERT_POLICY", "FORMAT_INSTRUCTION", "GREETING", "agent_system_prompt",
           "rewrite_policy_for_experts", "call_expert_schema"]

@dataclasses.dataclass
class ExecutedCall:
    """A domain tool call that ran: ``by`` is ``"agent"``, the expert alias that made it, or
    ``"user"`` (a user-side device call, ``requestor == "user"``)."""

    name: str
    arguments: dict
    observation: str
    ok: bool
    error: Optional[str]
    by: str
    turn: int
    latency_s: float
    requestor: str = "assistant"


@dataclasses.dataclass
class ExpertCall:
    """One ``call_expert``: tokens, US-dollar cost, wall-clock latency and the action it produced."""

    alias: str
    model: str
    turn: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    action: Optional[dict] = None
    error: Optional[str] = None


class FunctionCallingEnv:
    """One tau2 episode. See the module docstring for the protocol and expert mode."""

    def __init__(self, domain: Union[Domain, str], task: Union[Mapping[str, Any], str],
                 user: UserSimulator, experts: Optional[Mapping[str, Any]] = None, *,
                 mapping: Any = None, prices: Any = None, max_steps: int = 200,
                 max_errors: int = 10, expert_max_tokens: int = 4096,
                 expert_temperature: float = 0.0, nl_judge: Any = None,
                 format_instruction: Optional[bool] = None, greeting: str = GREETING,
                 max_user_tool_rounds: int = 20):
        self.domain = load_domain(domain) if isinstance(domain, str) else domain
        self.task = dict(self.domain.task(task) if isinstance(task, str) else task)
        self.original_tools: ToolSet = self.domain.require_tools()
        self.user = user
        self.experts = dict(experts or {})
        self.mapping = mapping
        self.prices = prices
        self.max_steps = max_steps
        self.max_errors = max_errors
        self.expert_max_tokens = expert_max_tokens
        self.expert_temperature = expert_temperature
        self.nl_judge = nl_judge
        self.greeting = greeting
        self.max_user_tool_rounds = max_user_tool_rounds
        self.user_tools: ToolSet = self.domain.user_tools
        if hasattr(user, "set_tools"):   # device tools (telecom), or none: a reused simulator
            user.set_tools(self.user_tools.to_openai_tools() if len(self.user_tools) else None)
        self.expert_mode = bool(self.experts)
        fmt = self.expert_mode if format_instruction is None else format_instruction
        self.original_system_prompt = agent_system_prompt(self.domain.policy)
        if self.expert_mode:
            schema = call_expert_schema(sorted(self.experts), mapping, prices)
            expert_tool = FunctionTool("call_expert", schema["description"], schema["parameters"],
                                       fn=lambda db, expert: None, tool_type=GENERIC)
            self.tools = self.original_tools.without("transfer_to_human_agents").plus(expert_tool)
            self.system_prompt = agent_system_prompt(
                rewrite_policy_for_experts(self.domain.policy), format_instruction=fmt)
        else:
            self.tools = self.original_tools
            self.system_prompt = agent_system_prompt(self.domain.policy, format_instruction=fmt)
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self.db = self.domain.fresh_db()
        self.user_db = self.domain.fresh_user_db()
        self.history: list[dict] = []       # effective conversation, OpenAI format, no system
        self.executed_calls: list[ExecutedCall] = []   # agent/expert and user calls, in order
        self.user_calls: list[dict] = []                # the user's tool calls + observations
        self.expert_calls: list[ExpertCall] = []
        self.agent_messages: list[str] = []
        self.turn = 0
        self.steps = 0
        self.n_errors = 0
        self.done = False
        self.termination_reason: Optional[str] = None
        self.cost_usd = 0.0          # experts (the orchestrator's own tokens are priced by rollout)
        self.latency_s = 0.0         # tool + expert wall-clock seconds
        self.user_cost_usd = 0.0
        self.user_latency_s = 0.0
        self._n_calls = 0
        self.error: Optional[str] = None
        self._reward_info: Optional[RewardInfo] = None

    @property
    def messages(self) -> list[dict]:
        """The orchestrator's view: its system prompt + the effective conversation."""
        return [{"role": "system", "content": self.system_prompt}, *self.history]

    def tools_openai(self) -> list[dict]:
        return self.tools.to_openai_tools()

    async def reset(self) -> dict:
        """Fresh DB (+ task initial state), greeting, first user message."""
        self._reset_state()
        initial_state = self.task.get("initial_state") or {}
        apply_initial_state(self.domain, self.db, self.user_db, initial_state)
        for m in initial_state.get("message_history") or ():
            self.history.append(self._history_msg(m))
        await self.user.reset(self.task)
        if not self.history:
            self.history.append({"role": "assistant", "content": self.greeting})
            await self._user_turn(self.greeting)
        elif self.history[-1].get("role") == "assistant" and self.history[-1].get("content"):
            await self._user_turn(self.history[-1]["content"])
        return {"messages": self.messages, "tools": self.tools_openai()}

    @staticmethod
    def _history_msg(m: Mapping) -> dict:
        """A tau2 ``message_history`` entry in OpenAI chat format."""
        role = m.get("role", "assistant")
        if m.get("tool_calls"):
            calls = [{"id": tc.get("id") or f"history_call_{i}", "type": "function",
                      "function": {"name": tc.get("name"),
                                   "arguments": json.dumps(tc.get("arguments") or {},
                                                           default=str)}}
                     for i, tc in enumerate(m["tool_calls"])]
            return {"role": role, "content": m.get("content"), "tool_calls": calls}
        if role == "tool":
            return {"role": "tool", "tool_call_id": m.get("id"), "content": m.get("content")}
        return {"role": role, "content": m.get("content")}

    # ------------------------------------------------------------------ stepping
    async def step(self, action: Any) -> tuple[list[dict], bool, dict]:
        """Apply one agent action. Returns (observation messages, done, info)."""
        if self.done:
            raise RuntimeError(f"episode already finished ({self.termination_reason}); call reset()")
        self.turn += 1
        calls, text = _split_action(action)
        info: dict[str, Any] = {"turn": self.turn, "warnings": []}
        if calls and text:
            info["warnings"].append("both a message and tool calls given: the message was dropped")
        observations: list[dict] = []
        expert = next((c for c in calls if c.get("name") == "call_expert"), None)
        if expert is not None and self.expert_mode:
            if len(calls) > 1:
                info["warnings"].append("call_expert given with other calls: only call_expert ran")
            observations += await self._call_expert(expert.get("arguments") or {}, info)
        elif calls:
            observations += self._run_calls(calls, by="agent")
        elif text is not None and str(text).strip():
            observations += await self._agent_message(str(text))
        else:
            self.n_errors += 1
            observations.append({"role": "tool", "name": "error", "content":
                                 "Error: empty action: send a message to the user or make a tool call."})
        self._check_limits()
        info.update(self._summary())
        return observations, self.done, info

    def _run_calls(self, calls: Sequence[dict], by: str) -> list[dict]:
        openai_calls, observations = [], []
        start = self._n_calls
        for i, c in enumerate(calls):
            openai_calls.append({"id": _call_id(start + i), "type": "function",
                                 "function": {"name": c.get("name"),
                                              "arguments": json.dumps(c.get("arguments") or {},
                                                                      default=str)}})
        self.history.append({"role": "assistant", "content": None, "tool_calls": openai_calls})
        self.steps += 1
        for i, c in enumerate(calls):
            self._n_calls += 1
            t0 = time.perf_counter()
            name, args = c.get("name"), c.get("arguments") or {}
            reached_domain = False
            if "_error" in c:
                obs, ok, err = f"Error: {c['_error']}", False, c["_error"]
            elif name == "call_expert" or name not in self.original_tools or (
                    self.expert_mode and by == "agent" and name == "transfer_to_human_agents"):
                err = f"Tool '{name}' not found. Available tools: {self.tools.names()}"
                obs, ok = f"Error: {err}", False
                # tau2 keeps every call in the trajectory: an unknown name (e.g. a user device
                # tool the agent tried) still counts for the ACTION check, and replays as an error
                reached_domain = name != "call_expert" and name not in self.original_tools
            else:
                res = execute_call(self.domain, self.db, self.user_db, name, args)
                obs, ok, err = res.observation, res.ok, res.error
                reached_domain = True
            dt = time.perf_counter() - t0
            self.latency_s += dt
            if not ok:
                self.n_errors += 1
            if reached_domain:
                # every call that reached the domain is replayed by the evaluator (errors too)
                self.executed_calls.append(ExecutedCall(name, dict(args), obs, ok, err, by,
                                                        self.turn, dt))
            msg = {"role": "tool", "tool_call_id": openai_calls[i]["id"], "name": name,
                   "content": obs}
            self.history.append(msg)
            observations.append(msg)
            self.steps += 1
        return observations

    async def _agent_message(self, text: str) -> list[dict]:
        self.history.append({"role": "assistant", "content": text})
        self.agent_messages.append(text)
        self.steps += 1
        if STOP in text:
            self.done, self.termination_reason = True, "agent_stop"
            return []
        reply = await self._user_turn(text)
        return [reply] if reply is not None else []

    def _run_user_calls(self, calls: Sequence[dict]) -> list[dict]:
        """Run the user's device tool calls (requestor ``"user"``) → tool observations."""
        observations = []
        ids = [c.get("id") if isinstance(c, Mapping) else None for c in calls]
        for i, c in enumerate(_normalise_calls(calls)):
            name, args = c.get("name"), c.get("arguments") or {}
            t0 = time.perf_counter()
            if "_error" in c:
                obs, ok, err, ran = f"Error: {c['_error']}", False, c["_error"], False
            else:
                res = execute_call(self.domain, self.db, self.user_db, name, args, "user")
                obs, ok, err, ran = res.observation, res.ok, res.error, True
            dt = time.perf_counter() - t0
            self.steps += 2                     # the user's call message + its tool message
            if not ok:
                self.n_errors += 1
            if ran:
                self.executed_calls.append(ExecutedCall(name, dict(args), obs, ok, err, "user",
                                                        self.turn, dt, requestor="user"))
            self.user_calls.append({"name": name, "arguments": dict(args), "observation": obs,
                                    "ok": ok, "turn": self.turn})
            observations.append({"role": "tool", "tool_call_id": ids[i] if i < len(ids) else None,
                                 "name": name, "content": obs})
        return observations

    async def _user_turn(self, agent_text: str) -> Optional[dict]:
        try:
            turn = await self.user.respond(agent_text)
            rounds = 0
            while turn.tool_calls:
                self.user_cost_usd += float(turn.cost_usd or 0.0)
                self.user_latency_s += float(turn.latency_s or 0.0)
                rounds += 1
                if rounds > self.max_user_tool_rounds or not hasattr(self.user,
                                                                      "respond_to_tools"):
                    raise RuntimeError(f"user simulator made more than "
                                       f"{self.max_user_tool_rounds} tool-call rounds in a row "
                                       f"(or cannot take tool results)")
                observations = self._run_user_calls(turn.tool_calls)
                turn = await self.user.respond_to_tools(observations)
        except Exception as e:  # the user simulator's LLM failed: end, flagged, not the agent's fault
            self.error = f"user simulator failed: {type(e).__name__}: {e}"
            self.done, self.termination_reason = True, "user_error"
            return None
        self.user_cost_usd += float(turn.cost_usd or 0.0)
        self.user_latency_s += float(turn.latency_s or 0.0)
        msg = {"role": "user", "content": turn.text}
        self.history.append(msg)
        self.steps += 1
        if turn.done:
            self.done, self.termination_reason = True, "user_stop"
        return msg

    async def _call_expert(self, arguments: Mapping[str, Any], info: dict) -> list[dict]:
        """Hand the turn to an expert. ``call_expert`` itself never enters :attr:`history` (the
        effective conversation): only the expert's resulting message / tool calls do."""
        alias = arguments.get("expert") if isinstance(arguments, Mapping) else None
        if alias not in self.experts:
            self.n_errors += 1
            return [{"role": "tool", "name": "call_expert", "content":
                     f"Error: unknown expert {alias!r}; choose one of {sorted(self.experts)}"}]
        model_name = self._model_of(alias)
        record = ExpertCall(alias=alias, model=model_name, turn=self.turn)
        self.expert_calls.append(record)
        messages = [{"role": "system", "content": self.original_system_prompt}, *self.history]
        t0 = time.perf_counter()
        try:
            resp = await self.experts[alias].chat(
                messages, max_tokens=self.expert_max_tokens, temperature=self.expert_temperature,
                tools=self.original_tools.to_openai_tools())
        except Exception as e:  # ExpertError, timeouts, anything: the episode goes on
            record.latency_s = time.perf_counter() - t0
            self.latency_s += record.latency_s
            record.error = f"{type(e).__name__}: {e}"
            self.n_errors += 1
            obs = {"role": "tool", "name": "call_expert",
                   "content": f"Error: expert {alias} failed: {record.error}"}
            return [obs]
        record.latency_s = float(getattr(resp, "latency_s", 0.0) or 0.0) or (
            time.perf_counter() - t0)
        record.prompt_tokens = int(getattr(resp, "prompt_tokens", 0) or 0)
        record.completion_tokens = int(getattr(resp, "completion_tokens", 0) or 0)
        record.cost_usd = self._price(resp, model_name, record)
        self.cost_usd += record.cost_usd
        self.latency_s += record.latency_s
        calls = _normalise_calls(getattr(resp, "tool_calls", None))
        text = (getattr(resp, "text", None) or "").strip()
        record.action = {"tool_calls": [{"name": c.get("name"), "arguments": c.get("arguments")}
                                        for c in calls]} if calls else {"message": text}
        info["expert"] = dataclasses.asdict(record)
        head = {"role": "tool", "name": "call_expert"}
        if calls:
            listing = "; ".join(f"{c.get('name')}({json.dumps(c.get('arguments'))})" for c in calls)
            head["content"] = f"{alias} made the tool call(s): {listing}"
            return [head, *self._run_calls(calls, by=alias)]
        if not text:
            self.n_errors += 1
            head["content"] = f"Error: {alias} returned an empty response"
            return [head]
        head["content"] = f"{alias} sent the message: <message>{text}</message>"
        return [head, *await self._agent_message(text)]

    def _model_of(self, alias: str) -> str:
        if self.mapping is not None:
            try:
                return self.mapping.model_of(alias)
            except KeyError:
                pass
        return str(getattr(self.experts[alias], "model", alias))

    def _price(self, resp: Any, model_name: str, record: ExpertCall) -> float:
        cost = getattr(resp, "cost_usd", None)
        if cost is not None:
            return float(cost)
        if self.prices is None:
            return 0.0
        return float(self.prices.cost_of_llm_call(model_name, record.prompt_tokens,
                                                  record.completion_tokens))

    def _check_limits(self) -> None:
        if self.done:
            return
        if self.n_errors >= self.max_errors:
            self.done, self.termination_reason = True, "too_many_errors"
        elif self.steps >= self.max_steps:
            self.done, self.termination_reason = True, "max_steps"

    def _summary(self) -> dict:
        return {"steps": self.steps, "n_errors": self.n_errors, "cost_usd": self.cost_usd,
                "latency_s": self.latency_s, "termination_reason": self.termination_reason,
                "error": self.error}

    # ------------------------------------------------------------------ scoring
    def recorded_actions(self) -> list[dict]:
        """Every domain call that ran (agent's, experts' and the user's — the latter with
        ``"requestor": "user"``), in call order, for the evaluator. An agent call to an unknown
        tool is kept (it failed; tau2 keeps it in the trajectory too)."""
        return [{"name": c.name, "arguments": c.arguments,
                 **({"requestor": "user"} if c.requestor == "user" else {})}
                for c in self.executed_calls]

    def _eval_args(self, termination_reason: Optional[str]) -> tuple:
        convo = [m for m in self.history if m.get("content")]
        reason = termination_reason if termination_reason is not None else self.termination_reason
        return (self.domain, self.task, self.recorded_actions(), self.agent_messages), {
            "nl_judge": self.nl_judge, "conversation": convo, "termination_reason": reason}

    def final_reward_info(self, termination_reason: Optional[str] = None) -> RewardInfo:
        """tau2 evaluation of the episode so far. ``termination_reason`` overrides the env's own
        (e.g. ``"max_steps"`` when an outer loop cut the episode: reward 0, as in tau2)."""
        args, kwargs = self._eval_args(termination_reason)
        self._reward_info = evaluate(*args, **kwargs)
        return self._reward_info

    async def final_reward_info_async(self, termination_reason: Optional[str] = None
                                      ) -> RewardInfo:
        """:meth:`final_reward_info` with an async ``nl_judge`` (e.g. :class:`LLMNLJudge`)."""
        args, kwargs = self._eval_args(termination_reason)
        self._reward_info = await evaluate_async(*args, **kwargs)
        return self._reward_info

    def final_reward(self, termination_reason: Optional[str] = None) -> float:
        """tau2 reward in [0, 1] of the episode so far (sync ``nl_judge`` only)."""
        return self.final_reward_info(termination_reason).reward

    def record(self) -> dict:
        """A JSON-serialisable record of the episode."""
        return {"domain": self.domain.name, "task_id": self.task.get("id"),
                "messages": self.messages, "executed_calls": [dataclasses.asdict(c)
                                                              for c in self.executed_calls],
                "expert_calls": [dataclasses.asdict(c) for c in self.expert_calls],
                "user_calls": list(self.user_calls),
                "agent_messages": list(self.agent_messages), **self._summary(),
                "user_cost_usd": self.user_cost_usd, "user_latency_s": self.user_latency_s,
                "reward": None if self._reward_info is None else self._reward_info.reward}

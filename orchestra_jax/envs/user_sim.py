"""User simulators for tau2-style conversations.

* :class:`LLMUserSimulator` — tau2's user simulator over any ChatModel-like object
  (``async chat(messages, *, max_tokens, temperature, tools=None) -> ChatResponse``, e.g.
  :class:`orchestra_jax.tools.llm_client.OpenAIChatClient` or a local model). System prompt =
  ``simulation_guidelines.md`` + ``<scenario>`` (the task's ``user_scenario`` rendered as tau2
  does); roles are flipped (the agent speaks as ``user``, the simulator as ``assistant``). The
  conversation ends when the simulator says ``###STOP###``, ``###TRANSFER###`` or
  ``###OUT-OF-SCOPE###``.
* :class:`ScriptedUser` — replays fixed messages, then stops (tests / demos).

Both implement :class:`UserSimulator`: ``await reset(task)`` then ``await respond(agent_text)``
per agent message, each returning a :class:`UserTurn`.

Dual control (tau2 telecom: the user acts on their own phone). When the domain has user tools the
environment calls ``set_tools(openai_tools)`` before ``reset``; a :class:`UserTurn` may then carry
``tool_calls`` instead of a message to the agent. The environment runs them on the user's side
and hands the results back with ``await respond_to_tools(observations)`` (``[{"role": "tool",
"tool_call_id", "name", "content"}]``), repeating until the user speaks to the agent. The LLM
simulator switches to tau2's ``simulation_guidelines_tools.md`` and passes its tools to the
model; a scripted user scripts calls as ``{"tool_calls": [{"name", "arguments"}]}`` entries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import textwrap
from typing import Any, Mapping, Optional, Protocol, Sequence, runtime_checkable

__all__ = ["UserTurn", "UserSimulator", "ScriptedUser", "LLMUserSimulator", "STOP", "TRANSFER",
           "OUT_OF_SCOPE", "render_user_scenario", "load_simulation_guidelines"]

STOP, TRANSFER, OUT_OF_SCOPE = "###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###"
STOP_TOKENS = (STOP, TRANSFER, OUT_OF_SCOPE)


@dataclasses.dataclass
class UserTurn:
    """One user message. ``done`` when it ends the conversation; ``stop_reason`` is the token
    found (``###STOP###`` …) or ``"script_exhausted"``; cost in US dollars, latency in seconds."""

    text: str
    done: bool = False
    stop_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    tool_calls: list[dict] = dataclasses.field(default_factory=list)  # user-side tool calls


@runtime_checkable
class UserSimulator(Protocol):
    async def reset(self, task: Mapping[str, Any]) -> None: ...

    async def respond(self, agent_message: str) -> UserTurn: ...


def _script_turn(item: Any) -> UserTurn:
    if isinstance(item, Mapping):
        calls = [{"name": c.get("name"), "arguments": dict(c.get("arguments") or {})}
                 for c in item.get("tool_calls") or ()]
        text = str(item.get("content") or "")
        reason = None if calls else _stop_reason(text)
        return UserTurn(text, done=reason is not None, stop_reason=reason, tool_calls=calls)
    text = str(item)
    reason = _stop_reason(text)
    return UserTurn(text, done=reason is not None, stop_reason=reason)


def _stop_reason(text: str) -> Optional[str]:
    for tok in STOP_TOKENS:
        if tok in text:
            return tok
    return None


class ScriptedUser:
    """Replays ``messages`` one per agent message (or per tool-result hand-back); after the last
    one the next reply is ``###STOP###`` (``done``). A message may itself contain a stop token
    to end early; an entry ``{"tool_calls": [{"name", "arguments"}]}`` is a user tool call."""

    def __init__(self, messages: Sequence[Any]):
        self.messages = list(messages)
        self._i = 0
        self.tool_results: list[dict] = []   # every observation handed back, for inspection

    async def reset(self, task: Mapping[str, Any]) -> None:
        self._i = 0
        self.tool_results = []

    def _next(self) -> UserTurn:
        if self._i >= len(self.messages):
            return UserTurn(STOP, done=True, stop_reason=STOP)
        item = self.messages[self._i]
        self._i += 1
        return _script_turn(item)

    async def respond(self, agent_message: str) -> UserTurn:
        return self._next()

    async def respond_to_tools(self, observations: Sequence[Mapping]) -> UserTurn:
        self.tool_results += [dict(o) for o in observations]
        return self._next()


def _data_root() -> pathlib.Path:
    env = os.environ.get("ORCHESTRA_TAU2_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tau2"


def load_simulation_guidelines(path: Optional[os.PathLike] = None, *, tools: bool = False) -> str:
    """tau2's ``user_simulator/simulation_guidelines[_tools].md`` (from ``$ORCHESTRA_TAU2_DATA``
    or ``<repo>/../shared/data/tau2``)."""
    p = pathlib.Path(path) if path else (
        _data_root() / "user_simulator"
        / ("simulation_guidelines_tools.md" if tools else "simulation_guidelines.md"))
    if not p.is_file():
        raise FileNotFoundError(f"user simulation guidelines not found at {p} "
                                f"(set ORCHESTRA_TAU2_DATA or pass guidelines_path)")
    return p.read_text(encoding="utf-8")


def _render_instructions(instr: Any) -> str:
    if isinstance(instr, str):
        return instr
    if not isinstance(instr, Mapping):
        return str(instr)
    lines = [f"Domain: {instr.get('domain')}", "Reason for call:",
             textwrap.indent(str(instr.get("reason_for_call") or ""), "\t")]
    if instr.get("known_info") is not None:
        lines += ["Known info:", textwrap.indent(str(instr["known_info"]), "\t")]
    if instr.get("unknown_info") is not None:
        lines += ["Unknown info:", textwrap.indent(str(instr["unknown_info"]), "\t")]
    lines += ["Task instructions:", textwrap.indent(str(instr.get("task_instructions") or ""), "\t")]
    return "\n".join(lines)


def render_user_scenario(scenario: Mapping[str, Any]) -> str:
    """tau2's ``str(UserScenario)``: optional ``Persona:`` then ``Instructions:`` (tab-indented)."""
    lines = []
    if scenario.get("persona") is not None:
        lines += ["Persona:", textwrap.indent(str(scenario["persona"]), "\t")]
    lines += ["Instructions:",
              textwrap.indent(_render_instructions(scenario.get("instructions")), "\t")]
    return "\n".join(lines)


class LLMUserSimulator:
    """tau2's LLM user simulator. ``price_model``: model name priced with ``prices``
    (a :class:`~orchestra_jax.tools.pricing.PriceSheet`) when the response carries no cost."""

    def __init__(self, chat_model: Any, *, guidelines: Optional[str] = None,
                 guidelines_path: Optional[os.PathLike] = None, max_tokens: int = 1024,
                 temperature: float = 0.0, prices: Any = None,
                 price_model: Optional[str] = None, tools: Optional[list[dict]] = None):
        self.chat_model = chat_model
        self._explicit_guidelines = guidelines is not None or guidelines_path is not None
        self._guidelines_path = guidelines_path
        self.guidelines = guidelines if guidelines is not None else \
            load_simulation_guidelines(guidelines_path)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.prices = prices
        self.price_model = price_model
        self.messages: list[dict] = []
        self.tools: Optional[list[dict]] = None
        self._n_calls = 0
        if tools:
            self.set_tools(tools)

    def set_tools(self, tools: Optional[list[dict]]) -> None:
        """Give the simulator its own (device) tools; switches to the tools guidelines."""
        self.tools = list(tools) if tools else None
        if not self._explicit_guidelines:
            self.guidelines = load_simulation_guidelines(tools=bool(self.tools))

    def system_prompt(self, task: Mapping[str, Any]) -> str:
        scenario = task.get("user_scenario") or {}
        return f"{self.guidelines}\n\n<scenario>\n{render_user_scenario(scenario)}\n</scenario>"

    async def reset(self, task: Mapping[str, Any]) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt(task)}]

    async def respond(self, agent_message: str) -> UserTurn:
        if not self.messages:
            raise RuntimeError("LLMUserSimulator.respond called before reset(task)")
        self.messages.append({"role": "user", "content": agent_message})
        return await self._generate()

    async def respond_to_tools(self, observations: Sequence[Mapping]) -> UserTurn:
        """Continue after the environment ran this simulator's tool calls."""
        if not self.messages:
            raise RuntimeError("LLMUserSimulator.respond_to_tools called before reset(task)")
        for o in observations:
            self.messages.append({"role": "tool", "tool_call_id": o.get("tool_call_id"),
                                  "name": o.get("name"), "content": str(o.get("content"))})
        return await self._generate()

    async def _generate(self) -> UserTurn:
        kwargs = {"tools": self.tools} if self.tools else {}
        resp = await self.chat_model.chat(list(self.messages), max_tokens=self.max_tokens,
                                          temperature=self.temperature, **kwargs)
        text = (getattr(resp, "text", None) or "").strip()
        calls = [{"name": c.get("name"), "arguments": c.get("arguments") or {}}
                 for c in (getattr(resp, "tool_calls", None) or []) if isinstance(c, Mapping)]
        if calls and self.tools:
            ids = [f"user_call_{self._n_calls + i}" for i in range(len(calls))]
            self._n_calls += len(calls)
            self.messages.append({"role": "assistant", "content": text or None, "tool_calls": [
                {"id": i, "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"],
                                                                         default=str)}}
                for i, c in zip(ids, calls)]})
            for i, c in zip(ids, calls):
                c["id"] = i
        else:
            calls = []
            self.messages.append({"role": "assistant", "content": text})
        cost = getattr(resp, "cost_usd", None)
        p_tok = int(getattr(resp, "prompt_tokens", 0) or 0)
        c_tok = int(getattr(resp, "completion_tokens", 0) or 0)
        if cost is None:
            cost = 0.0
            if self.prices is not None and self.price_model:
                cost = self.prices.cost_of_llm_call(self.price_model, p_tok, c_tok)
        reason = None if calls else _stop_reason(text)
        return UserTurn(text, done=reason is not None, stop_reason=reason, prompt_tokens=p_tok,
                        completion_tokens=c_tok, cost_usd=float(cost),
                        latency_s=float(getattr(resp, "latency_s", 0.0) or 0.0),
                        tool_calls=calls)

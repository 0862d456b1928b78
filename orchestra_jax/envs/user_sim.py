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
"""

from __future__ import annotations

import dataclasses
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


@runtime_checkable
class UserSimulator(Protocol):
    async def reset(self, task: Mapping[str, Any]) -> None: ...

    async def respond(self, agent_message: str) -> UserTurn: ...


def _stop_reason(text: str) -> Optional[str]:
    for tok in STOP_TOKENS:
        if tok in text:
            return tok
    return None


class ScriptedUser:
    """Replays ``messages`` one per agent message; after the last one the next reply is
    ``###STOP###`` (``done``). A message may itself contain a stop token to end early."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        self._i = 0

    async def reset(self, task: Mapping[str, Any]) -> None:
        self._i = 0

    async def respond(self, agent_message: str) -> UserTurn:
        if self._i >= len(self.messages):
            return UserTurn(STOP, done=True, stop_reason=STOP)
        text = self.messages[self._i]
        self._i += 1
        reason = _stop_reason(text)
        return UserTurn(text, done=reason is not None, stop_reason=reason)


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
                 price_model: Optional[str] = None):
        self.chat_model = chat_model
        self.guidelines = guidelines if guidelines is not None else \
            load_simulation_guidelines(guidelines_path)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.prices = prices
        self.price_model = price_model
        self.messages: list[dict] = []

    def system_prompt(self, task: Mapping[str, Any]) -> str:
        scenario = task.get("user_scenario") or {}
        return f"{self.guidelines}\n\n<scenario>\n{render_user_scenario(scenario)}\n</scenario>"

    async def reset(self, task: Mapping[str, Any]) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt(task)}]

    async def respond(self, agent_message: str) -> UserTurn:
        if not self.messages:
            raise RuntimeError("LLMUserSimulator.respond called before reset(task)")
        self.messages.append({"role": "user", "content": agent_message})
        resp = await self.chat_model.chat(list(self.messages), max_tokens=self.max_tokens,
                                          temperature=self.temperature)
        text = (getattr(resp, "text", None) or "").strip()
        self.messages.append({"role": "assistant", "content": text})
        cost = getattr(resp, "cost_usd", None)
        p_tok = int(getattr(resp, "prompt_tokens", 0) or 0)
        c_tok = int(getattr(resp, "completion_tokens", 0) or 0)
        if cost is None:
            cost = 0.0
            if self.prices is not None and self.price_model:
                cost = self.prices.cost_of_llm_call(self.price_model, p_tok, c_tok)
        reason = _stop_reason(text)
        return UserTurn(text, done=reason is not None, stop_reason=reason, prompt_tokens=p_tok,
                        completion_tokens=c_tok, cost_usd=float(cost),
                        latency_s=float(getattr(resp, "latency_s", 0.0) or 0.0))

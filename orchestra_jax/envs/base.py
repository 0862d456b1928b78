"""What the episode loop (``orchestra_jax.rollout.episode``) needs from an environment.

Environments live below ``rollout`` in the import chain, so the protocol and its small records
are defined here; ``orchestra_jax.envs.qa.QAEnv`` and the tau2 adapter implement it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol, runtime_checkable

from orchestra_jax.chat.parser import ParsedTurn


@dataclasses.dataclass
class EnvStart:
    """What an environment shows the policy at the start.

    messages: initial chat messages (system prompt, task as user message).
    tools: OpenAI-format tool list rendered into the system prompt by the chat template.
    schemas: what the parser validates calls against (default: ``tools``).
    allow_message: tau2 mode (``<message>…</message>`` is a valid action).
    plain_text_message: with ``allow_message``, a turn with no ``<tool_call>`` and no
      ``<message>`` tags whose text is non-empty is taken as the message (tau2's plain agent
      protocol, used when the prompt never asked for ``<message>`` tags).
    """

    messages: list[dict]
    tools: list[dict]
    schemas: Any = None
    allow_message: bool = False
    plain_text_message: bool = False


@dataclasses.dataclass
class EnvStep:
    """An environment's answer to one policy turn.

    observations: tool outputs, one per executed call, appended in the observation role.
    user_message: a simulated user's reply (tau2), appended as a user turn after observations.
    done: the episode is over. tool_keys: entries of ``tool_names`` to count (one per call).
    tool_results: ``ToolResult.to_json()`` dicts. cost_usd (US$) / latency_s (wall-clock s) of
    the tools this turn; ``latency_s=None`` means the env did not measure it (the loop then uses
    the wall-clock time of ``step``). infra_error: why this turn hit an infrastructure failure
    (a failing expert server, …) that must not count against the policy, else None.
    """

    observations: list[str] = dataclasses.field(default_factory=list)
    user_message: Optional[str] = None
    done: bool = False
    tool_keys: list[str] = dataclasses.field(default_factory=list)
    tool_results: list[dict] = dataclasses.field(default_factory=list)
    cost_usd: float = 0.0
    latency_s: Optional[float] = None
    info: dict = dataclasses.field(default_factory=dict)
    infra_error: Optional[str] = None


@dataclasses.dataclass
class EnvOutcome:
    """The verdict at the end: ``reward``/``outcome`` in [0, 1], ``correct``, the final answer.
    ``infra_error``: the verdict is unusable because of infrastructure (judge failed or gave no
    verdict, user simulator failed), else None."""

    reward: float
    correct: bool
    answer: Optional[str] = None
    answer_valid: bool = False
    info: dict = dataclasses.field(default_factory=dict)
    infra_error: Optional[str] = None


@runtime_checkable
class EpisodeEnv(Protocol):
    """An environment the episode loop can drive."""

    task_id: str
    tool_names: list[str]

    async def reset(self) -> EnvStart:
        ...

    async def step(self, turn: ParsedTurn) -> EnvStep:
        ...

    async def finish(self, finish_reason: str) -> EnvOutcome:
        ...



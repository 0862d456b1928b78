"""The trajectory record one episode produces, and an append-and-flush JSONL writer.

Units: ``cost_usd`` in US dollars, ``latency_s`` / ``*_s`` in wall-clock seconds, token counts in
tokens. ``tokens``, ``loss_mask`` and ``rollout_logprobs`` are aligned (same length):
``loss_mask[i] == 1`` exactly on tokens the policy sampled, ``rollout_logprobs[i]`` is the
engine's log p(token | prefix) there and 0.0 elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from typing import Any, Iterator, Optional, Union

SCHEMA_VERSION = 1


@dataclasses.dataclass
class TurnRecord:
    """One policy turn and what the environment did with it.

    prompt_span / response_span: ``[start, end)`` token ranges in the trajectory (the prompt span
      is the env segment right before this turn's generation).
    text: decoded policy output (for reading; training uses the token ids).
    calls: parsed valid calls ``{"name", "arguments"}``; observations: the env's message texts
      after this turn, as the env produced them (the token stream holds them after control-token
      neutralising and ``max_observation_tokens`` truncation; nothing is appended after the
      episode's last turn).
    format_ok / errors: parser verdict; tool_results: ``ToolResult.to_json()`` per executed call.
    gen_latency_s: the engine's generation time; tool_latency_s: wall-clock of the turn's tool
    execution (the release's latency); cost_usd: tools + the policy's own tokens for this turn.
    """

    index: int
    prompt_span: list[int]
    response_span: list[int]
    text: str = ""
    thinking: str = ""
    calls: list[dict] = dataclasses.field(default_factory=list)
    message: Optional[str] = None
    observations: list[str] = dataclasses.field(default_factory=list)
    format_ok: bool = False
    errors: list[str] = dataclasses.field(default_factory=list)
    repeated_tools: list[str] = dataclasses.field(default_factory=list)
    tool_results: list[dict] = dataclasses.field(default_factory=list)
    finish_reason: str = ""
    gen_latency_s: float = 0.0
    tool_latency_s: float = 0.0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclasses.dataclass
class Trajectory:
    """Everything recorded about one episode (see module docstring for units).

    finish_reason: ``"done"`` (env ended: answer given / user stopped), ``"max_turns"``,
      ``"context"`` (the next prompt exceeded the context limit), ``"timeout"`` (per-turn or
      per-episode time limit), ``"error"`` (an exception; ``error`` says which).
    outcome / reward: the environment's verdict in [0, 1]; ``correct`` = outcome > 0 for
      tau2-style rewards, exact/judged match for QA. ``None`` when no verdict (error).
    tool_counts: calls per tool, aligned with ``tool_names``.
    latency_s: sum of tool latencies (paper/release definition); ``wall_s``: whole episode.
    """

    task_id: str
    tokens: list[int] = dataclasses.field(default_factory=list)
    loss_mask: list[int] = dataclasses.field(default_factory=list)
    rollout_logprobs: list[float] = dataclasses.field(default_factory=list)
    turns: list[TurnRecord] = dataclasses.field(default_factory=list)
    tool_names: list[str] = dataclasses.field(default_factory=list)
    tool_counts: list[int] = dataclasses.field(default_factory=list)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    gen_latency_s: float = 0.0
    wall_s: float = 0.0
    outcome: Optional[float] = None
    reward: Optional[float] = None
    correct: Optional[bool] = None
    answer: Optional[str] = None
    answer_valid: bool = False
    finish_reason: str = ""
    error: Optional[str] = None
    num_turns: int = 0
    format_ok_all: bool = False
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def num_policy_tokens(self) -> int:
        return int(sum(self.loss_mask))

    def to_json(self) -> dict:
        """A JSON-serialisable dict (``info`` values that are not JSON become strings)."""
        d = dataclasses.asdict(self)
        d["info"] = json.loads(json.dumps(self.info, default=str))
        for t in d["turns"]:
            t["tool_results"] = json.loads(json.dumps(t["tool_results"], default=str))
        return d

    @classmethod
    def from_json(cls, d: Union[str, dict]) -> "Trajectory":
        if isinstance(d, str):
            d = json.loads(d)
        d = dict(d)
        tf = {f.name for f in dataclasses.fields(TurnRecord)}
        turns = [TurnRecord(**{k: v for k, v in t.items() if k in tf}) for t in d.pop("turns", [])]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(turns=turns, **{k: v for k, v in d.items() if k in fields})

    def validate(self) -> None:
        """Raises ValueError when the token arrays or spans are inconsistent."""
        n = len(self.tokens)
        if not n == len(self.loss_mask) == len(self.rollout_logprobs):
            raise ValueError(f"{self.task_id}: tokens/loss_mask/rollout_logprobs lengths "
                             f"{n}/{len(self.loss_mask)}/{len(self.rollout_logprobs)} differ")
        covered = [0] * n
        for t in self.turns:
            s, e = t.response_span
            if not 0 <= s <= e <= n:
                raise ValueError(f"{self.task_id}: turn {t.index} span {t.response_span} out of range")
            for i in range(s, e):
                covered[i] = 1
        if covered != [int(m) for m in self.loss_mask]:
            raise ValueError(f"{self.task_id}: loss_mask differs from the union of response spans")
        for i, (m, lp) in enumerate(zip(self.loss_mask, self.rollout_logprobs)):
            if not m and lp != 0.0:
                raise ValueError(f"{self.task_id}: non-zero log-prob on env token {i}")
        if len(self.tool_counts) != len(self.tool_names):
            raise ValueError(f"{self.task_id}: tool_counts/tool_names lengths differ")


class TrajectoryWriter:
    """Appends one JSON line per trajectory and flushes (+fsync) each, so a crash loses nothing.

    Thread-safe; usable as a context manager. Opening an existing file appends to it.
    """

    def __init__(self, path: Union[str, os.PathLike], *, fsync: bool = True):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._fsync = fsync
        self.count = 0

    def write(self, traj: Union[Trajectory, dict]) -> None:
        rec = traj.to_json() if isinstance(traj, Trajectory) else traj
        line = json.dumps(rec, ensure_ascii=False, default=str)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()
            if self._fsync:
                os.fsync(self._f.fileno())
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_trajectories(path: Union[str, os.PathLike]) -> Iterator[Trajectory]:
    """Reads a JSONL file written by :class:`TrajectoryWriter` (a torn last line is skipped)."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield Trajectory.from_json(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # interrupted mid-write
                return
            raise

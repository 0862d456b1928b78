"""The trajectory record one episode produces, and an append-and-flush JSONL writer.

Units: ``cost_usd`` in US dollars, ``latency_s`` / ``*_s`` in wall-clock seconds, token counts in
tokens. ``tokens``, ``loss_mask`` and ``rollout_logprobs`` are aligned (same length):
``loss_mask[i] == 1`` exactly on tokens the policy sampled, ``rollout_logprobs[i]`` is the
engine's log p(token | prefix) there and 0.0 elsewhere.

Schema history: v1 (no run metadata); v2 adds the group / rollout index, the preference (P and
its instruction), the alias→model mapping, price-sheet id, sampling settings, engine name and its
log-prob convention, the policy version per turn, ``infra_error`` and the context mode
(``strip_thinking`` episodes carry each turn's real prompt and require the ``turn`` unit), and
keys ``tool_names`` the paper's way (basic tools + concrete models; v1 keyed them by alias).
v1 records still load (new fields take their defaults, ``schema_version`` stays 1).

:func:`group_validity` is the mask the reward / advantage code takes (``[G]`` for one task's
group, the ``mask`` of ``rl.rewards.preference_reward`` / ``grpo_advantages``): infrastructure failures never
become negative samples. :func:`reward_inputs` builds the Eq. 2 inputs of one group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import threading
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

SCHEMA_VERSION = 2
LOGPROB_CONVENTIONS = ("pre_temperature", "post_temperature", "unknown")
CONTEXT_MODES = ("append", "strip_thinking")


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
    policy_version: the engine's weight version that generated this turn (None: unknown).
    prompt_base / prompt_suffix: only for ``strip_thinking`` episodes, where the prompt the engine
      saw is not a prefix of ``tokens``: prompt = (previous turn's prompt, or ``tokens`` for the
      first turn)[:prompt_base] + prompt_suffix. None = the prompt is ``tokens[:response start]``.
      Use :meth:`Trajectory.turn_prompt` rather than reading these.
    infra_error: an infrastructure failure during this turn (e.g. a failing expert), else None.
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
    policy_version: Optional[int] = None
    prompt_base: Optional[int] = None
    prompt_suffix: Optional[list[int]] = None
    infra_error: Optional[str] = None


@dataclasses.dataclass
class Trajectory:
    """Everything recorded about one episode (see module docstring for units).

    finish_reason: ``"done"`` (env ended: answer given / user stopped), ``"max_turns"``,
      ``"context"`` (the next prompt exceeded the context limit), ``"timeout"`` (per-turn or
      per-episode time limit), ``"error"`` (an exception; ``error`` says which).
    outcome / reward: the environment's verdict in [0, 1]; ``correct`` = outcome > 0 for
      tau2-style rewards, exact/judged match for QA. ``None`` when no verdict (error).
    tool_counts: calls per tool, aligned with ``tool_names`` (basic tools + concrete models).
    latency_s: sum of tool latencies (paper/release definition); ``wall_s``: whole episode.
    group_id / rollout_index: the GRPO group (one task's randomised setup) and the index in it.
    preference / preference_instruction / preference_kind: P (aligned with ``tool_names`` + 3)
      and the text appended to the task prompt (None / "" when the task had none).
    model_mapping: alias -> concrete model. price_sheet_id: the sheet the costs used.
    sampling: the ``SamplingParams`` fields (``max_new_tokens`` = the per-turn cap).
    engine / logprob_convention: who generated and whether ``rollout_logprobs`` are the model's
      own log-softmax (``"pre_temperature"``) or of the temperature-scaled distribution.
    infra_error / infra_reason: the episode hit an infrastructure failure (judge or user-simulator
      error, engine abort or hang, failing expert, broken task / env); leave it out of its group.
    context_mode: ``"append"`` or ``"strip_thinking"``; required_unit: ``"turn"`` when only the
      per-turn training unit is faithful to what the policy saw (strip_thinking), else None.
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
    group_id: Optional[str] = None
    rollout_index: Optional[int] = None
    preference: Optional[list[float]] = None
    preference_instruction: str = ""
    preference_kind: str = ""
    model_mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    price_sheet_id: str = ""
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    engine: str = ""
    logprob_convention: str = "unknown"
    infra_error: bool = False
    infra_reason: Optional[str] = None
    context_mode: str = "append"
    required_unit: Optional[str] = None
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

    def mark_infra(self, reason: str) -> None:
        """Flags an infrastructure failure (the first reason is kept, later ones appended)."""
        self.infra_error = True
        self.infra_reason = reason if not self.infra_reason else f"{self.infra_reason}; {reason}"

    def turn_prompt(self, i: int) -> list[int]:
        """The token ids the engine saw as the prompt of turn ``i`` (``turns[i]``)."""
        base: list[int] = self.tokens
        for j in range(i + 1):
            t = self.turns[j]
            if t.prompt_base is None:
                base = self.tokens[:t.response_span[0]]
            else:
                base = base[:t.prompt_base] + list(t.prompt_suffix or [])
        return list(base)

    def turn_arrays(self, i: int) -> tuple[list[int], list[int], list[float]]:
        """(tokens, loss_mask, rollout log-probs) of turn ``i`` as one training sample: its real
        prompt (mask 0) followed by its response (mask 1)."""
        s, e = self.turns[i].response_span
        prompt = self.turn_prompt(i)
        return (prompt + self.tokens[s:e], [0] * len(prompt) + self.loss_mask[s:e],
                [0.0] * len(prompt) + self.rollout_logprobs[s:e])

    @classmethod
    def from_json(cls, d: Union[str, dict]) -> "Trajectory":
        if isinstance(d, str):
            d = json.loads(d)
        d = dict(d)
        d.setdefault("schema_version", 1)     # v1 records carry it; be lenient with older ones
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
        if self.preference is not None and len(self.preference) != len(self.tool_names) + 3:
            raise ValueError(f"{self.task_id}: preference has {len(self.preference)} entries, "
                             f"expected {len(self.tool_names)} tools + 3")
        if self.context_mode not in CONTEXT_MODES:
            raise ValueError(f"{self.task_id}: context_mode {self.context_mode!r} not in "
                             f"{CONTEXT_MODES}")
        if self.context_mode == "strip_thinking" and self.required_unit != "turn":
            raise ValueError(f"{self.task_id}: strip_thinking trajectories require the turn unit")


def group_validity(trajs: Sequence[Trajectory]) -> np.ndarray:
    """``[G]`` bool: True where a trajectory may enter its group's reward / advantage statistics,
    False for infrastructure failures (``infra_error``) and for trajectories without a verdict
    (``outcome is None``). A failed episode that is the policy's doing (format errors, max turns,
    context, a wrong answer) stays valid: it is a real negative sample."""
    return np.asarray([not t.infra_error and t.outcome is not None for t in trajs], dtype=bool)


def reward_inputs(trajs: Sequence[Trajectory], default_preference: Optional[Sequence[float]] = None
                  ) -> dict[str, np.ndarray]:
    """The Eq. 2 inputs of one task's group as arrays: ``tool_counts [G, T]``, ``correct [G]``,
    ``cost [G]`` (US$), ``latency [G]`` (s), ``preference [T+3]``, ``mask [G]``
    (:func:`group_validity`). The group must share ``tool_names`` and P (one task setup); a
    trajectory without P uses ``default_preference``. Invalid rows get zero features."""
    if not trajs:
        raise ValueError("reward_inputs needs at least one trajectory")
    mask = group_validity(trajs)
    names = list(next((t for t, ok in zip(trajs, mask) if ok), trajs[0]).tool_names)
    prefs = {tuple(t.preference) for t, ok in zip(trajs, mask) if ok and t.preference is not None}
    for t, ok in zip(trajs, mask):
        if ok and list(t.tool_names) != names:
            raise ValueError(f"group mixes tool orders: {t.tool_names} vs {names} "
                             f"(task {t.task_id}, group {t.group_id})")
    if len(prefs) > 1:
        raise ValueError(f"group {trajs[0].group_id} mixes preference vectors: {sorted(prefs)}")
    if prefs:
        pref = list(next(iter(prefs)))
    elif default_preference is not None:
        pref = list(default_preference)
    else:
        raise ValueError(f"group {trajs[0].group_id}: no trajectory carries P and no "
                         "default_preference was given")
    if len(pref) != len(names) + 3:
        raise ValueError(f"preference has {len(pref)} entries, expected {len(names)} + 3")
    counts = np.zeros((len(trajs), len(names)), np.float32)
    for g, (t, ok) in enumerate(zip(trajs, mask)):
        if ok:
            counts[g] = t.tool_counts
    return {"tool_counts": counts,
            "correct": np.asarray([bool(t.correct) and ok for t, ok in zip(trajs, mask)]),
            "cost": np.asarray([t.cost_usd if ok else 0.0 for t, ok in zip(trajs, mask)],
                               np.float32),
            "latency": np.asarray([t.latency_s if ok else 0.0 for t, ok in zip(trajs, mask)],
                                  np.float32),
            "preference": np.asarray(pref, np.float32), "mask": mask}


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

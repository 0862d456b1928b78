"""Benchmarks: task loading and the preference test set.

* ``tau2`` (airline / retail / telecom) and ``toolscale`` (a ToolScale-format domain): the domain
  from :func:`orchestra_jax.envs.tau2.load_domain`, the tasks from any tau2-format task file (a
  JSON list, or JSONL; the data folder holds only part of each split, so the file is given on the
  command line) or, when none is given, the domain's own ``tasks.json``.
* ``frames``: ``{"id", "question", "answer"}`` JSONL (default: the shared FRAMES file).
* ``hle`` / ``generalthought``: a user-given JSONL file (HLE: ``id, question, answer``;
  GeneralThought: ``question`` + ``answer`` or ``reference_answer``); image questions (HLE rows
  with a non-empty ``image``) are skipped, as the paper evaluates the text-only subset.

Preference test set (paper §3.3 / App. L): a JSONL file of ``{"id", "instruction", "vector":
{<tool key>: p, …, "outcome": p, "cost": p, "latency": p}}`` pairs (tool keys missing from the
vector weigh 0). Example ``e`` gets the pair ``sha256(task id) mod n`` (stable across runs and
resumes); its instruction is appended to the task the policy sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Sequence, Union

from orchestra_jax.chat.parser import ParsedTurn
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep

PathLike = Union[str, os.PathLike]

QA_BENCHMARKS = ("frames", "hle", "generalthought")
FC_BENCHMARKS = ("tau2", "toolscale")
BENCHMARKS = QA_BENCHMARKS + FC_BENCHMARKS


def benchmark_name(kind: str, domain: str = "") -> str:
    """The name records and tables use: ``tau2-airline``, ``toolscale-bank``, ``frames`` …"""
    if kind not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {kind!r}; choose one of {BENCHMARKS}")
    if kind in FC_BENCHMARKS:
        if not domain:
            raise ValueError(f"benchmark {kind!r} needs a domain (e.g. --config.domain=airline)")
        return f"{kind}-{pathlib.Path(domain).name}"
    return kind


# ---------------------------------------------------------------------------- task files

def _read_rows(path: pathlib.Path) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON task list: {e.msg} (line {e.lineno})") from None
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: invalid JSON: {e.msg}") from None
    return rows


def load_fc_tasks(path: PathLike, limit: Optional[int] = None) -> list[dict]:
    """tau2-format tasks (``id``, ``user_scenario``, ``evaluation_criteria`` …) from a file."""
    p = pathlib.Path(path)
    rows = _read_rows(p)
    out = []
    for i, t in enumerate(rows):
        if not isinstance(t, Mapping) or "id" not in t or "user_scenario" not in t:
            raise ValueError(f"{p}: task {i} is not a tau2-format task (needs 'id' and "
                             f"'user_scenario'): {str(t)[:160]}")
        out.append(dict(t))
    ids = [str(t["id"]) for t in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{p}: duplicate task ids {dup[:5]} (records are keyed by task id)")
    return out[:limit] if limit is not None else out


def load_qa_tasks(path: PathLike, limit: Optional[int] = None, *,
                  text_only: bool = True) -> list[dict]:
    """QA rows ``{"id", "question", "answer"}`` (``reference_answer`` / ``final_answer`` accepted
    for ``answer``; missing ids become ``<file stem>-<row>``)."""
    p = pathlib.Path(path)
    out, seen = [], set()
    for n, row in enumerate(_read_rows(p), 1):
        if not isinstance(row, Mapping):
            raise ValueError(f"{p}: row {n} is not an object")
        row = dict(row)
        if "answer" not in row:
            for alt in ("reference_answer", "final_answer"):
                if alt in row:
                    row["answer"] = row[alt]
                    break
        missing = [k for k in ("question", "answer") if k not in row]
        if missing:
            raise ValueError(f"{p}: row {n} lacks {missing} (keys: {sorted(row)[:10]})")
        if text_only and row.get("image"):
            continue
        row["id"] = str(row.get("id", f"{p.stem}-{n}"))
        if row["id"] in seen:
            raise ValueError(f"{p}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        row["question"], row["answer"] = str(row["question"]), str(row["answer"])
        out.append(row)
        if limit is not None and len(out) >= limit:
            break
    return out


def default_task_file(kind: str, domain_path: Optional[pathlib.Path] = None) -> pathlib.Path:
    if kind == "frames":
        from orchestra_jax.envs.qa import default_frames_path
        return default_frames_path()
    if kind in FC_BENCHMARKS and domain_path is not None:
        return domain_path / "tasks.json"
    raise ValueError(f"benchmark {kind!r} needs a task file (--config.tasks=FILE): "
                     f"{'HLE / GeneralThought files are user-given (see README)' if kind in ('hle', 'generalthought') else ''}")


# ---------------------------------------------------------------------------- preferences

@dataclasses.dataclass(frozen=True)
class PreferencePair:
    id: str
    instruction: str
    vector: Mapping[str, float]

    def aligned(self, tool_names: Sequence[str]) -> list[float]:
        """P = [p_tool_1..p_tool_T, p_outcome, p_compute, p_latency] for these tool keys."""
        v = self.vector
        return [float(v.get(n, 0.0)) for n in tool_names] + [
            float(v.get("outcome", 0.0)), float(v.get("cost", 0.0)), float(v.get("latency", 0.0))]

    def record(self, tool_names: Sequence[str]) -> dict:
        return {"id": self.id, "instruction": self.instruction, "tool_names": list(tool_names),
                "vector": self.aligned(tool_names)}


def load_preferences(path: PathLike) -> list[PreferencePair]:
    """The preference test set (see module docstring); every p must lie in [0, 1]."""
    p = pathlib.Path(path)
    pairs = []
    for n, row in enumerate(_read_rows(p), 1):
        if not isinstance(row, Mapping) or not isinstance(row.get("vector"), Mapping) or \
                not isinstance(row.get("instruction"), str):
            raise ValueError(f"{p}: row {n} needs 'instruction' (str) and 'vector' (object)")
        for k, v in row["vector"].items():
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{p}: row {n}: preference {k!r}={v!r} is not a number in [0, 1]")
        pairs.append(PreferencePair(str(row.get("id", f"pref-{n}")), row["instruction"],
                                    {k: float(v) for k, v in row["vector"].items()}))
    if not pairs:
        raise ValueError(f"{p}: empty preference set")
    return pairs


def assign_preference(task_id: str, pairs: Sequence[PreferencePair]) -> PreferencePair:
    h = int.from_bytes(hashlib.sha256(str(task_id).encode()).digest()[:8], "big")
    return pairs[h % len(pairs)]


class PreferenceEnv:
    """Wraps an EpisodeEnv: appends the preference instruction to the task the policy sees
    (``where="user"``: the first user message, QA; ``"system"``: the system prompt, tau2, where
    the first user message is the simulated customer's)."""

    def __init__(self, env: Any, instruction: str, where: str = "user"):
        if where not in ("user", "system"):
            raise ValueError(f"where must be 'user' or 'system', got {where!r}")
        self.env, self.instruction, self.where = env, instruction, where
        self.task_id = getattr(env, "task_id", "")
        self.tool_names = list(getattr(env, "tool_names", []))

    async def reset(self) -> EnvStart:
        start = await self.env.reset()
        msgs = [dict(m) for m in start.messages]
        idx = next((i for i, m in enumerate(msgs) if m.get("role") == self.where), None)
        if idx is None:
            raise ValueError(f"cannot place the preference instruction: no {self.where!r} message")
        msgs[idx]["content"] = f"{msgs[idx].get('content') or ''}\n\n{self.instruction}"
        return dataclasses.replace(start, messages=msgs)

    async def step(self, turn: ParsedTurn) -> EnvStep:
        return await self.env.step(turn)

    async def finish(self, finish_reason: str) -> EnvOutcome:
        return await self.env.finish(finish_reason)

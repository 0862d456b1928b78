"""Evaluation records: one JSON line per (task, trial), the only input of the tables and figures.

A record is a flat, self-describing dict (``RECORD_FIELDS``); units are in the names: ``cost_usd``
in US dollars (tables show cents), ``*_s`` in wall-clock seconds (tables show minutes), token
counts in tokens. Besides the outcome it carries what the example ran under (benchmark, method,
model label, toolset, tool configuration, price sheet, preference) so a table can be rebuilt from
records alone, and what it used: calls per tool key (the policy's tool-count vector), per concrete
model (every expert / answer / query-writer LLM call), per basic tool (local search, web search,
code interpreter, domain functions) and tokens per model.

``infra_error`` is set when the example failed for a reason that is not the policy's (engine
error, user simulator or judge failure, an expert endpoint down): such records are kept (they are
part of the run) but flagged so a table can report or exclude them.

:class:`RecordStore` is the resumable writer: it appends + fsyncs one line per example, a torn last
line (kill -9 mid-write) is cut off when the file is reopened, and ``done_keys`` tells the runner
which (task id, trial) pairs to skip. Writing a record is the commit point of an example: the
trajectory (for the viewer) is written first, so a crash in between only leaves an extra
trajectory line, which readers de-duplicate by key (last one wins).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import threading
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

SCHEMA = "orchestra_jax.eval.record/1"
RECORDS_FILE = "records.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"
RUN_FILE = "run.json"

# Basic-tool columns (paper Table 15) counted from tool results.
BASIC_TOOLS = ("local_search", "web_search", "code_interpreter", "domain_functions")

RECORD_FIELDS = (
    "schema", "key", "task_id", "trial", "benchmark", "domain",
    "method", "model_label", "toolset", "tool_config", "prices", "policy", "engine",
    "policy_version", "preference", "mapping", "sampling",
    "outcome", "correct", "answer", "reference",
    "cost_usd", "latency_s", "gen_latency_s", "wall_s", "user_cost_usd", "user_latency_s",
    "judge_cost_usd", "tool_calls", "model_calls", "basic_calls", "tokens",
    "finish_reason", "num_turns", "format_ok_all", "infra_error", "error", "created_at",
)

PathLike = Union[str, os.PathLike]


def record_key(task_id: Any, trial: int) -> str:
    """The resume key of an example: ``"<task id>#<trial>"``."""
    return f"{task_id}#{int(trial)}"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every record of one run shares (the method / toolset / prices it ran under).

    benchmark: ``tau2-airline`` | ``tau2-retail`` | ``tau2-telecom`` | ``frames`` | ``hle`` |
      ``generalthought`` | ``toolscale-<domain>``; domain: the tau2/ToolScale domain name or "".
    method: ``orchestrator`` | ``basic_tools`` | ``llm_orchestrator`` | ``no_tool``.
    model_label: the row label in the tables (e.g. ``Qwen3-8B``, ``Orchestrator-8B``, ``ours``).
    toolset: ``none`` | ``basic`` | ``full``; tool_config: ``paper_eval`` | ``unseen``;
    prices: the price sheet's name (``paper_eval``, ``unseen_deepinfra``).
    """

    benchmark: str
    domain: str = ""
    method: str = "orchestrator"
    model_label: str = "ours"
    toolset: str = "full"
    tool_config: str = "paper_eval"
    prices: str = "paper_eval"
    policy: str = ""
    engine: str = ""
    policy_version: Optional[int] = None
    mapping: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sampling: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["mapping"], d["sampling"] = dict(self.mapping), dict(self.sampling)
        return d


# ---------------------------------------------------------------------------- from trajectories

def _tool_results(traj: Any) -> list[dict]:
    out = []
    for t in getattr(traj, "turns", []) or []:
        out.extend(r for r in (getattr(t, "tool_results", None) or []) if isinstance(r, Mapping))
    return out


def _add_tokens(by_model: dict, model: str, p: int, c: int) -> None:
    u = by_model.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0})
    u["prompt_tokens"] += int(p or 0)
    u["completion_tokens"] += int(c or 0)


def usage_of(traj: Any) -> tuple[dict, dict, dict, list[str]]:
    """(model_calls, basic_calls, expert tokens by model, infra problems) of a trajectory.

    QA meta-tools: every LLM in a result's ``usage`` is one call of that model; an executed
    ``search`` counts as a local or web search (its backend), an executed ``enhance_reasoning``
    as a code-interpreter run. tau2: every ``call_expert`` is a call of the expert's model; every
    domain call that reached the database (``info["executed_calls"]``) is a domain function call.
    """
    model_calls: dict[str, int] = {}
    basic = {k: 0 for k in BASIC_TOOLS}
    tokens: dict[str, dict] = {}
    infra: list[str] = []
    for r in _tool_results(traj):
        extra = r.get("extra") or {}
        for model, u in (r.get("usage") or {}).items():
            model_calls[model] = model_calls.get(model, 0) + 1
            _add_tokens(tokens, model, u.get("prompt_tokens", 0), u.get("completion_tokens", 0))
        if extra.get("tool") == "search" and "n_docs" in extra:
            basic["web_search" if extra.get("search_backend") == "web" else "local_search"] += 1
        if extra.get("tool") == "enhance_reasoning" and extra.get("executed"):
            basic["code_interpreter"] += 1
        err = r.get("error") or ""
        if " is unavailable: " in err or extra.get("expert_error"):
            infra.append(f"expert: {err or extra.get('expert_error')}")
        ec = r.get("expert_call")
        if isinstance(ec, Mapping):
            model = str(ec.get("model") or ec.get("alias") or "?")
            model_calls[model] = model_calls.get(model, 0) + 1
            _add_tokens(tokens, model, ec.get("prompt_tokens", 0), ec.get("completion_tokens", 0))
            if ec.get("error"):
                infra.append(f"expert {ec.get('alias')}: {ec['error']}")
    info = getattr(traj, "info", None) or {}
    basic["domain_functions"] = len(info.get("executed_calls") or [])
    return model_calls, basic, tokens, infra


def infra_error_of(traj: Any, extra_problems: Sequence[str] = ()) -> Optional[str]:
    """Why the example failed for reasons outside the policy, or None (see module docstring)."""
    explicit = getattr(traj, "infra_error", None)   # trajectory schema v2: bool + infra_reason
    problems = []
    if explicit:
        problems.append(str(getattr(traj, "infra_reason", None) or explicit))
    for t in getattr(traj, "turns", []) or []:
        if getattr(t, "infra_error", None) and str(t.infra_error) not in " ".join(problems):
            problems.append(str(t.infra_error))
    info = getattr(traj, "info", None) or {}
    if getattr(traj, "finish_reason", "") == "error":
        problems.append(f"episode error: {getattr(traj, 'error', None)}")
    if info.get("termination_reason") == "user_error":
        problems.append("user simulator failed")
    grade = info.get("grade") or {}
    if grade.get("method") == "judge_error":
        problems.append(f"judge failed: {grade.get('error')}")
    if getattr(traj, "outcome", 0) is None and "finish failed" in str(getattr(traj, "error", "")):
        problems.append(f"scoring failed: {traj.error}")
    problems += list(extra_problems)
    return "; ".join(problems) if problems else None


def record_from_trajectory(traj: Any, ctx: RunContext, *, trial: int = 0,
                           preference: Optional[Mapping[str, Any]] = None,
                           reference: Optional[str] = None) -> dict:
    """The evaluation record of one finished episode (fields: ``RECORD_FIELDS``)."""
    model_calls, basic, expert_tokens, infra = usage_of(traj)
    turns = getattr(traj, "turns", []) or []
    info = getattr(traj, "info", None) or {}
    names = list(getattr(traj, "tool_names", []) or [])
    counts = list(getattr(traj, "tool_counts", []) or [])
    policy_prompt = sum(int(getattr(t, "prompt_tokens", 0) or 0) for t in turns)
    policy_completion = sum(int(getattr(t, "completion_tokens", 0) or 0) for t in turns)
    grade = info.get("grade") or {}
    rec = {
        "schema": SCHEMA,
        "key": record_key(traj.task_id, trial),
        "task_id": str(traj.task_id),
        "trial": int(trial),
        **{k: v for k, v in ctx.to_json().items()},
        "preference": dict(preference) if preference else None,
        "outcome": None if traj.outcome is None else float(traj.outcome),
        "correct": bool(traj.correct),
        "answer": traj.answer,
        "reference": reference,
        "cost_usd": float(traj.cost_usd or 0.0),
        "latency_s": float(traj.latency_s or 0.0),
        "gen_latency_s": float(getattr(traj, "gen_latency_s", 0.0) or 0.0),
        "wall_s": float(getattr(traj, "wall_s", 0.0) or 0.0),
        "user_cost_usd": float(info.get("user_cost_usd") or 0.0),
        "user_latency_s": float(info.get("user_latency_s") or 0.0),
        "judge_cost_usd": float(grade.get("judge_cost_usd") or 0.0),
        "tool_calls": {n: int(c) for n, c in zip(names, counts)},
        "model_calls": model_calls,
        "basic_calls": basic,
        "tokens": {"policy_prompt": policy_prompt, "policy_completion": policy_completion,
                   "by_model": expert_tokens,
                   "total": policy_prompt + policy_completion + sum(
                       u["prompt_tokens"] + u["completion_tokens"]
                       for u in expert_tokens.values())},
        "finish_reason": traj.finish_reason,
        "num_turns": int(getattr(traj, "num_turns", len(turns)) or 0),
        "format_ok_all": bool(getattr(traj, "format_ok_all", False)),
        "infra_error": infra_error_of(traj, infra),
        "error": traj.error,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    version = getattr(traj, "policy_version", None)
    if version is not None and rec.get("policy_version") is None:
        rec["policy_version"] = version
    return rec


def compact_trajectory(traj: Any, *, trial: int = 0,
                       preference: Optional[Mapping[str, Any]] = None) -> dict:
    """The trajectory as the viewer needs it: turns, tool counts, outcome, the opening messages;
    no token arrays (kept small: evaluation does not train)."""
    d = traj.to_json() if hasattr(traj, "to_json") else dict(traj)
    for k in ("tokens", "loss_mask", "rollout_logprobs"):
        d.pop(k, None)
    info = dict(d.get("info") or {})
    msgs = info.pop("messages", None) or []
    first_policy = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"
                         and i > 0 and msgs[i - 1].get("role") == "user"), len(msgs))
    info["opening_messages"] = msgs[:first_policy]
    d["info"] = info
    d["key"] = record_key(d.get("task_id"), trial)
    d["trial"] = int(trial)
    d["preference"] = dict(preference) if preference else None
    return d


# ---------------------------------------------------------------------------- reading / writing

def _read_jsonl(path: pathlib.Path) -> list[dict]:
    """All complete JSON lines; a torn (unparsable) last line is ignored, an unparsable line
    elsewhere is a clear error."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i >= len(lines) - 2 and not any(x.strip() for x in lines[i + 1:]):
                break  # interrupted mid-write
            raise ValueError(f"{path}:{i + 1}: corrupt record line ({e.msg})") from None
    return out


def _dedup(rows: Iterable[dict]) -> list[dict]:
    by_key: dict[str, dict] = {}
    for r in rows:
        by_key[str(r.get("key") or record_key(r.get("task_id"), r.get("trial", 0)))] = r
    return list(by_key.values())


def load_records(path: PathLike) -> list[dict]:
    """Records of a run directory (``DIR/records.jsonl``) or a records file; one per key."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / RECORDS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no evaluation records at {p}")
    rows = _read_jsonl(p)
    bad = [r.get("key") for r in rows if r.get("schema") != SCHEMA]
    if bad:
        raise ValueError(f"{p}: {len(bad)} line(s) are not {SCHEMA} records (e.g. {bad[0]!r})")
    return _dedup(rows)


def load_trajectories(path: PathLike) -> list[dict]:
    """Compact trajectories of a run directory, de-duplicated by key (last wins)."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / TRAJECTORIES_FILE
    return _dedup(_read_jsonl(p))


def _repair_tail(path: pathlib.Path) -> None:
    """Cuts a torn last line (no trailing newline) so new lines start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        f.seek(cut)
        f.truncate()


class RecordStore:
    """Append-only, crash-safe store of a run's records (and compact trajectories).

    ``RecordStore(dir, run_info)``: creates ``dir``; when ``dir/run.json`` exists its
    ``identity`` fields must equal ``run_info``'s (resuming a different run into the same directory
    is refused with the differing fields named).
    """

    IDENTITY = ("benchmark", "domain", "method", "model_label", "toolset", "tool_config",
                "prices", "policy", "preference_set", "tasks")

    def __init__(self, directory: PathLike, run_info: Optional[Mapping[str, Any]] = None, *,
                 fsync: bool = True):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records_path = self.dir / RECORDS_FILE
        self.trajectories_path = self.dir / TRAJECTORIES_FILE
        self._fsync = fsync
        self._lock = threading.Lock()
        if run_info is not None:
            self._check_run(dict(run_info))
        for p in (self.records_path, self.trajectories_path):
            _repair_tail(p)
        self.done_keys = {r["key"] for r in load_records(self.records_path)} \
            if self.records_path.is_file() else set()
        self._rec = open(self.records_path, "a", encoding="utf-8")
        self._traj = open(self.trajectories_path, "a", encoding="utf-8")

    def _check_run(self, info: dict) -> None:
        path = self.dir / RUN_FILE
        if path.is_file():
            old = json.loads(path.read_text(encoding="utf-8"))
            diff = [k for k in self.IDENTITY if json.dumps(old.get(k), sort_keys=True, default=str)
                    != json.dumps(info.get(k), sort_keys=True, default=str)]
            if diff:
                what = ", ".join(f"{k}: {old.get(k)!r} vs {info.get(k)!r}" for k in diff)
                raise ValueError(f"{self.dir} holds a different run ({what}); use another "
                                 f"--config.out or delete the directory")
            info = {**old, **info, "resumed": int(old.get("resumed", 0)) + 1}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def _append(self, f, obj: Mapping) -> None:
        f.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())

    def write(self, record: Mapping[str, Any], trajectory: Optional[Mapping] = None) -> None:
        """Trajectory first, then the record (the commit point); thread-safe."""
        with self._lock:
            if trajectory is not None:
                self._append(self._traj, trajectory)
            self._append(self._rec, record)
            self.done_keys.add(record["key"])

    def close(self) -> None:
        with self._lock:
            for f in (self._rec, self._traj):
                if not f.closed:
                    f.close()

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

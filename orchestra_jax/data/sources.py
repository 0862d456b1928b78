"""Raw readers behind the TFDS builders (plain Python, no TensorFlow, no tfds).

Each reader yields ``(split, example)`` with a stable string ``id``. Gated or large datasets
(HLE, GeneralThought-430K) come from a user-supplied ``manual_dir``; when the expected files are
missing, :class:`ManualDataError` says exactly what to download, from where and where to put it.

Splits follow the paper (paper_spec §5.5): training = GeneralThought-430K(-filtered) + ToolScale
("train"); evaluation = HLE (text-only), FRAMES, τ²-Bench ("test"). τ² task files keep the
splits of a ``split_tasks.json`` beside them.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
from typing import Any, Iterator, Optional

__all__ = ["ManualDataError", "read_tau2_tasks", "read_toolscale_tasks", "read_frames",
           "read_hle", "read_general_thought", "read_preference_pairs", "task_instruction",
           "HLE_HELP", "GENERAL_THOUGHT_HELP"]


class ManualDataError(FileNotFoundError):
    """A dataset that must be downloaded by hand is not where the builder looks for it."""


HLE_HELP = (
    "HLE (Humanity's Last Exam) is gated and not bundled. Accept its terms at "
    "https://huggingface.co/datasets/cais/hle, download the test split parquet "
    "(data/test-00000-of-00001.parquet) — or the ToolOrchestra release's evaluation/hle.jsonl "
    "(git-lfs) — and put the .parquet or .jsonl file(s) in {manual_dir}. Fields used: id, "
    "question, answer, answer_type, category, image (rows with an image are dropped: the paper "
    "uses the text-only subset).")
GENERAL_THOUGHT_HELP = (
    "GeneralThought-430K-filtered is large and not bundled. Download the parquet files of "
    "https://huggingface.co/datasets/natolambert/GeneralThought-430K-filtered (data/*.parquet; "
    "a .jsonl export with the same columns also works) and put them in {manual_dir}. Fields "
    "used: question_id (or id), question, reference_answer (or answer); rows without a "
    "question or reference answer are skipped.")


def _read_json(path: pathlib.Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot parse {path}: {e}") from None


def _iter_jsonl(path: pathlib.Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            yield row


def _iter_parquet(path: pathlib.Path) -> Iterator[dict]:
    import pyarrow.parquet as pq
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _iter_rows(files: list[pathlib.Path]) -> Iterator[dict]:
    for f in files:
        yield from (_iter_parquet(f) if f.suffix == ".parquet" else _iter_jsonl(f))


def _manual_files(manual_dir: Optional[str], help_text: str) -> list[pathlib.Path]:
    if not manual_dir:
        raise ManualDataError("no manual_dir given. " + help_text.format(manual_dir="<manual_dir>"))
    d = pathlib.Path(manual_dir).expanduser()
    files = sorted(pathlib.Path(p) for pat in ("*.parquet", "*.jsonl", "**/*.parquet")
                   for p in glob.glob(str(d / pat), recursive=True))
    files = sorted(set(files))
    if not files:
        raise ManualDataError(f"no .parquet or .jsonl files in {d}. "
                              + help_text.format(manual_dir=d))
    return files


def task_instruction(task: dict) -> str:
    """The user-side instruction of a tau2 task as one text (tau2 renders it the same way)."""
    us = task.get("user_scenario") or {}
    ins = us.get("instructions")
    if isinstance(ins, str):
        return ins
    if not isinstance(ins, dict):
        return ""
    parts = []
    for key, title in (("domain", "Domain"), ("reason_for_call", "Reason for call"),
                       ("known_info", "Known info"), ("unknown_info", "Unknown info"),
                       ("task_instructions", "Task instructions")):
        if ins.get(key):
            parts.append(f"{title}: {ins[key]}")
    return "\n".join(parts)


def _tasks_file(source: str) -> pathlib.Path:
    p = pathlib.Path(source).expanduser()
    if p.is_dir():
        p = p / "tasks.json"
    if not p.is_file():
        raise FileNotFoundError(f"tau2 tasks file {p} does not exist (give a tasks.json path or "
                                f"a domain directory holding one)")
    return p


def read_tau2_tasks(source: str, domain: str = "") -> Iterator[tuple[str, dict]]:
    """τ²-format ``tasks.json`` (any domain). Splits from ``split_tasks.json`` beside it; tasks
    in no listed split — or all tasks, without that file — are ``"test"`` ([P] τ² is an
    evaluation benchmark)."""
    path = _tasks_file(source)
    tasks = _read_json(path)
    if not isinstance(tasks, list):
        raise ValueError(f"{path} must hold a JSON list of tasks")
    split_file = path.parent / "split_tasks.json"
    splits = _read_json(split_file) if split_file.is_file() else {}
    where = {str(i): name for name, ids in splits.items() for i in ids}
    domain = domain or path.parent.name
    for t in tasks:
        if not isinstance(t, dict) or "id" not in t:
            raise ValueError(f"{path}: every task needs an 'id' (got {str(t)[:80]})")
        yield where.get(str(t["id"]), "test"), {"id": str(t["id"]), "domain": domain, "task": t}


def read_toolscale_tasks(source: str, domain: str = "") -> Iterator[tuple[str, dict]]:
    """ToolScale-format tasks — a synthesized domain folder / ``tasks.json``, or a ``.jsonl`` /
    ``.parquet`` export (HF ``nvidia/ToolScale`` rows). All ``"train"`` ([P]: no held-out
    ToolScale split)."""
    p = pathlib.Path(source).expanduser()
    if p.suffix in (".jsonl", ".parquet"):
        if not p.is_file():
            raise FileNotFoundError(f"ToolScale task file {p} does not exist")
        rows = _iter_rows([p])
    else:
        path = _tasks_file(source)
        rows = iter(_read_json(path))
        domain = domain or path.parent.name
    for t in rows:
        for k in ("description", "user_scenario", "initial_state", "evaluation_criteria"):
            if isinstance(t.get(k), str):   # parquet exports may keep nested fields as JSON text
                try:
                    t[k] = json.loads(t[k])
                except json.JSONDecodeError:
                    pass
        ins = (t.get("user_scenario") or {}).get("instructions")
        dom = domain or (ins.get("domain") if isinstance(ins, dict) else "") or "toolscale"
        if "id" not in t:
            raise ValueError(f"{source}: a ToolScale task has no 'id' ({str(t)[:80]})")
        yield "train", {"id": f"{dom}/{t['id']}", "domain": dom, "task": t}


def read_frames(source: str) -> Iterator[tuple[str, dict]]:
    """FRAMES ``frames.jsonl`` (``id``, ``question``, ``answer``): 824 rows, all ``"test"``."""
    p = pathlib.Path(source).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"FRAMES file {p} does not exist (shared/data/frames/frames.jsonl)")
    for row in _iter_jsonl(p):
        yield "test", {"id": str(row["id"]), "question": row["question"],
                       "answer": str(row["answer"]), "meta": {}}


def read_hle(manual_dir: Optional[str]) -> Iterator[tuple[str, dict]]:
    """HLE text-only questions from ``manual_dir`` (see :data:`HLE_HELP`); all ``"test"``."""
    for row in _iter_rows(_manual_files(manual_dir, HLE_HELP)):
        if row.get("image"):
            continue   # [P] text-only subset
        if not row.get("question") or row.get("answer") is None or row.get("id") is None:
            continue
        yield "test", {"id": str(row["id"]), "question": row["question"],
                       "answer": str(row["answer"]),
                       "meta": {k: row.get(k) for k in ("answer_type", "category", "raw_subject")
                                if row.get(k) is not None}}


def read_general_thought(manual_dir: Optional[str]) -> Iterator[tuple[str, dict]]:
    """GeneralThought-430K(-filtered) QA rows from ``manual_dir``; all ``"train"``."""
    for n, row in enumerate(_iter_rows(_manual_files(manual_dir, GENERAL_THOUGHT_HELP))):
        q = row.get("question")
        a = row.get("reference_answer", row.get("answer"))
        if not q or a in (None, ""):
            continue
        rid = row.get("question_id", row.get("id", n))
        yield "train", {"id": str(rid), "question": q, "answer": str(a),
                        "meta": {k: row.get(k) for k in ("task", "question_source")
                                 if row.get(k) is not None}}


def read_preference_pairs(path: str) -> dict[str, list[dict]]:
    """(instruction, P) pairs from a JSONL file: ``{"instruction": str, "P": [float, ...],
    "split": "train"|"eval" (optional), "tool_names": [...] (optional)}`` per line.

    Returns ``{"train": [...], "eval": [...]}`` ([P] §5.3 Pairs_train / Pairs_eval); a pair
    without ``split`` goes to both.
    """
    p = pathlib.Path(os.path.expanduser(path))
    if not p.is_file():
        raise FileNotFoundError(f"preference pairs file {p} does not exist")
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for n, row in enumerate(_iter_jsonl(p), 1):
        instr, vec = row.get("instruction"), row.get("P")
        if not isinstance(instr, str) or not isinstance(vec, list) or \
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec):
            raise ValueError(f"{p}:{n}: needs 'instruction' (str) and 'P' (list of numbers)")
        split = row.get("split")
        if split not in (None, "train", "eval", "test"):
            raise ValueError(f"{p}:{n}: split must be 'train' or 'eval', got {split!r}")
        pair = {"instruction": instr, "P": [float(x) for x in vec],
                "tool_names": list(row.get("tool_names") or [])}
        for s in (("train", "eval") if split is None else
                  ("eval",) if split in ("eval", "test") else ("train",)):
            out[s].append(pair)
    return out

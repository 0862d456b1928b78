"""QA environment (FRAMES / HLE / GeneralThought style) over the paper's meta-tools.

The policy sees the system prompt ``"You are good at using tools."`` (release, official_release
§2.1), the QA meta-tools (``search``, ``enhance_reasoning``, ``answer``; their model aliases with
price/latency tables are in the tool schema) and the user message ``"Problem: {question}\\n\\n
Choose an appropriate tool."``. Each valid call is executed by
:class:`orchestra_jax.tools.meta_tools.QAToolkit` against a :class:`QAState` (documents, code
results, answer attempts) and its observation returned; calling ``answer`` ends the episode.
Unlike the release, which rebuilt the prompt from that state every turn, observations are
appended to one growing conversation (see ``orchestra_jax.chat.assembly``). A user preference
instruction (paper §3.3; ``orchestra_jax.data.preferences``) is appended to the problem text the
policy sees (experts get the bare question).

Tool counts (``tool_names``, the order of P's tool entries) are keyed the paper's way: one entry
per basic tool behind the offered meta-tools (``local_search`` / ``web_search`` for ``search``,
``code_interpreter`` for ``enhance_reasoning``) and one per concrete model behind the offered
aliases (:func:`paper_tool_names`). A call counts its model, plus the retriever it queried or
the interpreter when code ran; refused calls (release rules) count nothing. Per-alias counts are
kept in ``EnvStep.info["aliases"]`` for reading.

Outcome (:func:`grade_answer`): an empty answer or one over 500 words is wrong (and not a valid
answer); otherwise a normalised exact match (lower-case, punctuation / articles / extra
whitespace removed) is right; otherwise, when a judge model is configured, the judge prompt
(``configs/prompts/judge.txt``, paper_spec §7.5) decides by ``<correct>True</correct>``. A
judge that fails or answers without a verdict tag is an *infrastructure* error
(``EnvOutcome.infra_error``), not a wrong answer: the trajectory is left out of its group. The
judge gets ``judge_max_tokens = 4096`` [ours] (the release judged with GPT-5, a reasoning model
that spends most of a small budget before it writes the tag).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import string
import time
import unicodedata
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from orchestra_jax.chat.parser import ParsedTurn
from orchestra_jax.envs.base import EnvOutcome, EnvStart, EnvStep
from orchestra_jax.tools.aliases import TOOL_ROLES, ModelMapping
from orchestra_jax.tools.meta_tools import QAState, QAToolkit
from orchestra_jax.tools.pricing import config_dir

SYSTEM_PROMPT = "You are good at using tools."
USER_TEMPLATE = "Problem: {question}\n\nChoose an appropriate tool."
MAX_ANSWER_WORDS = 500
JUDGE_MAX_TOKENS = 4096      # [ours] room for reasoning judges (was 64)


# ---------------------------------------------------------------------------- data

def default_frames_path() -> pathlib.Path:
    """``$ORCHESTRA_FRAMES`` or ``<repo>/../shared/data/frames/frames.jsonl``."""
    env = os.environ.get("ORCHESTRA_FRAMES")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "frames" / "frames.jsonl"


def load_qa_jsonl(path: Union[str, os.PathLike], limit: Optional[int] = None) -> list[dict]:
    """Reads ``{"id", "question", "answer"}`` rows (extra keys kept). Clear errors for bad rows."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA task file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            missing = [k for k in ("question", "answer") if k not in row]
            if missing:
                raise ValueError(f"{path}:{n}: row lacks {missing}")
            row.setdefault("id", f"{path.stem}-{n}")
            row["id"], row["question"], row["answer"] = (str(row["id"]), str(row["question"]),
                                                         str(row["answer"]))
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def load_frames(path: Optional[Union[str, os.PathLike]] = None,
                limit: Optional[int] = None) -> list[dict]:
    """FRAMES questions (824 rows: id, question, answer)."""
    return load_qa_jsonl(path or default_frames_path(), limit)


# ---------------------------------------------------------------------------- grading

def normalize_answer(s: str) -> str:
    """SQuAD-style normalisation: NFKC, lower-case, no punctuation, no a/an/the, single spaces."""
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(" " if ch in string.punctuation or unicodedata.category(ch).startswith("P")
                else ch for ch in s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


ANSWER_MATCHES = ("exact", "contains")
CONTAINS_MAX_WORDS = 60


def answer_is_valid(answer: Optional[str]) -> bool:
    """Non-empty and at most 500 words (release rule)."""
    return bool(answer and answer.strip()) and len(answer.split()) <= MAX_ANSWER_WORDS


def load_judge_prompt(path: Optional[Union[str, os.PathLike]] = None) -> str:
    p = pathlib.Path(path) if path else config_dir() / "prompts" / "judge.txt"
    if not p.is_file():
        raise FileNotFoundError(f"judge prompt not found: {p}")
    return p.read_text(encoding="utf-8")


_CORRECT_RE = re.compile(r"<correct>\s*(true|false)\s*</correct>", re.I)


@dataclasses.dataclass
class Grade:
    """correct: the verdict. method: ``invalid`` | ``exact`` | ``judge`` | ``no_judge`` |
    ``judge_error`` (the call failed) | ``judge_no_verdict`` (no ``<correct>`` tag).
    judge_cost_usd / judge_latency_s: the judge call (evaluation overhead, not part of the
    trajectory's cost). infra_error: set for the last two methods (the verdict is unusable)."""

    correct: bool
    valid: bool
    method: str
    judge_text: Optional[str] = None
    judge_cost_usd: float = 0.0
    judge_latency_s: float = 0.0
    error: Optional[str] = None
    infra_error: Optional[str] = None


async def grade_answer(answer: Optional[str], reference: str, question: str = "", *,
                       judge: Any = None, judge_prompt: Optional[str] = None,
                       judge_max_tokens: int = JUDGE_MAX_TOKENS, judge_temperature: float = 1.0,
                       judge_cost: Optional[Callable[[Any], float]] = None,
                       match: str = "exact") -> Grade:
    """Exact match first, then the LLM judge (a ChatModel) when given; never raises.

    ``match="contains"`` [ours] also accepts an answer of at most ``CONTAINS_MAX_WORDS`` words
    whose normalised text contains the normalised reference as whole words (small experts that
    answer in a sentence, e.g. the CPU demo's SmolLM2); the release uses exact match + judge."""
    if match not in ANSWER_MATCHES:
        raise ValueError(f"match must be one of {ANSWER_MATCHES}, got {match!r}")
    if not answer_is_valid(answer):
        return Grade(False, False, "invalid")
    if normalize_answer(answer) == normalize_answer(reference):
        return Grade(True, True, "exact")
    if match == "contains":
        a, r = normalize_answer(answer), normalize_answer(reference)
        if r and len(a.split()) <= CONTAINS_MAX_WORDS and f" {r} " in f" {a} ":
            return Grade(True, True, "contains")
    if judge is None:
        return Grade(False, True, "no_judge")
    t0 = time.perf_counter()
    try:
        prompt = (judge_prompt or load_judge_prompt()).format(question=question, answer=answer,
                                                              reference=reference)
        resp = await judge.chat([{"role": "user", "content": prompt}],
                                max_tokens=judge_max_tokens, temperature=judge_temperature)
    except Exception as e:  # noqa: BLE001 - a judge failure is an infrastructure error
        err = f"{type(e).__name__}: {e}"
        return Grade(False, True, "judge_error", judge_latency_s=time.perf_counter() - t0,
                     error=err, infra_error=f"judge failed: {err}")
    m = _CORRECT_RE.findall(resp.text or "")
    cost = float(resp.cost_usd or 0.0) if judge_cost is None else float(judge_cost(resp))
    dt = time.perf_counter() - t0
    if not m:
        why = (f"finish_reason={resp.finish_reason}" if getattr(resp, "finish_reason", None)
               else "no tag")
        return Grade(False, True, "judge_no_verdict", judge_text=resp.text, judge_cost_usd=cost,
                     judge_latency_s=dt, infra_error=f"judge gave no <correct> verdict ({why}; "
                                                     f"{len(resp.text or '')} chars)")
    return Grade(m[-1].lower() == "true", True, "judge", judge_text=resp.text,
                 judge_cost_usd=cost, judge_latency_s=dt)


def paper_tool_names(tools: Sequence[str], mapping: ModelMapping,
                     search_backend: str = "local") -> list[str]:
    """The tool-count keys of an episode (paper §3.2): the basic tools behind the offered
    meta-tools ``tools``, then the concrete models behind their mapped aliases (sorted)."""
    basic = []
    if "search" in tools and search_backend in ("local", "local_then_web"):
        basic.append("local_search")
    if "search" in tools and search_backend in ("web", "local_then_web"):
        basic.append("web_search")
    if "enhance_reasoning" in tools:
        basic.append("code_interpreter")
    aliases = [a for t in tools for r in TOOL_ROLES[t] for a in mapping.available(r)]
    return basic + sorted({mapping.model_of(a) for a in aliases})


def call_keys(toolkit: QAToolkit, call: Mapping[str, Any], result: Any) -> list[str]:
    """The ``paper_tool_names`` entries one executed call counts toward (refused: none)."""
    extra = getattr(result, "extra", None) or {}
    if extra.get("refused") or "model" not in extra:
        return []
    keys = [str(extra["model"])]
    name = call.get("name")
    backend = toolkit.config.search_backend
    if name == "search":
        if backend in ("local", "local_then_web"):
            keys.append("local_search")
        if backend == "web" or (backend == "local_then_web" and extra.get("search_backend") == "web"):
            keys.append("web_search")
    elif name == "enhance_reasoning" and extra.get("executed"):
        keys.append("code_interpreter")
    return keys


# ---------------------------------------------------------------------------- environment

class QAEnv:
    """One QA task as an :class:`~orchestra_jax.rollout.episode.EpisodeEnv`.

    Args:
      task: ``{"id", "question", "answer"}``.
      toolkit: the episode's :class:`QAToolkit` (mapping, experts, index, prices).
      judge: optional ChatModel used when exact match fails.
      include_enum: show the alias enums in the tool schema (the release's tools.json lists
        them only in the description text; validation always enforces them).
      preference_instruction: the user's preference text, appended to the problem (paper §3.3).
      judge_max_tokens: output budget of the judge call.
      expert_error_is_infra: a call whose expert failed (server down, timeout) marks the turn
        ``infra_error`` [ours], so such episodes leave group statistics instead of teaching
        the policy that the alias is bad.
    """

    def __init__(self, task: Mapping[str, Any], toolkit: QAToolkit, *, judge: Any = None,
                 judge_prompt: Optional[str] = None, system_prompt: str = SYSTEM_PROMPT,
                 user_template: str = USER_TEMPLATE, include_enum: bool = True,
                 preference_instruction: str = "", judge_max_tokens: int = JUDGE_MAX_TOKENS,
                 expert_error_is_infra: bool = True, answer_match: str = "exact"):
        if answer_match not in ANSWER_MATCHES:
            raise ValueError(f"answer_match must be one of {ANSWER_MATCHES}, got {answer_match!r}")
        self.answer_match = answer_match
        for k in ("question", "answer"):
            if k not in task:
                raise ValueError(f"QA task lacks {k!r}: {dict(task)!r:.200}")
        self.task = dict(task)
        self.task_id = str(task.get("id", ""))
        self.toolkit = toolkit
        self.judge = judge
        self.judge_prompt = judge_prompt
        self.system_prompt = system_prompt
        self.user_template = user_template
        self.include_enum = include_enum
        self.preference_instruction = str(preference_instruction or "").strip()
        self.judge_max_tokens = int(judge_max_tokens)
        self.expert_error_is_infra = expert_error_is_infra
        self.state = QAState(problem=str(task["question"]))
        self.tool_names = paper_tool_names(toolkit.registry.names(), toolkit.mapping,
                                           toolkit.config.search_backend)
        self.prices = toolkit.prices

    def user_message(self) -> str:
        """The task as the policy sees it: the problem, the preference, the tool prompt."""
        question = str(self.task["question"])
        if self.preference_instruction:
            question = f"{question}\n\n{self.preference_instruction}"
        return self.user_template.format(question=question)

    async def reset(self) -> EnvStart:
        self.state = QAState(problem=str(self.task["question"]))
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": self.user_message()}]
        return EnvStart(messages=messages,
                        tools=self.toolkit.openai_tools(include_enum=self.include_enum),
                        schemas=self.toolkit.registry, allow_message=False)

    async def step(self, turn: ParsedTurn) -> EnvStep:
        step = EnvStep(latency_s=0.0)
        aliases: list[str] = []
        for call in turn.calls:
            result = await self.toolkit.execute(call, self.state)
            step.observations.append(result.observation)
            step.tool_results.append(result.to_json())
            step.cost_usd += result.cost_usd
            step.latency_s += result.latency_s
            keys = call_keys(self.toolkit, call, result)
            step.tool_keys.extend(keys)
            alias = self.toolkit.count_key(call)
            if keys and alias is not None:
                aliases.append(alias)
            expert_error = result.extra.get("expert_error")
            if expert_error and self.expert_error_is_infra and step.infra_error is None:
                step.infra_error = f"expert {result.extra.get('model', '?')} failed: {expert_error}"
            if result.done:
                step.done = True
                break
        step.info["aliases"] = aliases
        return step

    async def finish(self, finish_reason: str) -> EnvOutcome:
        g = await grade_answer(self.state.answer, str(self.task["answer"]),
                               str(self.task["question"]), judge=self.judge,
                               judge_prompt=self.judge_prompt,
                               judge_max_tokens=self.judge_max_tokens,
                               match=self.answer_match)
        return EnvOutcome(reward=float(g.correct), correct=g.correct, answer=self.state.answer,
                          answer_valid=g.valid, infra_error=g.infra_error,
                          info={"grade": dataclasses.asdict(g), "reference": self.task["answer"],
                                "n_documents": len(self.state.documents),
                                "n_code_runs": len(self.state.code_snippets)})

"""User preferences (paper §3.3, App. F): (instruction, P) pairs generated from templates.

A :class:`Preference` pairs a natural-language instruction (appended to the task prompt) with the
vector P of the paper's Eq. 2, laid out as in :mod:`orchestra_jax.rl.rewards`::

    P = [p_tool_1 .. p_tool_T, p_outcome, p_compute, p_latency]      every entry in [0, 1]

``tool_names`` (the tool-count order) are keyed the paper's way: one entry per basic tool
(``local_search``, ``web_search``, ``code_interpreter``, tau2 domain functions by name) and one
per concrete model (``gpt-5``, ``Qwen/Qwen3-32B``, …), never per alias. The policy only sees
aliases, so an instruction names a model by a *display name* the caller supplies (e.g.
``"search-3 or answer-4"`` for the model behind both aliases; see ``rollout/build.py``).

The paper has an LLM propose pairs and another validate them; the prompts, counts and split sizes
are NOT FOUND. Here (all [ours]): six kinds of templates in our own wording, five wordings each,
instantiated over the tools of a task (:func:`generate_preference_set`). The last wording of
every kind is held out: ``split="test"`` pairs never share a wording with ``"train"`` pairs.
Every pair passes :func:`check_preference`, a rule-based validator that reads the *instruction*
(cost / latency cue words, tools mentioned) and checks P against it independently of how the pair
was built: a cost cue ⇔ ``p_compute > 0``, a latency cue ⇔ ``p_latency > 0``, a tool mentioned
⇔ its weight > 0, and ``p_outcome > 0`` always (no instruction asks for wrong answers; wrong
trajectories get R = 0 anyway, so ``p_outcome`` only lifts correct ones above wrong ones).

Kinds (P entries not listed are 0):
  accuracy      p_outcome 1
  cost          p_outcome 1, p_compute 1
  latency       p_outcome 1, p_latency 1
  cost_latency  p_outcome 1, p_compute 1, p_latency 1
  prefer_tool   p_outcome 1, the chosen tool 1
  self_hosted   p_outcome 1, every self-hosted tool 1 (local search, code interpreter, open-weight
                models, i.e. names with an ``org/`` prefix) — the App. F "avoid external APIs" case

:func:`default_preference` (no instruction) is ``p_outcome 1, p_compute 0.5, p_latency 0.5``
[ours]: the paper gives no default, and with ``p_outcome`` alone Eq. 2 reduces to binary
correctness. ``rl.config`` holds the same numbers (``default_p_*``; a test keeps them equal).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import re
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

BASIC_TOOLS = ("local_search", "web_search", "code_interpreter")
SELF_HOSTED_BASIC = ("local_search", "code_interpreter")
BASIC_DISPLAY = {"local_search": "local search", "web_search": "web search",
                 "code_interpreter": "the code interpreter"}
SPLITS = ("train", "test")
DEFAULT_P_OUTCOME, DEFAULT_P_COMPUTE, DEFAULT_P_LATENCY = 1.0, 0.5, 0.5   # [ours]

# Our own wording. The LAST wording of each kind is the held-out ("test") one.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "accuracy": (
        "Getting the answer right is all that matters to me; use whatever tools you need.",
        "Please focus only on correctness, no matter which tools it takes.",
        "Accuracy is my sole priority here.",
        "I need a correct answer above everything else.",
        "Only the correctness of the final answer counts for me.",
    ),
    "cost": (
        "Please keep the cost as low as you can.",
        "I'm on a tight budget, so spend as little money as possible.",
        "Choose the cheapest way to solve this.",
        "Minimise the price of the tools you call.",
        "Every dollar counts for me: be frugal with paid calls.",
    ),
    "latency": (
        "I need this answered fast.",
        "Please keep latency to a minimum.",
        "Speed matters most to me; avoid slow tools.",
        "I can't wait long, so be quick.",
        "Give me the quickest possible turnaround.",
    ),
    "cost_latency": (
        "Keep it cheap and fast.",
        "I want a quick answer that doesn't cost much.",
        "Minimise both the cost and the latency.",
        "Be frugal and quick: low price, short wait.",
        "Spend little money and don't make me wait.",
    ),
    "prefer_tool": (
        "I'd like you to use {tool} whenever it helps.",
        "Please rely on {tool} as much as you can.",
        "My preference is for {tool}; favour it over the alternatives.",
        "If possible, solve this with {tool}.",
        "I trust {tool} the most, so lean on it.",
    ),
    "self_hosted": (
        "Our data is confidential, so use only tools that run on our own machines: {tools}.",
        "Avoid external APIs; stick to {tools}.",
        "We have plenty of local GPUs, so prefer {tools} over outside services.",
        "Please keep everything in-house by using {tools}.",
        "Nothing may leave our servers: work with {tools} only.",
    ),
}
KINDS = tuple(TEMPLATES)

# Cue words the validator reads (stems, matched case-insensitively as word prefixes).
COST_CUES = ("cost", "cheap", "budget", "money", "spend", "price", "expens", "dollar", "frugal")
LATENCY_CUES = ("fast", "quick", "latency", "wait", "speed", "slow", "hurry", "turnaround")


class PreferenceError(ValueError):
    """An (instruction, P) pair that is malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Preference:
    """One user preference.

    instruction: text appended to the task prompt ("" for the default preference).
    vector: P, ``len(tool_names) + 3`` floats in [0, 1] (layout in the module docstring).
    kind: one of :data:`KINDS` or ``"default"``.
    tool_names: the tool-count order P was built for. targets: the tools the instruction names.
    split: ``"train"`` / ``"test"`` ("" for the default). template_id: ``"<kind>/<wording index>"``.
    """

    instruction: str
    vector: list[float]
    kind: str
    tool_names: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    split: str = ""
    template_id: str = ""

    @property
    def p_outcome(self) -> float:
        return self.vector[-3]

    @property
    def p_compute(self) -> float:
        return self.vector[-2]

    @property
    def p_latency(self) -> float:
        return self.vector[-1]

    def tool_weights(self) -> dict[str, float]:
        return dict(zip(self.tool_names, self.vector[:-3]))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["tool_names"], d["targets"] = list(self.tool_names), list(self.targets)
        return d

    @classmethod
    def from_json(cls, d: Union[str, Mapping[str, Any]]) -> "Preference":
        d = json.loads(d) if isinstance(d, str) else dict(d)
        missing = [k for k in ("instruction", "vector", "kind") if k not in d]
        if missing:
            raise PreferenceError(f"preference record lacks {missing}: {str(d)[:200]}")
        return cls(instruction=str(d["instruction"]), vector=[float(x) for x in d["vector"]],
                   kind=str(d["kind"]), tool_names=tuple(d.get("tool_names", ())),
                   targets=tuple(d.get("targets", ())), split=str(d.get("split", "")),
                   template_id=str(d.get("template_id", "")))


# ---------------------------------------------------------------------------- helpers

def is_open_weight(model: str) -> bool:
    """Open-weight (self-hostable) models carry a hub ``org/name`` id; API models do not."""
    return "/" in model


def display_name(tool: str, display_names: Optional[Mapping[str, str]] = None) -> str:
    if display_names and tool in display_names:
        return display_names[tool]
    return BASIC_DISPLAY.get(tool, tool)


def _join(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase.lower()) + r"(?![\w-])",
                     text.lower()) is not None


def _has_cue(text: str, cues: Iterable[str]) -> bool:
    low = text.lower()
    return any(re.search(r"(?<![\w-])" + re.escape(c), low) for c in cues)


def _split_of(index: int, n: int) -> str:
    return "test" if index == n - 1 else "train"


def _vector(tool_names: Sequence[str], targets: Iterable[str] = (), *, outcome: float = 1.0,
            compute: float = 0.0, latency: float = 0.0) -> list[float]:
    targets = set(targets)
    return [1.0 if t in targets else 0.0 for t in tool_names] + [outcome, compute, latency]


# ---------------------------------------------------------------------------- generation

def generate_preference_set(tool_names: Sequence[str], *,
                            display_names: Optional[Mapping[str, str]] = None,
                            choosable: Optional[Sequence[str]] = None) -> list[Preference]:
    """Every (instruction, P) pair the templates give for these tools, both splits, validated.

    choosable: tools a ``prefer_tool`` / ``self_hosted`` instruction may name (default: all of
    ``tool_names``; pass basic tools + models to keep tau2 domain functions out).
    """
    names = tuple(str(t) for t in tool_names)
    if len(set(names)) != len(names):
        raise PreferenceError(f"duplicate tool names: {list(names)}")
    pick = tuple(choosable) if choosable is not None else names
    unknown = [t for t in pick if t not in names]
    if unknown:
        raise PreferenceError(f"choosable tools {unknown} are not in tool_names {list(names)}")
    weights = {"accuracy": {}, "cost": {"compute": 1.0}, "latency": {"latency": 1.0},
               "cost_latency": {"compute": 1.0, "latency": 1.0}}
    out: list[Preference] = []
    for kind, wordings in TEMPLATES.items():
        n = len(wordings)
        if kind in weights:
            for i, w in enumerate(wordings):
                out.append(Preference(w, _vector(names, **weights[kind]), kind, names, (),
                                      _split_of(i, n), f"{kind}/{i}"))
        elif kind == "prefer_tool":
            for tool in pick:
                shown = display_name(tool, display_names)
                for i, w in enumerate(wordings):
                    out.append(Preference(w.format(tool=shown), _vector(names, [tool]), kind,
                                          names, (tool,), _split_of(i, n), f"{kind}/{i}"))
        elif kind == "self_hosted":
            local = tuple(t for t in pick if t in SELF_HOSTED_BASIC
                          or (t not in BASIC_TOOLS and is_open_weight(t)))
            external = [t for t in pick if t not in local]
            if not local or not external:    # the instruction would say nothing
                continue
            shown = _join([display_name(t, display_names) for t in local])
            for i, w in enumerate(wordings):
                out.append(Preference(w.format(tools=shown), _vector(names, local), kind, names,
                                      local, _split_of(i, n), f"{kind}/{i}"))
    for p in out:
        validate_preference(p, names, display_names=display_names)
    return out


def sample_preference(rng: Union[random.Random, int], tool_names: Sequence[str],
                      split: str = "train", *,
                      display_names: Optional[Mapping[str, str]] = None,
                      choosable: Optional[Sequence[str]] = None) -> Preference:
    """One preference for a task: a kind uniformly at random, then a pair of that kind and
    ``split`` uniformly (deterministic for an int seed or a seeded ``random.Random``)."""
    if split not in SPLITS:
        raise PreferenceError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(rng) if isinstance(rng, int) else rng
    pool = [p for p in generate_preference_set(tool_names, display_names=display_names,
                                               choosable=choosable) if p.split == split]
    kinds = sorted({p.kind for p in pool}, key=KINDS.index)
    kind = rng.choice(kinds)
    return rng.choice([p for p in pool if p.kind == kind])


def default_preference(tool_names: Sequence[str]) -> Preference:
    """P for a task without a preference instruction [ours]: outcome 1, cost 0.5, latency 0.5."""
    names = tuple(str(t) for t in tool_names)
    return Preference("", _vector(names, outcome=DEFAULT_P_OUTCOME, compute=DEFAULT_P_COMPUTE,
                                  latency=DEFAULT_P_LATENCY), "default", names)


# ---------------------------------------------------------------------------- validation

def check_preference(pref: Preference, tool_names: Optional[Sequence[str]] = None, *,
                     display_names: Optional[Mapping[str, str]] = None) -> list[str]:
    """What is wrong with ``pref`` ([] when consistent). Reads the instruction, not the kind."""
    names = tuple(tool_names) if tool_names is not None else tuple(pref.tool_names)
    v = list(pref.vector)
    errors: list[str] = []
    if len(v) != len(names) + 3:
        return [f"P has {len(v)} entries, expected {len(names)} tools + 3 = {len(names) + 3}"]
    bad = [x for x in v if not (isinstance(x, (int, float)) and 0.0 <= x <= 1.0)]
    if bad:
        errors.append(f"P entries must be in [0, 1], got {bad}")
    if not v[-3] > 0:
        errors.append("p_outcome must be > 0 (no preference asks for wrong answers)")
    text = pref.instruction
    if not text.strip():
        return errors                   # the default: no instruction to contradict
    cost, latency = _has_cue(text, COST_CUES), _has_cue(text, LATENCY_CUES)
    if cost != (v[-2] > 0):
        errors.append(f"instruction {'asks' if cost else 'does not ask'} about cost but "
                      f"p_compute = {v[-2]}")
    if latency != (v[-1] > 0):
        errors.append(f"instruction {'asks' if latency else 'does not ask'} about speed but "
                      f"p_latency = {v[-1]}")
    for tool, w in zip(names, v[:-3]):
        said = _mentions(text, display_name(tool, display_names))
        if said and not w > 0:
            errors.append(f"instruction names {tool!r} but its weight is {w}")
        elif w > 0 and not said:
            errors.append(f"{tool!r} has weight {w} but the instruction does not name it")
    return errors


def validate_preference(pref: Preference, tool_names: Optional[Sequence[str]] = None, *,
                        display_names: Optional[Mapping[str, str]] = None) -> Preference:
    """Raises :class:`PreferenceError` listing every inconsistency; returns ``pref``."""
    errors = check_preference(pref, tool_names, display_names=display_names)
    if errors:
        raise PreferenceError(f"preference {pref.template_id or pref.kind!r} "
                              f"({pref.instruction[:80]!r}): " + "; ".join(errors))
    return pref


# ---------------------------------------------------------------------------- JSONL

def dump_preferences(prefs: Iterable[Preference], path: Union[str, os.PathLike]) -> int:
    """Writes one JSON object per line; returns the number written."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for p in prefs:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def load_preferences(path: Union[str, os.PathLike], *, validate: bool = True,
                     display_names: Optional[Mapping[str, str]] = None) -> list[Preference]:
    """Reads :func:`dump_preferences` output; each pair is validated (errors name the line)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                p = Preference.from_json(line)
                if validate:
                    validate_preference(p, display_names=display_names)
            except (json.JSONDecodeError, PreferenceError, TypeError, ValueError) as e:
                raise PreferenceError(f"{path}:{n}: {e}") from None
            out.append(p)
    return out


class TemplatePreferences:
    """The preference source ``rollout.build`` takes (rollout cannot import ``data``):
    ``sample(rng, tool_names, split, display_names=, choosable=)`` and ``default(tool_names)``."""

    def sample(self, rng, tool_names, split="train", *, display_names=None, choosable=None):
        return sample_preference(rng, tool_names, split, display_names=display_names,
                                 choosable=choosable)

    def default(self, tool_names):
        return default_preference(tool_names)


__all__ = ["Preference", "PreferenceError", "TemplatePreferences", "generate_preference_set",
           "sample_preference", "default_preference", "check_preference", "validate_preference",
           "dump_preferences", "load_preferences", "KINDS", "TEMPLATES", "BASIC_TOOLS"]

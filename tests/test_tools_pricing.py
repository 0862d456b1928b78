"""Price sheets, units, randomisation, aliases, and the cost of a recorded episode by hand."""

import json
import random

import pytest

from orchestra_jax.tools.aliases import (ALL_ALIASES, TRAINING_CATALOGUE, ModelDescriptions,
                                         ModelMapping, alias_parameter_description, role_of)
from orchestra_jax.tools.pricing import (PriceSheet, UnknownModelError, episode_cost,
                                         load_provider_sheets, pricing_dir, sample_price_sheet)
from orchestra_jax.tools.registry import ToolResult


def test_paper_eval_prices_and_units():
    s = PriceSheet.load("paper_eval")
    # per 1M tokens, both directions (paper_spec §2.6; GPT-5 input typo corrected)
    assert s.cost_of_llm_call("gpt-5", 1_000_000, 0) == pytest.approx(1.25)
    assert s.cost_of_llm_call("gpt-5", 0, 1_000_000) == pytest.approx(10.0)
    assert s.cost_of_llm_call("gpt-5-mini", 2_000, 500) == pytest.approx(2000 * 0.25e-6 + 500 * 2e-6)
    assert s.cost_of_llm_call("Llama-3.3-70B-Instruct", 1e6, 1e6) == pytest.approx(1.8)
    assert s.price("Qwen/Qwen2.5-Math-7B-Instruct").usd_per_1m_input_tokens == 0.2
    assert s.cost_of_search(30) == pytest.approx(0.01 + 30 * 0.002)
    assert s.cost_of_sandbox(10.0) == pytest.approx(8.3e-5)
    assert s.cost_of_local_search(100) == pytest.approx(100 * 0.2e-6)  # Qwen3-8B input price
    with pytest.raises(UnknownModelError, match="no price for model 'gpt-7'.*known models"):
        s.cost_of_llm_call("gpt-7", 1, 1)
    with pytest.raises(ValueError):
        s.cost_of_llm_call("gpt-5", -1, 0)


def test_sheet_files_mark_unsourced_figures():
    for p in sorted((pricing_dir() / "providers").glob("*.json")):
        d = json.loads(p.read_text())
        assert all(m.get("illustrative") for m in d["models"].values()), p
    assert len(load_provider_sheets()) >= 6
    paper = json.loads((pricing_dir() / "paper_eval.json").read_text())
    for sourced in ("gpt-5", "Qwen/Qwen3-32B", "Qwen/Qwen2.5-Math-72B-Instruct"):
        assert not paper["models"][sourced].get("illustrative")
    unseen = PriceSheet.load("unseen_deepinfra")
    assert unseen.name == "unseen_deepinfra"
    assert "unseen_deepinfra" not in [s.name for s in load_provider_sheets()]


def test_sample_price_sheet_deterministic_and_from_providers(tmp_path):
    a, b = sample_price_sheet(7), sample_price_sheet(7)
    assert a.to_dict() == b.to_dict()
    providers = load_provider_sheets()
    base = PriceSheet.load("paper_eval")
    for m, p in a.models.items():
        offering = [s.price(m) for s in providers if s.has(m)]
        assert p in offering if offering else p == base.price(m)
    assert a.price("gpt-5") == base.price("gpt-5")  # proprietary: no provider lists it
    seen = {sample_price_sheet(random.Random(i)).price("meta-llama/Llama-3.3-70B-Instruct")
            for i in range(40)}
    assert len(seen) > 3
    a.save(tmp_path / "s.json")
    assert PriceSheet.load(tmp_path / "s.json").to_dict() == a.to_dict()


def test_mappings():
    m = ModelMapping.paper_eval()
    assert m.model_of("answer-3") == "meta-llama/Llama-3.3-70B-Instruct"
    assert m.model_of("reasoner-3") == "Qwen/Qwen2.5-Coder-32B-Instruct"
    s1, s2 = ModelMapping.sample(11), ModelMapping.sample(11)
    assert s1 == s2 and set(s1.aliases) == set(ALL_ALIASES)
    for alias, model in s1.aliases.items():
        assert model in TRAINING_CATALOGUE[role_of(alias)]
    for role in ("search", "answer"):
        models = [s1.model_of(a) for a in s1.available(role)]
        assert len(set(models)) == len(models)
    partial = ModelMapping.sample(3, random_counts=True)
    text, aliases = alias_parameter_description("answer", partial, PriceSheet.load("paper_eval"),
                                                ModelDescriptions.load())
    assert aliases == partial.available("answer") + partial.available("answer-math")
    for a in aliases:
        assert f"\n{a} | $" in text
    with pytest.raises(KeyError, match="not mapped"):
        ModelMapping.unseen().model_of("answer-4")
    with pytest.raises(ValueError, match="unknown aliases"):
        ModelMapping({"answer-9": "x"})
    # every catalogue and unseen model has a price and a description
    prices, desc = PriceSheet.load("paper_eval"), ModelDescriptions.load()
    for model in {*ModelMapping.unseen().models(), *[x for v in TRAINING_CATALOGUE.values()
                                                     for x in v]}:
        prices.price(model)
        desc.description(model, "answer")


def test_recorded_episode_cost_by_hand():
    """Episode: orchestrator Qwen3-8B for 3 turns; search-3 (Qwen3-32B writes a query, local
    search on a 12-token query), reasoner-1 (GPT-5 writes code, 2.5 s in the sandbox), answer-2
    (GPT-5-mini). Usages and sandbox seconds as recorded; prices from paper_eval.json."""
    s = PriceSheet.load("paper_eval")
    turns = [ToolResult("q", cost_usd=s.cost_of_llm_call("Qwen/Qwen3-32B", 1500, 40)
                        + s.cost_of_local_search(12),
                        usage={"Qwen/Qwen3-32B": {"prompt_tokens": 1500, "completion_tokens": 40}}),
             ToolResult("c", cost_usd=s.cost_of_llm_call("gpt-5", 3000, 800) + s.cost_of_sandbox(2.5),
                        usage={"gpt-5": {"prompt_tokens": 3000, "completion_tokens": 800}}),
             ToolResult("a", cost_usd=s.cost_of_llm_call("gpt-5-mini", 4000, 1200), done=True,
                        usage={"gpt-5-mini": {"prompt_tokens": 4000, "completion_tokens": 1200}})]
    orch = [(2000, 300), (2600, 250), (3400, 120)]
    total = episode_cost([t.cost_usd for t in turns], s, orchestrator_model="Qwen/Qwen3-8B",
                         orchestrator_turns=orch)
    hand = (
        1500 * 0.8 / 1e6 + 40 * 0.8 / 1e6 + 12 * 0.2 / 1e6     # search: 0.0012 + 0.000032 + 0.0000024 = 0.0012344
        + 3000 * 1.25 / 1e6 + 800 * 10 / 1e6 + 2.5 * 8.3e-6    # reason: 0.00375 + 0.008 + 0.00002075 = 0.01177075
        + 4000 * 0.25 / 1e6 + 1200 * 2 / 1e6                   # answer: 0.001 + 0.0024 = 0.0034
        + (2000 + 2600 + 3400) * 0.2 / 1e6 + (300 + 250 + 120) * 0.2 / 1e6  # orch: 0.0016 + 0.000134
    )
    assert hand == pytest.approx(0.01813915)  # 0.0012344 + 0.01177075 + 0.0034 + 0.001734
    assert total == pytest.approx(hand, rel=1e-12)
    usage = {}
    for t in turns:
        usage.update(t.usage)
    assert s.cost_of_usage(usage) == pytest.approx(hand - 12 * 0.2e-6 - 2.5 * 8.3e-6
                                                   - 8000 * 0.2e-6 - 670 * 0.2e-6)

"""Preference pairs (paper §3.3, App. F): template generation over a task's tools, the rule-based
validator, the deterministic train/test split, sampling, the default P and the JSONL set."""
import json
import random

import pytest

from orchestra_jax.data.preferences import (KINDS, TEMPLATES, Preference, PreferenceError,
                                            check_preference, default_preference,
                                            dump_preferences, generate_preference_set,
                                            load_preferences, sample_preference)

TOOLS = ["local_search", "code_interpreter", "gpt-5", "gpt-5-mini", "Qwen/Qwen3-32B"]
SHOWN = {"gpt-5": "search-1 or answer-1", "gpt-5-mini": "search-2", "Qwen/Qwen3-32B": "answer-4"}


def weights(p):
    return dict(zip(TOOLS, p.vector[:-3])), p.vector[-3:]


def test_generated_set_is_valid_split_and_matches_each_kind():
    prefs = generate_preference_set(TOOLS, display_names=SHOWN)
    assert {p.kind for p in prefs} == set(KINDS)
    for p in prefs:
        assert check_preference(p, TOOLS, display_names=SHOWN) == [], p
        assert len(p.vector) == len(TOOLS) + 3 and all(0 <= x <= 1 for x in p.vector)
    for kind in KINDS:   # both splits per kind; test wordings never appear in train
        train = {p.template_id for p in prefs if p.kind == kind and p.split == "train"}
        test = {p.template_id for p in prefs if p.kind == kind and p.split == "test"}
        assert train and test and not train & test
    by_kind = {}
    for p in prefs:
        by_kind.setdefault(p.kind, []).append(p)
    tools, (out, cost, lat) = weights(by_kind["cost"][0])
    assert cost == 1.0 and lat == 0.0 and out > 0 and not any(tools.values())
    tools, (out, cost, lat) = weights(by_kind["latency"][0])
    assert lat == 1.0 and cost == 0.0
    # "prefer local search": that tool's weight positive, it is named, nothing else preferred
    local = [p for p in by_kind["prefer_tool"] if p.targets == ("local_search",)]
    assert local and all("local search" in p.instruction for p in local)
    assert all(weights(p)[0] == {**dict.fromkeys(TOOLS, 0.0), "local_search": 1.0} for p in local)
    # models are named by the aliases the policy sees, never by their real name
    q32 = [p for p in by_kind["prefer_tool"] if p.targets == ("Qwen/Qwen3-32B",)]
    assert all("answer-4" in p.instruction and "Qwen" not in p.instruction for p in q32)
    # App. F's "avoid external APIs": local tools + open-weight models only
    (hosted,) = {p.targets for p in by_kind["self_hosted"]}
    assert set(hosted) == {"local_search", "code_interpreter", "Qwen/Qwen3-32B"}


def test_validator_reads_the_instruction():
    names = tuple(TOOLS)
    ok = Preference("Please keep the cost as low as you can.", [0] * 5 + [1, 1, 0], "cost", names)
    assert check_preference(ok) == []
    swapped = Preference(ok.instruction, [0] * 5 + [1, 0, 1], "cost", names)
    errs = check_preference(swapped)
    assert any("cost" in e for e in errs) and any("speed" in e for e in errs)
    unnamed = Preference("Please rely on local search as much as you can.",
                         [0, 0, 1, 0, 0, 1, 0, 0], "prefer_tool", names)
    errs = check_preference(unnamed, display_names=SHOWN)
    assert any("'local_search'" in e and "weight is 0" in e for e in errs)
    assert any("'gpt-5'" in e and "does not name it" in e for e in errs)
    assert "entries" in check_preference(Preference("x", [1.0, 1.0], "accuracy", names))[0]
    assert any("[0, 1]" in e for e in check_preference(
        Preference("Accuracy is my sole priority here.", [0] * 5 + [2, 0, 0], "accuracy", names)))
    assert any("p_outcome" in e for e in check_preference(
        Preference("Keep it cheap and fast.", [0] * 5 + [0, 1, 1], "cost_latency", names)))
    # gpt-5 is not "mentioned" by gpt-5-mini's display name (whole-name matching)
    only_mini = Preference("I'd like you to use gpt-5-mini whenever it helps.",
                           [0, 0, 0, 1, 0, 1, 0, 0], "prefer_tool", names)
    assert check_preference(only_mini) == []


def test_sampling_is_deterministic_and_respects_the_split():
    a = [sample_preference(random.Random(s), TOOLS, "train", display_names=SHOWN) for s in range(40)]
    b = [sample_preference(random.Random(s), TOOLS, "train", display_names=SHOWN) for s in range(40)]
    assert a == b and {p.kind for p in a} == set(KINDS)
    assert all(p.split == "train" for p in a)
    test = [sample_preference(s, TOOLS, "test", display_names=SHOWN) for s in range(20)]
    test_wordings = {TEMPLATES[k][-1] for k in KINDS}
    assert all(p.split == "test" and p.template_id.endswith("/4") for p in test)
    assert all(p.instruction in test_wordings or p.kind in ("prefer_tool", "self_hosted")
               for p in test)
    with pytest.raises(PreferenceError, match="split"):
        sample_preference(0, TOOLS, "eval")
    # choosable keeps tau2 domain functions out of tool preferences
    tau2 = ["get_user", "create_task", "gpt-5", "Qwen/Qwen3-32B"]
    picks = {sample_preference(s, tau2, choosable=["gpt-5", "Qwen/Qwen3-32B"]).targets
             for s in range(60)}
    assert not any(t in ("get_user", "create_task") for ts in picks for t in ts)


def test_default_preference_weighs_cost_and_latency():
    d = default_preference(TOOLS)
    assert d.instruction == "" and d.kind == "default"
    assert d.vector == [0.0] * 5 + [1.0, 0.5, 0.5]
    assert check_preference(d) == []


def test_jsonl_round_trip_and_bad_lines(tmp_path):
    prefs = generate_preference_set(TOOLS, display_names=SHOWN)
    path = tmp_path / "prefs.jsonl"
    assert dump_preferences(prefs, path) == len(prefs)
    assert load_preferences(path, display_names=SHOWN) == prefs
    lines = path.read_text().splitlines()
    row = json.loads(lines[7])
    row["vector"][-2], row["vector"][-1] = row["vector"][-1], 1.0 - row["vector"][-2]
    row["instruction"] = "Please keep the cost as low as you can."
    lines[7] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PreferenceError, match=r"prefs.jsonl:8: .*cost"):
        load_preferences(path, display_names=SHOWN)
    with pytest.raises(FileNotFoundError):
        load_preferences(tmp_path / "missing.jsonl")
    with pytest.raises(PreferenceError, match="duplicate"):
        generate_preference_set(["gpt-5", "gpt-5"])

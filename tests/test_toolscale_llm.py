"""LLM driver end to end against a REAL local OpenAI-compatible server (sglang-jax on CPU with a
tiny random Qwen3): its garbage outputs are counted and dropped, the run never crashes, writes a
loadable domain, and a rerun resumes from the journal without calling the model again.

Needs .venv-sglang (``make sglang-venv``)."""

import json

import pytest

from orchestra_jax.data.toolscale import SynthesisConfig, synthesize
from orchestra_jax.data.toolscale.llm_driver import LLMDriver, extract_json
from orchestra_jax.envs.tau2 import load_domain

pytestmark = pytest.mark.server


def test_extract_json():
    assert extract_json('noise ```json\n{"a": [1]}\n``` more') == {"a": [1]}
    assert extract_json('x [1, 2] y') == [1, 2]
    with pytest.raises(ValueError):
        extract_json("no json { here")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from orchestra_jax.chat.tokenizer import load_tokenizer
    from orchestra_jax.models import init_params, presets
    from orchestra_jax.rollout.launcher import REPO_ROOT, SGLangServer
    from orchestra_jax.rollout.weight_sync import export_checkpoint
    import importlib.util
    import jax
    if not (REPO_ROOT / ".venv-sglang" / "bin" / "python").exists():
        pytest.fail("missing .venv-sglang: run `make sglang-venv`")
    tmp = tmp_path_factory.mktemp("sgl_llm")
    tok_dir = tmp / "tokenizer"
    load_tokenizer().save_pretrained(str(tok_dir))
    config = presets["tiny-hd128"].replace(dtype="float32", max_position_embeddings=4096)
    ckpt = export_checkpoint(config, init_params(config, jax.random.key(0)), tmp / "ckpt",
                             tokenizer_dir=tok_dir)
    spec = importlib.util.spec_from_file_location("sglang_cpu", REPO_ROOT / "configs" / "sglang_cpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    cfg.model_path, cfg.log_dir = str(ckpt), str(tmp / "logs")
    cfg.context_length, cfg.max_total_tokens, cfg.chunked_prefill_size = 4096, 8192, 1024
    srv = SGLangServer(cfg)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_llm_driver_against_local_server(server, tmp_path):
    out = tmp_path / "bank_llm"
    cfg = SynthesisConfig(domain="bank", out=str(out), driver="llm", num_tasks=2,
                          base_url=f"{server.url}/v1", model="default", max_tokens=24,
                          max_retries=1, timeout_s=120, llm_num_intents=2, oversample=1,
                          llm_validate_sample=2)
    driver = LLMDriver.from_config(cfg)
    report = synthesize(cfg, driver=driver, log=lambda *_: None)
    c = report["counts"]
    assert driver.calls > 0
    # a random model's replies are not valid JSON of the requested shape: counted and dropped
    assert c.get("validate.dropped", 0) + c.get("validate.ok", 0) > 0
    assert c.get("tools.dropped", 0) == 1 and c.get("tools.fallback_schema_derived") == 1
    assert c.get("intents.dropped", 0) == 1
    invalid = sum(v for k, v in c.items() if k.endswith(".invalid"))
    assert invalid >= c.get("tools.dropped", 0) + c.get("intents.dropped", 0)
    domain = load_domain(out)                      # still a loadable domain (no tasks)
    assert len(domain.tools) > 0 and domain.tasks == []
    lines = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]
    assert {l["stage"] for l in lines} >= {"validate", "tools", "intents"}

    # resume: the journal answers every stage; the model is not called again
    again = LLMDriver.from_config(cfg)
    report2 = synthesize(cfg, driver=again, log=lambda *_: None)
    assert again.calls == 0
    assert report2["counts"]["tools.resumed"] == 1
    assert {k: v for k, v in report2["counts"].items() if k.endswith(".dropped")} == \
        {k: v for k, v in c.items() if k.endswith(".dropped")}

"""Smoke tests of the benchmarks (experiments/bench_*.py) at toy sizes: each runs for real and
produces its fields; bench_all renders them into BENCHMARKS.md's marked sections without
touching the rest. No timing assertions (speed targets live in BENCHMARKS.md only).

Not here: bench_weight_sync (starts an sglang-jax server; its mechanism is
tests/test_sglang_server.py) and the 8B memory plan (tests/test_plan_memory.py)."""
import importlib
import math
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
bu = importlib.import_module("bench_util")


def _cfg(name, **kw):
    c = bu.load_config_file(f"configs/{name}.py")
    for k, v in kw.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def results():
    return {}


def test_bench_train_toy(results):
    r = importlib.import_module("bench_train").bench(_cfg(
        "bench_train", model="toy", rows=2, length=16, matmul_n=128, matmul_calls=1, repeats=1,
        chunk_size=16, profile=True, profile_top=4, xla_opt_level=0))
    for k in ("speedup_vs_hf", "mfu", "ours_tokens_per_s", "hf_tokens_per_s",
              "matmul_peak_flops_per_s", "model_flops_per_step", "xla_flops_per_step"):
        assert math.isfinite(r[k]) and r[k] > 0, k
    # the same weights and tokens on both sides: the same first-step loss
    assert abs(r["loss_ours_first"] - r["loss_hf_first"]) < 1e-4
    assert r["profile"]["ops"] and all(o["ms"] >= 0 for o in r["profile"]["ops"])
    results["train"] = r


def test_bench_decode_toy(results):
    r = importlib.import_module("bench_decode").bench(_cfg(
        "bench_decode", model="toy", batch=2, prompt_len=8, new_tokens=8, repeats=1,
        sglang=False, profile=False))
    for k in ("speedup_vs_hf_greedy", "bound_ratio", "speedup_vs_hf_sample", "sampling_slowdown"):
        assert math.isfinite(r[k]) and r[k] > 0, k
    assert r["ours_generated"] == 2 * 8
    assert r["greedy_agreement_with_hf"] > 0.5
    results["decode"] = r


def test_bench_rollout_toy(results):
    r = importlib.import_module("bench_rollout").bench(_cfg(
        "bench_rollout", episodes=2, max_turns=2, new_tokens=4, repeats=1, profile=True,
        profile_top=3, grpo=False))
    assert r["same_tokens"] is True          # the replay reproduced every greedy turn
    assert r["engine_calls"] == 4 and r["turn_groups"] == 2
    assert r["generated_tokens"] > 0 and math.isfinite(r["overhead"])
    assert len(r["python_profile"]) == 3
    results["rollout"] = r


def test_bench_gpu_tiny_and_append(tmp_path):
    gpu = importlib.import_module("bench_gpu")
    c = _cfg("bench_gpu", tiny=True, train_steps=1, decode_batches=(2,), decode_repeats=1,
             remat_policy="none", attention_impl="xla", benchmarks_md="", xla_opt_level=0,
             new_tokens=8)
    r = gpu.bench(c)
    assert r["train"]["mfu"] > 0 and r["train"]["tokens_per_s"] > 0
    assert [d["batch"] for d in r["decode"]] == [2]
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nhand-written text\n")
    row = gpu.markdown_row(r, "python experiments/bench_gpu.py --config.tiny=True")
    gpu.append_to_benchmarks(row, md)
    gpu.append_to_benchmarks(row, md)
    text = md.read_text()
    assert "hand-written text" in text and text.count(row) == 2


def test_bench_all_writes_marked_sections(results, tmp_path):
    ba = importlib.import_module("bench_all")
    if not {"train", "decode", "rollout"} <= set(results):
        pytest.skip("needs the three bench results above")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n## Hand-recorded GPU results\n\nkeep me\n")
    bodies = {"train": ba.render_train(results["train"], "2026-01-01", "cmd-t"),
              "decode": ba.render_decode(results["decode"], "2026-01-01", "cmd-d"),
              "rollout": ba.render_rollout(results["rollout"], "2026-01-01", "cmd-r")}
    ba.write_benchmarks(md, bodies, "meta line")
    ba.write_benchmarks(md, bodies, "meta line 2")     # rewriting replaces, never duplicates
    text = md.read_text()
    assert "keep me" in text and text.count("## Hand-recorded GPU results") == 1
    assert text.count("<!-- bench_all:begin train -->") == 1 and "meta line 2" in text
    assert "meta line\n" not in text
    for name in ("train", "decode", "rollout"):
        assert f"<!-- bench_all:end {name} -->" in text
    assert "| `cmd-t` |" in text and "2026-01-01" in text
    assert text.index("bench_all:begin train") < text.index("## Hand-recorded GPU results")

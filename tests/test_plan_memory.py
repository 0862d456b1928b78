"""experiments/plan_memory.py lowers THE train step (GRPO + reference model) on a small preset."""
import importlib.util
import math

import jax
import ml_collections

from orchestra_jax.models import presets
from orchestra_jax.models.qwen3 import abstract_params, param_shardings_for
from orchestra_jax.sharding import make_mesh
from tests.conftest import REPO


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_grpo_step_matches_shard_arithmetic():
    plan_memory = _load("plan_memory", "experiments/plan_memory.py")
    cfg = _load("plan_grpo_8b", "configs/plan_grpo_8b.py").get_config()
    assert isinstance(cfg, ml_collections.ConfigDict) and cfg.model == "qwen3-8b"
    assert (cfg.loss, cfg.rows, cfg.seq_len, cfg.attention_impl) == ("grpo", 16, 32_000,
                                                                      "blockwise")
    assert cfg.kl_coef > 0 and cfg.mesh == (1, 16, 1)
    # small and quick: tiny model, f32, XLA attention, no remat, 2 micro-batches
    cfg.model, cfg.seq_len, cfg.mesh, cfg.rows, cfg.micro_batches = "tiny", 32, (2, 4, 1), 16, 2
    cfg.compute_dtype, cfg.attention_impl, cfg.remat_policy = "float32", "xla", "none"
    cfg.xla_backend_optimization_level = 0
    r = plan_memory.plan(cfg)
    assert r["loss"] == "grpo" and r["reference_model"] and r["micro_batches"] == 2
    # arguments = f32 params + AdamW mu + nu (sharded as the rules table says) + the bf16
    # reference params (same shards) + 7 batch arrays of 4-byte elements + step/rng/count
    config = presets["tiny"].replace(scan_layers=True)
    mesh = make_mesh((2, 4, 1))
    shard_elems = sum(math.prod(s.shard_shape(a.shape)) for a, s in zip(
        jax.tree.leaves(abstract_params(config)),
        jax.tree.leaves(param_shardings_for(config, mesh))))
    batch_bytes = 7 * (16 // 8) * cfg.seq_len * 4
    want = 3 * 4 * shard_elems + 2 * shard_elems + batch_bytes
    assert r["global_batch"] == 16 and r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert want <= r["argument_bytes"] <= want + 64, (r["argument_bytes"], want)
    assert r["alias_bytes"] >= 3 * 4 * shard_elems         # params + opt state donated
    assert r["temp_bytes"] > 0 and r["total_bytes"] < r["argument_bytes"] + r["temp_bytes"] * 2
    text = plan_memory.report(r)
    assert "TOTAL per device" in text and "GRPO step + reference model" in text

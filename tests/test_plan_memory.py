"""experiments/plan_memory.py: the AOT fwd+bwd+AdamW compile on a small preset (no allocation)."""
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


def test_plan_memory_tiny_matches_shard_arithmetic():
    plan_memory = _load("plan_memory", "experiments/plan_memory.py")
    cfg = _load("plan_memory_8b", "configs/plan_memory_8b.py").get_config()
    assert isinstance(cfg, ml_collections.ConfigDict) and cfg.model == "qwen3-8b"
    cfg.model, cfg.seq_len, cfg.mesh = "tiny", 32, (2, 4, 1)
    r = plan_memory.plan(cfg)
    # arguments = f32 params + AdamW mu + nu (each sharded as the rules table says) + 2 batches
    config = presets["tiny"].replace(scan_layers=True)
    mesh = make_mesh((2, 4, 1))
    shard_bytes = sum(math.prod(s.shard_shape(a.shape)) * 4 for a, s in zip(
        jax.tree.leaves(abstract_params(config)),
        jax.tree.leaves(param_shardings_for(config, mesh))))
    batch_bytes = 2 * cfg.per_device_batch * cfg.seq_len * 4
    assert r["global_batch"] == 8 and r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert 3 * shard_bytes + batch_bytes <= r["argument_bytes"] <= 3 * shard_bytes + batch_bytes + 64
    assert r["alias_bytes"] >= 3 * shard_bytes          # params + opt state donated
    assert r["temp_bytes"] > 0 and r["total_bytes"] < r["argument_bytes"] + r["temp_bytes"] * 2
    assert "TOTAL per device" in plan_memory.report(r)

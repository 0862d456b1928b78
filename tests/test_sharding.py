"""Mesh construction, the logical rules table, and sharded == unsharded on 8 fake CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from orchestra_jax.models import (forward, init_params, load_hf_checkpoint, param_logical_axes,
                                  param_shardings_for, presets, shard_params)
from orchestra_jax.models.qwen3 import abstract_params
from orchestra_jax.sharding import (LOGICAL_AXIS_RULES, MESH_AXES, logical_to_spec, make_mesh,
                                    param_shardings)
from tests.models_util import write_hf


def test_make_mesh_shapes_and_errors():
    assert len(jax.devices()) == 8
    m = make_mesh((2, -1, 1))
    assert m.axis_names == MESH_AXES and dict(m.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert make_mesh((1, 2, 2)).devices.size == 4
    with pytest.raises(ValueError, match="needs 16 devices"):
        make_mesh((2, 8, 1))
    with pytest.raises(ValueError, match="at most one -1"):
        make_mesh((-1, -1, 1))
    with pytest.raises(ValueError, match="cannot fill"):
        make_mesh((3, -1, 1))


def test_logical_to_spec_and_divisibility_fallback():
    assert logical_to_spec(("embed", "heads", "head_dim")) == P("fsdp", "tensor", None)
    assert logical_to_spec(("batch", "length", "unknown")) == P(("data", "fsdp"), None, None)
    mesh_shape = {"data": 2, "fsdp": 2, "tensor": 4}
    # 2 kv heads on a tensor axis of 4: replicated; batch 2 on data*fsdp=4: keeps 'data' only
    assert logical_to_spec(("kv_heads",), shape=(2,), mesh_shape=mesh_shape) == P(None)
    assert logical_to_spec(("batch",), shape=(2,), mesh_shape=mesh_shape) == P("data")
    # one mesh axis is never used twice in a spec
    assert logical_to_spec(("embed", "embed")) == P("fsdp", None)
    names = {n for n, _ in LOGICAL_AXIS_RULES}
    assert {"vocab", "embed", "heads", "kv_heads", "mlp", "head_dim", "layers"} <= names


@pytest.mark.parametrize("scan", [False, True])
def test_every_param_leaf_gets_a_sharding(scan):
    config = presets["tiny"].replace(scan_layers=scan)
    mesh = make_mesh((2, 2, 2))
    sh = param_shardings_for(config, mesh)
    abstract = abstract_params(config)
    assert jax.tree.structure(sh) == jax.tree.structure(abstract)
    assert all(isinstance(s, NamedSharding) for s in jax.tree.leaves(sh))
    names = param_logical_axes(config)
    q = sh["layers"]["attn"]["q_proj"] if scan else sh["layers_0"]["attn"]["q_proj"]
    assert q.spec == (P(None, "fsdp", "tensor", None) if scan else P("fsdp", "tensor", None))
    assert sh["embed"].spec == P("tensor", "fsdp")
    # any pytree works: unnamed leaves are replicated, odd shapes fall back to replication
    other = {"w": jnp.zeros((3, 5)), "b": np.zeros(7)}
    assert all(s.spec == P() for s in jax.tree.leaves(param_shardings(mesh, other)))
    odd = param_shardings(mesh, {"w": jax.ShapeDtypeStruct((3, 6), jnp.float32)},
                          {"w": P("embed", "mlp")})
    assert odd["w"].spec == P(None, "tensor")
    assert jax.tree.structure(names) == jax.tree.structure(abstract)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_forward_equals_unsharded(shape):
    config = presets["tiny"].replace(num_heads=8, num_kv_heads=4, head_dim=8)
    params = init_params(config, jax.random.key(0))
    toks = np.random.RandomState(0).randint(0, config.vocab_size, (8, 16)).astype(np.int32)
    ref = np.asarray(forward(config, params, toks))
    mesh = make_mesh(shape)
    sharded = shard_params(config, params, mesh)
    leaf = sharded["layers_0"]["mlp"]["gate_proj"]
    assert leaf.sharding.spec == param_shardings_for(config, mesh)["layers_0"]["mlp"]["gate_proj"].spec
    with jax.set_mesh(mesh):
        out = forward(config, sharded, jax.device_put(toks, NamedSharding(mesh, P(("data", "fsdp")))))
    assert np.abs(np.asarray(out) - ref).max() <= 1e-5


def test_init_params_directly_on_mesh():
    config = presets["tiny"]
    mesh = make_mesh((2, 2, 2))
    direct = init_params(config, jax.random.key(0), mesh=mesh)
    want = param_shardings_for(config, mesh)
    for got, w in zip(jax.tree.leaves(direct), jax.tree.leaves(want)):
        assert got.sharding == w
    emb = np.asarray(direct["embed"])
    assert abs(emb.std() - 0.02) < 0.002 and abs(emb.mean()) < 0.002
    np.testing.assert_array_equal(np.asarray(direct["final_norm"]["scale"]), 1.0)
    # distinct leaves of the same shape are independent draws
    assert not np.allclose(np.asarray(direct["layers_0"]["attn"]["k_proj"]),
                           np.asarray(direct["layers_0"]["attn"]["v_proj"]))


@pytest.mark.parametrize("scan", [False, True])
def test_load_hf_checkpoint_on_mesh(tmp_path, scan):
    write_hf("qwen3_untied", tmp_path, max_shard_size="40KB")
    mesh = make_mesh((2, 2, 2))
    config, params = load_hf_checkpoint(tmp_path, mesh=mesh, compute_dtype=jnp.float32,
                                        scan_layers=scan)
    _, ref_params = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32, scan_layers=scan)
    expected = param_shardings_for(config, mesh)
    for got, want, ref in zip(jax.tree.leaves(params), jax.tree.leaves(expected),
                              jax.tree.leaves(ref_params)):
        assert got.sharding == want
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    toks = np.random.RandomState(1).randint(0, config.vocab_size, (4, 9)).astype(np.int32)
    with jax.set_mesh(mesh):
        out = np.asarray(forward(config, params, toks))
    assert np.abs(out - np.asarray(forward(config, ref_params, toks))).max() <= 1e-5


def test_sharding_shard_params_with_names_and_warning():
    from orchestra_jax import sharding
    config = presets["tiny"]
    params = init_params(config, jax.random.key(0))
    mesh = make_mesh((1, 4, 2))
    placed = sharding.shard_params(params, mesh, param_logical_axes(config))
    assert placed["layers_1"]["mlp"]["down_proj"].sharding.spec == P("tensor", "fsdp")
    with pytest.warns(UserWarning, match="replicated"):
        rep = sharding.shard_params(params, mesh)
    assert rep["embed"].sharding.spec == P()

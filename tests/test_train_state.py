"""train/state.py: optimizer, abstract state, shardings from the rules table, sharding report."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from orchestra_jax.models import init_params, param_shardings_for, presets
from orchestra_jax.rl.config import get_rl_config
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.state import (OptimizerConfig, ShardingFallbackError, TrainState,
                                       abstract_state, init_state, make_optimizer,
                                       sharding_report, state_from_params, state_logical_axes,
                                       state_shardings)

CFG = presets["tiny"].replace(scan_layers=True)


def test_optimizer_is_clipped_torch_style_adamw():
    c = OptimizerConfig()
    assert (c.learning_rate, c.weight_decay, c.grad_clip_norm, c.warmup_steps) == (1e-6, 0.01,
                                                                                    1.0, 0)
    c = OptimizerConfig.from_config(get_rl_config())
    assert (c.learning_rate, c.weight_decay, c.b1, c.b2, c.eps) == (1e-6, 0.01, 0.9, 0.999, 1e-8)
    cfg = OptimizerConfig(learning_rate=0.1, weight_decay=0.5, grad_clip_norm=1.0)
    opt = make_optimizer(cfg)
    p = {"w": jnp.array([1.0, -2.0, 3.0])}
    g = {"w": jnp.array([3.0, 4.0, 0.0])}                    # norm 5 -> clipped to 1
    st = opt.init(p)
    upd, st = opt.update(g, st, p)
    new = optax.apply_updates(p, upd)
    gc = np.array([0.6, 0.8, 0.0])
    m, v = (1 - 0.9) * gc, (1 - 0.999) * gc ** 2
    mhat, vhat = m / (1 - 0.9), v / (1 - 0.999)
    want = np.array([1.0, -2.0, 3.0]) - 0.1 * (mhat / (np.sqrt(vhat) + 1e-8)
                                               + 0.5 * np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(new["w"], want, rtol=1e-6)
    for bad in (dict(learning_rate=0.0), dict(weight_decay=-1.0), dict(grad_clip_norm=0.0),
                dict(b1=1.0), dict(warmup_steps=-1)):
        with pytest.raises(ValueError):
            OptimizerConfig(**bad)


def test_every_state_leaf_has_a_spec_and_moments_mirror_params():
    opt = make_optimizer()
    mesh = make_mesh((2, 2, 2))
    ab = abstract_state(CFG, opt)
    sh = state_shardings(mesh, CFG, opt)
    assert jax.tree.structure(sh) == jax.tree.structure(ab)
    assert all(isinstance(s, NamedSharding) for s in jax.tree.leaves(sh))
    p_sh = param_shardings_for(CFG, mesh)
    adam = sh.opt_state[1][0]
    for tree in (sh.params, adam.mu, adam.nu):
        assert jax.tree.map(lambda s: s.spec, tree) == jax.tree.map(lambda s: s.spec, p_sh)
    for s in (sh.step, sh.rng, adam.count):                   # replicated scalars / key
        assert all(a is None for a in s.spec), s
    assert sh.params["embed"].spec == P("tensor", "fsdp")    # really sharded, not replicated
    assert ab.rng.shape == (2,) and ab.rng.dtype == jnp.uint32 and ab.step.dtype == jnp.int32


def test_init_state_born_sharded_and_mesh_independent():
    opt = make_optimizer()
    a = init_state(CFG, opt, 3, make_mesh((2, 2, 2)))
    b = init_state(CFG, opt, 3, make_mesh((1, 1, 1)))
    sh = state_shardings(make_mesh((2, 2, 2)), CFG, opt)
    for leaf, s in zip(jax.tree.leaves(a), jax.tree.leaves(sh)):
        assert leaf.sharding.is_equivalent_to(s, leaf.ndim)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert int(a.step) == 0 and float(jnp.std(a.params["embed"])) == pytest.approx(0.02, rel=0.1)
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(a.opt_state[1][0].mu))


def test_state_from_params_places_and_validates():
    opt = make_optimizer()
    mesh = make_mesh((1, 4, 2))
    params = jax.device_get(init_params(CFG, jax.random.key(1)))
    st = state_from_params(params, CFG, opt, mesh, rng=7, step=5)
    assert isinstance(st, TrainState) and int(st.step) == 5
    np.testing.assert_array_equal(np.asarray(st.rng), np.asarray(jax.random.PRNGKey(7)))
    np.testing.assert_array_equal(np.asarray(st.params["embed"]), params["embed"])
    assert sharding_report(mesh, st, state_logical_axes(CFG, opt), strict=True).ok
    bad = dict(params, embed=params["embed"][:, :8])
    with pytest.raises(ValueError, match=r"\['embed'\] has shape \(256, 8\)"):
        state_from_params(bad, CFG, opt, mesh)
    with pytest.raises(ValueError, match="does not match the model config"):
        state_from_params({"embed": params["embed"]}, CFG, opt, mesh)


def test_sharding_report_lists_fallbacks(capsys):
    opt = make_optimizer()
    ab = abstract_state(CFG, opt)
    names = state_logical_axes(CFG, opt, ab)
    # 2 kv heads on a tensor axis of 4: k/v projections (and their Adam moments) fall back
    mesh = make_mesh((1, 2, 4))
    rep = sharding_report(mesh, ab, names)
    print(rep)
    assert len(rep.fallbacks) == 6 and not rep.ok
    assert {f.path.split("[")[-1].strip("']") for f in rep.fallbacks} == {"k_proj", "v_proj"}
    f = rep.fallbacks[0]
    assert f.kind == "not_divisible" and f.dims == ((2, "kv_heads", 2, ("tensor",)),)
    assert "not divisible by mesh axes ('tensor',)" in str(rep)
    with pytest.raises(ShardingFallbackError, match="k_proj"):
        sharding_report(mesh, ab, names, strict=True)
    assert sharding_report(make_mesh((2, 2, 2)), ab, names, strict=True).ok
    assert sharding_report(make_mesh((1, 1, 1)), ab, names, strict=True).ok
    # a large leaf without logical names; a leaf placed differently from the table
    mesh = make_mesh((1, 8, 1))
    tree = {"big": jax.ShapeDtypeStruct((1024, 512), jnp.float32),
            "small": jax.ShapeDtypeStruct((8,), jnp.float32),
            "w": jax.ShapeDtypeStruct((64, 128), jnp.float32,
                                      sharding=NamedSharding(mesh, P()))}
    rep = sharding_report(mesh, tree, {"big": P(None, None), "small": P(None),
                                       "w": P("embed", "mlp")})
    assert [(x.path, x.kind) for x in rep.fallbacks] == [("['big']", "unnamed"),
                                                         ("['w']", "misplaced")]
    assert "fully replicated" in str(rep) and "the rules table gives" in str(rep)
    out = capsys.readouterr().out
    assert "sharding report on mesh" in out


def test_qwen3_8b_state_shards_fully_on_planned_meshes():
    """The 8B plan's meshes: no weight or moment of the 8B state silently replicated."""
    cfg = presets["qwen3-8b"].replace(scan_layers=True)
    opt = make_optimizer()
    ab = abstract_state(cfg, opt)
    names = state_logical_axes(cfg, opt, ab)
    for shape in ((1, 8, 1), (2, 2, 2), (1, 4, 2)):
        assert sharding_report(make_mesh(shape), ab, names, strict=True).ok

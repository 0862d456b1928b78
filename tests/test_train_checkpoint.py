"""Orbax train checkpoints: sharded round trip onto another mesh, keep-N, metadata, clear errors."""
import dataclasses
import functools
import hashlib
import pathlib
import shutil

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from orchestra_jax import models
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.checkpoint import (CheckpointError, Checkpointer, abstract_state,
                                            export_hf)

CFG = models.presets["tiny"]


@flax.struct.dataclass
class State:   # the shape of train/state.py's TrainState: step, params, opt_state, rng
    step: jax.Array
    params: dict
    opt_state: object
    rng: jax.Array


@jax.jit
def _adam_step(params, seed):
    params = jax.tree.map(lambda p: p * (1.0 + 0.1 * seed), params)
    opt = optax.adamw(1e-3)
    opt_state = opt.init(params)
    # one real update so the Adam moments are not zeros
    grads = jax.tree.map(lambda p: jnp.sin(p * 3.0 + seed), params)
    upd, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, upd), opt_state


@functools.cache
def _params(cfg=CFG):
    return models.init_params(cfg, jax.random.PRNGKey(0))


def _state(mesh, seed=0, cfg=CFG):
    """A distinct train state per seed, sharded by the rules table on ``mesh``."""
    params, opt_state = _adam_step(models.shard_params(cfg, _params(cfg), mesh), seed)
    rep = NamedSharding(mesh, PartitionSpec())
    return State(jax.device_put(jnp.int32(seed), rep), params, opt_state,
                 jax.device_put(jax.random.key(seed), rep))


def _target(mesh, cfg=CFG):
    shapes = jax.eval_shape(lambda p: State(jnp.int32(0), *_adam_step(p, 0),
                                            jax.random.key(0)), models.abstract_params(cfg))
    psh = models.param_shardings_for(cfg, mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    opt_sh = optax.tree_utils.tree_map_params(optax.adamw(1e-3), lambda _, s: s,
                                              shapes.opt_state, psh,
                                              transform_non_params=lambda _: rep)
    shardings = State(rep, psh, opt_sh, rep)
    return abstract_state(shapes, shardings)


def _digest(path: pathlib.Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Steps 1..3 saved asynchronously from mesh (1, 8, 1) with keep-2."""
    d = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    mesh = make_mesh((1, 8, 1))
    states = {}
    cfg = ml_collections.ConfigDict({"lr": 1e-6, "mesh": (1, 8, 1), "name": "sft"})
    with Checkpointer(d, max_to_keep=2) as ck:
        for step in (1, 2, 3):
            st = _state(mesh, seed=step)
            states[step] = st
            assert ck.save(step, st, {"data_position": 10 * step, "policy_version": step,
                                      "seed": np.int64(7), "loss": np.float32(np.nan),
                                      "config": cfg})
        ck.wait_until_finished()
        assert ck.all_steps() == [2, 3] and ck.latest_step() == 3     # keep-N
    return d, states


def test_round_trip_onto_other_mesh_bit_identical(saved):
    d, states = saved
    ck = Checkpointer(d)
    for shape in ((2, 2, 2), (1, 1, 1)):
        mesh = make_mesh(shape)
        target = _target(mesh)
        st, meta = ck.restore(target)                                   # latest = 3
        _equal(st, states[3])
        assert type(st) is State
        for got, want in zip(jax.tree.leaves(st), jax.tree.leaves(target)):
            assert got.sharding == want.sharding
        assert meta["data_position"] == 30 and meta["policy_version"] == 3
    st2, meta2 = ck.restore(_target(make_mesh((2, 2, 2))), step=2)
    _equal(st2, states[2])
    assert meta2["data_position"] == 20


def test_metadata_round_trip(saved):
    d, _ = saved
    meta = Checkpointer(d).restore_metadata(3)
    assert meta["config"] == {"lr": 1e-6, "mesh": [1, 8, 1], "name": "sft"}
    assert meta["seed"] == 7 and meta["loss"] == "nan" and meta["policy_version"] == 3
    assert meta["_orchestra"] == {"format": 1, "step": 3, "process_count": 1}
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 1 .*have \[2, 3\]"):
        Checkpointer(d).restore_metadata(1)


def _copy(saved, tmp_path):
    d, _ = saved
    dst = tmp_path / "checkpoints"
    shutil.copytree(d, dst)
    return dst


def test_truncated_array_file_is_one_clear_error(saved, tmp_path):
    d = _copy(saved, tmp_path)
    data = sorted((d / "3" / "state" / "d").iterdir(), key=lambda p: -p.stat().st_size)[0]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = _digest(d)
    with pytest.raises(CheckpointError, match=rf"checkpoint {d / '3'} could not be read"):
        Checkpointer(d).restore(_target(make_mesh((2, 2, 2))))
    assert _digest(d) == before                                        # nothing touched


def test_missing_metadata_and_wrong_shapes(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "3" / "meta" / "metadata").unlink()
    before = _digest(d)
    with pytest.raises(CheckpointError, match=r"3 is missing its metadata file"):
        Checkpointer(d).restore(_target(make_mesh((2, 2, 2))))
    other = dataclasses.replace(CFG, hidden_size=32, intermediate_size=96)
    with pytest.raises(CheckpointError, match=r"incompatible with the target state .*"
                                              r"params\.embed: checkpoint float32\[256, 64\] vs "
                                              r"target float32\[256, 32\]"):
        Checkpointer(d).restore(_target(make_mesh((2, 2, 2)), cfg=other), step=2)
    with pytest.raises(CheckpointError, match=r"missing \['params'\]"):
        Checkpointer(d).restore({"params": jax.ShapeDtypeStruct(
            (2,), jnp.float32, sharding=NamedSharding(make_mesh((1, 1, 1)), PartitionSpec()))},
            step=2)
    assert _digest(d) == before
    ck = Checkpointer(d)
    with pytest.raises(CheckpointError, match="already exists; refusing to overwrite"):
        ck.save(3, _state(make_mesh((1, 8, 1))))
    assert _digest(d) == before


def test_export_hf_round_trip(tmp_path):
    mesh = make_mesh((1, 4, 2))
    params = models.shard_params(CFG, _params(), mesh)
    out = export_hf(CFG, params, tmp_path / "hf")
    export_hf(CFG, params, tmp_path / "hf")                            # replaces in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    cfg2, loaded = models.load_hf_checkpoint(out)
    assert cfg2.hidden_size == CFG.hidden_size
    _equal(loaded, params)


def test_interrupted_save_is_invisible(saved, tmp_path):
    d = _copy(saved, tmp_path)
    # what a kill -9 during the save of step 4 leaves behind: Orbax's uncommitted temp dir
    partial = d / "4.orbax-checkpoint-tmp-1795965944123"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 10)
    ck = Checkpointer(d)
    assert ck.latest_step() == 3 and ck.all_steps() == [2, 3]
    st, meta = ck.restore(_target(make_mesh((1, 1, 1))))
    assert meta["policy_version"] == 3

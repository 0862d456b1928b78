"""Child of tests/test_multiprocess.py (run by multiprocess_util.launch, 1 or N processes).

Same code for one or many processes: initialize → global mesh (2, 4, 1) → (a) a jitted sharded
matmul over a batch fed per process, (b) one gradient step of the tiny Qwen3 on a packed batch,
(c) optionally an Orbax save of the new state and a restore onto another mesh, (d) optionally a
restore of another run's checkpoint. Host copies go to npz files; scalars to the JSON result.
"""
import argparse
import dataclasses
import os
import time

from orchestra_jax.train import distributed

HOW = distributed.initialize()   # before any other JAX call

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from multiprocess_util import write_arrays, write_result  # noqa: E402
from orchestra_jax import models  # noqa: E402
from orchestra_jax.sharding import make_mesh  # noqa: E402
from orchestra_jax.train.batch import Sample, local_rows, pack, shard_batch  # noqa: E402
from orchestra_jax.train.checkpoint import Checkpointer, abstract_state, export_hf  # noqa: E402
from orchestra_jax.train.metrics import MetricsWriter  # noqa: E402

CFG = dataclasses.replace(models.presets["tiny"], num_layers=1)   # 1 layer: quick compiles
OPT = optax.adamw(1e-2)


def host(tree, mesh):
    """Global values on every host: ONE jitted all-gather for the whole tree (a collective)."""
    rep = NamedSharding(mesh, PartitionSpec())
    full = jax.jit(lambda t: t, out_shardings=jax.tree.map(lambda _: rep, tree))(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), full)


def flat(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def init_params(mesh):
    """Deterministic host-drawn params placed shard by shard (same values on any mesh)."""
    rng = np.random.default_rng(0)
    shapes = models.abstract_params(CFG)
    shard = models.param_shardings_for(CFG, mesh)

    def one(s, sh):
        v = (rng.normal(size=s.shape) * 0.02 if len(s.shape) > 1 else
             1.0 + 0.1 * rng.normal(size=s.shape)).astype(s.dtype)
        return jax.make_array_from_callback(s.shape, sh, lambda idx: v[idx])
    return jax.tree.map(one, shapes, shard)


def samples():
    rng = np.random.default_rng(0)
    out = []
    for i in range(20):
        n = int(rng.integers(4, 16))
        m = (rng.random(n) < 0.6).astype(np.float32)
        m[0] = 0
        out.append(Sample(rng.integers(1, CFG.vocab_size, n), m, -rng.random(n) * m,
                          float(rng.normal())))
    return out


def loss_fn(params, b):
    logits, _ = models.apply(CFG, params, b["tokens"], b["positions"], b["segment_ids"])
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), b["targets"][..., None], -1)[..., 0]
    w = b["loss_mask"]
    return -jnp.sum(b["advantages"] * w * logp) / jnp.maximum(jnp.sum(w), 1.0)


def state_shardings(mesh, opt_state_shape):
    psh = models.param_shardings_for(CFG, mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    osh = optax.tree_utils.tree_map_params(OPT, lambda _, s: s, opt_state_shape, psh,
                                           transform_non_params=lambda _: rep)
    return {"step": rep, "params": psh, "opt_state": osh}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save_dir", default="")
    ap.add_argument("--restore_dir", default="")
    a = ap.parse_args()
    t0 = [time.perf_counter()]
    res_t = {}

    def T(name):
        t = time.perf_counter()
        res_t[name] = round(t - t0[0], 2)
        t0[0] = t

    mesh = make_mesh((2, 4, 1))
    res = {"how": HOW, "process_index": jax.process_index(),
           "process_count": jax.process_count(), "device_count": jax.device_count(),
           "local_device_count": jax.local_device_count()}

    # (a) a jitted sharded computation over rows each process feeds
    x = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    rows = distributed.process_rows(16, mesh)
    res["rows"] = rows.tolist()
    sh = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    xg = jax.make_array_from_process_local_data(sh, x[rows], (16, 32))
    y = jax.jit(lambda v: jnp.tanh(v @ v.T).sum(axis=1) + v.sum(), out_shardings=sh)(xg)
    res["matmul"] = host(y, mesh).tolist()
    T("matmul")

    # (b) one gradient step of the tiny model on a packed, sharded batch
    (batch,), stats = pack(samples(), rows=8, length=32)
    b = shard_batch(local_rows(batch, mesh), mesh)
    params = init_params(mesh)
    T("init")
    st_shape = jax.eval_shape(lambda p: {"step": jnp.int32(0), "params": p,
                                         "opt_state": OPT.init(p)}, params)
    shardings = state_shardings(mesh, st_shape["opt_state"])

    @jax.jit
    def init(p):
        return {"step": jnp.int32(0), "params": p, "opt_state": OPT.init(p)}

    @jax.jit
    def train_step(st, b):
        loss, g = jax.value_and_grad(loss_fn)(st["params"], b)
        upd, opt_state = OPT.update(g, st["opt_state"], st["params"])
        return ({"step": st["step"] + 1, "params": optax.apply_updates(st["params"], upd),
                 "opt_state": opt_state}, loss, optax.global_norm(g))

    state = jax.device_put(init(params), shardings)
    with jax.set_mesh(mesh):
        state, loss, gnorm = train_step(state, b)
    res["loss"], res["grad_norm"] = float(loss), float(gnorm)
    T("train_step")
    res["batch_sharding"] = str(b["tokens"].sharding.spec)
    new = host(state, mesh)
    if jax.process_index() == 0:
        write_arrays("state", flat(new))
    T("gather")

    # (c) Orbax: every process writes its shards; restore onto another mesh in the same run
    if a.save_dir:
        ck = Checkpointer(a.save_dir, max_to_keep=2)
        ck.save(1, state, {"policy_version": 1, "processes": jax.process_count()})
        ck.wait_until_finished()
        other = make_mesh((1, 4, 2))
        target = abstract_state(st_shape, state_shardings(other, st_shape["opt_state"]))
        restored, meta = ck.restore(target)
        back = host(restored, mesh)
        res["restore_equal"] = all(np.array_equal(u, v) for u, v in
                                   zip(jax.tree.leaves(new), jax.tree.leaves(back)))
        res["restore_meta"] = {k: meta[k] for k in ("policy_version", "processes")}
        res["saved_steps"] = ck.all_steps()
        ck.close()
        T("orbax_save_restore")
        # only process 0 writes metrics and the HF export (both called on every process)
        out = os.path.dirname(os.path.abspath(a.save_dir))
        with MetricsWriter(os.path.join(out, "run")) as w:
            w.write(1, {"loss": loss, "grad_norm": gnorm, "param_norm": 0.0,
                        "tokens_per_s": 1.0, "step_s": 1.0, "rank": jax.process_index()})
        export_hf(CFG, state["params"], os.path.join(out, "hf"))
        T("metrics_export")

    # (d) restore another run's checkpoint onto this run's mesh
    if a.restore_dir:
        ck = Checkpointer(a.restore_dir)
        restored, meta = ck.restore(abstract_state(st_shape, shardings))
        res["restored_from_processes"] = meta["processes"]
        if jax.process_index() == 0:
            write_arrays("restored", flat(host(restored, mesh)))
        ck.close()
        T("orbax_restore_other")
    res["time_s"] = res_t
    write_result(res)


if __name__ == "__main__":
    main()

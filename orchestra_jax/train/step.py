"""The one jitted train step: gradient accumulation, clipping, optimizer update, metrics.

It knows no algorithm: ``loss_fn(params, batch, ref_params) -> (loss_sum, weight, aux)`` (see
``train/losses.py``) supplies the objective. The batch's rows are split into ``micro_batches``
strided groups (micro-batch ``i`` = rows ``i, i+k, i+2k, …``, so every data-parallel shard
contributes to every micro-batch), a ``lax.scan`` sums the gradients of ``loss_sum``, the
``loss_sum``s, ``weight``s and aux pairs, and everything is divided by the total weight ONCE —
``k`` micro-batches give exactly the full-batch update (up to float summation order).

Gradient clipping (global norm) is part of the optax chain (``train.state.make_optimizer``);
``grad_norm`` is reported before clipping. The step is ``jax.jit`` with the state's shardings in
and out, the batch sharded over ``('data', 'fsdp')`` rows, metrics replicated, and the state
donated. It is traced and run under ``jax.set_mesh(mesh)``, so the model's activation
``constrain`` calls apply.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orchestra_jax.sharding import constrain, logical_to_spec
from orchestra_jax.train.state import TrainState


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over ``('data', 'fsdp')`` per the rules table (logical ``('batch', 'length')``)."""
    return NamedSharding(mesh, logical_to_spec(("batch", "length")))


def _safe_div(s, w):
    return jnp.where(w > 0, s / jnp.where(w > 0, w, 1.0), 0.0)


def _split_micro(batch: dict, k: int) -> dict:
    """``[R, L]`` → ``[k, R/k, L]`` with micro-batch ``i`` = rows ``i::k``."""
    def one(x):
        r = x.shape[0]
        y = jnp.swapaxes(x.reshape((r // k, k) + x.shape[1:]), 0, 1)
        return constrain(y, (None, "batch") + ("length",) * (x.ndim - 1))
    return {name: one(x) for name, x in batch.items()}


class TrainStep:
    """``step(state, batch[, ref_params]) -> (new_state, metrics)``; ``.lower(...)`` for AOT.

    Metrics (replicated f32 scalars): ``loss`` (= Σ loss_sum / Σ weight), ``loss_weight``
    (Σ weight: trained tokens for token means), ``grad_norm`` (before clipping),
    ``update_norm``, ``param_norm`` (after the update), and every aux entry of the loss
    (Σ sum / Σ weight).
    """

    def __init__(self, loss_fn: Callable, optimizer: optax.GradientTransformation,
                 state_shardings: TrainState, batch_sharding: NamedSharding, *,
                 micro_batches: int = 1, donate: bool = True,
                 compiler_options: Optional[dict] = None):
        if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) \
                or micro_batches < 1:
            raise ValueError(f"micro_batches must be a positive int, got {micro_batches!r}")
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.state_shardings, self.batch_sharding = state_shardings, batch_sharding
        self.micro_batches = micro_batches
        self.mesh = batch_sharding.mesh
        replicated = NamedSharding(self.mesh, PartitionSpec())
        donate_argnums = (0,) if donate else ()
        kw = dict(out_shardings=(state_shardings, replicated), donate_argnums=donate_argnums,
                  compiler_options=compiler_options)
        self._jit = jax.jit(self._step, in_shardings=(state_shardings, batch_sharding), **kw)
        self._jit_ref = jax.jit(self._step, in_shardings=(state_shardings, batch_sharding,
                                                          state_shardings.params), **kw)

    # ---------------------------------------------------------------- the traced step
    def _grads(self, params, batch, ref_params):
        def f(p, b):
            loss_sum, weight, aux = self.loss_fn(p, b, ref_params)
            return loss_sum, (weight, aux)
        (loss_sum, (weight, aux)), grads = jax.value_and_grad(f, has_aux=True)(params, batch)
        grads = jax.lax.with_sharding_constraint(grads, self.state_shardings.params)
        f32 = lambda x: jnp.asarray(x, jnp.float32)
        return grads, f32(loss_sum), f32(weight), jax.tree.map(f32, aux)

    def _step(self, state: TrainState, batch: dict, ref_params: Any = None):
        rows = {int(x.shape[0]) for x in jax.tree.leaves(batch)}
        if len(rows) != 1:
            raise ValueError(f"every batch array needs the same number of rows, got {rows}")
        k = self.micro_batches
        (r,) = rows
        if r % k:
            raise ValueError(f"{r} batch rows cannot be split into {k} micro-batches")
        params = state.params
        if k == 1:
            grads, loss_sum, weight, aux = self._grads(params, batch, ref_params)
        else:
            micro = _split_micro(batch, k)
            first = jax.tree.map(lambda x: x[0], micro)
            aux_shape = jax.eval_shape(lambda: self._grads(params, first, ref_params)[3])
            zeros = (jax.tree.map(jnp.zeros_like, params), jnp.float32(0), jnp.float32(0),
                     jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shape))

            def body(carry, mb):
                out = self._grads(params, mb, ref_params)
                return jax.tree.map(jnp.add, carry, out), None

            zeros = (jax.lax.with_sharding_constraint(zeros[0], self.state_shardings.params),
                     ) + zeros[1:]
            (grads, loss_sum, weight, aux), _ = jax.lax.scan(body, zeros, micro)
        grads = jax.tree.map(lambda g: _safe_div(g, weight).astype(g.dtype), grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        metrics = {"loss": _safe_div(loss_sum, weight), "loss_weight": weight,
                   "grad_norm": optax.global_norm(grads),
                   "update_norm": optax.global_norm(updates),
                   "param_norm": optax.global_norm(new_params)}
        for name, (s, w) in aux.items():
            if name in metrics:
                raise ValueError(f"loss aux name {name!r} collides with a step metric")
            metrics[name] = _safe_div(s, w)
        new_state = state.replace(step=state.step + 1, params=new_params, opt_state=opt_state)
        return new_state, metrics

    # ---------------------------------------------------------------- entry points
    def __call__(self, state: TrainState, batch: dict, ref_params: Any = None):
        with jax.set_mesh(self.mesh):
            if ref_params is None:
                return self._jit(state, batch)
            return self._jit_ref(state, batch, ref_params)

    def lower(self, state: Any, batch: Any, ref_params: Any = None):
        """``jax.jit(...).lower`` on (abstract) arguments under the mesh; ``.compile()`` it."""
        with jax.set_mesh(self.mesh):
            if ref_params is None:
                return self._jit.lower(state, batch)
            return self._jit_ref.lower(state, batch, ref_params)


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
                    state_shardings: TrainState, batch_sharding: NamedSharding, *,
                    micro_batches: int = 1, donate: bool = True,
                    compiler_options: Optional[dict] = None) -> TrainStep:
    """The jitted ``step(state, batch[, ref_params]) -> (new_state, metrics)`` (see TrainStep).

    ``state_shardings``: :func:`train.state.state_shardings`; ``batch_sharding``: one
    ``NamedSharding`` for every ``[R, L]`` batch array (:func:`batch_sharding`); ``ref_params``
    (frozen reference policy) are placed like the params. With ``donate`` the input state's
    buffers are reused for the output (do not touch the old state afterwards).
    ``compiler_options``: XLA options for this step's compile (e.g. the tests' CPU
    ``{'xla_backend_optimization_level': 0}``).
    """
    return TrainStep(loss_fn, optimizer, state_shardings, batch_sharding,
                     micro_batches=micro_batches, donate=donate,
                     compiler_options=compiler_options)

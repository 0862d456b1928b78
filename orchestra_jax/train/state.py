"""The train state (params + optax state + step + RNG) as one sharded pytree, and its report.

Built abstractly first: :func:`abstract_state` (``jax.eval_shape``, nothing allocated) →
:func:`state_logical_axes` (logical names per leaf: params from the model, optimizer moments
mirror the params via ``optax.tree_map_params``, scalars unnamed) → :func:`state_shardings`
(the ONE rules table in :mod:`orchestra_jax.sharding`) → :func:`init_state` (``jit(init,
out_shardings=...)``: every leaf is born in its shards) or :func:`state_from_params` (params from
``load_hf_checkpoint(dir, mesh=...)``, already in shards; the optimizer state is created sharded).

:func:`sharding_report` lists every leaf whose dimension fell back to replication — a logical
axis mapped to a mesh axis of size > 1 that was not applied because the dimension does not divide
— plus large leaves that carry no logical names and leaves whose placement differs from the
table. ``strict=True`` raises :class:`ShardingFallbackError`; the default logs it.

Optimizer defaults (:class:`OptimizerConfig`): AdamW, constant lr 1e-6 [P], weight decay 0.01 [C]
on every parameter (torch AdamW semantics, as the release's FSDP AdamW), betas (0.9, 0.999) and
eps 1e-8 [C] (torch defaults), global-norm gradient clip 1.0 [C], no warmup [C].
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from orchestra_jax.models import ModelConfig, abstract_params, init_params, param_logical_axes
from orchestra_jax.sharding import LOGICAL_AXIS_RULES, MeshAxes, logical_to_spec


@flax.struct.dataclass
class TrainState:
    """One pytree: ``step`` int32 scalar, ``params``, ``opt_state`` (optax), ``rng`` (raw uint32[2]
    PRNG key, ``jax.random.PRNGKey`` layout, so checkpoints hold a plain array)."""
    step: Any
    params: Any
    opt_state: Any
    rng: Any


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW + global-norm clipping. Units: learning rate per step; norms in parameter units."""
    learning_rate: float = 1e-6      # [P] constant
    weight_decay: float = 0.01       # [C] AdamW weight decay (applied to every parameter)
    b1: float = 0.9                  # [C] torch AdamW default
    b2: float = 0.999                # [C] torch AdamW default
    eps: float = 1e-8                # [C] torch AdamW default
    grad_clip_norm: Optional[float] = 1.0   # [C] global-norm clip; None disables
    warmup_steps: int = 0            # [C] 0: constant lr; > 0: linear warmup from 0 then constant

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps > 0):
            raise ValueError(f"need 0 <= b1, b2 < 1 and eps > 0, got {self.b1}, {self.b2}, "
                             f"{self.eps}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"grad_clip_norm must be > 0 (or None), got {self.grad_clip_norm}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    @classmethod
    def from_config(cls, c: Any) -> "OptimizerConfig":
        """From any mapping/ConfigDict with (a subset of) ``learning_rate, weight_decay, adam_b1,
        adam_b2, adam_eps, grad_clip_norm, warmup_steps`` (the names of ``rl.config``)."""
        get = (lambda k: c[k] if k in c else None) if hasattr(c, "__contains__") else (
            lambda k: getattr(c, k, None))
        names = {"learning_rate": "learning_rate", "weight_decay": "weight_decay",
                 "adam_b1": "b1", "adam_b2": "b2", "adam_eps": "eps",
                 "grad_clip_norm": "grad_clip_norm", "warmup_steps": "warmup_steps"}
        kw = {}
        for src, dst in names.items():
            v = get(src)
            if v is not None:
                kw[dst] = int(v) if dst == "warmup_steps" else float(v)
        return cls(**kw)


def make_optimizer(cfg: OptimizerConfig = OptimizerConfig()) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm, adamw)`` (clip first, as torch ``clip_grad_norm_`` + AdamW)."""
    lr: Any = cfg.learning_rate
    if cfg.warmup_steps:
        lr = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    adamw = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)


# ------------------------------------------------------------------ abstract state and shardings
def _init_fn(model_cfg: ModelConfig, optimizer, mesh: Optional[Mesh]):
    def init(rng):
        k_params, k_state = jax.random.split(rng)
        params = init_params(model_cfg, k_params, mesh=mesh)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params), rng=k_state)
    return init


def abstract_state(model_cfg: ModelConfig, optimizer) -> TrainState:
    """``ShapeDtypeStruct``s of the whole train state (allocates nothing)."""
    def init(rng):
        params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract_params(model_cfg))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params), rng=rng)
    return jax.eval_shape(init, jax.random.PRNGKey(0))


def _unnamed(leaf) -> PartitionSpec:
    return PartitionSpec(*([None] * len(getattr(leaf, "shape", ()))))


def state_logical_axes(model_cfg: ModelConfig, optimizer,
                       abstract: Optional[TrainState] = None) -> TrainState:
    """Logical axis names (a ``PartitionSpec`` of names) for every leaf of the train state.

    Params: the model's names; optimizer leaves shaped like params (Adam mu/nu): the same names;
    other optimizer leaves (counts) and ``step``/``rng``: all-``None`` (unnamed).
    """
    abstract = abstract_state(model_cfg, optimizer) if abstract is None else abstract
    p_names = param_logical_axes(model_cfg)
    o_names = optax.tree_map_params(optimizer, lambda _, n: n, abstract.opt_state, p_names,
                                    transform_non_params=_unnamed,
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
    return TrainState(step=_unnamed(abstract.step), params=p_names, opt_state=o_names,
                      rng=_unnamed(abstract.rng))


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def _names_map(fn, names_tree, *trees):
    """``jax.tree.map`` over a names tree whose leaves are PartitionSpecs (which are tuples)."""
    return jax.tree.map(fn, names_tree, *trees, is_leaf=_is_spec)


def state_shardings(mesh: Mesh, model_cfg: ModelConfig, optimizer,
                    rules=LOGICAL_AXIS_RULES) -> TrainState:
    """``NamedSharding`` for every leaf of the train state, from the logical rules table."""
    abstract = abstract_state(model_cfg, optimizer)
    names = state_logical_axes(model_cfg, optimizer, abstract)
    mesh_shape = dict(mesh.shape)
    return _names_map(lambda n, a: NamedSharding(mesh, logical_to_spec(
        tuple(n), rules, tuple(a.shape), mesh_shape)), names, abstract)


def init_state(model_cfg: ModelConfig, optimizer, rng: Any, mesh: Mesh) -> TrainState:
    """A fresh, randomly initialised state, every leaf created directly in its shards.

    ``rng``: a raw ``PRNGKey`` (uint32[2]) or an int seed. Values depend on (config, rng) only,
    not on the mesh (``init_params`` with a mesh draws the same numbers on any mesh).
    """
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    shardings = state_shardings(mesh, model_cfg, optimizer)
    with jax.set_mesh(mesh):
        return jax.jit(_init_fn(model_cfg, optimizer, mesh), out_shardings=shardings)(rng)


def state_from_params(params: Any, model_cfg: ModelConfig, optimizer, mesh: Mesh,
                      rng: Any = 0, step: int = 0) -> TrainState:
    """A train state around existing params (e.g. ``load_hf_checkpoint(dir, mesh=mesh)``).

    Params already in their shards stay where they are (``device_put`` to the same sharding is a
    no-op); others are placed per the rules table. The optimizer state is created in its shards.
    Raises ``ValueError`` when the params tree does not match ``model_cfg``.
    """
    expected = abstract_params(model_cfg)
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError("params tree does not match the model config: "
                         f"{jax.tree.structure(params)} vs {jax.tree.structure(expected)}")
    for (path, p), e in zip(jax.tree_util.tree_leaves_with_path(params),
                            jax.tree.leaves(expected)):
        if tuple(p.shape) != tuple(e.shape):
            raise ValueError(f"param {jax.tree_util.keystr(path)} has shape {tuple(p.shape)}, "
                             f"the model config expects {tuple(e.shape)}")
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    sh = state_shardings(mesh, model_cfg, optimizer)
    params = jax.tree.map(lambda p, s, e: jax.device_put(jnp.asarray(p, e.dtype), s),
                          params, sh.params, expected)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(optimizer.init, out_shardings=sh.opt_state)(params)
    return TrainState(step=jax.device_put(jnp.asarray(step, jnp.int32), sh.step), params=params,
                      opt_state=opt_state,
                      rng=jax.device_put(jnp.asarray(rng, jnp.uint32), sh.rng))


# ------------------------------------------------------------------ sharding report
class ShardingFallbackError(ValueError):
    """Raised by :func:`sharding_report` with ``strict=True`` when some leaf falls back."""


@dataclasses.dataclass(frozen=True)
class Fallback:
    """One leaf whose sharding is worse than the rules table asks for.

    ``kind``: ``'not_divisible'`` (``dims`` = ``(dim, logical name, size, dropped mesh axes)``),
    ``'unnamed'`` (a large leaf with no logical names: replicated), or ``'misplaced'`` (the leaf's
    actual sharding differs from the table's).
    """
    path: str
    shape: tuple
    nbytes: int
    kind: str
    dims: tuple = ()
    detail: str = ""

    def __str__(self) -> str:
        size = f"{self.nbytes / 2 ** 20:.2f} MiB"
        if self.kind == "not_divisible":
            why = "; ".join(f"dim {d} ({n}, size {s}) not divisible by mesh axes {ax} -> "
                            f"replicated over {ax}" for d, n, s, ax in self.dims)
        elif self.kind == "unnamed":
            why = "no logical axis names -> fully replicated"
        else:
            why = self.detail
        return f"{self.path} {self.shape} [{size}]: {why}"


@dataclasses.dataclass(frozen=True)
class ShardingReport:
    """Result of :func:`sharding_report`; ``str()`` is the printable report."""
    mesh_shape: dict
    num_leaves: int
    fallbacks: tuple

    @property
    def ok(self) -> bool:
        return not self.fallbacks

    def __str__(self) -> str:
        head = (f"sharding report on mesh {self.mesh_shape}: {self.num_leaves} leaves, "
                f"{len(self.fallbacks)} fall back to replication")
        return "\n".join([head] + [f"  {f}" for f in self.fallbacks])


def _axes_tuple(axes: MeshAxes) -> tuple:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def sharding_report(mesh: Mesh, tree: Any, logical_axes: Any, *, strict: bool = False,
                    large_bytes: int = 1 << 20, rules=LOGICAL_AXIS_RULES,
                    log: bool = True) -> ShardingReport:
    """Which leaves of ``tree`` (a train state, abstract state or param tree) fall back.

    ``logical_axes``: the matching names tree (:func:`state_logical_axes` for a train state,
    ``param_logical_axes(cfg)`` for params). A dimension falls back when its logical name maps to
    mesh axes of size > 1 that the divisibility rule dropped; a leaf of ``large_bytes`` or more
    whose names are all ``None`` is replicated on a multi-device mesh; a leaf carrying a
    ``NamedSharding`` different from the table's is misplaced. ``strict=True`` raises
    :class:`ShardingFallbackError` listing them all; otherwise the report is logged (warning when
    something falls back) and returned.
    """
    mesh_shape = dict(mesh.shape)
    multi = math.prod(mesh_shape.values()) > 1
    out = []
    count = 0

    def visit(path, names, leaf):
        nonlocal count
        count += 1
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(leaf, "dtype", np.float32)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        key = jax.tree_util.keystr(path)
        names = tuple(names)
        if len(names) != len(shape):
            raise ValueError(f"{key}: logical names {names} do not match shape {shape}")
        wanted = logical_to_spec(names, rules)
        applied = logical_to_spec(names, rules, shape, mesh_shape)
        dims = []
        for d, (name, w, a) in enumerate(zip(names, wanted, applied)):
            dropped = tuple(ax for ax in _axes_tuple(w)
                            if mesh_shape.get(ax, 1) > 1 and ax not in _axes_tuple(a))
            if dropped:
                dims.append((d, name, shape[d], dropped))
        if dims:
            out.append(Fallback(key, shape, nbytes, "not_divisible", tuple(dims)))
        elif multi and all(n is None for n in names) and nbytes >= large_bytes:
            out.append(Fallback(key, shape, nbytes, "unnamed"))
        sh = getattr(leaf, "sharding", None)
        if isinstance(sh, NamedSharding) and not sh.is_equivalent_to(
                NamedSharding(mesh, applied), len(shape)):
            out.append(Fallback(key, shape, nbytes, "misplaced",
                                detail=f"placed as {sh.spec}, the rules table gives {applied}"))

    flat_names, treedef = jax.tree_util.tree_flatten(logical_axes, is_leaf=_is_spec)
    leaves = treedef.flatten_up_to(tree)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(logical_axes,
                                                                 is_leaf=_is_spec)[0]]
    for path, names, leaf in zip(paths, flat_names, leaves):
        visit(path, names, leaf)
    report = ShardingReport(mesh_shape, count, tuple(out))
    if strict and out:
        raise ShardingFallbackError(str(report))
    if log:
        (logging.warning if out else logging.info)("%s", report)
    return report

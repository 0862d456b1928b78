"""Device meshes and the one logical-axis → mesh-axis table.

Every array in the model is described by *logical* axis names (``'embed'``, ``'heads'``,
``'activation_batch'`` …). :data:`LOGICAL_AXIS_RULES` maps each logical name to a mesh axis (or a
tuple of mesh axes, or ``None`` = replicated) of the 3-axis mesh ``('data', 'fsdp', 'tensor')``:

* ``data``   — pure data parallelism (parameters replicated),
* ``fsdp``   — data parallelism with parameters/optimizer state sharded (ZeRO-3 style),
* ``tensor`` — Megatron-style tensor parallelism over heads / MLP / vocab.

Changing the parallelism strategy means changing the mesh shape (or this table), never the model.

Sharding is *forgiving*: a dimension whose size is not divisible by the mesh axes it maps to is
replicated on that dimension instead of raising (e.g. 2 KV heads on a tensor axis of 4). Every
leaf of any pytree gets a ``NamedSharding``; leaves without logical names are replicated.

Activation constraints (:func:`constrain`) are active only inside ``with jax.set_mesh(mesh):``;
outside a mesh context they are no-ops, so the same model code runs on one device unchanged.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

MeshAxes = Optional[str | tuple[str, ...]]

# logical axis name -> mesh axis / axes / None. ONE table for parameters and activations.
LOGICAL_AXIS_RULES: tuple[tuple[str, MeshAxes], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_head_dim", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_layers", None),
)


def make_mesh(shape: Sequence[int] = (1, -1, 1),
              devices: Optional[Sequence[Any]] = None) -> Mesh:
    """Builds a ``('data', 'fsdp', 'tensor')`` mesh over ``devices`` (default: all global devices).

    ``shape`` may contain one ``-1`` meaning "all remaining devices". Works multi-host after
    ``jax.distributed.initialize()`` because ``jax.devices()`` is the global device list; the
    device order comes from ``mesh_utils.create_device_mesh`` (topology-aware on TPU/GPU).
    Axis types are ``Auto`` (the compiler propagates shardings between the constraints we set).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != 3:
        raise ValueError(f"mesh shape must have 3 entries (data, fsdp, tensor), got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"at most one -1 allowed in mesh shape, got {shape}")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh shape entries must be positive or -1, got {shape}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill mesh shape {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        if math.prod(shape) > len(devices):
            raise ValueError(f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices, "
                             f"only {len(devices)} available")
        devices = devices[:math.prod(shape)]
    try:
        from jax.experimental import mesh_utils
        dev_array = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # CPU / unusual topologies: plain row-major order.
        dev_array = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(dev_array, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _rules_dict(rules) -> dict[str, MeshAxes]:
    return {name: axes for name, axes in rules}


def logical_to_spec(names: Sequence[Optional[str]],
                    rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES,
                    shape: Optional[Sequence[int]] = None,
                    mesh_shape: Optional[dict[str, int]] = None) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` of mesh axes.

    ``None`` names and names missing from ``rules`` are replicated. A mesh axis is used at most once
    per spec (later dims that would reuse it are replicated). With ``shape`` and ``mesh_shape``
    (``{axis: size}``), a dim not divisible by its mesh axes keeps the largest prefix of those axes
    that divides it (else replicated).
    """
    table = _rules_dict(rules)
    used: set[str] = set()
    out: list[MeshAxes] = []
    for i, name in enumerate(names):
        axes = table.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
        axes_t = tuple(a for a in axes_t if a not in used)
        if shape is not None and mesh_shape is not None:
            axes_t = tuple(a for a in axes_t if mesh_shape.get(a, 1) > 1)
            while axes_t and shape[i] % math.prod(mesh_shape.get(a, 1) for a in axes_t):
                axes_t = axes_t[:-1]
        if not axes_t:
            out.append(None)
            continue
        used.update(axes_t)
        out.append(axes_t[0] if len(axes_t) == 1 else axes_t)
    return PartitionSpec(*out)


def _is_boxed(x) -> bool:
    from flax.core import meta
    return isinstance(x, meta.AxisMetadata)


def _is_names(x) -> bool:
    return isinstance(x, PartitionSpec) or (
        isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x))


def param_shardings(mesh: Mesh, params_or_logical_tree: Any,
                    logical_axes: Any = None,
                    rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES) -> Any:
    """``NamedSharding`` for every leaf of a parameter tree.

    ``params_or_logical_tree`` may hold flax ``LogicallyPartitioned`` boxes (arrays or
    ``ShapeDtypeStruct``s, e.g. ``jax.eval_shape`` of a linen ``init``) — names come from the boxes —
    or plain arrays / ``ShapeDtypeStruct``s with a matching ``logical_axes`` tree of
    ``PartitionSpec``/tuples of logical names. Leaves with no names are replicated; dims that are
    not divisible by their mesh axes are replicated on that dim. Returns an unboxed tree.
    """
    mesh_shape = dict(mesh.shape)

    def one(leaf, names=None):
        if _is_boxed(leaf):
            names = leaf.names
            leaf = leaf.value
        shape = getattr(leaf, "shape", ())
        if names is None or len(names) != len(shape):
            if names is not None and len(shape) and len(names) != len(shape):
                raise ValueError(f"logical names {tuple(names)} do not match shape {shape}")
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, logical_to_spec(tuple(names), rules, shape, mesh_shape))

    if logical_axes is None:
        return jax.tree.map(one, params_or_logical_tree, is_leaf=_is_boxed)
    return jax.tree.map(lambda n, p: one(p, tuple(n)), logical_axes, params_or_logical_tree,
                        is_leaf=_is_names)


def unbox(tree: Any) -> Any:
    """Strips flax ``LogicallyPartitioned`` boxes, leaving plain arrays."""
    return jax.tree.map(lambda x: x.value if _is_boxed(x) else x, tree, is_leaf=_is_boxed)


def shard_params(params: Any, mesh: Mesh, logical_axes: Any = None,
                 rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES) -> Any:
    """Places every leaf of ``params`` on ``mesh`` per :func:`param_shardings` (unboxed result).

    Plain arrays carry no logical names: pass ``logical_axes`` (for the Qwen3 model,
    ``orchestra_jax.models.param_logical_axes(config)``, or use ``models.shard_params``),
    otherwise every leaf is replicated (a warning says so on multi-device meshes).
    """
    if (logical_axes is None and mesh.devices.size > 1
            and not any(_is_boxed(x) for x in jax.tree.leaves(params, is_leaf=_is_boxed))):
        warnings.warn("shard_params: params carry no logical axis names and no logical_axes "
                      "were given; every leaf is replicated", stacklevel=2)
    shardings = param_shardings(mesh, params, logical_axes, rules)
    return jax.tree.map(lambda x, s: jax.device_put(x, s), unbox(params), shardings)


def current_mesh() -> Optional[Any]:
    """The mesh set by ``with jax.set_mesh(mesh):`` (abstract inside jit), or ``None``."""
    m = jax.sharding.get_abstract_mesh()
    if m is None or m.empty:
        return None
    return m


def constrain(x: jax.Array, names: Sequence[Optional[str]],
              rules: Sequence[tuple[str, MeshAxes]] = LOGICAL_AXIS_RULES) -> jax.Array:
    """``with_sharding_constraint`` by logical names; no-op outside a mesh context.

    Non-divisible dims are left replicated, so this never fails on odd shapes.
    """
    mesh = current_mesh()
    if mesh is None:
        return x
    if len(names) != x.ndim:
        raise ValueError(f"constraint names {tuple(names)} do not match rank-{x.ndim} array")
    spec = logical_to_spec(tuple(names), rules, x.shape, dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

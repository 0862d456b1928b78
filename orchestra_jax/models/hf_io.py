"""Hugging Face checkpoint I/O: ``config.json`` + (sharded) safetensors ⇄ our param tree.

No torch: safetensors files are read through a zero-copy ``numpy.memmap`` (so bfloat16 works via
``ml_dtypes`` and only the bytes a device shard needs are touched) and written by a small
spec-conformant writer. With a mesh every parameter is built directly in its shards with
``jax.make_array_from_callback`` — the full model never sits on one device.

Name/layout mapping (HF ``nn.Linear`` weights are ``[out, in]``)::

    model.embed_tokens.weight                 [V, D]        -> embed [V, D]
    model.layers.{i}.self_attn.q_proj.weight  [H*Dh, D]     -> attn/q_proj [D, H, Dh]
    model.layers.{i}.self_attn.k_proj.weight  [K*Dh, D]     -> attn/k_proj [D, K, Dh]   (v same)
    model.layers.{i}.self_attn.o_proj.weight  [D, H*Dh]     -> attn/o_proj [H, Dh, D]
    model.layers.{i}.self_attn.{q,k}_norm.weight [Dh]       -> attn/{q,k}_norm/scale
    model.layers.{i}.input_layernorm.weight   [D]           -> input_norm/scale
    model.layers.{i}.post_attention_layernorm.weight [D]    -> post_attn_norm/scale
    model.layers.{i}.mlp.{gate,up}_proj.weight [F, D]       -> mlp/{gate,up}_proj [D, F]
    model.layers.{i}.mlp.down_proj.weight     [D, F]        -> mlp/down_proj [F, D]
    model.norm.weight                         [D]           -> final_norm/scale
    lm_head.weight                            [V, D]        -> lm_head [D, V] (absent when tied)
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import struct
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from orchestra_jax.models.config import ModelConfig, dtype_name, to_dtype
from orchestra_jax.models.qwen3 import abstract_params, param_shardings_for

_ST_TO_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_NP_TO_ST = {np.dtype(v): k for k, v in _ST_TO_NP.items()}


# the weight files save_hf_checkpoint (and transformers' save_pretrained) writes
_HF_WEIGHT_FILE = re.compile(r"model\.safetensors|model-\d{5}-of-\d{5}\.safetensors")


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or does not match the model config."""


# ----------------------------------------------------------------- safetensors (numpy, lazy)
def read_safetensors_lazy(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: read-only memmap-backed ndarray}`` for one .safetensors file (nothing read yet)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read safetensors header of {path}: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    data_bytes = mm.size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            st_dtype = info["dtype"]
            start, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed header entry for tensor {name}: "
                                  f"{type(e).__name__}: {e}") from None
        if st_dtype not in _ST_TO_NP:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {st_dtype}")
        dt = np.dtype(_ST_TO_NP[st_dtype])
        if end - start != math.prod(shape) * dt.itemsize:
            raise CheckpointError(f"{path}: tensor {name} byte size does not match its shape")
        if not 0 <= start <= end <= data_bytes:
            raise CheckpointError(f"{path}: tensor {name} lies outside the file (bytes "
                                  f"{start}..{end} of {data_bytes}; truncated download?)")
        out[name] = np.ndarray(shape, dt, buffer=mm, offset=8 + n + start)
    return out


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                      metadata: Optional[dict[str, str]] = None) -> None:
    """Writes ``tensors`` (C-contiguous numpy, bfloat16 allowed) as one .safetensors file."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    off = 0
    arrays = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype not in _NP_TO_ST:
            raise CheckpointError(f"cannot write tensor {name} of dtype {arr.dtype}")
        header[name] = {"dtype": _NP_TO_ST[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
        arrays.append(arr)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for arr in arrays:
            f.write(arr.tobytes())
    os.replace(tmp, path)


# ----------------------------------------------------------------- layout conversion
# (our sub-path inside a layer) -> (HF suffix, kind)
_LAYER = {
    ("attn", "q_proj"): ("self_attn.q_proj.weight", "qkv"),
    ("attn", "k_proj"): ("self_attn.k_proj.weight", "qkv"),
    ("attn", "v_proj"): ("self_attn.v_proj.weight", "qkv"),
    ("attn", "o_proj"): ("self_attn.o_proj.weight", "o"),
    ("attn", "q_norm", "scale"): ("self_attn.q_norm.weight", "id"),
    ("attn", "k_norm", "scale"): ("self_attn.k_norm.weight", "id"),
    ("input_norm", "scale"): ("input_layernorm.weight", "id"),
    ("post_attn_norm", "scale"): ("post_attention_layernorm.weight", "id"),
    ("mlp", "gate_proj"): ("mlp.gate_proj.weight", "t"),
    ("mlp", "up_proj"): ("mlp.up_proj.weight", "t"),
    ("mlp", "down_proj"): ("mlp.down_proj.weight", "t"),
}
_TOP = {
    ("embed",): ("model.embed_tokens.weight", "id"),
    ("final_norm", "scale"): ("model.norm.weight", "id"),
    ("lm_head",): ("lm_head.weight", "t"),
}


def _to_ours(raw: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Lazy view of a HF tensor in our layout (no copy)."""
    if kind == "id":
        return raw
    if kind == "t":
        return raw.T
    if kind == "qkv":                      # [n*Dh, D] -> [D, n, Dh]
        d, n, dh = shape
        return raw.reshape(n, dh, d).transpose(2, 0, 1)
    if kind == "o":                        # [D, H*Dh] -> [H, Dh, D]
        h, dh, d = shape
        return raw.reshape(d, h, dh).transpose(1, 2, 0)
    raise AssertionError(kind)


def _to_hf(ours: np.ndarray, kind: str) -> np.ndarray:
    if kind == "id":
        return ours
    if kind == "t":
        return ours.T
    if kind == "qkv":                      # [D, n, Dh] -> [n*Dh, D]
        d, n, dh = ours.shape
        return ours.transpose(1, 2, 0).reshape(n * dh, d)
    if kind == "o":                        # [H, Dh, D] -> [D, H*Dh]
        h, dh, d = ours.shape
        return ours.transpose(2, 0, 1).reshape(d, h * dh)
    raise AssertionError(kind)


def hf_name_map(config: ModelConfig) -> dict[tuple, list[tuple[str, str]]]:
    """Our flat param path → list of (HF tensor name, layout kind) (one per layer when scanned)."""
    out: dict[tuple, list[tuple[str, str]]] = {}
    flat = traverse_util.flatten_dict(abstract_params(config))
    for path in flat:
        if path in _TOP:
            out[path] = [_TOP[path]]
        elif path[0] == "layers":
            suffix, kind = _LAYER[path[1:]]
            out[path] = [(f"model.layers.{i}.{suffix}", kind) for i in range(config.num_layers)]
        elif path[0].startswith("layers_"):
            i = int(path[0][len("layers_"):])
            suffix, kind = _LAYER[path[1:]]
            out[path] = [(f"model.layers.{i}.{suffix}", kind)]
        else:
            raise AssertionError(f"no HF mapping for param {path}")
    return out


# ----------------------------------------------------------------- loading
def _open_checkpoint(path: pathlib.Path) -> dict[str, np.ndarray]:
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    tensors: dict[str, np.ndarray] = {}
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"malformed {index}: {e}") from None
        for fname in sorted(set(weight_map.values())):
            if not (path / fname).exists():
                raise CheckpointError(f"{index} refers to missing shard {fname}")
            tensors.update(read_safetensors_lazy(path / fname))
    elif single.exists():
        tensors = read_safetensors_lazy(single)
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no safetensors weights in {path}")
        for fn in files:
            tensors.update(read_safetensors_lazy(fn))
    return tensors


def load_hf_config(path: str | os.PathLike, **overrides) -> ModelConfig:
    """``ModelConfig`` from ``<path>/config.json`` (overrides as in ``from_hf_config``)."""
    cfg_path = pathlib.Path(path) / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"no config.json in {path}")
    try:
        hf = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{cfg_path} must hold a JSON object, got {type(hf).__name__}")
    return ModelConfig.from_hf_config(hf, **overrides)


def load_hf_checkpoint(path: str | os.PathLike, mesh=None, dtype: Any = jnp.float32,
                       compute_dtype: Any = jnp.bfloat16, **config_overrides
                       ) -> tuple[ModelConfig, Any]:
    """Loads a HF Qwen3/Llama checkpoint directory → ``(config, params)``.

    ``dtype`` is the parameter (master) dtype, ``compute_dtype`` the config's activation dtype;
    other keyword arguments override config fields (e.g. ``scan_layers=True``). With ``mesh``
    each leaf is a global ``jax.Array`` sharded per the logical rules table, assembled shard by
    shard from the memory-mapped files.
    """
    path = pathlib.Path(path)
    config = load_hf_config(path, param_dtype=dtype, dtype=compute_dtype, **config_overrides)
    tensors = _open_checkpoint(path)
    abstract = traverse_util.flatten_dict(abstract_params(config))
    names = hf_name_map(config)
    shardings = (traverse_util.flatten_dict(param_shardings_for(config, mesh))
                 if mesh is not None else None)
    np_dtype = np.dtype(to_dtype(dtype))

    flat_out = {}
    for p, spec in abstract.items():
        per_layer_shape = spec.shape[1:] if p[0] == "layers" else spec.shape
        views = []
        for hf_name, kind in names[p]:
            if hf_name not in tensors:
                raise CheckpointError(f"checkpoint {path} lacks tensor {hf_name!r}")
            raw = tensors[hf_name]
            view = _to_ours(raw, kind, per_layer_shape) if raw.size == math.prod(
                per_layer_shape) else None
            if view is None or view.shape != tuple(per_layer_shape):
                raise CheckpointError(
                    f"tensor {hf_name!r} has shape {raw.shape}, config expects a tensor "
                    f"reshapable to {per_layer_shape} ({kind})")
            views.append(view)
        stacked = p[0] == "layers"

        def read(index, views=views, stacked=stacked) -> np.ndarray:
            if stacked:
                layer_idx, rest = index[0], tuple(index[1:])
                sel = range(len(views))[layer_idx]
                return np.stack([np.asarray(views[i][rest], dtype=np_dtype) for i in sel])
            return np.ascontiguousarray(np.asarray(views[0][tuple(index)], dtype=np_dtype))

        full = tuple(slice(None) for _ in spec.shape)
        if shardings is None:
            flat_out[p] = jnp.asarray(read(full))
        else:
            flat_out[p] = jax.make_array_from_callback(spec.shape, shardings[p], read)
    extra = set(tensors) - {n for v in names.values() for n, _ in v}
    extra.discard("lm_head.weight")  # tied checkpoints sometimes still store it
    if extra:
        raise CheckpointError(f"checkpoint {path} has tensors this config does not use: "
                              f"{sorted(extra)[:5]}{' …' if len(extra) > 5 else ''}")
    return config, traverse_util.unflatten_dict(flat_out)


# ----------------------------------------------------------------- saving
def _host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def save_hf_checkpoint(config: ModelConfig, params: Any, path: str | os.PathLike,
                       max_shard_bytes: int = 5 * 2**30, dtype: Any = None) -> list[str]:
    """Writes a transformers-loadable checkpoint; returns the weight file names written.

    ``config.json`` (transformers 5 *and* 4.57 keys), ``generation_config.json``, and either
    ``model.safetensors`` or ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``
    when the weights exceed ``max_shard_bytes``. ``dtype`` (default ``config.param_dtype``) is the
    stored dtype. Tensors are gathered to host one at a time. In multi-process runs only process 0
    writes (all processes must call it). Weight files and index of an earlier save into the same
    directory are removed.
    """
    path = pathlib.Path(path)
    out_dtype = np.dtype(to_dtype(dtype if dtype is not None else config.param_dtype))
    flat = traverse_util.flatten_dict(params)
    names = hf_name_map(config)
    if set(flat) != set(names):
        missing, extra = set(names) - set(flat), set(flat) - set(names)
        raise CheckpointError(f"params do not match config: missing {sorted(missing)[:4]}, "
                              f"unexpected {sorted(extra)[:4]}")
    is_writer = jax.process_index() == 0
    if is_writer:
        path.mkdir(parents=True, exist_ok=True)
    # Plan shards by size (deterministic HF order), then write each shard.
    entries: list[tuple[str, tuple, Optional[int], str]] = []
    for p, hf in names.items():
        for i, (hf_name, kind) in enumerate(hf):
            entries.append((hf_name, p, i if p[0] == "layers" else None, kind))
    def order(e):
        parts = e[0].split(".")
        if e[0].startswith("model.layers."):
            return (1, int(parts[2]), e[0])
        return (0 if "embed" in e[0] else 2, 0, e[0])
    entries.sort(key=order)
    shards: list[list] = [[]]
    size = 0
    for e in entries:
        shape = flat[e[1]].shape[1:] if e[2] is not None else flat[e[1]].shape
        nbytes = math.prod(shape) * out_dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nbytes
    n = len(shards)
    fnames = (["model.safetensors"] if n == 1 else
              [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)])
    weight_map = {}
    total = 0
    for fname, shard in zip(fnames, shards):
        tensors = {}
        for hf_name, p, layer, kind in shard:
            arr = _host(flat[p] if layer is None else flat[p][layer])
            tensors[hf_name] = np.ascontiguousarray(_to_hf(arr, kind)).astype(out_dtype)
            weight_map[hf_name] = fname
            total += tensors[hf_name].nbytes
        if is_writer:
            write_safetensors(path / fname, tensors)
    if is_writer:
        # weight files of an earlier save into the same directory would shadow or mix with
        # these (a stale index wins over model.safetensors when loading): remove them
        for stale in path.iterdir():
            if stale.name not in fnames and _HF_WEIGHT_FILE.fullmatch(stale.name):
                stale.unlink()
        index_path = path / "model.safetensors.index.json"
        if n > 1:
            index_path.write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        elif index_path.exists():
            index_path.unlink()
        hf_cfg = config.to_hf_config(torch_dtype=dtype_name(out_dtype))
        (path / "config.json").write_text(json.dumps(hf_cfg, indent=2))
        gen = {k: v for k, v in (("bos_token_id", config.bos_token_id),
                                 ("eos_token_id", config.eos_token_id)) if v is not None}
        (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return fnames

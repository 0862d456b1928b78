"""Train-state checkpoints (Orbax) and the HF export of the policy.

:class:`Checkpointer` wraps ``orbax.checkpoint.CheckpointManager``. Each step directory holds

* ``state/`` — the train-state pytree (sharded arrays; every process writes its own shards,
  OCDBT format), restorable onto *any* mesh: :meth:`Checkpointer.restore` takes a target whose
  leaves carry the wanted shardings (abstract ``jax.ShapeDtypeStruct(..., sharding=...)`` or
  concrete arrays);
* ``meta/`` — a JSON object: the caller's metadata (data-iterator position, RNG seed, policy
  version, config snapshot, …) plus ``"_orchestra": {"format", "step", "process_count"}``.

Saves are asynchronous (the call returns once arrays are copied to host; :meth:`wait_until_finished`
blocks), atomic (Orbax writes into a temporary directory and renames it on commit, so a crash
mid-save leaves the previous checkpoints as they were and the half-written one invisible), and
only the newest ``max_to_keep`` steps are kept.

A corrupt or incompatible checkpoint (missing/unreadable metadata, truncated array files, a tree,
shape or dtype that does not match the target) raises one :class:`CheckpointError` naming the
path and what is wrong; restoring never writes into the checkpoint directory.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
from typing import Any, Mapping, Optional

import jax
import numpy as np

from orchestra_jax.models import CheckpointError as _ModelCheckpointError
from orchestra_jax.models import save_hf_checkpoint


FORMAT = 1
_RESERVED = "_orchestra"


class CheckpointError(_ModelCheckpointError):
    """A train checkpoint cannot be used (the message names the path and the problem)."""


def _ocp():
    import orbax.checkpoint as ocp  # heavy import, only when checkpoints are used
    return ocp


def json_safe(x: Any) -> Any:
    """Converts metadata to JSON values: numpy/jax scalars and arrays, ConfigDicts, tuples.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``; other unsupported
    values raise ``TypeError`` naming the key path.
    """
    def conv(v, path):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else ("nan" if f != f else ("inf" if f > 0 else "-inf"))
        if isinstance(v, np.bool_):
            return bool(v)
        if hasattr(v, "to_dict") and callable(v.to_dict):          # ml_collections.ConfigDict
            return conv(v.to_dict(), path)
        if isinstance(v, Mapping):
            return {str(k): conv(w, f"{path}.{k}") for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(w, f"{path}[{i}]") for i, w in enumerate(v)]
        if isinstance(v, (np.ndarray, jax.Array)):
            if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
                v = jax.random.key_data(v)
            return conv(np.asarray(v).tolist(), path)
        raise TypeError(f"checkpoint metadata{path or ''}: {type(v).__name__} is not "
                        "JSON-serialisable")
    return conv(x, "")


def _short(e: BaseException, limit: int = 300) -> str:
    """One line of an exception (tensorstore appends a long JSON spec: cut)."""
    msg = str(e).split(" [tensorstore_spec")[0]
    msg = msg.splitlines()[0] if msg else ""
    return f"{type(e).__name__}: {msg[:limit]}{'…' if len(msg) > limit else ''}"


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _flat_by_name(tree, is_leaf=None) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {".".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def abstract_state(state_or_shapes: Any, shardings: Any = None) -> Any:
    """A restore target: ``ShapeDtypeStruct`` leaves carrying shardings.

    From a concrete state (its arrays' shardings are used) or from shapes (e.g.
    ``jax.eval_shape(init)``) plus a matching tree of ``shardings``.
    """
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=getattr(x, "sharding", None)),
                            state_or_shapes)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state_or_shapes, shardings)


class Checkpointer:
    """Orbax-backed checkpoints of one run directory (see module docstring).

    ``directory`` is where step directories go (typically ``WORKDIR/checkpoints``).
    ``max_to_keep``: newest N steps kept (None = all). ``async_save``: background writes.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: Optional[int] = 3,
                 async_save: bool = True):
        ocp = _ocp()
        self.directory = pathlib.Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                               enable_async_checkpointing=async_save,
                                               create=True)
        try:
            self._mgr = ocp.CheckpointManager(
                self.directory, options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "meta": ocp.JsonCheckpointHandler()})
        except Exception as e:   # unreadable directory, foreign files …
            raise CheckpointError(f"cannot open checkpoint directory {self.directory}: "
                                  f"{type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ queries
    def latest_step(self) -> Optional[int]:
        """Newest committed step, or None."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def step_dir(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, metadata: Optional[Mapping[str, Any]] = None,
             *, force: bool = True) -> bool:
        """Starts saving ``state`` (+ JSON ``metadata``) as ``step``; returns whether it saves.

        All processes must call it (Orbax writes collectively). A step that already exists raises
        ``CheckpointError`` (nothing is overwritten).
        """
        ocp = _ocp()
        step = int(step)
        if step in self._mgr.all_steps():
            raise CheckpointError(f"checkpoint {self.step_dir(step)} already exists; "
                                  "refusing to overwrite it")
        meta = json_safe(dict(metadata or {}))
        if _RESERVED in meta:
            raise ValueError(f"metadata key {_RESERVED!r} is reserved")
        meta[_RESERVED] = {"format": FORMAT, "step": step, "process_count": jax.process_count()}
        return self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)),
                              force=force)

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are committed (raises their errors)."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ restore
    def _resolve(self, step: Optional[int]) -> int:
        steps = self._mgr.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no checkpoint in {self.directory}")
            return max(steps)
        if int(step) not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory} "
                                  f"(have {sorted(steps)})")
        return int(step)

    def restore_metadata(self, step: Optional[int] = None) -> dict:
        """The JSON metadata of ``step`` (default: latest), validated."""
        step = self._resolve(step)
        path = self.step_dir(step) / "meta" / "metadata"
        if not path.is_file():
            raise CheckpointError(f"checkpoint {self.step_dir(step)} is missing its metadata "
                                  f"file {path.relative_to(self.directory)}")
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint metadata {path} is unreadable: {e}") from e
        info = meta.get(_RESERVED) if isinstance(meta, dict) else None
        if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("step") != step:
            raise CheckpointError(f"checkpoint metadata {path} is not an orchestra_jax train "
                                  f"checkpoint of step {step} (got {str(meta)[:200]})")
        return meta

    def _check_tree(self, step: int, target: Any) -> None:
        try:
            stored = self._mgr.item_metadata(step)["state"]
            stored = getattr(stored, "tree", stored)
        except Exception as e:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} could not be read (corrupt "
                                  f"or truncated?): {_short(e)}") from e
        if stored is None:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} has no state")
        want = _flat_by_name(target)
        have = _flat_by_name(stored, is_leaf=lambda x: hasattr(x, "shape") and
                             hasattr(x, "dtype"))
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} does not match the target "
                                  f"state: missing {missing[:5]}, unexpected {extra[:5]}")
        bad = []
        for name, t in want.items():
            h = have[name]
            if jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key):
                continue
            if tuple(h.shape) != tuple(t.shape) or np.dtype(h.dtype) != np.dtype(t.dtype):
                bad.append(f"{name}: checkpoint {np.dtype(h.dtype).name}{list(h.shape)} vs "
                           f"target {np.dtype(t.dtype).name}{list(t.shape)}")
        if bad:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} is incompatible with the "
                                  f"target state ({len(bad)} leaves): {'; '.join(bad[:4])}")

    def restore(self, target: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """``(state, metadata)`` of ``step`` (default latest) placed with ``target``'s shardings.

        ``target``: the state's tree with ``ShapeDtypeStruct`` leaves carrying shardings (see
        :func:`abstract_state`) or concrete arrays; the restored state has the same structure.
        """
        ocp = _ocp()
        step = self._resolve(step)
        meta = self.restore_metadata(step)
        target = abstract_state(target)
        unsharded = [n for n, x in _flat_by_name(target).items() if x.sharding is None]
        if unsharded:
            raise ValueError(f"restore target leaves need shardings; none on {unsharded[:5]}")
        self._check_tree(step, target)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
        except Exception as e:
            raise CheckpointError(f"checkpoint {self.step_dir(step)} could not be read (corrupt "
                                  f"or truncated?): {_short(e)}") from e
        return out["state"], meta


def export_hf(model_cfg: Any, params: Any, directory: str | os.PathLike, **kw) -> pathlib.Path:
    """Writes the policy ``params`` as a transformers checkpoint (for serving / evaluation).

    Every process must call it (sharded arrays are gathered collectively); only process 0 writes.
    The export is written next to ``directory`` and renamed into place, so a crash never leaves a
    half-written export where a server would load it. ``kw`` go to ``save_hf_checkpoint``.
    """
    final = pathlib.Path(directory).absolute()
    tmp = final.with_name(final.name + ".tmp-export")
    main = jax.process_index() == 0
    if main and tmp.exists():
        shutil.rmtree(tmp)
    save_hf_checkpoint(model_cfg, params, tmp, **kw)
    if main:
        old = final.with_name(final.name + ".old-export")
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"export_hf:{final}")
    return final

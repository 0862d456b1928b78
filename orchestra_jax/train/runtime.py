"""What every training loop (SFT, GRPO) sets up the same way, in the order a reader expects:

mesh → policy (HF checkpoint or a preset, straight into shards) → optimizer + train state →
sharding report → checkpoints (resume from ``WORKDIR/checkpoints`` by itself) → metrics.

:func:`setup` returns a :class:`Runtime`; the loops (``train/sft_loop.py``,
``train/grpo_loop.py``) then only add their data, their loss and their cadence. One code path
for one or many processes: call ``train.distributed.initialize()`` first (the experiment scripts
do), the mesh spans every process's devices, only process 0 writes metrics and HF exports, and
Orbax saves collectively.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
from absl import logging

from orchestra_jax.models import (ModelConfig, init_params, load_hf_checkpoint, presets)
from orchestra_jax.models.config import dtype_name, to_dtype
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train import checkpoint as ckpt_lib
from orchestra_jax.train import state as state_lib
from orchestra_jax.train.metrics import MetricsWriter


@dataclasses.dataclass(frozen=True)
class PolicySource:
    """Where the policy's weights come from.

    checkpoint: a HF checkpoint directory ("" = a fresh random model of ``preset``).
    preset: a key of ``orchestra_jax.models.presets``; ``overrides``: ModelConfig fields
      (e.g. ``{"num_layers": 2}``) applied to the preset or the checkpoint's config
      (compute-only fields such as ``dtype``, ``remat_policy``, ``attention_impl``).
    """

    checkpoint: str = ""
    preset: str = "tiny-hd128"
    overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not self.checkpoint and self.preset not in presets:
            raise ValueError(f"unknown model preset {self.preset!r}; presets: {sorted(presets)}")
        if self.checkpoint and not pathlib.Path(self.checkpoint).is_dir():
            raise FileNotFoundError(f"policy checkpoint directory not found: {self.checkpoint}")


def _apply_overrides(cfg: ModelConfig, overrides) -> ModelConfig:
    kw = dict(overrides)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(kw) - fields)
    if bad:
        raise ValueError(f"unknown model config fields {bad}; fields: {sorted(fields)}")
    for k in ("dtype", "param_dtype"):
        if k in kw:
            kw[k] = to_dtype(kw[k])
    return cfg.replace(**kw) if kw else cfg


def load_policy(source: PolicySource, mesh, seed: int) -> tuple[ModelConfig, Any]:
    """(model config, params placed per the rules table on ``mesh``)."""
    if source.checkpoint:
        cfg, params = load_hf_checkpoint(source.checkpoint, mesh=mesh)
        over = dict(source.overrides)
        shape_fields = {"vocab_size", "hidden_size", "intermediate_size", "num_layers",
                        "num_heads", "num_kv_heads", "head_dim", "tie_word_embeddings"}
        clash = sorted(shape_fields & set(over))
        if clash:
            raise ValueError(f"cannot override {clash} of a loaded checkpoint "
                             f"({source.checkpoint})")
        return _apply_overrides(cfg, source.overrides), params
    cfg = _apply_overrides(presets[source.preset], source.overrides)
    return cfg, init_params(cfg, jax.random.key(seed), mesh=mesh)


@dataclasses.dataclass
class Runtime:
    """The shared pieces of a training run (see module docstring)."""

    workdir: pathlib.Path
    mesh: Any
    model_cfg: ModelConfig
    optimizer: Any
    state: state_lib.TrainState
    state_shardings: state_lib.TrainState
    checkpointer: ckpt_lib.Checkpointer
    metrics: MetricsWriter
    start_step: int                 # first step to run (0, or the restored checkpoint's step)
    resume_meta: dict               # the restored checkpoint's metadata ({} when fresh)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    def save(self, step: int, metadata: dict) -> None:
        """Checkpoint the state after ``step`` steps, with the loop's ``metadata``."""
        self.checkpointer.save(step, self.state, metadata)

    def close(self) -> None:
        self.checkpointer.wait_until_finished()
        self.checkpointer.close()
        self.metrics.close()


def check_rows(mesh, rows: int, micro_batches: int = 1) -> None:
    """Batch rows are split over the mesh's ('data', 'fsdp') devices (per micro-batch)."""
    dp = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
    if rows % (dp * micro_batches):
        raise ValueError(f"rows ({rows}) must be a multiple of data x fsdp devices ({dp}) x "
                         f"micro_batches ({micro_batches}) = {dp * micro_batches} on mesh "
                         f"{dict(mesh.shape)}")


def parse_mesh(mesh: Any) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` from a tuple/list or a string such as ``'(1,8,1)'``."""
    if isinstance(mesh, str):
        try:
            mesh = tuple(int(x) for x in mesh.strip().strip("()[]").split(",") if x.strip())
        except ValueError:
            raise ValueError(f"mesh must look like '(data,fsdp,tensor)', got {mesh!r}") from None
    mesh = tuple(int(x) for x in mesh)
    if len(mesh) != 3:
        raise ValueError(f"mesh needs 3 entries (data, fsdp, tensor), got {mesh}")
    return mesh


def setup(workdir: str | pathlib.Path, *, policy: PolicySource, optimizer_cfg:
          state_lib.OptimizerConfig, mesh_shape: Any = (1, -1, 1), seed: int = 0,
          max_to_keep: int = 3, strict_sharding: bool = False,
          config_snapshot: Optional[dict] = None, progress_total: Optional[int] = None) -> Runtime:
    """Builds (or resumes) a run in ``workdir`` (see module docstring).

    Resuming: when ``WORKDIR/checkpoints`` holds a checkpoint, the state is restored onto this
    mesh (any mesh), ``start_step`` is its step, and ``metrics.jsonl`` rows after it are dropped
    so a restarted run never records a step twice.
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(parse_mesh(mesh_shape))
    optimizer = state_lib.make_optimizer(optimizer_cfg)
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=max_to_keep)
    latest = checkpointer.latest_step()
    if latest is None:
        model_cfg, params = load_policy(policy, mesh, seed)
    else:
        # the architecture comes from the run's own snapshot (policy source may be gone)
        model_cfg = _model_cfg_of(policy, checkpointer, latest)
        params = None
    shardings = state_lib.state_shardings(mesh, model_cfg, optimizer)
    report = state_lib.sharding_report(mesh, state_lib.abstract_state(model_cfg, optimizer),
                                       state_lib.state_logical_axes(model_cfg, optimizer),
                                       strict=strict_sharding)
    if jax.process_index() == 0:
        logging.info("sharding report: %s", report)
    if latest is None:
        state = state_lib.state_from_params(params, model_cfg, optimizer, mesh, rng=seed)
        start, meta = 0, {}
    else:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              state_lib.abstract_state(model_cfg, optimizer), shardings)
        state, meta = checkpointer.restore(target, latest)
        start = int(latest)
        logging.info("resumed %s from step %d", workdir, start)
    if latest is None and jax.process_index() == 0:
        # no checkpoint: a run killed before its first save starts over, including step 0's
        # pre-training rows (evaluation before training)
        from orchestra_jax.train.metrics import METRICS_FILE, truncate_metrics
        if (workdir / METRICS_FILE).exists():
            truncate_metrics(workdir / METRICS_FILE, -1)
    metrics = MetricsWriter(workdir, enabled=jax.process_index() == 0, resume_step=start,
                            total_steps=progress_total)
    if jax.process_index() == 0:
        (workdir / "model_config.json").write_text(json.dumps(model_cfg_to_json(model_cfg),
                                                              indent=1))
        if config_snapshot is not None and latest is None:
            (workdir / "config.json").write_text(json.dumps(ckpt_lib.json_safe(config_snapshot),
                                                            indent=1))
    return Runtime(workdir=workdir, mesh=mesh, model_cfg=model_cfg, optimizer=optimizer,
                   state=state, state_shardings=shardings, checkpointer=checkpointer,
                   metrics=metrics, start_step=start, resume_meta=meta)


def model_cfg_to_json(cfg: ModelConfig) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = dtype_name(v) if f.name in ("dtype", "param_dtype") else v
    return out


def _model_cfg_of(policy: PolicySource, checkpointer, step: int) -> ModelConfig:
    meta = checkpointer.restore_metadata(step)
    snap = meta.get("model_config")
    if not isinstance(snap, dict):
        raise ckpt_lib.CheckpointError(f"checkpoint {checkpointer.step_dir(step)} has no "
                                       "model_config in its metadata")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    kw = {k: v for k, v in snap.items() if k in fields}
    for k in ("dtype", "param_dtype"):
        if k in kw:
            kw[k] = to_dtype(kw[k])
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(v)
    return ModelConfig(**kw)

"""Supervised fine-tuning: the same state, step, checkpoints and metrics as GRPO, with the masked
cross-entropy loss (``train/losses.sft_loss``) over trajectory or chat JSONL
(``train/sft_data.py``).

Read top to bottom: runtime (mesh → policy → state → resume) → data → step → loop. A run
resumes from its ``workdir`` by itself: the checkpoint holds the state, the data stream's
position and the model config, so the steps after a restart are exactly the steps an
uninterrupted run would have taken.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import jax
import numpy as np
from absl import logging

from orchestra_jax.chat.tokenizer import load_tokenizer
from orchestra_jax.train import runtime as runtime_lib
from orchestra_jax.train.batch import local_rows, shard_batch
from orchestra_jax.train.checkpoint import export_hf
from orchestra_jax.train.losses import sft_loss
from orchestra_jax.train.metrics import PhaseTimer
from orchestra_jax.train.sft_data import (SFTDataError, SampleStream, describe, eval_batches,
                                          load_samples, split_heldout)
from orchestra_jax.train.state import OptimizerConfig
from orchestra_jax.train.step import batch_sharding, make_train_step


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """SFT settings (units in names; defaults [ours], SFT is not part of the paper's method).

    data: JSONL of trajectory or chat records; eval_data: held-out JSONL ("" = hold out
    ``eval_fraction`` of ``data``). rows × seq_len: one step's packed batch (global rows).
    """

    data: str
    eval_data: str = ""
    eval_fraction: float = 0.1
    seq_len: int = 512
    rows: int = 8
    micro_batches: int = 1
    total_steps: int = 100
    eval_every: int = 25
    checkpoint_every: int = 25
    max_to_keep: int = 3
    seed: int = 0
    mesh: Any = (1, -1, 1)
    policy: runtime_lib.PolicySource = runtime_lib.PolicySource()
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-4)
    chunk_size: int = 512
    export_hf: bool = True           # write WORKDIR/hf (a transformers checkpoint) at the end
    select_loss_tokens: bool = True  # project only trained positions to the vocabulary [ours]
    strict_sharding: bool = False

    def __post_init__(self):
        for name in ("seq_len", "rows", "micro_batches", "total_steps", "eval_every",
                     "checkpoint_every", "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.rows % self.micro_batches:
            raise ValueError(f"rows ({self.rows}) must be a multiple of micro_batches "
                             f"({self.micro_batches})")
        if not self.data:
            raise ValueError("data: an SFT JSONL file is required (--config.data=FILE)")


def loss_token_bucket(n: int, minimum: int = 256) -> int:
    """Static size for the trained-position gather: the next power of two >= n (few compiles)."""
    k = minimum
    while k < n:
        k *= 2
    return k


def _eval_fn(model_cfg, chunk, max_tokens=None):
    loss = sft_loss(model_cfg, chunk, max_tokens)

    @jax.jit
    def fn(params, batch):
        s, w, _ = loss(params, batch)
        return s, w
    return fn


def run_sft(cfg: SFTConfig, workdir: str, *, config_snapshot: Optional[dict] = None) -> dict:
    """Trains until ``cfg.total_steps`` (resuming from ``workdir``); returns the last metrics."""
    # ---- runtime: mesh, policy, state, checkpoints, metrics -------------------------------
    rt = runtime_lib.setup(workdir, policy=cfg.policy, optimizer_cfg=cfg.optimizer,
                           mesh_shape=cfg.mesh, seed=cfg.seed, max_to_keep=cfg.max_to_keep,
                           strict_sharding=cfg.strict_sharding,
                           config_snapshot=config_snapshot, progress_total=cfg.total_steps)
    try:
        return _loop(cfg, rt)
    finally:
        rt.close()


def _loop(cfg: SFTConfig, rt: runtime_lib.Runtime) -> dict:
    runtime_lib.check_rows(rt.mesh, cfg.rows, cfg.micro_batches)
    # ---- data ------------------------------------------------------------------------------
    tok = load_tokenizer(cfg.policy.checkpoint or None)
    samples = load_samples(cfg.data, tok)
    if cfg.eval_data:
        train, held = samples, load_samples(cfg.eval_data, tok)
    else:
        train, held = split_heldout(samples, cfg.eval_fraction, cfg.seed)
    if max(len(s) for s in held) > cfg.seq_len:
        raise SFTDataError(f"a held-out sample is longer than seq_len={cfg.seq_len}")
    stream = SampleStream(train, cfg.rows, cfg.seq_len, seed=cfg.seed)
    if rt.resume_meta:
        stream.set_state(rt.resume_meta["data"])
    held_batches = eval_batches(held, cfg.rows, cfg.seq_len)
    logging.info("SFT data: train %s, held-out %s", describe(train), describe(held))

    # ---- step --------------------------------------------------------------------------------
    mesh = rt.mesh
    b_sh = batch_sharding(mesh)
    steps: dict = {}
    evals: dict = {}

    def bucket(batch):
        return (loss_token_bucket(int(np.count_nonzero(batch["loss_mask"])))
                if cfg.select_loss_tokens else None)

    def step_for(batch):
        k = bucket(batch)
        if k not in steps:
            steps[k] = make_train_step(sft_loss(rt.model_cfg, cfg.chunk_size, k), rt.optimizer,
                                       rt.state_shardings, b_sh, micro_batches=cfg.micro_batches)
        return steps[k]

    def eval_for(batch):
        k = bucket(batch)
        if k not in evals:
            evals[k] = _eval_fn(rt.model_cfg, cfg.chunk_size, k)
        return evals[k]

    def place(batch):
        return shard_batch(local_rows(batch, mesh), mesh, global_rows=cfg.rows)

    def heldout_loss() -> float:
        s = w = 0.0
        with jax.set_mesh(mesh):
            for b in held_batches:
                bs, bw = eval_for(b)(rt.state.params, place(b))
                s, w = s + float(bs), w + float(bw)
        return s / max(w, 1.0)

    # ---- loop ----------------------------------------------------------------------------------
    last: dict = {}
    if rt.start_step == 0:
        rt.metrics.write(0, {"heldout_loss": heldout_loss()})
    for step in range(rt.start_step, cfg.total_steps):
        timer = PhaseTimer()
        t0 = time.perf_counter()
        with timer.phase("data"):
            batch, stats = stream.next_batch()
            placed = place(batch)
        with timer.phase("update"):
            rt.state, m = step_for(batch)(rt.state, placed)
            m = {k: float(v) for k, v in jax.device_get(m).items()}
        dt = time.perf_counter() - t0
        n = step + 1
        row = dict(m, step_s=dt, tokens_per_s=stats["real_tokens"] / dt,
                   padding_efficiency=stats["padding_efficiency"],
                   samples=int(stats["num_samples"]), **timer.metrics())
        if n % cfg.eval_every == 0 or n == cfg.total_steps:
            with timer.phase("eval"):
                row["heldout_loss"] = heldout_loss()
        if n % cfg.checkpoint_every == 0 or n == cfg.total_steps:
            with timer.phase("checkpoint"):
                rt.save(n, {"data": stream.get_state(), "policy_version": n,
                            "model_config": runtime_lib.model_cfg_to_json(rt.model_cfg)})
        rt.metrics.write(n, row)
        last = row
    if cfg.export_hf:
        rt.checkpointer.wait_until_finished()
        export_hf(rt.model_cfg, rt.state.params, rt.workdir / "hf")
        if rt.is_main:
            tok.save_pretrained(str(rt.workdir / "hf"))
    return last


def loss_fell(rows: list[dict]) -> bool:
    """True when the last held-out loss is below the first (for scripts and tests)."""
    vals = [r["heldout_loss"] for r in rows if "heldout_loss" in r]
    return len(vals) >= 2 and vals[-1] < vals[0] and np.isfinite(vals[-1])

"""GRPO for the orchestrator (paper §3–4), read top to bottom:

    runtime (mesh → policy → state → resume)          train/runtime.py
    rollout parts (engine, tokenizer, experts, envs)   rollout/build.py
    for each step:
      tasks → per-task randomisation (tool subset, alias→model map, price sheet, preference P)
      G episodes per task through the Engine             rollout/runner.py
      Eq. 2 rewards with the task's P → filters → group advantages     train/grpo_scoring.py
      samples (unit "turn" [C] or "trajectory") → packed [rows, L] mini-batches  train/batch.py
      one jitted update per mini-batch (clipped PPO objective, Eq. 4)  train/step.py, losses.py
      weight sync: the engine gets the new params, its version increments
      metrics (metrics.jsonl + TensorBoard), checkpoint, periodic held-out evaluation

Failure isolation: an episode that fails (a crashed or hung rollout server, a failing expert, a
bad task) becomes an errored trajectory marked ``infra_error`` and leaves its group's
statistics; a step whose groups are all filtered out skips the update and logs why. Nothing of
that ends the run.

Determinism: with ``deterministic_rollouts`` every episode samples with a seed derived from
(seed, step, episode index), so a run restarted from a checkpoint replays exactly the steps it
would have run — provided rewards are deterministic too (measured latency is not: exact-resume
configs put P's latency weight at 0; see configs/grpo_cpu_demo.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import random
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from orchestra_jax.rl.losses import PPOLossConfig
from orchestra_jax.rollout.runner import run_episodes
from orchestra_jax.rollout.trajectory import Trajectory, TrajectoryWriter
from orchestra_jax.train import runtime as runtime_lib
from orchestra_jax.train.batch import local_rows, pack, shard_batch
from orchestra_jax.train.grpo_scoring import (ScoringConfig, group_samples, score_group,
                                              summarize_scores, tool_share)
from orchestra_jax.train.losses import GRPOLossConfig, grpo_loss
from orchestra_jax.train.metrics import PhaseTimer
from orchestra_jax.train.sft_loop import loss_token_bucket
from orchestra_jax.train.state import OptimizerConfig
from orchestra_jax.train.step import batch_sharding, make_train_step


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO settings. ``rollout`` holds the ``rollout.build.RolloutSpec`` fields (tasks, engine,
    experts, tool subset, mapping, pricing, preference, episode limits); ``eval_tasks`` is a
    held-out QA/tau2 task file evaluated every ``eval_every`` steps (greedy, one sample)."""

    rollout: tuple[tuple[str, Any], ...]
    total_steps: int = 10
    tasks_per_step: int = 16                # [P] 16 tasks per step
    group_size: int = 8                     # [P] 8 rollouts per task
    scoring: ScoringConfig = ScoringConfig()
    loss: PPOLossConfig = PPOLossConfig()
    recompute_old_logprobs: bool = False    # [ours] use the engine's log-probs
    mini_batch_samples: int = 16            # [C] samples per optimizer update
    ppo_epochs: int = 1                     # [C]
    rows: int = 8                           # packed rows per update (global)
    seq_len: int = 4096                     # tokens per packed row
    micro_batches: int = 1
    chunk_size: int = 512
    select_loss_tokens: bool = True         # [ours] project only trained positions
    default_preference: tuple[float, ...] = ()   # () = the preference source's default
    deterministic_rollouts: bool = False
    concurrency: int = 8
    eval_tasks: str = ""
    eval_every: int = 0                     # 0 = only before and after training
    eval_limit: Optional[int] = None
    checkpoint_every: int = 5
    max_to_keep: int = 3
    save_trajectories: bool = True
    export_hf: bool = True                  # write WORKDIR/hf (transformers format) at the end
    demo_tasks: bool = False                # tasks/corpus = data/demo_tasks.py (written to
                                            # WORKDIR/data; overrides rollout tasks and corpus)
    seed: int = 0
    mesh: Any = (1, -1, 1)
    policy: runtime_lib.PolicySource = runtime_lib.PolicySource()
    optimizer: OptimizerConfig = OptimizerConfig()   # [P] lr 1e-6, [C] wd 0.01, clip 1.0

    def __post_init__(self):
        for name in ("total_steps", "tasks_per_step", "group_size", "mini_batch_samples",
                     "ppo_epochs", "rows", "seq_len", "micro_batches", "chunk_size",
                     "checkpoint_every", "concurrency"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (GRPO compares rollouts of one task)")
        if self.rows % self.micro_batches:
            raise ValueError(f"rows ({self.rows}) must be a multiple of micro_batches")
        if self.scoring.unit not in ("turn", "trajectory"):
            raise ValueError(f"unit must be 'turn' or 'trajectory', got {self.scoring.unit!r}")
        spec = dict(self.rollout)
        if spec.get("strip_thinking") and self.scoring.unit != "turn":
            raise ValueError("strip_thinking needs the 'turn' training unit")


class TaskStream:
    """Tasks in a seeded per-epoch permutation; ``get_state``/``set_state`` for exact resume."""

    def __init__(self, tasks: Sequence[dict], seed: int):
        if not tasks:
            raise ValueError("no training tasks")
        self.tasks, self.seed = list(tasks), seed
        self.epoch = self.index = 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.tasks))

    def take(self, n: int) -> list[dict]:
        out, order = [], self._order()
        for _ in range(n):
            out.append(self.tasks[order[self.index]])
            self.index += 1
            if self.index == len(order):
                self.epoch, self.index = self.epoch + 1, 0
                order = self._order()
        return out

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, s: dict) -> None:
        self.epoch, self.index = int(s["epoch"]), int(s["index"])


def _copy_tree(tree):
    return jax.tree.map(lambda x: x.copy(), tree)


# ---------------------------------------------------------------------------- rollouts
def rollout_groups(parts, tasks: Sequence[dict], rng: random.Random, *, group_size: int,
                   step: int, episode_seed: Optional[int], concurrency: int,
                   writer: Optional[TrajectoryWriter] = None, setups: Optional[list] = None,
                   desc: str = "rollouts") -> list[list[Trajectory]]:
    """``group_size`` episodes per task, each task under its own randomised setup."""
    envs, metas, sizes = [], [], []
    for i, task in enumerate(tasks):
        setup = setups[i] if setups is not None else parts.randomise(rng)
        e, m = parts.group(task, setup, group_id=f"step{step}/task{i}", size=group_size)
        envs += e
        metas += m
        sizes.append(len(e))
    # seeded episodes replay exactly but sample one by one; unseeded ones batch in the engine
    ep = dataclasses.replace(parts.episode_config,
                             seed=None if episode_seed is None else int(episode_seed))
    trajs = asyncio.run(run_episodes(parts.engine, parts.tokenizer, envs, ep,
                                     concurrency=concurrency, writer=writer, metas=metas,
                                     desc=desc))
    out, k = [], 0
    for n in sizes:
        out.append(trajs[k:k + n])
        k += n
    return out


def evaluate_tasks(parts, tasks: Sequence[dict], *, concurrency: int, seed: int,
                   setup_fn: Optional[Callable] = None, writer=None,
                   default_preference=None) -> dict:
    """Greedy single-sample evaluation: accuracy, mean cost (US$) / latency (s), tool shares
    and the mean Eq. 2 reward computed over the evaluated set as one group per setup."""
    rng = random.Random(seed)
    parts_ep = parts.episode_config
    parts.episode_config = dataclasses.replace(parts_ep, temperature=0.0)
    try:
        setups = [setup_fn(rng) if setup_fn else parts.randomise(rng) for _ in tasks]
        groups = rollout_groups(parts, tasks, rng, group_size=1, step=-1, episode_seed=None,
                                concurrency=concurrency, writer=writer, setups=setups,
                                desc="eval")
    finally:
        parts.episode_config = parts_ep
    trajs = [g[0] for g in groups]
    n = max(len(trajs), 1)
    res = {"n": len(trajs), "accuracy": sum(bool(t.correct) for t in trajs) / n,
           "cost_usd": sum(t.cost_usd for t in trajs) / n,
           "latency_s": sum(t.latency_s for t in trajs) / n,
           "format_ok": sum(bool(t.format_ok_all) for t in trajs) / n,
           "infra_errors": sum(bool(getattr(t, "infra_error", None)) for t in trajs),
           "tool_share": tool_share(trajs),
           "calls_per_task": {k: v for k, v in _calls_per_task(trajs).items()}}
    # Eq. 2 over the whole evaluated set (same setup family): min-max across tasks
    try:
        from orchestra_jax.rl.rewards import preference_reward
        from orchestra_jax.rollout.trajectory import reward_inputs
        names = {tuple(t.tool_names) for t in trajs}
        if len(names) == 1 and trajs:
            if default_preference is None and getattr(parts, "preferences", None) is not None:
                default_preference = parts.preferences.default(list(next(iter(names)))).vector
            inp = reward_inputs(trajs, default_preference)
            r = preference_reward(inp["tool_counts"], inp["correct"], inp["cost"],
                                  inp["latency"], inp["preference"], mask=inp["mask"])
            res["reward"] = float(np.mean(np.asarray(r)))
    except ValueError as e:
        logging.warning("eval reward not computed: %s", e)
    return res


def _calls_per_task(trajs) -> dict[str, float]:
    tot: dict[str, float] = {}
    for t in trajs:
        for name, c in zip(t.tool_names, t.tool_counts):
            tot[name] = tot.get(name, 0.0) + c
    return {k: v / max(len(trajs), 1) for k, v in sorted(tot.items())}


# ---------------------------------------------------------------------------- the loop
def run_grpo(cfg: GRPOConfig, workdir: str, *, preferences: Any = None,
             build_parts: Optional[Callable] = None, config_snapshot: Optional[dict] = None,
             on_step: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Runs (or resumes) GRPO in ``workdir`` until ``cfg.total_steps``; returns a summary with
    the held-out evaluation before and after (when ``eval_tasks`` is set).

    ``build_parts(engine, tokenizer) -> RolloutParts`` replaces ``rollout.build.build_rollout``
    (e.g. to plug in other experts); ``on_step(step, metrics)`` is called after each step."""
    from orchestra_jax.rollout.build import RolloutSpec, build_rollout
    from orchestra_jax.rollout.local_engine import LocalJaxEngine

    # ---- runtime ---------------------------------------------------------------------------
    rt = runtime_lib.setup(workdir, policy=cfg.policy, optimizer_cfg=cfg.optimizer,
                           mesh_shape=cfg.mesh, seed=cfg.seed, max_to_keep=cfg.max_to_keep,
                           config_snapshot=config_snapshot, progress_total=cfg.total_steps)
    parts = None
    try:
        # ---- rollout parts: the engine samples from a copy of the trainer's params ----------
        rollout = dict(cfg.rollout)
        if cfg.demo_tasks:
            from orchestra_jax.data.demo_tasks import write_demo_data
            paths = write_demo_data(rt.workdir / "data", seed=0)
            rollout.update(tasks=str(paths["train"]), corpus=str(paths["corpus"]))
            if not cfg.eval_tasks:
                cfg = dataclasses.replace(cfg, eval_tasks=str(paths["heldout"]))
        spec = RolloutSpec.from_config(rollout)
        from orchestra_jax.chat.tokenizer import load_tokenizer
        tok = load_tokenizer(cfg.policy.checkpoint or None)
        engine = None
        if spec.engine == "local":
            engine = LocalJaxEngine(rt.model_cfg, _copy_tree(rt.state.params),
                                    max_context=spec.max_context, seed=cfg.seed)
            engine.name, engine.logprob_convention = "LocalJaxEngine", "pre_temperature"
            engine.version = int(rt.resume_meta.get("policy_version", 0))
        if build_parts is not None:
            parts = build_parts(engine, tok)
        else:
            parts = build_rollout(spec, preferences=preferences, engine=engine, tokenizer=tok)
        _start_version(parts.engine, rt)
        _resync_servers_on_resume(parts, rt)
        return _loop(cfg, rt, parts, on_step)
    finally:
        if parts is not None:
            parts.close()
        rt.close()


def _start_version(engine, rt) -> None:
    """An engine that carries no policy version yet (SGLang: the loop counts its weight syncs)
    starts at the run's (0, or the restored one), so records before the first sync carry a
    version, not None."""
    if engine is not None and getattr(engine, "version", None) is None:
        engine.version = int(rt.resume_meta.get("policy_version", 0))


def _resync_servers_on_resume(parts, rt) -> None:
    """A resumed run's SGLang servers were launched on ``policy_checkpoint`` (the run's initial
    weights) while the trainer restored its trained params: push the restored params before
    the first rollout, under the restored policy version. Failing here stops the run before it
    trains on rollouts of the wrong policy."""
    if rt.start_step == 0 or hasattr(parts.engine, "update_params"):
        return      # fresh run, or an in-process engine built on the restored params
    if not (getattr(parts, "servers", None) or getattr(parts.spec, "sglang_urls", ())):
        return
    version = int(getattr(parts.engine, "version", 0) or 0)
    parts.engine.version = version - 1          # sync_weights publishes version + 1
    res = sync_weights(parts, rt)
    parts.engine.version = version
    if res.get("weight_sync_failed"):
        raise RuntimeError("resuming: the rollout servers could not load the restored policy "
                           "(see the weight-sync warning above); not training on rollouts of "
                           "the initial weights")


def _default_pref(cfg: GRPOConfig, parts, names) -> list[float]:
    if cfg.default_preference:
        if len(cfg.default_preference) != len(names) + 3:
            raise ValueError(f"default_preference has {len(cfg.default_preference)} entries, "
                             f"the tools {list(names)} need {len(names) + 3}")
        return list(cfg.default_preference)
    if parts.preferences is not None:
        return list(parts.preferences.default(list(names)).vector)
    return [0.0] * len(names) + [1.0, 0.0, 0.0]


def _loop(cfg: GRPOConfig, rt: runtime_lib.Runtime, parts, on_step) -> dict:
    from orchestra_jax.envs.qa import load_qa_jsonl
    mesh = rt.mesh
    runtime_lib.check_rows(mesh, cfg.rows, cfg.micro_batches)
    # ---- data --------------------------------------------------------------------------------
    tasks = parts.load_tasks()
    stream = TaskStream(tasks, cfg.seed)
    if rt.resume_meta:
        stream.set_state(rt.resume_meta["tasks"])
    eval_tasks = (load_qa_jsonl(cfg.eval_tasks, cfg.eval_limit) if cfg.eval_tasks else [])

    # ---- step ---------------------------------------------------------------------------------
    steps: dict = {}

    def step_fn(state, batch, *ref, _mask):
        """The jitted step for this batch's trained-token bucket (see sft_loop); ``_mask`` is
        the global batch's host-side loss mask (same on every process)."""
        k = (loss_token_bucket(int(np.count_nonzero(_mask["loss_mask"])))
             if cfg.select_loss_tokens else None)
        if k not in steps:
            loss_cfg = GRPOLossConfig(ppo=cfg.loss,
                                      recompute_old_logprobs=cfg.recompute_old_logprobs,
                                      chunk_size=cfg.chunk_size, max_loss_tokens=k)
            steps[k] = make_train_step(grpo_loss(rt.model_cfg, loss_cfg), rt.optimizer,
                                       rt.state_shardings, batch_sharding(mesh),
                                       micro_batches=cfg.micro_batches)
        return steps[k](state, batch, *ref)
    ref_params = _copy_tree(rt.state.params) if cfg.loss.kl_coef > 0 else None
    if ref_params is not None and rt.resume_meta:
        logging.warning("kl_coef > 0: the reference policy is the restored policy, not the "
                        "run's initial one (keep the initial checkpoint as policy.checkpoint)")

    traj_dir = rt.workdir / "trajectories"
    summary: dict = {}
    if eval_tasks and rt.start_step == 0:
        summary["before"] = _evaluate(cfg, rt, parts, eval_tasks, "before")
        rt.metrics.write(0, _flat_eval("eval", summary["before"]))

    # ---- loop ---------------------------------------------------------------------------------
    for step in range(rt.start_step, cfg.total_steps):
        timer = PhaseTimer()
        t0 = time.perf_counter()
        n = step + 1
        rng = random.Random(hash((cfg.seed, step)) & 0xFFFFFFFF)
        with timer.phase("rollout"):
            row_pre = heal_servers(parts, rt)
            batch_tasks = stream.take(cfg.tasks_per_step)
            writer = (TrajectoryWriter(traj_dir / f"step_{n:05d}.jsonl", fsync=False)
                      if cfg.save_trajectories and rt.is_main else None)
            try:
                groups = rollout_groups(
                    parts, batch_tasks, rng, group_size=cfg.group_size, step=step,
                    episode_seed=(cfg.seed * 1_000_003 + step * 7919
                                  if cfg.deterministic_rollouts else None),
                    concurrency=cfg.concurrency, writer=writer)
            finally:
                if writer is not None:
                    writer.close()
        with timer.phase("scoring"):
            scores = []
            for g in groups:
                names = next((t.tool_names for t in g if t.tool_names), [])
                scores.append(score_group(g, cfg.scoring, _default_pref(cfg, parts, names)))
            samples = [s for sc in scores for s in group_samples(sc, cfg.scoring.unit)]
        row = summarize_scores(scores)
        row.update(row_pre)
        row["samples"] = len(samples)
        m_all: list[dict] = []
        with timer.phase("update"):
            if not samples:
                row.update(loss=None, grad_norm=None, param_norm=None)   # no update: null
                row["skipped"] = 1
                row["skip_reason"] = ("every group was filtered out (homogeneous rewards, "
                                      "invalid outputs or malformed turns)")
                logging.info("step %d: no update: %s", n, row["skip_reason"])
            else:
                m_all = _update(cfg, rt, step_fn, samples, ref_params, mesh, row)
        for k in (m_all[0] if m_all else {}):      # the step's and the loss's diagnostics
            row[k] = float(np.mean([m[k] for m in m_all]))
        if m_all:
            # kl: to the reference policy when kl_coef > 0, else the k3 estimate of
            # KL(old || current) over the update (approx_kl_old); logprob_gap: mean
            # |trainer log-prob - engine log-prob| on trained tokens (first update = the
            # engine/trainer numerical gap)
            row.setdefault("kl", row.get("approx_kl_old", 0.0))
            row["logprob_gap"] = float(m_all[0].get("logprob_gap", float("nan")))
        else:
            row.update(kl=None, logprob_gap=None, entropy=None, pg_clipfrac_low=None,
                       pg_clipfrac_high=None)
        with timer.phase("sync"):
            if m_all:
                row.update(sync_weights(parts, rt))
        row["policy_version"] = int(getattr(parts.engine, "version", 0))
        if eval_tasks and n == cfg.total_steps:
            with timer.phase("eval"):
                summary["after"] = _evaluate(cfg, rt, parts, eval_tasks, "after")
                row.update(_flat_eval("eval", summary["after"]))
        elif cfg.eval_every and eval_tasks and n % cfg.eval_every == 0:
            with timer.phase("eval"):
                row.update(_flat_eval("eval", _evaluate(cfg, rt, parts, eval_tasks, f"step{n}")))
        if n % cfg.checkpoint_every == 0 or n == cfg.total_steps:
            with timer.phase("checkpoint"):
                rt.save(n, {"tasks": stream.get_state(), "policy_version": row["policy_version"],
                            "model_config": runtime_lib.model_cfg_to_json(rt.model_cfg)})
        row.update(timer.metrics())
        row["step_s"] = time.perf_counter() - t0
        row["tokens_per_s"] = row.get("trained_tokens", 0) / max(row["time/update_s"], 1e-9)
        rt.metrics.write(n, row)
        if on_step is not None:
            on_step(n, row)
    if cfg.export_hf:
        from orchestra_jax.train.checkpoint import export_hf
        rt.checkpointer.wait_until_finished()
        export_hf(rt.model_cfg, rt.state.params, rt.workdir / "hf")
        if rt.is_main:
            parts.tokenizer.save_pretrained(str(rt.workdir / "hf"))
    if eval_tasks and rt.is_main and "after" in summary:
        (rt.workdir / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    if rt.is_main and cfg.save_trajectories:
        write_run_viewer(rt.workdir)
    return summary


def write_run_viewer(workdir: pathlib.Path, max_trajectories: int = 400) -> Optional[pathlib.Path]:
    """``WORKDIR/viewer.html``: the last training step's rollouts and the held-out evaluations,
    turn by turn (``eval/viewer.py``; one self-contained page)."""
    from orchestra_jax.eval.viewer import render_html
    d = workdir / "trajectories"
    files = sorted(d.glob("step_*.jsonl"))[-1:] + sorted(d.glob("eval_*.jsonl"))
    rows = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue    # a torn last line of a killed run
    if not rows:
        return None
    page = workdir / "viewer.html"
    page.write_text(render_html(rows[-max_trajectories:], title=f"GRPO run {workdir.name}"),
                    encoding="utf-8")
    return page


# ---------------------------------------------------------------------------- infrastructure
def sync_weights(parts, rt) -> dict:
    """Weight sync after an update: the in-process engine swaps in a copy of the params (its
    version increments); SGLang servers get an HF export through ``rollout.weight_sync``
    (``/update_weights_from_disk``, sglang-jax's in-process swap, or a restart). A failed
    sync is logged and counted, never fatal: the next step's rollouts then use the previous
    weights (their records carry the stale policy version) and the next sync retries."""
    from orchestra_jax.rollout.weight_sync import WeightSync, WeightSyncError
    engine = parts.engine
    if hasattr(engine, "update_params"):
        engine.update_params(_copy_tree(rt.state.params))
        return {"weight_sync_failed": 0}
    ws = getattr(parts, "_weight_sync", None)
    if ws is None:
        urls = [] if parts.servers else list(parts.spec.sglang_urls)
        ws = WeightSync(parts.servers, urls=urls,
                        tokenizer_dir=parts.spec.policy_checkpoint or None)
        parts._weight_sync = ws
    version = int(getattr(engine, "version", 0)) + 1
    try:
        res = ws.sync(rt.model_cfg, rt.state.params, version=version)
    except (WeightSyncError, OSError) as e:
        logging.warning("weight sync failed (rollouts keep the previous weights): %s", e)
        return {"weight_sync_failed": 1}
    engine.version = version
    parts._last_export = getattr(res, "path", None)
    return {"weight_sync_failed": 0, "weight_sync_s": float(res.total_s)}


def heal_servers(parts, rt) -> dict:
    """Restarts rollout servers this run launched that died (on the last synced weights), so a
    crashed server costs only the episodes that were in flight on it."""
    restarted = 0
    for srv in list(getattr(parts, "servers", []) or []):
        if srv.is_alive():
            continue
        path = getattr(parts, "_last_export", None)
        logging.warning("rollout server %s is down; restarting it%s", srv.url,
                        f" on {path}" if path else "")
        try:
            srv.restart(model_path=str(path) if path else None)
            restarted += 1
        except Exception as e:  # noqa: BLE001 - the engine skips dead servers; keep training
            logging.warning("restart failed: %s: %s", type(e).__name__, e)
    return {"servers_restarted": restarted} if getattr(parts, "servers", None) else {}


def _update(cfg, rt, step_fn, samples, ref_params, mesh, row) -> list[dict]:
    """``ppo_epochs`` passes over the samples in mini-batches of ``mini_batch_samples``,
    each packed into ``[rows, seq_len]`` (more batches if they do not fit: counted)."""
    out: list[dict] = []
    trained = 0
    packs = 0
    eff = []
    for _ in range(cfg.ppo_epochs):
        for i in range(0, len(samples), cfg.mini_batch_samples):
            chunk = samples[i:i + cfg.mini_batch_samples]
            batches, stats = pack(chunk, cfg.rows, cfg.seq_len, overflow="truncate_left")
            eff.append(stats.padding_efficiency)
            row["truncated_samples"] = row.get("truncated_samples", 0) + stats.truncated_samples
            for b in batches:
                packs += 1
                trained += int(b["loss_mask"].sum())
                placed = shard_batch(local_rows(b, mesh), mesh, global_rows=cfg.rows)
                placed_np = {"loss_mask": b["loss_mask"]}
                if ref_params is not None:
                    rt.state, m = step_fn(rt.state, placed, ref_params, _mask=placed_np)
                else:
                    rt.state, m = step_fn(rt.state, placed, _mask=placed_np)
                out.append({k: float(v) for k, v in jax.device_get(m).items()})
    row["updates"] = packs
    row["trained_tokens"] = trained
    row["padding_efficiency"] = float(np.mean(eff)) if eff else 0.0
    return out


def _evaluate(cfg, rt, parts, tasks, tag) -> dict:
    writer = None
    if rt.is_main and cfg.save_trajectories:
        writer = TrajectoryWriter(rt.workdir / "trajectories" / f"eval_{tag}.jsonl", fsync=False)
    try:
        # held-out tasks under the training randomisation but without a preference
        # instruction (the neutral default P scores them)
        res = evaluate_tasks(parts, tasks, concurrency=cfg.concurrency, seed=cfg.seed + 17,
                             writer=writer,
                             setup_fn=lambda rng: dataclasses.replace(parts.randomise(rng),
                                                                      preference=None),
                             default_preference=list(cfg.default_preference) or None)
    finally:
        if writer is not None:
            writer.close()
    logging.info("eval %s: %s", tag, {k: v for k, v in res.items() if k != "calls_per_task"})
    return res


def _flat_eval(prefix: str, res: dict) -> dict:
    out = {}
    for k, v in res.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{prefix}/{k}/{k2}"] = v2
        else:
            out[f"{prefix}/{k}"] = v
    return out


def config_from_dict(d: dict) -> GRPOConfig:
    """A :class:`GRPOConfig` from a plain dict (an ml_collections config's ``to_dict()``):
    ``rollout`` = RolloutSpec fields, ``scoring`` = ScoringConfig fields, ``loss`` =
    PPOLossConfig fields, ``policy`` / ``optimizer`` blocks; unknown keys are an error."""
    from orchestra_jax.train.cli import build_dataclass
    d = dict(d)
    d["rollout"] = tuple(sorted(dict(d.get("rollout") or {}).items()))
    if "scoring" in d:
        d["scoring"] = _strict(ScoringConfig, d["scoring"])
    if "loss" in d:
        d["loss"] = _strict(PPOLossConfig, d["loss"])
    if "default_preference" in d:
        d["default_preference"] = tuple(float(x) for x in (d["default_preference"] or ()))
    if d.get("eval_limit") is not None and int(d["eval_limit"]) <= 0:
        d["eval_limit"] = None
    return build_dataclass(GRPOConfig, d)


def _strict(cls, block):
    block = dict(block)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(block) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")
    return cls(**block)

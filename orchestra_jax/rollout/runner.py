"""Many episodes at once: asyncio with a concurrency limit, a tqdm progress bar, and per-episode
failure isolation (a failing episode becomes a trajectory with ``finish_reason="error"``; it never
cancels the others).

A factory that raises (a bad task, an env that cannot be built) costs only its own episode: the
trajectory is recorded with ``finish_reason="error"`` and ``infra_error`` set.

Episodes interleave: while one waits on the engine another can run its tools. Batching several
episodes' generate calls into one engine call is the engine's business (an engine may coalesce
concurrent ``generate`` calls); the runner just keeps up to ``concurrency`` episodes in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from orchestra_jax.rollout.engine import Engine
from orchestra_jax.rollout.episode import EpisodeConfig, EpisodeEnv, run_episode
from orchestra_jax.rollout.trajectory import Trajectory, TrajectoryWriter

EnvFactory = Callable[[], EpisodeEnv]


async def run_episodes(engine: Engine, tokenizer,
                       envs: Sequence[Union[EpisodeEnv, EnvFactory]],
                       config: EpisodeConfig = EpisodeConfig(), *, concurrency: int = 8,
                       writer: Optional[TrajectoryWriter] = None, progress: bool = True,
                       desc: str = "episodes",
                       metas: Optional[Sequence[Optional[Mapping[str, Any]]]] = None
                       ) -> list[Trajectory]:
    """Runs every env's episode (envs may be env objects or zero-arg factories), at most
    ``concurrency`` at a time. Returns trajectories in input order; each is written to
    ``writer`` (append + flush) as soon as it finishes. ``metas[i]`` is episode ``i``'s run
    metadata (``episode.META_KEYS``: group id, rollout index, P, …).

    With ``config.seed`` set, episode ``i`` uses seed ``config.seed + 100_003 * i`` so repeated
    rollouts of one task (a GRPO group) do not replay the same noise. Leave the seed ``None``
    for throughput: the local engine only batches requests with identical sampling params."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if metas is not None and len(metas) != len(envs):
        raise ValueError(f"{len(metas)} metas for {len(envs)} envs")
    sem = asyncio.Semaphore(concurrency)
    results: list[Optional[Trajectory]] = [None] * len(envs)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(envs), desc=desc, leave=False)

    async def one(i: int, env_or_factory) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                env = env_or_factory() if callable(env_or_factory) and not hasattr(
                    env_or_factory, "reset") else env_or_factory
                cfg = config if config.seed is None else dataclasses.replace(
                    config, seed=config.seed + 100_003 * i)
                traj = await run_episode(engine, tokenizer, env, cfg,
                                         meta=None if metas is None else metas[i])
            except Exception as e:  # noqa: BLE001 - run_episode guards itself; factories may not
                traj = Trajectory(task_id=str(getattr(env_or_factory, "task_id", i)),
                                  finish_reason="error", error=f"{type(e).__name__}: {e}",
                                  wall_s=time.perf_counter() - t0)
                traj.mark_infra(f"episode could not start: {traj.error}")
                m = dict(getattr(env_or_factory, "episode_meta", None) or {})
                m.update((metas[i] if metas is not None else None) or {})
                traj.group_id, traj.rollout_index = m.get("group_id"), m.get("rollout_index")
            results[i] = traj
            if writer is not None:
                try:
                    writer.write(traj)
                except Exception as e:  # noqa: BLE001 - keep the rollout; note the failure
                    traj.info["write_error"] = f"{type(e).__name__}: {e}"
            if bar is not None:
                bar.update(1)

    try:
        await asyncio.gather(*(one(i, e) for i, e in enumerate(envs)))
    finally:
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]


def run_episodes_sync(*args, **kwargs) -> list[Trajectory]:
    """:func:`run_episodes` from synchronous code (starts its own event loop)."""
    return asyncio.run(run_episodes(*args, **kwargs))


def summarize(trajs: Sequence[Trajectory]) -> dict:
    """Accuracy, mean cost (US$) / latency (s) / turns, finish-reason counts, the share of
    episodes cut by the context limit (``context_finish_rate``) and of infrastructure failures
    (``infra_error_rate``; accuracy counts them as wrong, ``valid_accuracy`` leaves them out)."""
    n = len(trajs)
    if not n:
        return {"n": 0}
    reasons: dict[str, int] = {}
    for t in trajs:
        reasons[t.finish_reason] = reasons.get(t.finish_reason, 0) + 1
    valid = [t for t in trajs if not t.infra_error]
    return {
        "n": n,
        "accuracy": sum(bool(t.correct) for t in trajs) / n,
        "valid_accuracy": (sum(bool(t.correct) for t in valid) / len(valid)) if valid else None,
        "mean_cost_usd": sum(t.cost_usd for t in trajs) / n,
        "mean_latency_s": sum(t.latency_s for t in trajs) / n,
        "mean_turns": sum(t.num_turns for t in trajs) / n,
        "format_ok_rate": sum(t.format_ok_all for t in trajs) / n,
        "finish_reasons": reasons,
        "context_finish_rate": reasons.get("context", 0) / n,
        "infra_error_rate": sum(bool(t.infra_error) for t in trajs) / n,
        "errors": sum(t.error is not None for t in trajs),
    }

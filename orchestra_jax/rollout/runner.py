"""Many episodes at once: asyncio with a concurrency limit, a tqdm progress bar, and per-episode
failure isolation (a failing episode becomes a trajectory with ``finish_reason="error"``; it never
cancels the others).

Episodes interleave: while one waits on the engine another can run its tools. Batching several
episodes' generate calls into one engine call is the engine's business (an engine may coalesce
concurrent ``generate`` calls); the runner just keeps up to ``concurrency`` episodes in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Callable, Optional, Sequence, Union

from orchestra_jax.rollout.engine import Engine
from orchestra_jax.rollout.episode import EpisodeConfig, EpisodeEnv, run_episode
from orchestra_jax.rollout.trajectory import Trajectory, TrajectoryWriter

EnvFactory = Callable[[], EpisodeEnv]


async def run_episodes(engine: Engine, tokenizer,
                       envs: Sequence[Union[EpisodeEnv, EnvFactory]],
                       config: EpisodeConfig = EpisodeConfig(), *, concurrency: int = 8,
                       writer: Optional[TrajectoryWriter] = None, progress: bool = True,
                       desc: str = "episodes") -> list[Trajectory]:
    """Runs every env's episode (envs may be env objects or zero-arg factories), at most
    ``concurrency`` at a time. Returns trajectories in input order; each is written to
    ``writer`` (append + flush) as soon as it finishes.

    With ``config.seed`` set, episode ``i`` uses seed ``config.seed + 100_003 * i`` so repeated
    rollouts of one task (a GRPO group) do not replay the same noise. Leave the seed ``None``
    for throughput: the local engine only batches requests with identical sampling params."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
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
                traj = await run_episode(engine, tokenizer, env, cfg)
            except Exception as e:  # noqa: BLE001 - run_episode guards itself; factories may not
                traj = Trajectory(task_id=str(getattr(env_or_factory, "task_id", i)),
                                  finish_reason="error", error=f"{type(e).__name__}: {e}",
                                  wall_s=time.perf_counter() - t0)
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
    """Accuracy, mean cost (US$) / latency (s) / turns, finish-reason counts."""
    n = len(trajs)
    if not n:
        return {"n": 0}
    reasons: dict[str, int] = {}
    for t in trajs:
        reasons[t.finish_reason] = reasons.get(t.finish_reason, 0) + 1
    return {
        "n": n,
        "accuracy": sum(bool(t.correct) for t in trajs) / n,
        "mean_cost_usd": sum(t.cost_usd for t in trajs) / n,
        "mean_latency_s": sum(t.latency_s for t in trajs) / n,
        "mean_turns": sum(t.num_turns for t in trajs) / n,
        "format_ok_rate": sum(t.format_ok_all for t in trajs) / n,
        "finish_reasons": reasons,
        "errors": sum(t.error is not None for t in trajs),
    }

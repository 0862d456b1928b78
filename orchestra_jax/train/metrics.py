"""Training metrics: ``WORKDIR/metrics.jsonl``, TensorBoard event files, a tqdm bar, phase timers.

::

    writer = MetricsWriter(workdir, resume_step=restored_step, total_steps=total)  # 0: fresh
    timer = PhaseTimer()
    for step in range(restored_step + 1, total + 1):
        with timer.phase("data"):
            batch = next(it)
        with timer.phase("step"):
            state, out = train_step(state, batch)
            jax.block_until_ready(out)          # time the work, not the async dispatch
        writer.write(step, {**out, "tokens_per_s": ..., "step_s": ..., **timer.pop()})
    writer.close()

``metrics.jsonl`` holds one JSON object per step (``step`` first), appended and flushed (+fsync)
each write, so a killed run loses at most the row being written. Every training-step row
(step >= 1) must carry :data:`REQUIRED_KEYS`; step 0 is free for pre-training evaluations.
Steps must increase. Values are made JSON-safe: JAX/NumPy scalars become Python numbers,
non-finite floats become ``null``, small arrays become lists.

Resume: ``resume_step=S`` (the checkpoint step the run continues from) first rewrites
``metrics.jsonl`` atomically without rows whose step is > S (they belong to steps that will be
trained again), and TensorBoard is told to purge events after S, so no step appears twice.

Only the main process writes (``enabled`` defaults to ``jax.process_index() == 0``); elsewhere
:meth:`MetricsWriter.write` only validates and returns the row.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

REQUIRED_KEYS = ("loss", "grad_norm", "param_norm", "tokens_per_s", "step_s")
METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


def json_value(v: Any) -> Any:
    """A JSON-safe copy of one metric value (see module docstring)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if hasattr(v, "__array__") or isinstance(v, (np.generic, int, float)):
        a = np.asarray(v)
        if a.dtype == np.bool_:
            return a.tolist()
        if a.ndim == 0:
            if np.issubdtype(a.dtype, np.integer):
                return int(a)
            f = float(a)
            return f if math.isfinite(f) else None
        return [json_value(x) for x in a]
    if isinstance(v, Mapping):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    raise TypeError(f"metric value of type {type(v).__name__} is not a number")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (a torn last line — a kill mid-write — is skipped)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line: {line[:80]!r}") from None
    return rows


def truncate_metrics(path: str | os.PathLike, after_step: int) -> int:
    """Atomically rewrites ``path`` keeping rows with ``step <= after_step`` (the last row per
    step when a step repeats); returns how many rows were dropped."""
    path = pathlib.Path(path)
    if not path.exists():
        return 0
    rows = read_metrics(path)
    keep: dict[int, dict] = {}
    for r in rows:
        if "step" not in r:
            raise ValueError(f"{path}: row without 'step': {str(r)[:80]}")
        if int(r["step"]) <= after_step:
            keep[int(r["step"])] = r
    kept = [keep[s] for s in sorted(keep)]
    dropped = len(rows) - len(kept)
    if dropped or len(path.read_bytes().splitlines()) != len(kept):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class PhaseTimer:
    """Wall-clock per named phase: ``with timer.phase("data"): …``.

    :meth:`metrics` gives ``{"time/<phase>_s": seconds}`` summed over the phase's uses;
    :meth:`pop` gives the same and resets (one timer across steps).
    """

    def __init__(self):
        self._acc: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._acc[phase] = self._acc.get(phase, 0.0) + time.perf_counter() - t0

    __call__ = phase

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}_s": v for k, v in self._acc.items()}

    def pop(self) -> dict[str, float]:
        out = self.metrics()
        self._acc = {}
        return out


class MetricsWriter:
    """Per-step metrics to ``WORKDIR/metrics.jsonl`` + TensorBoard (+ optional tqdm bar).

    resume_step: the step this run resumes from (rows after it are dropped first; 0 = fresh run).
    enabled: write at all (default: process 0 only). tensorboard: event files under
    ``WORKDIR/tensorboard`` (tensorboardX, no TensorFlow). total_steps: show a tqdm bar up to
    this step. required: keys every step >= 1 row must have (default :data:`REQUIRED_KEYS`).
    """

    def __init__(self, workdir: str | os.PathLike, *, resume_step: int = 0,
                 enabled: Optional[bool] = None, tensorboard: bool = True,
                 total_steps: Optional[int] = None,
                 required: Sequence[str] = REQUIRED_KEYS):
        if enabled is None:
            import jax
            enabled = jax.process_index() == 0
        self.enabled = bool(enabled)
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / METRICS_FILE
        self.required = tuple(required)
        self.resume_step = int(resume_step)
        self.last_step = -1
        self._tb = None
        self._bar = None
        self._f = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, self.resume_step)
        self.last_step = max((int(r["step"]) for r in read_metrics(self.path)), default=-1)
        self._f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter
            # the default file name has 1 s resolution: a quick restart would overwrite the
            # previous run's events, hence a unique suffix
            self._tb = SummaryWriter(str(self.workdir / TB_DIR),
                                     purge_step=self.resume_step + 1 if self.resume_step else None,
                                     filename_suffix=f".{os.getpid()}.{time.time_ns()}")
        if total_steps:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=int(total_steps), initial=self.resume_step, unit="step",
                             dynamic_ncols=True)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Appends one row (``{"step": step, **metrics}``, JSON-safe) and returns it."""
        step = int(step)
        missing = [k for k in self.required if k not in metrics] if step > 0 else []
        if missing:
            raise ValueError(f"metrics for step {step} lack required keys {missing}")
        if "step" in metrics and int(metrics["step"]) != step:
            raise ValueError(f"metrics carry step {metrics['step']} but are written as {step}")
        row = {"step": step}
        for k, v in metrics.items():
            if k != "step":
                try:
                    row[str(k)] = json_value(v)
                except TypeError as e:
                    raise TypeError(f"metric {k!r} at step {step}: {e}") from None
        if step <= self.last_step and self.enabled:
            raise ValueError(f"step {step} written after step {self.last_step} (steps must "
                             "increase; resume with resume_step= to rewind)")
        self.last_step = step
        if not self.enabled:
            return row
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            loss = row.get("loss")
            if isinstance(loss, float):
                self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        return row

    def close(self) -> None:
        if self._f is not None and not self._f.closed:
            self._f.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

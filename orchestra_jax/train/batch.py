"""Trajectories → training samples → packed ``[rows, L]`` batches → sharded device arrays.

A :class:`Sample` is one training sequence with per-token arrays aligned to its tokens (the
``Trajectory`` convention): ``loss_mask[i] = 1`` where token ``i`` is trained on, ``logprobs[i]``
the rollout engine's log p(token i | prefix) there (0 elsewhere), one scalar ``advantage``.

:func:`pack` places samples first-fit into fixed rows and returns batches whose arrays follow the
learner's contract (all ``[R, L]``; position ``i`` predicts ``targets[i]`` = the sample's token
``i + 1``):

=================  =======  ===============================================================
``tokens``         int32    model inputs
``targets``        int32    next token of the same sample (0 at a segment's last position)
``positions``      int32    per-segment RoPE positions (restart at 0 for every sample)
``segment_ids``    int32    0 = padding, 1, 2, … = samples in the row (no cross attention)
``loss_mask``      float32  the sample's ``loss_mask`` of the *target* token
``advantages``     float32  the sample's advantage on every position of its segment
``old_logprobs``   float32  the rollout log-prob of the target where ``loss_mask``, else 0
=================  =======  ===============================================================

Units of a trajectory (:func:`trajectory_samples`): ``"trajectory"`` — the whole episode is one
sample with loss on every policy turn; ``"turn"`` — the release's unit [C]: every turn is its own
sample whose prompt is everything before the turn's response span and whose loss is on that
turn's tokens only.

Over-long samples (``len > L``): ``overflow="truncate_left"`` [C] (the release's
``truncation=left``) drops tokens from the left of the prompt (at least one prompt token is kept
and no trained token is cut; a sample that cannot be saved that way raises
:class:`SampleTooLongError`); ``"skip"`` leaves them out and counts them; ``"error"`` raises on
any. Truncated samples keep their rollout log-probs, which were computed with the full context.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from orchestra_jax.rollout.trajectory import Trajectory
from orchestra_jax.sharding import logical_to_spec
from orchestra_jax.train.distributed import process_rows

BATCH_KEYS = ("tokens", "targets", "positions", "segment_ids", "loss_mask", "advantages",
              "old_logprobs")
_INT_KEYS = ("tokens", "targets", "positions", "segment_ids")
UNITS = ("trajectory", "turn")
OVERFLOW = ("truncate_left", "skip", "error")


class SampleTooLongError(ValueError):
    """A sample does not fit the row length and may not (or cannot) be truncated."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training sequence (per-token arrays aligned with ``tokens``; see module docstring).

    ``source`` is free text for error messages and bookkeeping (e.g. ``"task7/turn2"``).
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    logprobs: np.ndarray
    advantage: float = 0.0
    source: str = ""

    def __post_init__(self):
        t = np.asarray(self.tokens)
        if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):
            raise ValueError(f"sample {self.source!r}: tokens must be a 1-D integer array, got "
                             f"dtype {t.dtype} shape {t.shape}")
        t = t.astype(np.int32)
        m = np.asarray(self.loss_mask, np.float32)
        lp = np.asarray(self.logprobs, np.float32)
        if not m.shape == lp.shape == t.shape:
            raise ValueError(f"sample {self.source!r}: tokens/loss_mask/logprobs shapes "
                             f"{t.shape}/{m.shape}/{lp.shape} differ")
        if t.size == 0:
            raise ValueError(f"sample {self.source!r} is empty")
        if (t < 0).any():
            raise ValueError(f"sample {self.source!r}: negative token id {int(t.min())}")
        if not (np.isfinite(m).all() and (m >= 0).all()):
            raise ValueError(f"sample {self.source!r}: loss_mask must be finite and >= 0")
        if m[0] != 0:
            raise ValueError(f"sample {self.source!r}: loss_mask[0] must be 0 (the first token "
                             "has no prefix to be predicted from)")
        if not np.isfinite(lp).all():
            raise ValueError(f"sample {self.source!r}: non-finite log-prob")
        if not np.isfinite(self.advantage):
            raise ValueError(f"sample {self.source!r}: non-finite advantage {self.advantage}")
        object.__setattr__(self, "tokens", t)
        object.__setattr__(self, "loss_mask", m)
        object.__setattr__(self, "logprobs", np.where(m > 0, lp, 0.0).astype(np.float32))
        object.__setattr__(self, "advantage", float(self.advantage))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_loss_tokens(self) -> int:
        return int(np.count_nonzero(self.loss_mask))


def trajectory_samples(traj: Trajectory, advantage: float, unit: str = "turn") -> list[Sample]:
    """Training samples of one trajectory in ``unit`` ``"trajectory"`` or ``"turn"``.

    Turns with an empty response span give no sample; a trajectory without policy tokens gives
    ``[]``. Tokens after the last trained token are not part of any sample (nothing to learn).
    Raises ``ValueError`` for an inconsistent trajectory (``Trajectory.validate``) or unit.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    traj.validate()
    tokens = np.asarray(traj.tokens, np.int64)
    mask = np.asarray(traj.loss_mask, np.float32)
    logp = np.asarray(traj.rollout_logprobs, np.float32)
    if unit == "trajectory":
        if getattr(traj, "required_unit", None) == "turn":
            raise ValueError(f"{traj.task_id}: rolled out with context_mode "
                             f"{getattr(traj, 'context_mode', '?')!r} (earlier turns' thinking "
                             "dropped from later prompts): only the 'turn' unit is faithful")
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return []
        end = int(idx[-1]) + 1
        return [Sample(tokens[:end], mask[:end], logp[:end], advantage,
                       source=f"{traj.task_id}")]
    out = []
    for turn in traj.turns:
        s, e = (int(v) for v in turn.response_span)
        if e <= s:
            continue
        if s == 0:
            raise ValueError(f"{traj.task_id}: turn {turn.index} response starts at token 0 "
                             "(no prompt)")
        if getattr(turn, "prompt_base", None) is not None and hasattr(traj, "turn_arrays"):
            # the prompt the engine really saw (e.g. earlier thinking stripped)
            j = traj.turns.index(turn)
            t_ids, t_mask, t_lp = traj.turn_arrays(j)
            out.append(Sample(np.asarray(t_ids, np.int64), np.asarray(t_mask, np.float32),
                              np.asarray(t_lp, np.float32), advantage,
                              source=f"{traj.task_id}/turn{turn.index}"))
            continue
        m = np.zeros(e, np.float32)
        m[s:e] = mask[s:e]
        out.append(Sample(tokens[:e], m, np.where(m > 0, logp[:e], 0.0), advantage,
                          source=f"{traj.task_id}/turn{turn.index}"))
    return out


@dataclasses.dataclass
class PackStats:
    """What :func:`pack` did. ``padding_efficiency`` = real tokens / (batches · R · L).

    ``placements[b]`` lists ``(row, start, sample_index)`` for batch ``b`` (``sample_index`` into
    the list given to :func:`pack`); ``batch_efficiency[b]`` is batch ``b``'s efficiency.
    """

    rows: int
    length: int
    num_samples: int = 0
    num_batches: int = 0
    real_tokens: int = 0
    loss_tokens: int = 0
    padding_efficiency: float = 0.0
    truncated_samples: int = 0
    truncated_tokens: int = 0
    skipped_samples: int = 0
    batch_efficiency: list[float] = dataclasses.field(default_factory=list)
    placements: list[list[tuple[int, int, int]]] = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Scalar stats (for metrics logging)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("batch_efficiency", "placements")}


def _fit(sample: Sample, i: int, length: int, overflow: str) -> tuple[Optional[Sample], int]:
    """The sample cut to ``length`` per ``overflow`` (None = skip) and the tokens dropped."""
    n = len(sample)
    if n <= length:
        return sample, 0
    where = f"sample {i} ({sample.source!r})" if sample.source else f"sample {i}"
    if overflow == "skip":
        return None, 0
    if overflow == "error":
        raise SampleTooLongError(f"{where} has {n} tokens > row length {length} "
                                 "(overflow='error')")
    drop = n - length
    first_loss = int(np.flatnonzero(sample.loss_mask)[0]) if sample.num_loss_tokens else n
    if drop > first_loss - 1:
        raise SampleTooLongError(
            f"{where} has {n} tokens > row length {length}: {drop} must go but left-truncating "
            f"its {first_loss}-token prompt frees at most {max(first_loss - 1, 0)} (one prompt "
            f"token stays; the trained part alone needs {n - first_loss + 1} positions)")
    return Sample(sample.tokens[drop:], sample.loss_mask[drop:], sample.logprobs[drop:],
                  sample.advantage, sample.source), drop


def _empty(rows: int, length: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((rows, length), np.int32 if k in _INT_KEYS else np.float32)
            for k in BATCH_KEYS}


def pack(samples: Sequence[Sample], rows: int, length: int, *, overflow: str = "truncate_left",
         decreasing: bool = False) -> tuple[list[dict[str, np.ndarray]], PackStats]:
    """Packs samples first-fit into as many ``[rows, length]`` batches as they need.

    Deterministic: samples are taken in the given order (``decreasing=True``: longest first,
    ties in order) and each goes into the first row with room, else a new row; rows are grouped
    ``rows`` at a time into batches, the last one padded with empty rows. No sample is ever
    dropped except over-long ones under ``overflow="skip"`` (counted in ``skipped_samples``).
    Returns ``(batches, stats)``; every batch is a dict of the arrays in the module docstring.
    """
    if rows < 1 or length < 2:
        raise ValueError(f"need rows >= 1 and length >= 2, got rows={rows} length={length}")
    if overflow not in OVERFLOW:
        raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
    stats = PackStats(rows=rows, length=length, num_samples=len(samples))
    fitted: list[tuple[int, Sample]] = []
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise TypeError(f"pack expects Sample objects, got {type(s).__name__} at index {i}")
        f, dropped = _fit(s, i, length, overflow)
        if f is None:
            stats.skipped_samples += 1
            continue
        if dropped:
            stats.truncated_samples += 1
            stats.truncated_tokens += dropped
        fitted.append((i, f))
    if decreasing:
        fitted.sort(key=lambda p: -len(p[1]))   # stable: ties keep their order
    # First fit over an unbounded list of rows.
    free: list[int] = []                         # room left per row
    content: list[list[tuple[int, Sample]]] = []
    for i, s in fitted:
        n = len(s)
        for r, room in enumerate(free):
            if room >= n:
                break
        else:
            r = len(free)
            free.append(length)
            content.append([])
        free[r] -= n
        content[r].append((i, s))

    batches = []
    for b0 in range(0, len(content), rows):
        batch = _empty(rows, length)
        placed = []
        real = 0
        for r, row in enumerate(content[b0:b0 + rows]):
            start = 0
            for seg, (i, s) in enumerate(row, start=1):
                n = len(s)
                sl = slice(start, start + n)
                batch["tokens"][r, sl] = s.tokens
                batch["targets"][r, start:start + n - 1] = s.tokens[1:]
                batch["positions"][r, sl] = np.arange(n, dtype=np.int32)
                batch["segment_ids"][r, sl] = seg
                batch["loss_mask"][r, start:start + n - 1] = s.loss_mask[1:]
                batch["old_logprobs"][r, start:start + n - 1] = s.logprobs[1:]
                batch["advantages"][r, sl] = s.advantage
                placed.append((r, start, i))
                start += n
            real += start
        stats.real_tokens += real
        stats.loss_tokens += int(np.count_nonzero(batch["loss_mask"]))
        stats.batch_efficiency.append(real / (rows * length))
        stats.placements.append(placed)
        batches.append(batch)
    stats.num_batches = len(batches)
    if batches:
        stats.padding_efficiency = stats.real_tokens / (len(batches) * rows * length)
    return batches, stats


def batch_sharding(mesh: Mesh, shape: tuple[int, int]) -> NamedSharding:
    """The rules table's sharding for a ``[rows, L]`` batch array ('activation_batch' rows)."""
    spec = logical_to_spec(("activation_batch", "activation_length"), shape=shape,
                           mesh_shape=dict(mesh.shape))
    return NamedSharding(mesh, spec)


def local_rows(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, np.ndarray]:
    """This process's rows of a *global* batch (every process built the same batch)."""
    rows = next(iter(batch.values())).shape[0]
    idx = process_rows(rows, mesh)
    return {k: np.asarray(v)[idx] for k, v in batch.items()}


def shard_batch(batch: dict[str, Any], mesh: Mesh,
                global_rows: Optional[int] = None) -> dict[str, jax.Array]:
    """Places a batch's rows on ``mesh`` with the batch sharding (multi-process aware).

    ``batch`` holds *this process's* rows: the rows ``process_rows(global_rows, mesh)`` of the
    global batch (:func:`local_rows` cuts them); in a single process that is the whole batch.
    ``global_rows`` defaults to local rows × process count. Global rows must divide evenly over
    the mesh's batch axes when more than one process feeds them.
    """
    if not batch:
        raise ValueError("shard_batch got an empty batch")
    shapes = {k: np.shape(v) for k, v in batch.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise ValueError(f"batch arrays must all be [rows, L] with one shape, got {shapes}")
    n_local, length = first
    global_rows = n_local * jax.process_count() if global_rows is None else int(global_rows)
    shape = (global_rows, length)
    sharding = batch_sharding(mesh, shape)
    want = len(process_rows(global_rows, mesh))
    if want != n_local:
        raise ValueError(f"process {jax.process_index()} must feed {want} rows of the "
                         f"{global_rows}-row batch on mesh {dict(mesh.shape)}, got {n_local}")
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v), shape)
            for k, v in batch.items()}

"""Input checks shared by the pure RL functions.

Shape checks run on every call (shapes are static, so they also run while tracing under `jax.jit`).
Value checks (finite, non-negative, in range) run only when the argument is concrete, i.e. on eager
calls; inside a traced computation values are unknown and the check is skipped.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when `x` holds actual values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_ndim(name: str, x: Any, ndim: int | tuple[int, ...]) -> None:
    """Raise ValueError unless `x` has one of the allowed ranks."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(x) not in allowed:
        raise ValueError(f"{name} must have rank {' or '.join(map(str, allowed))}, "
                         f"got shape {np.shape(x)}")


def check_shape(name: str, x: Any, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless `x` has exactly `shape`."""
    if tuple(np.shape(x)) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(np.shape(x))}")


def check_values(name: str, x: Any, *, lo: float | None = None, hi: float | None = None) -> None:
    """On concrete input, raise ValueError for non-finite values or values outside [lo, hi]."""
    if not is_concrete(x):
        return
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a[~np.isfinite(a)][:3].tolist()}...")
    if lo is not None and np.min(a) < lo:
        raise ValueError(f"{name} must be >= {lo}, got min {np.min(a)}")
    if hi is not None and np.max(a) > hi:
        raise ValueError(f"{name} must be <= {hi}, got max {np.max(a)}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")

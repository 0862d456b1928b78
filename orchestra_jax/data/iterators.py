"""A deterministic, checkpointable task iterator over a built dataset (grain, no TF).

``make_task_iterator(source, seed=..., shuffle=True, num_epochs=None)`` wraps any random-access
source (``tfds.data_source`` / ``builder.as_data_source`` / a list) in a grain ``MapDataset``
(seeded global shuffle per epoch, repeat) and yields decoded examples
(:func:`~orchestra_jax.data.builders.decode_example` for tfds records). ``get_state()`` returns
a JSON-able dict (grain's position plus a fingerprint of the source/seed) and ``set_state()``
restores it exactly — the GRPO loop saves it with its checkpoint and resumes mid-epoch.
Restoring into an iterator over a different source size or seed raises ``ValueError``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

import grain

__all__ = ["TaskIterator", "make_task_iterator"]


class TaskIterator:
    """Iterator with ``get_state() -> dict`` / ``set_state(dict)`` (see module docstring)."""

    def __init__(self, source: Sequence[Any], *, seed: int = 0, shuffle: bool = True,
                 num_epochs: Optional[int] = None,
                 decode: Optional[Callable[[Any], Any]] = None):
        n = len(source)
        if n == 0:
            raise ValueError("make_task_iterator: the source is empty")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
        ds = grain.MapDataset.source(source)
        if shuffle:
            ds = ds.seed(seed).shuffle()
        ds = ds.repeat(num_epochs)
        if decode is not None:
            ds = ds.map(decode)
        self._ds = ds.to_iter_dataset()
        self._it = iter(self._ds)
        self._fingerprint = {"size": n, "seed": int(seed), "shuffle": bool(shuffle),
                             "num_epochs": num_epochs}
        self._size = n

    def __iter__(self) -> "TaskIterator":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    @property
    def size(self) -> int:
        return self._size

    def get_state(self) -> dict:
        state = {"grain": self._it.get_state(), **self._fingerprint}
        return json.loads(json.dumps(state))   # JSON-able, detached

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or "grain" not in state:
            raise ValueError(f"not a TaskIterator state: {state!r:.200}")
        mismatch = {k: (state.get(k), v) for k, v in self._fingerprint.items()
                    if state.get(k) != v}
        if mismatch:
            raise ValueError(f"iterator state does not match this iterator (saved, current): "
                             f"{mismatch}")
        self._it.set_state(state["grain"])


def make_task_iterator(source: Sequence[Any], *, seed: int = 0, shuffle: bool = True,
                       num_epochs: Optional[int] = None, decode: Any = "auto") -> TaskIterator:
    """Checkpointable iterator over ``source``. ``decode="auto"`` decodes tfds records with
    :func:`~orchestra_jax.data.builders.decode_example` (plain Python items pass through);
    ``None`` yields raw records; or give a callable."""
    if decode == "auto":
        from orchestra_jax.data.builders import decode_example

        def decode(rec: Any) -> Any:
            return decode_example(rec) if isinstance(rec, dict) and "task_json" in rec else rec
    return TaskIterator(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs, decode=decode)

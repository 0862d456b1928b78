"""What the training scripts share: ml_collections → frozen dataclasses, multi-process start-up,
and "one clear error line" for bad configs, missing files and unusable checkpoints."""
from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, Callable

from orchestra_jax.train import runtime as runtime_lib
from orchestra_jax.train.state import OptimizerConfig

# errors a user can fix (config, data, checkpoint): reported on one line, exit status 2
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError,
                                                 KeyError)


def to_dict(c: Any) -> dict:
    return c.to_dict() if hasattr(c, "to_dict") else dict(c)


def build_dataclass(cls, c: Any, **extra) -> Any:
    """``cls(**fields)`` from a ConfigDict / dict, nested ``policy`` and ``optimizer`` blocks
    turned into :class:`PolicySource` / :class:`OptimizerConfig`; unknown keys are an error."""
    d = dict(to_dict(c), **extra)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown} for {cls.__name__}; "
                         f"known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    if "policy" in d and isinstance(d["policy"], dict):
        p = dict(d["policy"])
        p["overrides"] = tuple(sorted(dict(p.get("overrides") or {}).items()))
        d["policy"] = runtime_lib.PolicySource(**p)
    if "optimizer" in d and isinstance(d["optimizer"], dict):
        d["optimizer"] = OptimizerConfig(**d["optimizer"])
    if "mesh" in d:
        d["mesh"] = runtime_lib.parse_mesh(d["mesh"])
    for k, v in list(d.items()):
        if isinstance(v, list) and hints.get(k) is not None:
            d[k] = tuple(v)
    return cls(**d)


def run_cli(fn: Callable[[], Any], *, quiet_libraries: bool = True) -> Any:
    """Runs ``fn``; a user-fixable error ends the process with ``error: …`` on one line.

    ``quiet_libraries``: absl INFO lines (Orbax logs every file rename at INFO) are hidden;
    pass ``--verbosity=0`` … or set this False to see them."""
    from absl import logging
    from orchestra_jax.train.checkpoint import CheckpointError
    if quiet_libraries and logging.get_verbosity() <= logging.INFO and \
            "--verbosity" not in " ".join(sys.argv):
        logging.set_verbosity(logging.WARNING)
    try:
        return fn()
    except (CheckpointError,) + USER_ERRORS as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {type(e).__name__}: {msg}", file=sys.stderr, flush=True)
        sys.exit(2)

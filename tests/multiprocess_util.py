"""Reusable harness: run a Python file as N local JAX processes with fake CPU devices.

Parent side::

    from multiprocess_util import launch
    results = launch("tests/multiprocess_child.py", ["--mode=step"], num_processes=2,
                     devices_per_process=4, timeout_s=120)   # one JSON object per process

Child side (the script must call ``orchestra_jax.train.distributed.initialize()`` before any
other JAX call — it reads the ``ORCHESTRA_*`` variables set here; with ``num_processes=1`` none
are set, so the same script runs single-process)::

    from multiprocess_util import write_result
    write_result({"loss": 1.23})

Every child gets ``JAX_PLATFORMS=cpu``, ``XLA_FLAGS=--xla_force_host_platform_device_count=K``
and a fresh coordinator port. A child that exits non-zero, writes no result, or outlives
``timeout_s`` fails the launch with its log tail (all children are killed; nothing hangs).
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULT_ENV = "ORCHESTRA_TEST_RESULT"


class LaunchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_result(obj) -> None:
    """Child side: records this process's JSON result for the parent."""
    path = os.environ[RESULT_ENV]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _tail(path: pathlib.Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def launch(script: str | os.PathLike, args: Sequence[str] = (), *, num_processes: int = 2,
           devices_per_process: int = 4, timeout_s: float = 120.0,
           env: Optional[dict] = None, workdir: Optional[str | os.PathLike] = None) -> list:
    """Runs ``script args`` as ``num_processes`` JAX processes; returns their results by rank."""
    work = pathlib.Path(workdir or tempfile.mkdtemp(prefix="mp_"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for rank in range(num_processes):
        e = dict(os.environ)
        for k in ("ORCHESTRA_COORDINATOR", "ORCHESTRA_NUM_PROCESSES", "ORCHESTRA_PROCESS_ID",
                  "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            e.pop(k, None)
        e.update(env or {})
        e["JAX_PLATFORMS"] = "cpu"
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_per_process}"
        e["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"),
                                           e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        e[RESULT_ENV] = str(work / f"result_{rank}.json")
        if num_processes > 1:
            e["ORCHESTRA_COORDINATOR"] = f"127.0.0.1:{port}"
            e["ORCHESTRA_NUM_PROCESSES"] = str(num_processes)
            e["ORCHESTRA_PROCESS_ID"] = str(rank)
        log = open(work / f"log_{rank}.txt", "w")
        procs.append((subprocess.Popen([sys.executable, str(script), *args], env=e,
                                       stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                       start_new_session=True), log))
    deadline = time.monotonic() + timeout_s
    failed = None
    try:
        while any(p.poll() is None for p, _ in procs):
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout_s:.0f}s"
                break
            bad = [r for r, (p, _) in enumerate(procs) if p.poll() not in (None, 0)]
            if bad:
                failed = f"process {bad[0]} exited with {procs[bad[0]][0].returncode}"
                time.sleep(2.0)   # give its peers a moment to report their own errors
                break
            time.sleep(0.1)
    finally:
        for p, log in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            log.close()
    if failed is None:
        bad = [r for r, (p, _) in enumerate(procs) if p.returncode != 0]
        if bad:
            failed = f"process {bad[0]} exited with {procs[bad[0]][0].returncode}"
    results = []
    for rank in range(num_processes):
        path = work / f"result_{rank}.json"
        if failed is None and not path.exists():
            failed = f"process {rank} wrote no result"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    if failed:
        logs = "\n".join(f"--- process {r} log tail ---\n{_tail(work / f'log_{r}.txt')}"
                         for r in range(num_processes))
        raise LaunchError(f"{script} × {num_processes}: {failed}\n{logs}")
    return results


def write_arrays(name: str, arrays: dict) -> None:
    """Child side: saves host arrays as ``<result>.<name>.npz`` (read with :func:`read_arrays`)."""
    import numpy as np
    np.savez(os.environ[RESULT_ENV] + f".{name}.npz", **arrays)


def read_arrays(workdir: str | os.PathLike, rank: int, name: str) -> dict:
    import numpy as np
    with np.load(pathlib.Path(workdir) / f"result_{rank}.json.{name}.npz") as z:
        return dict(z)


def one_device_env() -> dict:
    """This process's environment for a subprocess that should see one CPU device."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "xla_force_host_platform_device_count" not in f)
    return env

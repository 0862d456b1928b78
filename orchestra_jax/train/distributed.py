"""Multi-process JAX start-up and "which rows does this process feed".

One code path for one or many processes: every entry point calls :func:`initialize` first
(before any other JAX call), then builds meshes over the *global* device list
(``orchestra_jax.sharding.make_mesh``) and feeds its own rows (:func:`process_rows`).

Where the process topology comes from, first match wins:

1. explicit arguments ``initialize(coordinator_address, num_processes, process_id)``;
2. ``ORCHESTRA_COORDINATOR`` / ``ORCHESTRA_NUM_PROCESSES`` / ``ORCHESTRA_PROCESS_ID``;
3. JAX's own ``JAX_COORDINATOR_ADDRESS`` (+ ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``);
4. a cluster JAX detects itself — SLURM with more than one task, Open MPI with more than one
   rank, a multi-host Cloud TPU (``TPU_WORKER_HOSTNAMES`` lists several hosts or
   ``MEGASCALE_COORDINATOR_ADDRESS`` is set): ``jax.distributed.initialize()`` without arguments;
   ``auto=True`` forces that call where our environment check sees nothing (e.g. a GCE TPU pod
   whose topology only the metadata server knows);
5. otherwise a single process: nothing to do.

On CPU, cross-process collectives use gloo (JAX's default ``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax
import numpy as np

log = logging.getLogger(__name__)

ENV_COORDINATOR = "ORCHESTRA_COORDINATOR"
ENV_NUM_PROCESSES = "ORCHESTRA_NUM_PROCESSES"
ENV_PROCESS_ID = "ORCHESTRA_PROCESS_ID"


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def _cluster_detected() -> Optional[str]:
    """Name of a multi-process cluster environment JAX auto-detects, else None."""
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(k in env for k in slurm) and _env_int("SLURM_NTASKS") not in (None, 1):
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and _env_int("OMPI_COMM_WORLD_SIZE") not in (None, 1):
        return "ompi"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, auto: bool = False,
               initialization_timeout_s: int = 300) -> str:
    """Starts the JAX distributed runtime if this run has several processes (module docstring).

    Must run before anything touches a JAX backend. Idempotent: a second call (or one after
    ``jax.distributed.initialize`` was called elsewhere) does nothing. Returns how the topology
    was found: ``"explicit"``, ``"env"``, ``"jax_env"``, ``"slurm"``, ``"ompi"``, ``"tpu"``,
    ``"auto"``, ``"single"`` or ``"already"``. Incomplete settings raise ``ValueError`` naming
    what is missing.
    """
    if jax.distributed.is_initialized():
        return "already"
    how = "explicit"
    if coordinator_address is None and num_processes is None and process_id is None:
        how = "env"
        coordinator_address = os.environ.get(ENV_COORDINATOR) or None
        num_processes = _env_int(ENV_NUM_PROCESSES)
        process_id = _env_int(ENV_PROCESS_ID)
        if coordinator_address is None and num_processes is None and process_id is None:
            how = "jax_env"
            coordinator_address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
            num_processes = _env_int("JAX_NUM_PROCESSES")
            process_id = _env_int("JAX_PROCESS_ID")
    given = (coordinator_address, num_processes, process_id)
    if all(v is None for v in given):
        cluster = _cluster_detected() or ("auto" if auto else None)
        if cluster is None:
            return "single"
        log.info("distributed: %s cluster detected, calling jax.distributed.initialize()",
                 cluster)
        jax.distributed.initialize(initialization_timeout=initialization_timeout_s)
        return cluster
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1 and coordinator_address is None:
        if process_id not in (None, 0):
            raise ValueError(f"process_id {process_id} with num_processes=1")
        return "single"
    missing = [n for n, v in zip(("coordinator_address", "num_processes", "process_id"), given)
               if v is None]
    if missing:
        src = {"explicit": "arguments", "env": f"{ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/"
               f"{ENV_PROCESS_ID}", "jax_env": "JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/"
               "JAX_PROCESS_ID"}[how]
        raise ValueError(f"distributed set-up from {src} is incomplete: missing "
                         f"{', '.join(missing)} (got coordinator={coordinator_address!r}, "
                         f"num_processes={num_processes}, process_id={process_id})")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} not in [0, {num_processes})")
    if num_processes == 1:
        return "single"
    log.info("distributed: process %d of %d, coordinator %s (%s)", process_id, num_processes,
             coordinator_address, how)
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout_s)
    return how


def is_main_process() -> bool:
    """True on process 0 (the one that writes metrics, logs and HF exports)."""
    return jax.process_index() == 0


def process_rows(global_rows: int, mesh=None) -> np.ndarray:
    """Indices of the global batch rows this process feeds (sorted; an int array).

    With ``mesh``: exactly the rows whose shards live on this process's devices under the batch
    sharding of the rules table ('activation_batch'), so ``batch[process_rows(R, mesh)]`` is what
    ``jax.make_array_from_process_local_data`` expects (rows replicated across processes are fed
    by each of them). Without a mesh: an even contiguous split by process index.
    """
    global_rows = int(global_rows)
    if global_rows < 1:
        raise ValueError(f"global_rows must be >= 1, got {global_rows}")
    if mesh is None:
        n, p = jax.process_count(), jax.process_index()
        if global_rows % n:
            raise ValueError(f"{global_rows} rows do not split evenly over {n} processes")
        per = global_rows // n
        return np.arange(p * per, (p + 1) * per)
    from jax.sharding import NamedSharding

    from orchestra_jax.sharding import logical_to_spec
    spec = logical_to_spec(("activation_batch",), shape=(global_rows,),
                           mesh_shape=dict(mesh.shape))
    sharding = NamedSharding(mesh, spec)
    rows: set[int] = set()
    for idx in sharding.addressable_devices_indices_map((global_rows,)).values():
        rows.update(range(*idx[0].indices(global_rows)))
    return np.asarray(sorted(rows), dtype=np.int64)

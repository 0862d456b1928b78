"""sglang-jax's server plus an in-process weight update. Runs in the sglang-jax venv, as a script.

    .venv-sglang/bin/python orchestra_jax/rollout/sgl_jax_server.py <sgl_jax.launch_server args>

Nothing in orchestra_jax imports this file (it needs ``sgl_jax``, which lives in its own Python
3.12 venv); :mod:`orchestra_jax.rollout.launcher` runs it for every sglang-jax server (unless
``config.stock_entry``).

sglang-jax 0.1.0rc0 has no ``/update_weights_from_*`` endpoint (sglang-jax issue #873). Its
scheduler already calls the jitted model as ``jitted_run_model(model_def, state_def,
model_runner.model_state_leaves, ...)`` and reads ``model_state_leaves`` on every call, so new
weights of the same shapes need no recompile. This script patches ``Scheduler.set_internal_state``
(in the scheduler process: the patch runs at import, and multiprocessing's spawn re-runs this file
as ``__mp_main__`` in every child) so that::

    POST /set_internal_state {"request_id": "...",
                              "state_data": {"orchestra_update_weights_from_disk":
                                             {"model_path": "/dev/shm/.../v000002"}}}

loads the checkpoint with sglang-jax's own model loader, checks every leaf keeps its shape and
dtype, swaps ``model_state_leaves`` and flushes the radix cache. It refuses (success false) while
requests are queued or running: call it between rollout batches. It also tears the server down
when the launching process dies (see ``_watch_parent``). Everything else is the stock
``sgl_jax.launch_server``.
"""

import os
import sys

# Run as a script, sys.path[0] is orchestra_jax/rollout: keep its modules (engine.py, ...) from
# shadowing top-level imports of sgl_jax or its dependencies.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

UPDATE_KEY = "orchestra_update_weights_from_disk"


def _update_weights(scheduler, model_path: str) -> str:
    import time

    import jax
    from flax import nnx

    t0 = time.perf_counter()
    can_flush, why = scheduler._can_flush_cache()
    if not can_flush:
        raise RuntimeError(f"server busy, update weights between batches ({why})")
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise FileNotFoundError(f"no config.json in {model_path}")
    runner = scheduler.tp_worker.worker.model_runner
    old_leaves = list(runner.model_state_leaves)
    model_config = runner.model_config
    old_path = model_config.model_path
    model_config.model_path = model_path
    try:
        model = runner.model_loader.load_model(model_config=model_config)
        _, state = nnx.split(model)
        new_leaves = jax.tree_util.tree_flatten(state)[0]
        if len(new_leaves) != len(old_leaves):
            raise ValueError(f"new checkpoint has {len(new_leaves)} weight leaves, "
                             f"the served model {len(old_leaves)}")
        swapped = []
        for i, (new, old) in enumerate(zip(new_leaves, old_leaves)):
            if isinstance(new, jax.ShapeDtypeStruct):  # dead placeholder (see initialize_jit)
                swapped.append(old)
                continue
            if new.shape != old.shape or new.dtype != old.dtype:
                raise ValueError(f"weight leaf {i}: {new.shape} {new.dtype} != served "
                                 f"{old.shape} {old.dtype}")
            swapped.append(jax.device_put(new, old.sharding))
    except BaseException:
        model_config.model_path = old_path
        raise
    jax.block_until_ready(swapped)
    runner.model_state_leaves = swapped
    runner.model = model
    ok, msg, _ = scheduler.flush_cache()
    if not ok:
        raise RuntimeError(f"weights swapped but the cache flush failed: {msg}")
    return f"loaded {model_path} in {time.perf_counter() - t0:.3f} s"


def _patch() -> None:
    import logging

    from sgl_jax.srt.managers import scheduler as scheduler_mod
    from sgl_jax.srt.managers.io_struct import SetInternalStateReqOutput

    logger = logging.getLogger("orchestra_jax.sgl_jax_server")
    original = scheduler_mod.Scheduler.set_internal_state
    if getattr(original, "_orchestra_patched", False):
        return

    def set_internal_state(self, recv_req):
        request = (recv_req.state_data or {}).get(UPDATE_KEY)
        if request is None:
            return original(self, recv_req)
        try:
            message = _update_weights(self, str(request["model_path"]))
            logger.info("[orchestra] %s", message)
            return SetInternalStateReqOutput(request_id=recv_req.request_id, success=True,
                                             error_msg=message)
        except Exception as e:  # reported to the caller, the server keeps serving old weights
            logger.exception("[orchestra] weight update failed")
            return SetInternalStateReqOutput(request_id=recv_req.request_id, success=False,
                                             error_msg=f"{type(e).__name__}: {e}")

    set_internal_state._orchestra_patched = True
    scheduler_mod.Scheduler.set_internal_state = set_internal_state


def _cleanup_for_dead_launcher() -> None:
    """Does what the dead launcher's ``SGLangServer.stop()`` would have done after the kill.

    Removes the private ``TMPDIR`` the launcher made (``orchestra_sglang_*``) and unlinks the
    multiprocessing semaphores mapped by this process group (found by inode in
    ``/proc/<pid>/maps``: SIGKILL takes Python's resource tracker down before it can unlink them).
    Called just before the group is killed, so nothing that still needs them survives.
    """
    import shutil

    group = os.getpgrp()
    inodes = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != group:
                continue
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 6 and fields[5].startswith("/dev/shm/sem."):
                        inodes.add(int(fields[4]))
        except (OSError, ValueError):
            continue
    if inodes and os.path.isdir("/dev/shm"):
        for name in os.listdir("/dev/shm"):
            path = os.path.join("/dev/shm", name)
            try:
                if name.startswith("sem.") and os.stat(path).st_ino in inodes:
                    os.unlink(path)
            except OSError:
                continue
    tmpdir = os.environ.get("TMPDIR", "")
    if os.path.basename(tmpdir.rstrip("/")).startswith("orchestra_sglang_"):
        shutil.rmtree(tmpdir, ignore_errors=True)


def _watch_parent() -> None:
    """Tears the server's process group down when the process that launched it dies.

    The launcher starts the server in its own session (so it can kill the whole group), which
    also means a trainer that is SIGKILLed would leave it running. ``ORCHESTRA_PARENT_PID`` is the
    launcher's pid: once this process is re-parented, remove the launcher's temp dir and the
    group's semaphores, SIGTERM the group, SIGKILL after 5 s.
    """
    import signal
    import threading
    import time

    parent = int(os.environ.get("ORCHESTRA_PARENT_PID", "0") or 0)
    if parent <= 0:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        try:
            _cleanup_for_dead_launcher()
        except Exception:  # never let clean-up keep the orphaned server alive
            pass
        group = os.getpgrp()
        os.killpg(group, signal.SIGTERM)
        time.sleep(5.0)
        os.killpg(group, signal.SIGKILL)

    threading.Thread(target=watch, name="orchestra-parent-watch", daemon=True).start()


_patch()

if __name__ == "__main__":
    from sgl_jax.launch_server import main

    _watch_parent()
    main()

"""Start and stop an SGLang rollout server as a child process group.

Two backends, chosen by ``config.backend``:

* ``"sglang"`` — upstream SGLang (PyTorch/CUDA) on GPU: ``python -m sglang.launch_server``.
* ``"sglang_jax"`` — sglang-jax on CPU/TPU from its own Python 3.12 venv (``.venv-sglang``; it
    pins transformers 4.57 / flax 0.12.4 and cannot share the main venv), started through
    ``orchestra_jax/rollout/sgl_jax_server.py``: the stock ``sgl_jax.launch_server`` plus an
    in-process weight-update hook and a watchdog that takes the server down if this process dies
    (even by SIGKILL, when ``atexit`` cannot run).

:class:`SGLangServer` is a context manager. It picks a free port when ``config.port == 0``, starts
the server in a NEW session (its own process group) with stdout+stderr captured to a log file, waits
for ``GET /health`` up to ``config.startup_timeout_s`` seconds and, if the process dies or the
deadline passes, tears everything down and raises :class:`ServerStartError` with the log tail.
:meth:`SGLangServer.stop` sends SIGTERM to the whole process group (and to every descendant that
left it), waits ``config.shutdown_grace_s`` seconds, then SIGKILLs whatever is left. An ``atexit``
hook stops servers the caller forgot.

sglang-jax reads checkpoints with transformers 4.57, so :func:`prepare_checkpoint_for_sglang_jax`
patches a transformers-5 checkpoint in place (adds ``rope_theta``/``torch_dtype`` to config.json,
``tokenizer_class`` ``TokenizersBackend`` -> ``PreTrainedTokenizerFast``). Both edits are harmless for
transformers 5.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Optional

import httpx

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

_LIVE_SERVERS: "weakref.WeakSet[SGLangServer]" = weakref.WeakSet()


class ServerStartError(RuntimeError):
    """The server process exited or did not become healthy in time; message holds the log tail."""


# ---------------------------------------------------------------------------------------------
# Checkpoint preparation
# ---------------------------------------------------------------------------------------------

def prepare_checkpoint_for_sglang_jax(path: str | os.PathLike) -> pathlib.Path:
    """Makes a transformers-5 checkpoint loadable by transformers 4.57 (sglang-jax), in place.

    * config.json: adds ``rope_theta`` (from ``rope_parameters``) and ``torch_dtype`` (from ``dtype``)
      when missing.
    * tokenizer_config.json (if present): ``tokenizer_class: TokenizersBackend`` (transformers 5 only)
      becomes ``PreTrainedTokenizerFast``.

    Idempotent. Returns the checkpoint path. Raises FileNotFoundError if config.json is missing.
    """
    path = pathlib.Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in checkpoint dir {path}")
    cfg = json.loads(cfg_path.read_text())
    changed = False
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and isinstance(rope, dict) and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
        changed = True
    if "torch_dtype" not in cfg and "dtype" in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
        changed = True
    if changed:
        _atomic_write_json(cfg_path, cfg)
    tok_path = path / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text())
        if tok.get("tokenizer_class") in ("TokenizersBackend", None) and (path / "tokenizer.json").is_file():
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"
            _atomic_write_json(tok_path, tok)
    return path


def _atomic_write_json(path: pathlib.Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def resolve_python(python: str) -> str:
    """``config.python`` may be absolute, relative to the repo root, or empty (= this interpreter)."""
    if not python:
        return sys.executable
    p = pathlib.Path(python)
    if not p.is_absolute():
        p = REPO_ROOT / p
    return str(p)


def build_command(config: Any, port: int, model_path: Optional[str] = None) -> list[str]:
    """The server command line for ``config`` (see configs/sglang_cpu.py, configs/sglang_gpu.py).

    Only flags whose config value is set (not None/empty/False) are emitted, so a config can leave
    a limit to the server's default. ``config.extra_args`` (list of str) is appended verbatim.
    """
    backend = config.backend
    if backend == "sglang_jax":
        # stock sgl_jax.launch_server + the in-process weight-update hook and the
        # exit-with-the-launcher watchdog (sgl_jax_server.py); config.stock_entry skips both.
        entry = ([str(pathlib.Path(__file__).with_name("sgl_jax_server.py"))]
                 if not config.get("stock_entry", False) else ["-m", "sgl_jax.launch_server"])
    elif backend == "sglang":
        entry = ["-m", "sglang.launch_server"]
    else:
        raise ValueError(f"unknown server backend {backend!r} (expected 'sglang_jax' or 'sglang')")
    model = str(model_path or config.model_path)
    if not model:
        raise ValueError("config.model_path is empty: the server needs a checkpoint directory")
    cmd = [resolve_python(config.get("python", "")), *entry,
           "--model-path", model, "--host", config.get("host", "127.0.0.1"), "--port", str(port)]
    flags = {
        "device": "--device",
        "dtype": "--dtype",
        "attention_backend": "--attention-backend",
        "tp_size": "--tp-size",
        "mem_fraction_static": "--mem-fraction-static",
        "max_total_tokens": "--max-total-tokens",
        "max_running_requests": "--max-running-requests",
        "chunked_prefill_size": "--chunked-prefill-size",
        "context_length": "--context-length",
        "random_seed": "--random-seed",
        "log_level": "--log-level",
        "tokenizer_path": "--tokenizer-path",
    }
    for key, flag in flags.items():
        value = config.get(key, None)
        if value is not None and value != "":
            cmd += [flag, str(value)]
    switches = {
        "disable_precompile": "--disable-precompile",
        "skip_server_warmup": "--skip-server-warmup",
        "disable_radix_cache": "--disable-radix-cache",
        "disable_overlap_schedule": "--disable-overlap-schedule",
        "skip_tokenizer_init": "--skip-tokenizer-init",
        "enable_deterministic_sampling": "--enable-deterministic-sampling",
        "enable_deterministic_inference": "--enable-deterministic-inference",
        "enable_memory_saver": "--enable-memory-saver",
    }
    for key, flag in switches.items():
        if config.get(key, False):
            cmd.append(flag)
    cmd += [str(a) for a in (config.get("extra_args", None) or [])]
    return cmd


# ---------------------------------------------------------------------------------------------
# Process-group helpers
# ---------------------------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (via psutil when available, else /proc scanning)."""
    try:
        import psutil
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    except ImportError:  # pragma: no cover - psutil ships with the main venv
        children: dict[int, list[int]] = {}
        for entry in pathlib.Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        out, todo = [], [pid]
        while todo:
            for c in children.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out


def group_pids(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is ``pgid`` (reads /proc)."""
    out = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def shm_inodes(pids: list[int]) -> set[int]:
    """Inodes of the POSIX semaphores (``/dev/shm/sem.*``) mapped by ``pids`` (``/proc/<pid>/maps``).

    A named semaphore (Python multiprocessing's ``sem.mp-*``) is mapped under the temp name glibc
    created it with (``sem.<6 random chars>``, since deleted), so only its inode identifies it.
    """
    out: set[int] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) >= 6 and fields[5].startswith("/dev/shm/sem."):
                        out.add(int(fields[4]))
        except (OSError, ValueError):
            continue
    return out


def unlink_semaphores(inodes: set[int]) -> list[str]:
    """Removes ``/dev/shm/sem.*`` files whose inode is in ``inodes``; returns the names removed.

    sglang-jax's processes create multiprocessing semaphores whose names only its resource tracker
    unlinks; a server killed by SIGKILL (crash, restart after a short grace) takes the tracker with
    it and the names stay in /dev/shm forever. Only semaphores the server's own processes had mapped
    are touched (call once they are all dead).
    """
    removed: list[str] = []
    shm = pathlib.Path("/dev/shm")
    if not inodes or not shm.is_dir():
        return removed
    for entry in shm.glob("sem.*"):
        try:
            if entry.stat().st_ino in inodes:
                entry.unlink()
                removed.append(entry.name)
        except OSError:
            continue
    return removed


def _signal_all(pgid: int, pids: list[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------

class SGLangServer:
    """An SGLang / sglang-jax server process started from an ml_collections config.

    Usage::

        with SGLangServer(configs.sglang_cpu.get_config()) as server:   # blocks until healthy
            engine = SGLangEngine([server.url])
            ...

    Attributes after :meth:`start`: ``url`` (``http://host:port``), ``port``, ``pid`` (= process
    group id), ``log_path``, ``model_path``, ``startup_s`` (seconds from spawn to healthy).
    """

    def __init__(self, config: Any, *, model_path: Optional[str] = None,
                 log_path: Optional[str | os.PathLike] = None):
        self.config = config
        self.model_path = str(model_path or config.model_path)
        self._log_path_arg = log_path or config.get("log_path", None)
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self.log_path: Optional[pathlib.Path] = None
        self.startup_s: Optional[float] = None
        self._known_pids: set[int] = set()
        self._shm_inodes: set[int] = set()   # /dev/shm files the server's processes mapped
        self._tmpdir: Optional[str] = None
        self._next_port: Optional[int] = None
        self._lock = threading.Lock()
        _LIVE_SERVERS.add(self)

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "SGLangServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        """The command line :meth:`start` would run (port 0 shown when it is not chosen yet)."""
        return build_command(self.config, self.port or self.config.get("port", 0), self.model_path)

    def start(self) -> "SGLangServer":
        """Spawns the server and blocks until ``/health`` answers 200 (or raises ServerStartError)."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                raise RuntimeError(f"server already running (pid {self.proc.pid}, {self.url})")
            cfg = self.config
            if cfg.backend == "sglang_jax" and cfg.get("prepare_checkpoint", True):
                prepare_checkpoint_for_sglang_jax(self.model_path)
            self.port = (self._next_port or cfg.get("port", 0)
                         or free_port(cfg.get("host", "127.0.0.1")))
            cmd = build_command(cfg, self.port, self.model_path)
            self.url = f"http://{cfg.get('host', '127.0.0.1')}:{self.port}"
            self.log_path = self._resolve_log_path()
            env = dict(os.environ)
            # The main process's JAX/XLA settings (8 fake devices etc.) must not leak into the server.
            for key in ("XLA_FLAGS", "PYTHONPATH", "VIRTUAL_ENV"):
                env.pop(key, None)
            env.update({str(k): str(v) for k, v in (cfg.get("env", None) or {}).items()})
            env["ORCHESTRA_PARENT_PID"] = str(os.getpid())  # sgl_jax_server.py exits with us
            python = pathlib.Path(cmd[0])
            if not python.exists():
                raise ServerStartError(
                    f"server python {python} does not exist; for sglang-jax run `make sglang-venv` "
                    f"(creates .venv-sglang) or set config.python")
            # The server's IPC sockets / temp files live in a private dir removed by stop().
            self._tmpdir = tempfile.mkdtemp(prefix="orchestra_sglang_")
            env["TMPDIR"] = self._tmpdir
            log_file = open(self.log_path, "ab")
            log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: "
                           f"{shlex.join(cmd)}\n".encode())
            log_file.flush()
            t0 = time.perf_counter()
            try:
                self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, cwd=str(REPO_ROOT),
                                             start_new_session=True)
            except BaseException:
                self._remove_tmpdir()
                raise
            finally:
                log_file.close()
            self._known_pids = {self.proc.pid}
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def _resolve_log_path(self) -> pathlib.Path:
        if self._log_path_arg:
            p = pathlib.Path(self._log_path_arg)
        else:
            log_dir = pathlib.Path(self.config.get("log_dir", "") or (REPO_ROOT / "runs" / "sglang_logs"))
            p = log_dir / f"server_{os.getpid()}_{id(self):x}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _wait_healthy(self, t0: float) -> None:
        timeout = float(self.config.get("startup_timeout_s", 180.0))
        deadline = t0 + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                self._remember_descendants()
                code = self.proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"server exited with code {code} before becoming healthy "
                        f"(log {self.log_path}):\n{self.log_tail()}")
                try:
                    if client.get(self.url + "/health").status_code == 200:
                        self._remember_shm()
                        return
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > deadline:
                    raise ServerStartError(
                        f"server not healthy after {timeout:.0f} s at {self.url} "
                        f"(log {self.log_path}):\n{self.log_tail()}")
                time.sleep(0.25)

    def _remember_descendants(self) -> None:
        if self.proc is not None:
            self._known_pids.update(_descendants(self.proc.pid))

    def _remember_shm(self) -> None:
        self._shm_inodes |= shm_inodes(self.process_ids())

    def _remove_tmpdir(self) -> None:
        tmpdir, self._tmpdir = self._tmpdir, None
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def is_alive(self) -> bool:
        """True while the server's main process runs."""
        return self.proc is not None and self.proc.poll() is None

    def process_ids(self) -> list[int]:
        """Live pids that belong to this server: its process group plus known descendants."""
        if self.proc is None:
            return []
        self._remember_descendants()
        pids = set(group_pids(self.proc.pid)) | {p for p in self._known_pids if _alive(p)}
        return sorted(pids)

    def stop(self, grace_s: Optional[float] = None) -> None:
        """SIGTERM to the process group and every known descendant; SIGKILL after ``grace_s``
        seconds (default ``config.shutdown_grace_s``).

        Returns once no process of the server is alive (or after a final SIGKILL sweep). Then
        removes the server's private TMPDIR and the multiprocessing semaphores its processes left
        in /dev/shm. Safe to call twice and on a server that already died.
        """
        with self._lock:
            proc = self.proc
            if proc is None:
                self._remove_tmpdir()
                return
            pgid = proc.pid
            self._remember_descendants()
            grace = float(self.config.get("shutdown_grace_s", 10.0) if grace_s is None else grace_s)
            pids = self.process_ids()
            self._shm_inodes |= shm_inodes(pids)
            if pids:
                _signal_all(pgid, pids, signal.SIGTERM)
                deadline = time.perf_counter() + grace
                while time.perf_counter() < deadline:
                    proc.poll()  # reap the leader so it does not linger as a zombie
                    if not self.process_ids():
                        break
                    time.sleep(0.1)
            for _ in range(50):
                left = self.process_ids()
                if not left:
                    break
                _signal_all(pgid, left, signal.SIGKILL)
                proc.poll()
                time.sleep(0.1)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed above
                pass
            all_dead = not self.process_ids()
            self.proc = None
            self._known_pids = set()
            self._remove_tmpdir()
            if all_dead:  # nobody can still use them
                unlink_semaphores(self._shm_inodes)
            self._shm_inodes = set()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Simulates a crash: sends ``sig`` to the whole group without waiting or cleaning up."""
        if self.proc is not None:
            self._remember_descendants()
            pids = self.process_ids()
            self._shm_inodes |= shm_inodes(pids)
            _signal_all(self.proc.pid, pids, sig)

    def restart(self, model_path: Optional[str] = None) -> float:
        """Stops the server and starts it again (optionally on a new checkpoint).

        The same port is reused when it is still free, so clients keep their URL. Returns the
        seconds taken (stop + start + healthy).
        """
        t0 = time.perf_counter()
        port = self.port
        # sglang-jax drains for ~4 s after SIGTERM; a restart between batches has nothing to drain.
        self.stop(grace_s=self.config.get("restart_grace_s", 1.0))
        if model_path is not None:
            self.model_path = str(model_path)
        host = self.config.get("host", "127.0.0.1")
        self._next_port = port if port and _port_free(host, port) else None
        try:
            self.start()
        finally:
            self._next_port = None
        return time.perf_counter() - t0

    def log_tail(self, n_lines: int = 60) -> str:
        """The last ``n_lines`` lines of the server log ('' if there is none yet)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-n_lines:])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@atexit.register
def _stop_all_servers() -> None:
    for server in list(_LIVE_SERVERS):
        try:
            server.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass

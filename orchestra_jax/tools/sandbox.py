"""Secure Python code interpreter: run untrusted code under bubblewrap + rlimits + cgroup v1 limits.

`run_python(code)` writes `code` to `/sandbox/main.py` inside a fresh bubblewrap sandbox and runs it
with the host interpreter (default: the one running this process, e.g. `.venv/bin/python`), so numpy,
scipy and sympy import inside. Isolation layers:

- bubblewrap (`bwrap`): `--unshare-all` (private network / PID / IPC / UTS / cgroup namespaces: no
  network at all, only the sandbox's own processes in /proc), a new user namespace with uid/gid 65534,
  all capabilities dropped, no nested user namespaces, `--new-session`, `--die-with-parent`,
  `--clearenv`, and (x86_64) a seccomp filter that denies ptrace, bpf, keyctl, io_uring, mount,
  namespace and module syscalls (see sandbox_limits.py). The mount view (sandbox_mounts.py) holds only /usr (+ the /bin, /lib... links), a few /etc files, the
  interpreter's install prefix at /opt/python and the venv's site-packages at /opt/site-packages/<i>
  (all read-only), a fresh /proc and read-only /dev, and three writable tmpfs capped at memory_mb
  each: /tmp, /dev/shm and the cwd /sandbox.
  The project dir, /work, /root, $HOME and the host environment are not visible.
- rlimits set by a tiny launcher inside the sandbox just before the user's program starts:
  RLIMIT_CPU (ceil(timeout_s) + 1 s), RLIMIT_AS (memory_mb MiB per process), RLIMIT_NPROC,
  RLIMIT_FSIZE (max_file_mb MiB per file), RLIMIT_CORE = 0.
- cgroup v1 `pids` (pids.max = max_procs + 2 for bwrap's own two processes) and `memory`
  (memory.limit_in_bytes = memsw limit = memory_mb MiB for the whole sandbox, tmpfs included):
  RLIMIT_NPROC is not enforced for root, so this is what bounds a fork bomb when running as root.
  The cgroups are created per run (`orchestra_sandbox_<uuid>`, nested under this process's own
  cgroup) and removed afterwards. If they cannot be created (non-root user, cgroup v2-only host) the
  run falls back to rlimits only and says so in `SandboxResult.cgroups`.

At `timeout_s` (wall clock) everything in the cgroup, the launcher's session and (through the PID
namespace) every orphaned or daemonised descendant is SIGKILLed. stdout / stderr are read
concurrently; each keeps its first and last `max_output_bytes // 2` bytes (`truncated` is set), and a
program whose output exceeds max(16 * max_output_bytes, 4 MiB) in total is killed
(`killed_reason="output_limit"`). Bytes are decoded as UTF-8 with errors="replace".

Without bubblewrap, `run_python` raises `SandboxUnavailable` unless `allow_unisolated=True` is
passed explicitly; then the code runs as a plain subprocess with the same rlimits / cgroups, a clean
environment and a temporary cwd (`SandboxResult.isolated` is False).

Cost: the pricing sheet owns the sandbox's $/s price; this module only reports `duration_s`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

from orchestra_jax.tools.sandbox_mounts import (_INNER_CWD, _SANDBOX_UID, SandboxError,
                                                SandboxUnavailable, _find_bwrap, _memfd,
                                                _probe_bwrap, _python_layout, _sandbox_env,
                                                _system_mount_args, sandbox_available)
from orchestra_jax.tools.sandbox_limits import (Cgroups, OutputCapture, count_user_processes,
                                                seccomp_filter)

__all__ = [
    "SandboxConfig",
    "SandboxResult",
    "SandboxUnavailable",
    "SandboxError",
    "run_python",
    "arun_python",
    "sandbox_available",
]

_log = logging.getLogger(__name__)
_warned_no_cgroups = False

_BWRAP_OWN_PIDS = 2          # bwrap's outer monitor + the PID-namespace init (reaper)
_KILL_OUTPUT_FACTOR = 16     # kill when total output > this many times max_output_bytes ...
_KILL_OUTPUT_MIN = 4 << 20   # ... and more than this many bytes
_DRAIN_AFTER_EXIT_S = 1.0    # how long to keep draining pipes after the program is gone

_INSTALL_HINT = ("install it with `apt-get install bubblewrap` (Debian/Ubuntu) or "
                 "`dnf install bubblewrap`, or pass allow_unisolated=True to run code WITHOUT "
                 "isolation (trusted code only)")

# Runs inside the sandbox with `python -I -S -c`: lower the rlimits, then exec the real program.
_LAUNCHER = r"""
import os, resource, sys
cpu_s, as_b, nproc, fsize_b = (int(v) for v in sys.argv[1:5])
def lim(res, soft, hard=None):
    hard = soft if hard is None else hard
    cur_soft, cur_hard = resource.getrlimit(res)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(res, (min(soft, hard), hard))
lim(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
lim(resource.RLIMIT_AS, as_b)
lim(resource.RLIMIT_NPROC, nproc)
lim(resource.RLIMIT_FSIZE, fsize_b)
lim(resource.RLIMIT_CORE, 0)
os.execv(sys.argv[5], sys.argv[5:])
"""

# Host-side wrapper: join the cgroups and volunteer for the OOM killer *before* exec'ing bwrap, so
# every sandbox process is accounted from its first instruction.
_JOIN_CGROUPS_SH = (
    'echo 1000 > /proc/self/oom_score_adj 2>/dev/null; '
    'IFS=:; for f in $ORCHESTRA_SANDBOX_CGROUPS; do '
    'echo $$ > "$f" || { echo "orchestra sandbox: cannot join cgroup $f" >&2; exit 125; }; '
    'done; unset IFS ORCHESTRA_SANDBOX_CGROUPS; exec "$@"'
)


_KILL_MESSAGES = {"output_limit": "output limit exceeded", "memory": "memory limit exceeded",
                  "cpu_time": "CPU time limit exceeded", "file_size": "file size limit exceeded"}


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Knobs of `run_python` (units in the names: seconds, MiB, bytes)."""

    timeout_s: float = 10.0          # wall-clock limit for the whole run
    memory_mb: int = 512             # RLIMIT_AS per process and cgroup memory limit for the sandbox
    max_output_bytes: int = 64_000   # per stream (stdout, stderr) kept in the result
    max_procs: int = 32              # processes + threads the program may have at once
    max_file_mb: int = 16            # largest file the program may write
    python: Optional[str] = None     # host interpreter; None = sys.executable
    allow_unisolated: bool = False   # run without bubblewrap if it is unavailable

    def run(self, code: str) -> "SandboxResult":
        """`run_python(code, **fields)`."""
        return run_python(code, **dataclasses.asdict(self))

    async def arun(self, code: str) -> "SandboxResult":
        """Async `run` (runs in a worker thread)."""
        return await arun_python(code, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    returncode: the program's exit status; 128+N when a signal N killed it inside the sandbox;
      negative (-9) when the host killed the sandbox (timeout / output limit).
    killed_reason: None, "timeout", "output_limit", "memory" (cgroup OOM kill), "cpu_time"
      (RLIMIT_CPU) or "file_size" (SIGXFSZ).
    duration_s: wall-clock seconds from start to exit (what the sandbox is billed for).
    isolated: ran inside bubblewrap. cgroups: the pids/memory cgroup limits were applied.
    """

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool
    duration_s: float
    truncated: bool
    killed_reason: Optional[str]
    isolated: bool
    cgroups: bool = False

    @property
    def ok(self) -> bool:
        """Exited with status 0 and was not killed."""
        return self.returncode == 0 and self.killed_reason is None

    def format_observation(self) -> str:
        """Plain-text rendering for a tool-call observation."""
        parts = []
        if self.stdout:
            parts.append(self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if self.killed_reason == "timeout":
            parts.append(f"[killed: time limit exceeded after {self.duration_s:.1f} s]")
        elif self.killed_reason is not None:
            parts.append(f"[killed: {_KILL_MESSAGES.get(self.killed_reason, self.killed_reason)}]")
        elif self.returncode != 0:
            parts.append(f"[exit status {self.returncode}]")
        if self.truncated:
            parts.append("[output truncated]")
        return "\n".join(parts) if parts else "[no output]"


# --------------------------------------------------------------------------- interpreter layout


# --------------------------------------------------------------------------- run


def _kill_tree(proc: subprocess.Popen, cgroups: Cgroups) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # the launcher's session: wrapper shell / bwrap
    except (ProcessLookupError, PermissionError):
        pass
    if cgroups.active:
        cgroups.kill_all()                      # everything that joined the cgroups


def _validate(code: str, timeout_s: float, memory_mb: int, max_output_bytes: int, max_procs: int,
              max_file_mb: int) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    for name, v, lo in (("timeout_s", timeout_s, 0.0), ("memory_mb", memory_mb, 64),
                        ("max_output_bytes", max_output_bytes, 2), ("max_procs", max_procs, 1),
                        ("max_file_mb", max_file_mb, 0)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < lo \
                or (name == "timeout_s" and v == 0):
            raise ValueError(f"{name} must be a finite number >= {lo}" +
                             (" and > 0" if name == "timeout_s" else "") + f", got {v!r}")


def run_python(code: str, timeout_s: float = 10.0, memory_mb: int = 512, *,
               max_output_bytes: int = 64_000, max_procs: int = 32, max_file_mb: int = 16,
               python: Optional[str] = None, allow_unisolated: bool = False) -> SandboxResult:
    """Run Python source `code` in a fresh sandbox and return its captured output.

    timeout_s: wall-clock seconds; memory_mb: MiB per process (RLIMIT_AS) and for the whole sandbox
    (cgroup); max_output_bytes: bytes kept per stream; max_procs: tasks (processes + threads);
    max_file_mb: MiB per written file; python: host interpreter whose install + site-packages are
    mounted read-only (default sys.executable). Raises SandboxUnavailable if bubblewrap is missing
    or broken and allow_unisolated is False; ValueError/TypeError for bad limits. Problems in the
    code itself (syntax errors, NUL bytes, crashes) come back in the result, never as exceptions.
    """
    _validate(code, timeout_s, memory_mb, max_output_bytes, max_procs, max_file_mb)
    bwrap = _find_bwrap()
    problem = "bubblewrap (`bwrap`) was not found on PATH" if bwrap is None else None
    if bwrap is not None:
        err = _probe_bwrap(bwrap)
        if err is not None:
            problem = f"bubblewrap at {bwrap} cannot create the sandbox namespaces: {err}"
    if problem is not None and not allow_unisolated:
        raise SandboxUnavailable(f"{problem}; {_INSTALL_HINT}")
    isolated = problem is None

    layout = _python_layout(python or sys.executable)
    memory_bytes = int(memory_mb) << 20
    fsize_bytes = int(max_file_mb) << 20
    cpu_s = int(math.ceil(timeout_s)) + 1
    cgroups = Cgroups(max_pids=int(max_procs) + _BWRAP_OWN_PIDS, memory_bytes=memory_bytes)
    if not cgroups.active:
        global _warned_no_cgroups
        if not _warned_no_cgroups:
            _warned_no_cgroups = True
            _log.warning("python sandbox: %s (fork bombs are bounded by RLIMIT_NPROC only, "
                         "which root ignores)", cgroups.error)
    nproc = int(max_procs)
    if not cgroups.active and os.getuid() != 0:
        # RLIMIT_NPROC counts every process of this uid on the host, not just the sandbox's.
        nproc += count_user_processes(os.getuid())

    fds: list[int] = []
    tmpdir: Optional[str] = None
    host_env = {"PATH": "/usr/bin:/bin",
                "ORCHESTRA_SANDBOX_CGROUPS": ":".join(cgroups.procs_files())}
    try:
        if isolated:
            fds = [_memfd("main.py", code.encode("utf-8", errors="replace")),
                   _memfd("passwd", f"sandbox:x:{_SANDBOX_UID}:{_SANDBOX_UID}:sandbox:{_INNER_CWD}:"
                                    f"/usr/sbin/nologin\n".encode()),
                   _memfd("group", f"sandbox:x:{_SANDBOX_UID}:\n".encode()),
                   _memfd("hosts", b"127.0.0.1 localhost\n::1 localhost\n")]
            opts = ["--unshare-all", "--unshare-user", "--uid", str(_SANDBOX_UID),
                    "--gid", str(_SANDBOX_UID), "--cap-drop", "ALL", "--disable-userns",
                    "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox",
                    *_system_mount_args()]
            for host_dir, inner in layout.binds:
                opts += ["--ro-bind", host_dir, inner]
            opts += ["--ro-bind-data", str(fds[1]), "/etc/passwd",
                     "--ro-bind-data", str(fds[2]), "/etc/group",
                     "--ro-bind-data", str(fds[3]), "/etc/hosts",
                     "--proc", "/proc", "--dev", "/dev",
                     "--perms", "1777", "--size", str(memory_bytes), "--tmpfs", "/dev/shm",
                     "--perms", "1777", "--size", str(memory_bytes), "--tmpfs", "/tmp",
                     "--perms", "0755", "--size", str(memory_bytes), "--tmpfs", _INNER_CWD,
                     "--file", str(fds[0]), f"{_INNER_CWD}/main.py", "--chdir", _INNER_CWD,
                     # bwrap's own root and /dev tmpfs are unbounded: make them read-only, so
                     # only the size-capped /tmp, /dev/shm and /sandbox are writable.
                     "--remount-ro", "/dev", "--remount-ro", "/"]
            bpf = seccomp_filter()
            if bpf is not None:
                fds.append(_memfd("seccomp", bpf))
                opts += ["--seccomp", str(fds[-1])]
            for k, v in _sandbox_env(layout.env, _INNER_CWD).items():
                opts += ["--setenv", k, v]
            # Options go through a memfd, so /proc/1/cmdline inside shows no host paths; cwd "/"
            # keeps the host cwd out of bwrap's own environment (PWD).
            fds.append(_memfd("bwrap-args", b"".join(o.encode() + b"\0" for o in opts)))
            argv = [bwrap, "--args", str(fds[-1]), "--"]
            exe, cwd = layout.inner_exe, "/"
        else:
            tmpdir = tempfile.mkdtemp(prefix="orchestra_sandbox_")
            with open(os.path.join(tmpdir, "main.py"), "wb") as f:
                f.write(code.encode("utf-8", errors="replace"))
            host_env.update({k: v for k, v in _sandbox_env((), tmpdir).items()
                             if k not in ("PATH",)})
            argv, exe, cwd = [], layout.host_exe, tmpdir
        argv += [exe, "-I", "-S", "-c", _LAUNCHER, str(cpu_s), str(memory_bytes), str(nproc),
                 str(fsize_bytes), exe, "main.py"]
        argv = ["/bin/sh", "-c", _JOIN_CGROUPS_SH, "orchestra-sandbox", *argv]
        return _supervise(argv, host_env, cwd, fds, cgroups, timeout_s, max_output_bytes,
                          isolated)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if cgroups.active:
            cgroups.kill_all()
        cgroups.remove()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _supervise(argv: list[str], env: dict[str, str], cwd: Optional[str], fds: list[int],
               cgroups: Cgroups, timeout_s: float, max_output_bytes: int,
               isolated: bool) -> SandboxResult:
    out, err = OutputCapture(max_output_bytes), OutputCapture(max_output_bytes)
    kill_after = max(_KILL_OUTPUT_FACTOR * max_output_bytes, _KILL_OUTPUT_MIN)
    killed_reason: Optional[str] = None
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, pass_fds=fds,
                                start_new_session=True, close_fds=True)
    except OSError as e:
        raise SandboxError(f"cannot start the sandbox: {e}") from e
    deadline = start + timeout_s
    sel = selectors.DefaultSelector()
    try:
        for stream, cap in ((proc.stdout, out), (proc.stderr, err)):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, cap)
        drain_until: Optional[float] = None
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None:
                if now >= deadline:
                    killed_reason = "timeout"
                    _kill_tree(proc, cgroups)
                    drain_until = time.monotonic() + _DRAIN_AFTER_EXIT_S
                elif proc.poll() is not None:
                    # Program gone; orphans (unisolated mode) may still hold the pipes.
                    drain_until = now + _DRAIN_AFTER_EXIT_S
            elif now >= drain_until:
                _kill_tree(proc, cgroups)
                break
            limit = (drain_until if drain_until is not None else deadline) - now
            for key, _ in sel.select(timeout=max(0.0, min(limit, 0.1))):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.feed(chunk)
            if killed_reason is None and out.total + err.total > kill_after:
                killed_reason = "output_limit"
                _kill_tree(proc, cgroups)
                drain_until = time.monotonic() + _DRAIN_AFTER_EXIT_S
        try:   # the pipes can close before the program exits (it may close its own stdout)
            returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed_reason = killed_reason or "timeout"
            _kill_tree(proc, cgroups)
            returncode = proc.wait()
    finally:
        sel.close()
        if proc.poll() is None:
            _kill_tree(proc, cgroups)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    duration = time.monotonic() - start
    if returncode == 125 and b"orchestra sandbox: cannot join cgroup" in bytes(err.head):
        raise SandboxError(err.text().strip())
    if killed_reason is None:
        if cgroups.oom_killed():
            killed_reason = "memory"
        elif returncode in (128 + signal.SIGXCPU, -signal.SIGXCPU):
            killed_reason = "cpu_time"
        elif returncode in (128 + signal.SIGXFSZ, -signal.SIGXFSZ):
            killed_reason = "file_size"
    return SandboxResult(stdout=out.text(), stderr=err.text(), returncode=returncode,
                         timed_out=killed_reason == "timeout", duration_s=duration,
                         truncated=out.truncated or err.truncated, killed_reason=killed_reason,
                         isolated=isolated, cgroups=cgroups.active)


async def arun_python(code: str, timeout_s: float = 10.0, memory_mb: int = 512,
                      **kwargs) -> SandboxResult:
    """`run_python` in a worker thread, for use from asyncio rollouts."""
    return await asyncio.to_thread(run_python, code, timeout_s, memory_mb, **kwargs)

"""Resource-limit plumbing for the Python sandbox (`orchestra_jax.tools.sandbox`).

- `Cgroups`: a per-run cgroup v1 `pids` + `memory` pair (limits, member kill, OOM check, removal).
- `seccomp_filter()`: a classic-BPF seccomp program (x86_64) that makes rarely needed, kernel-attack-
  surface syscalls (ptrace, bpf, keyctl, io_uring, userfaultfd, perf_event_open, module loading,
  mount, namespace changes, ...) fail with EPERM; bwrap loads it with `--seccomp FD`.
- `OutputCapture`: bounded head + tail capture of a byte stream.
"""
from __future__ import annotations

import os
import platform
import signal
import struct
import time
import uuid
from typing import Optional

KILL_WAIT_S = 3.0   # how long to keep SIGKILLing cgroup members before giving up


# --------------------------------------------------------------------------- cgroups (v1)


def own_cgroup(controller: str) -> Optional[str]:
    """This process's cgroup v1 path for `controller` (e.g. "/" or "/process_api/x")."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if controller in ctrls.split(","):
                    return path
    except OSError:
        return None
    return None


class Cgroups:
    """Per-run cgroup v1 `pids` + `memory` groups; `self.error` says why they are off."""

    def __init__(self, max_pids: int, memory_bytes: int):
        self.dirs: dict[str, str] = {}
        self.error: Optional[str] = None
        name = f"orchestra_sandbox_{uuid.uuid4().hex}"
        try:
            for ctrl in ("pids", "memory"):
                rel = own_cgroup(ctrl)
                root = f"/sys/fs/cgroup/{ctrl}"
                if rel is None or not os.path.isfile(os.path.join(root, "cgroup.procs")):
                    raise OSError(f"cgroup v1 controller {ctrl!r} not mounted")
                path = os.path.join(root + rel, name)
                os.mkdir(path)
                self.dirs[ctrl] = path
            self._write("pids", "pids.max", str(max_pids))
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            if os.path.exists(os.path.join(self.dirs["memory"], "memory.memsw.limit_in_bytes")):
                self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes))
        except OSError as e:
            self.error = f"cgroup limits unavailable ({e}); using rlimits only"
            self.remove()
            self.dirs = {}

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def _write(self, ctrl: str, fname: str, value: str) -> None:
        with open(os.path.join(self.dirs[ctrl], fname), "w") as f:
            f.write(value)

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs.values():
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def kill_all(self) -> bool:
        """SIGKILL every member until the groups are empty; False if some survived KILL_WAIT_S."""
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def oom_killed(self) -> bool:
        d = self.dirs.get("memory")
        if d is None:
            return False
        try:
            with open(os.path.join(d, "memory.oom_control")) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and int(v) > 0:
                        return True
        except (OSError, ValueError):
            pass
        return False

    def remove(self) -> None:
        for d in list(self.dirs.values()):
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:     # EBUSY while the last members are being reaped
                    self.kill_all()
                    time.sleep(0.01)


# --------------------------------------------------------------------------- output capture


class OutputCapture:
    """Keeps the first and last `cap // 2` bytes of a stream and counts the rest."""

    def __init__(self, cap: int):
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.half:
                del self.tail[: len(self.tail) - self.half]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + min(len(self.tail), self.half)

    def text(self) -> str:
        tail = bytes(self.tail[-self.half:]) if self.tail else b""
        if self.truncated:
            dropped = self.total - len(self.head) - len(tail)
            body = bytes(self.head) + f"\n... [{dropped} bytes truncated] ...\n".encode() + tail
        else:
            body = bytes(self.head) + tail
        return body.decode("utf-8", errors="replace")


def count_user_processes(uid: int) -> int:
    """Number of processes on this host owned by `uid` (RLIMIT_NPROC counts all of them)."""
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


# --------------------------------------------------------------------------- seccomp (x86_64)

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_EPERM = 1
# x86_64 syscall numbers denied inside the sandbox (none is needed by ordinary Python / numpy code).
_DENIED_X86_64 = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "vhangup": 153, "pivot_root": 155,
    "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "nfsservctl": 180,
    "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
}


def _bpf(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def seccomp_filter() -> Optional[bytes]:
    """Raw `struct sock_filter[]` for bwrap's `--seccomp`, or None on non-x86_64 hosts.

    Non-x86_64 ABIs (i386 via int 0x80, x32) and the syscalls in `_DENIED_X86_64` get EPERM;
    everything else is allowed.
    """
    if platform.machine() != "x86_64":
        return None
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06   # BPF_LD|W|ABS, BPF_JMP|JEQ|K, JGE|K, BPF_RET|K
    nrs = sorted(set(_DENIED_X86_64.values()))
    n = len(nrs)
    # Layout: 0 load arch, 1 arch check, 2 load nr, 3 x32 check, 4..4+n-1 denies, allow, deny.
    deny_at = 4 + n + 1
    prog = [_bpf(ld_abs, 0, 0, 4),
            _bpf(jeq, 0, deny_at - 2, _AUDIT_ARCH_X86_64),
            _bpf(ld_abs, 0, 0, 0),
            _bpf(jge, deny_at - 4, 0, _X32_SYSCALL_BIT)]
    for i, nr in enumerate(nrs):
        at = 4 + i
        prog.append(_bpf(jeq, deny_at - at - 1, 0, nr))
    prog.append(_bpf(ret, 0, 0, _SECCOMP_RET_ALLOW))
    prog.append(_bpf(ret, 0, 0, _SECCOMP_RET_ERRNO | _EPERM))
    assert len(prog) == deny_at + 1 and deny_at < 256
    return b"".join(prog)

"""What a sandbox run sees: the interpreter's layout, the read-only system mounts, the clean
environment, and whether bubblewrap can build our namespaces on this machine.

Used by :mod:`orchestra_jax.tools.sandbox` (which owns the run loop and the timeout kill).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
from typing import Optional

_SANDBOX_UID = 65534
_INNER_PREFIX = "/opt/python"
_INNER_SITE = "/opt/site-packages"
_INNER_CWD = "/sandbox"
_SYSTEM_PREFIXES = ("/usr/", "/bin/", "/lib/", "/lib64/", "/sbin/")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces, and unisolated runs were not allowed."""


class SandboxError(SandboxUnavailable):
    """The sandbox itself (not the user's code) failed to start: bad `python`, cgroup join failed.

    A subclass of SandboxUnavailable, so callers that catch that also handle this."""


@dataclasses.dataclass(frozen=True)
class _PythonLayout:
    host_exe: str                              # interpreter to run unisolated
    inner_exe: str                             # its path inside the sandbox
    binds: tuple[tuple[str, str], ...]         # (host dir, sandbox dir), read-only
    env: tuple[tuple[str, str], ...]           # LD_LIBRARY_PATH / PYTHONPATH inside


_PROBE = ("import json, os, site, sys, sysconfig; p = sysconfig.get_paths(); "
          "print(json.dumps({'base_prefix': sys.base_prefix, 'exe': os.path.realpath(sys.executable), "
          "'site': site.getsitepackages() + [p['purelib'], p['platlib']]}))")


def _is_system(path: str) -> bool:
    return (path + "/").startswith(_SYSTEM_PREFIXES)


@functools.lru_cache(maxsize=8)
def _python_layout(python: str) -> _PythonLayout:
    """Where the interpreter `python` and its site-packages live, and how to mount them."""
    try:
        out = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, timeout=60,
                             stdin=subprocess.DEVNULL, check=True, text=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxError(f"cannot inspect interpreter {python!r}: {e}") from e
    try:
        info = json.loads(out)
        base, exe = os.path.realpath(info["base_prefix"]), str(info["exe"])
        sites = [str(d) for d in info["site"]]
    except (ValueError, KeyError, TypeError) as e:
        raise SandboxError(f"cannot inspect interpreter {python!r}: it is not a Python "
                           f"interpreter (probe printed {out[:120]!r})") from e
    binds: list[tuple[str, str]] = []
    env: list[tuple[str, str]] = []
    if _is_system(exe) and _is_system(base):
        inner_exe = exe
    else:
        if not exe.startswith(base.rstrip("/") + "/"):
            raise SandboxError(f"interpreter binary {exe} lies outside its prefix {base}")
        binds.append((base, _INNER_PREFIX))
        inner_exe = _INNER_PREFIX + exe[len(base.rstrip("/")):]
        env.append(("LD_LIBRARY_PATH", _INNER_PREFIX + "/lib"))   # pyenv builds use an absolute RUNPATH
    inner_site: list[str] = []
    seen: set[str] = set()
    for d in sites:
        real = os.path.realpath(d)
        if real in seen or not os.path.isdir(real) or _is_system(real) or real.startswith(base + "/"):
            continue
        seen.add(real)
        inner = f"{_INNER_SITE}/{len(inner_site)}"
        binds.append((real, inner))
        inner_site.append(inner)
    if inner_site:
        env.append(("PYTHONPATH", ":".join(inner_site)))
    return _PythonLayout(host_exe=python, inner_exe=inner_exe, binds=tuple(binds), env=tuple(env))


# --------------------------------------------------------------------------- bubblewrap


def _find_bwrap() -> Optional[str]:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=4)
def _probe_bwrap(bwrap: str) -> Optional[str]:
    """None if `bwrap` can build our namespaces here, else its error message."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(_SANDBOX_UID), "--gid",
            str(_SANDBOX_UID), "--cap-drop", "ALL", "--disable-userns", "--die-with-parent",
            *_system_mount_args(), "--proc", "/proc", "--dev", "/dev", "--", "/bin/sh", "-c", "exit 0"]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if r.returncode != 0:
        return r.stderr.decode(errors="replace").strip() or f"exit status {r.returncode}"
    return None


def sandbox_available() -> bool:
    """Whether isolated runs work on this machine (bwrap found and able to create namespaces)."""
    bwrap = _find_bwrap()
    return bwrap is not None and _probe_bwrap(bwrap) is None


def _system_mount_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
              "/etc/localtime"):
        args += ["--ro-bind-try", f, f]
    return args


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)   # pass_fds re-enables inheritance for bwrap only
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _sandbox_env(layout_env: tuple[tuple[str, str], ...], home: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONNOUSERSITE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    env.update(dict(layout_env))
    return env

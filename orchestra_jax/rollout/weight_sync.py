"""Push the trainer's current params to SGLang rollout servers.

Every sync first exports the params as a Hugging Face checkpoint (``save_hf_checkpoint``) under
``/dev/shm`` when it exists (RAM-backed, no disk I/O), else the system temp dir, with the tokenizer
files copied next to it. Then, per mode:

* ``"disk"`` (upstream SGLang): ``POST /update_weights_from_disk {"model_path", "weight_version",
  "flush_cache": true}`` on every server. The server reloads in place, keeps its KV memory and
  CUDA graphs, and drops the now-stale radix cache.
* ``"inprocess"`` (sglang-jax with ``config.weight_update = "inprocess"``, the CPU default):
  sglang-jax 0.1.0rc0 has no weight-update endpoint (sglang-jax issue #873), so the launcher
  starts it through ``sgl_jax_server.py``, which hooks ``/set_internal_state``: the
  scheduler loads the checkpoint with sglang-jax's own loader and swaps the jitted model's weight
  leaves (same shapes → no recompile) and flushes the radix cache. Measured on the 2-core CPU box
  for the 19.8M-param test model: ~0.15 s per update (vs ~10 s for a restart). The server
  refuses while requests run, so sync between rollout batches.
* ``"restart"`` (any sglang-jax, no hook): each
  :class:`~orchestra_jax.rollout.launcher.SGLangServer` is restarted on the new checkpoint (same
  port, so clients keep their URLs); ~10 s on the test model, mostly server start-up.

``mode="auto"`` picks ``"disk"`` for ``backend == "sglang"`` and, for sglang-jax, ``"inprocess"``
or ``"restart"`` following ``config.weight_update``. Old exported checkpoints are deleted once no
server uses them (``keep_last`` newest are kept).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

import httpx

from orchestra_jax.rollout.launcher import SGLangServer, prepare_checkpoint_for_sglang_jax

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json",
                   "generation_config.json")


# The /set_internal_state key handled by sgl_jax_server.py (kept in sync by a test).
INPROCESS_UPDATE_KEY = "orchestra_update_weights_from_disk"


def _auto_mode(config: Any) -> str:
    if config.backend == "sglang":
        return "disk"
    return "inprocess" if config.get("weight_update", "restart") == "inprocess" else "restart"


class WeightSyncError(RuntimeError):
    """A server refused or failed a weight update."""


@dataclasses.dataclass
class SyncResult:
    """Timings of one sync, in seconds. ``update_s`` is the server side (endpoint or restart)."""

    version: int
    path: str
    mode: str
    export_s: float
    update_s: float
    total_s: float

    def __str__(self) -> str:
        return (f"weight sync v{self.version} ({self.mode}): export {self.export_s:.2f} s + "
                f"update {self.update_s:.2f} s = {self.total_s:.2f} s -> {self.path}")


def default_export_root() -> pathlib.Path:
    """``/dev/shm/orchestra_jax_weights`` if /dev/shm is writable, else ``$TMPDIR/...``."""
    shm = pathlib.Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / "orchestra_jax_weights"
    return pathlib.Path(tempfile.gettempdir()) / "orchestra_jax_weights"


def export_checkpoint(config: Any, params: Any, path: str | os.PathLike, *,
                      tokenizer_dir: Optional[str | os.PathLike] = None,
                      dtype: Any = None) -> pathlib.Path:
    """Writes ``params`` as an HF checkpoint at ``path`` (+ tokenizer files from ``tokenizer_dir``).

    Written to ``<path>.partial`` and renamed, so a server never sees half a checkpoint. The result
    is also patched for transformers 4.57 (sglang-jax). Returns ``path``.
    """
    from orchestra_jax.models import save_hf_checkpoint  # rollout → models (allowed direction)

    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_hf_checkpoint(config, params, tmp, dtype=dtype)
        if tokenizer_dir is not None:
            src = pathlib.Path(tokenizer_dir)
            copied = 0
            for name in TOKENIZER_FILES:
                if (src / name).is_file() and not (name == "generation_config.json"
                                                   and (tmp / name).exists()):
                    shutil.copy2(src / name, tmp / name)
                    copied += 1
            if not copied:
                raise FileNotFoundError(f"no tokenizer files in {src}")
        prepare_checkpoint_for_sglang_jax(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class WeightSync:
    """Exports params and makes every rollout server serve them.

    Args:
        servers: launched servers (needed for ``"restart"``; otherwise their URLs are used).
        urls: extra server URLs (``"disk"``/``"inprocess"``, for servers started elsewhere).
        mode: ``"auto"``, ``"disk"``, ``"inprocess"`` or ``"restart"`` (see module docstring).
        export_root: where versioned checkpoints go (default :func:`default_export_root`).
        tokenizer_dir: directory whose tokenizer files are copied into every export (sglang-jax
            needs a tokenizer unless started with ``skip_tokenizer_init``).
        keep_last: exported versions kept on disk (the one being served is always kept).
        request_timeout_s: timeout of one ``/update_weights_from_disk`` call.
    """

    def __init__(self, servers: Sequence[SGLangServer] = (), *, urls: Sequence[str] = (),
                 mode: str = "auto", export_root: Optional[str | os.PathLike] = None,
                 tokenizer_dir: Optional[str | os.PathLike] = None, keep_last: int = 1,
                 request_timeout_s: float = 600.0):
        self.servers = list(servers)
        self.extra_urls = [u.rstrip("/") for u in urls]
        if mode == "auto":
            modes = {_auto_mode(s.config) for s in self.servers} or {"disk"}
            if len(modes) > 1:
                raise ValueError(f"servers need different sync modes {sorted(modes)}; "
                                 f"pass mode explicitly")
            mode = modes.pop()
        if mode not in ("disk", "inprocess", "restart"):
            raise ValueError(f"unknown weight-sync mode {mode!r} (auto, disk, inprocess, restart)")
        if mode == "restart" and (self.extra_urls or not self.servers):
            raise ValueError("mode 'restart' needs launched SGLangServer objects (not bare URLs)")
        if mode in ("disk", "inprocess") and not (self.servers or self.extra_urls):
            raise ValueError(f"mode {mode!r} needs at least one server or URL")
        self.mode = mode
        self.export_root = pathlib.Path(export_root) if export_root else default_export_root()
        self.tokenizer_dir = tokenizer_dir
        self.keep_last = max(1, int(keep_last))
        self.request_timeout_s = request_timeout_s
        self.version = 0
        self.history: list[SyncResult] = []
        self._exported: list[pathlib.Path] = []

    def _urls(self) -> list[str]:
        return [s.url for s in self.servers if s.url] + self.extra_urls

    def sync(self, config: Any, params: Any, version: Optional[int] = None) -> SyncResult:
        """Exports ``params`` as version ``version`` (default: previous + 1) and loads it everywhere.

        Blocks until every server serves the new weights. Raises WeightSyncError if one refuses.
        """
        self.version = self.version + 1 if version is None else int(version)
        t0 = time.perf_counter()
        path = self.export_root / f"v{self.version:06d}_{os.getpid()}"
        export_checkpoint(config, params, path, tokenizer_dir=self.tokenizer_dir)
        # tracked before the update: an export whose update failed is still removed later
        self._exported.append(path)
        t1 = time.perf_counter()
        if self.mode == "disk":
            self._update_from_disk(str(path))
        elif self.mode == "inprocess":
            self._update_inprocess(str(path))
        else:
            for server in self.servers:
                server.restart(model_path=str(path))
        t2 = time.perf_counter()
        self._cleanup()
        result = SyncResult(self.version, str(path), self.mode, t1 - t0, t2 - t1, t2 - t0)
        self.history.append(result)
        log.info("%s", result)
        return result

    def _update_from_disk(self, path: str) -> None:
        body = {"model_path": path, "weight_version": str(self.version), "flush_cache": True,
                "abort_all_requests": False}
        errors = []
        with httpx.Client(timeout=self.request_timeout_s, trust_env=False) as client:
            for url in self._urls():
                try:
                    r = client.post(url + "/update_weights_from_disk", json=body)
                except httpx.HTTPError as e:
                    errors.append(f"{url}: {type(e).__name__}: {e}")
                    continue
                if r.status_code == 404:
                    errors.append(f"{url}: no /update_weights_from_disk endpoint (sglang-jax? "
                                  f"use mode='restart')")
                    continue
                try:
                    data = r.json()
                except ValueError:
                    data = {"success": False, "message": r.text[:300]}
                if r.status_code != 200 or not data.get("success", False):
                    errors.append(f"{url}: HTTP {r.status_code}: {data.get('message', data)}")
        if errors:
            raise WeightSyncError("weight update failed on " + "; ".join(errors))

    def _update_inprocess(self, path: str) -> None:
        body = {"request_id": f"weights-v{self.version}",
                "state_data": {INPROCESS_UPDATE_KEY: {"model_path": path}}}
        errors = []
        with httpx.Client(timeout=self.request_timeout_s, trust_env=False) as client:
            for url in self._urls():
                try:
                    r = client.post(url + "/set_internal_state", json=body)
                    data = r.json()
                except (httpx.HTTPError, ValueError) as e:
                    errors.append(f"{url}: {type(e).__name__}: {e}")
                    continue
                if r.status_code != 200 or not data.get("success", False):
                    errors.append(f"{url}: HTTP {r.status_code}: {data.get('error_msg') or data}")
                elif not str(data.get("error_msg", "")).startswith("loaded"):
                    # a stock sglang-jax server accepts unknown state keys and does nothing
                    errors.append(f"{url}: server ignored the update (started without the "
                                  f"sgl_jax_server.py hook? set config.weight_update='inprocess')")
        if errors:
            raise WeightSyncError("in-process weight update failed on " + "; ".join(errors))
        for server in self.servers:
            server.model_path = path  # a later restart comes back with the current weights

    def _cleanup(self) -> None:
        """Deletes the oldest exports beyond ``keep_last`` that no server is using."""
        in_use = {str(pathlib.Path(s.model_path)) for s in self.servers}
        excess = len(self._exported) - self.keep_last
        for old in list(self._exported[:max(0, excess)]):
            if str(old) not in in_use:
                self._exported.remove(old)
                shutil.rmtree(old, ignore_errors=True)

    def close(self, remove_all: bool = False) -> None:
        """Deletes exported checkpoints: those no server uses, or all (``remove_all``, once the
        servers are stopped)."""
        in_use = set() if remove_all else {str(pathlib.Path(s.model_path)) for s in self.servers}
        for p in list(self._exported):
            if str(p) not in in_use:
                shutil.rmtree(p, ignore_errors=True)
                self._exported.remove(p)

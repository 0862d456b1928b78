"""Launcher pieces that need no server: command lines, checkpoint patching, free ports."""
from __future__ import annotations

import importlib.util
import json
import socket

import pytest

from orchestra_jax.rollout.launcher import (REPO_ROOT, build_command, free_port,
                                            prepare_checkpoint_for_sglang_jax)


def _config(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def test_cpu_command_has_memory_flags_and_entry_script():
    cfg = _config("sglang_cpu")
    cfg.model_path = "/ckpt"
    cmd = build_command(cfg, 31234)
    assert cmd[0] == str(REPO_ROOT / ".venv-sglang" / "bin" / "python")
    assert cmd[1].endswith("orchestra_jax/rollout/sgl_jax_server.py")
    joined = " ".join(cmd)
    for flag in ("--model-path /ckpt", "--port 31234", "--device cpu", "--attention-backend native",
                 "--max-total-tokens", "--max-running-requests", "--chunked-prefill-size",
                 "--context-length", "--mem-fraction-static", "--disable-precompile",
                 "--skip-server-warmup", "--disable-overlap-schedule"):
        assert flag in joined, flag
    cfg.stock_entry = True
    assert build_command(cfg, 1)[1:3] == ["-m", "sgl_jax.launch_server"]


def test_gpu_command_is_upstream_sglang():
    cfg = _config("sglang_gpu")
    cfg.model_path = "/models/Qwen3-8B"
    cfg.python = "/opt/sgl/bin/python"
    cfg.extra_args = ["--enable-metrics"]
    cmd = build_command(cfg, 30000)
    assert cmd[:3] == ["/opt/sgl/bin/python", "-m", "sglang.launch_server"]
    joined = " ".join(cmd)
    assert "--tp-size 1" in joined and "--dtype bfloat16" in joined and "--mem-fraction-static 0.85" in joined
    assert "--disable-precompile" not in joined and "--device" not in joined
    assert cmd[-1] == "--enable-metrics"


def test_command_errors_are_specific():
    cfg = _config("sglang_cpu")
    with pytest.raises(ValueError, match="model_path is empty"):
        build_command(cfg, 1)
    cfg.model_path = "/x"
    cfg.backend = "vllm"
    with pytest.raises(ValueError, match="unknown server backend 'vllm'"):
        build_command(cfg, 1)


def test_prepare_checkpoint_is_idempotent(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "qwen3", "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"},
         "dtype": "bfloat16"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    for _ in range(2):
        prepare_checkpoint_for_sglang_jax(tmp_path)
        cfg = json.loads((tmp_path / "config.json").read_text())
        assert cfg["rope_theta"] == 1e6 and cfg["torch_dtype"] == "bfloat16"
        assert cfg["rope_parameters"]["rope_theta"] == 1e6  # transformers-5 keys kept
        tok = json.loads((tmp_path / "tokenizer_config.json").read_text())
        assert tok["tokenizer_class"] == "PreTrainedTokenizerFast"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        prepare_checkpoint_for_sglang_jax(tmp_path / "missing")


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_killed_server_semaphores_are_unlinked(tmp_path):
    """A SIGKILLed process group takes Python's resource tracker with it: its named
    multiprocessing semaphores stay in /dev/shm unless the launcher unlinks them."""
    import os
    import pathlib
    import signal
    import subprocess
    import sys
    import time

    from orchestra_jax.rollout.launcher import group_pids, shm_inodes, unlink_semaphores

    script = ("import multiprocessing as mp, sys, time\n"
              "lock = mp.get_context('spawn').Lock()\n"
              "print(lock._semlock.name, flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith("/mp-"), name
        sem = pathlib.Path("/dev/shm") / ("sem." + name[1:])
        assert sem.exists()
        inodes = shm_inodes(group_pids(proc.pid))
        assert sem.stat().st_ino in inodes
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while group_pids(proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert sem.exists()                      # leaked: the tracker died with the group
        assert unlink_semaphores(inodes) == [sem.name]
        assert not sem.exists()
        assert unlink_semaphores(inodes) == []   # idempotent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_missing_server_python_is_clear_and_leaves_no_tmpdir(tmp_path, monkeypatch):
    import tempfile

    from orchestra_jax.rollout.launcher import ServerStartError, SGLangServer

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = _config("sglang_cpu")
    cfg.model_path = str(tmp_path / "ckpt")
    cfg.python = str(tmp_path / "no-such-venv" / "bin" / "python")
    cfg.prepare_checkpoint = False
    cfg.log_dir = str(tmp_path / "logs")
    server = SGLangServer(cfg)
    with pytest.raises(ServerStartError, match="does not exist"):
        server.start()
    server.stop()
    assert not list(tmp_path.glob("orchestra_sglang_*"))

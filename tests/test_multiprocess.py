"""Real multi-process JAX on CPU: 2 processes × 4 fake devices == 1 process × 8 devices.

Children run tests/multiprocess_child.py through the reusable harness in
tests/multiprocess_util.py (gloo CPU collectives, a free coordinator port, a timeout on every
launch so a hung child fails the test instead of hanging the suite).
"""
import textwrap

import jax
import numpy as np
import pytest

from multiprocess_util import REPO, LaunchError, launch, read_arrays
from orchestra_jax import models
from orchestra_jax.train import distributed
from orchestra_jax.train.metrics import read_metrics

CHILD = REPO / "tests" / "multiprocess_child.py"
TIMEOUT_S = 300   # generous: a loaded 2-core box; a normal run takes well under a minute


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mp")
    ckpt = base / "ckpt_2p"
    two = launch(CHILD, [f"--save_dir={ckpt}"], num_processes=2, devices_per_process=4,
                 timeout_s=TIMEOUT_S, workdir=base / "two")
    one = launch(CHILD, [f"--restore_dir={ckpt}"], num_processes=1, devices_per_process=8,
                 timeout_s=TIMEOUT_S, workdir=base / "one")
    return base, two, one[0]


def test_topology_and_rows_per_process(runs):
    _, two, one = runs
    for rank, r in enumerate(two):
        assert r["how"] == "env" and r["process_index"] == rank
        assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 8, 4)
    assert two[0]["rows"] == list(range(8)) and two[1]["rows"] == list(range(8, 16))
    assert one["how"] == "single" and one["process_count"] == 1 and one["device_count"] == 8
    assert one["rows"] == list(range(16))
    assert two[0]["batch_sharding"] == one["batch_sharding"] == "P(('data', 'fsdp'), None)"


def test_two_processes_equal_one_process(runs):
    base, two, one = runs
    np.testing.assert_allclose(two[0]["matmul"], one["matmul"], rtol=1e-6, atol=1e-6)
    assert two[0]["matmul"] == two[1]["matmul"]
    assert two[0]["loss"] == two[1]["loss"]
    assert abs(two[0]["loss"] - one["loss"]) <= 1e-6 * abs(one["loss"])
    assert abs(two[0]["grad_norm"] - one["grad_norm"]) <= 1e-6 * one["grad_norm"]
    s2 = read_arrays(base / "two", 0, "state")
    s1 = read_arrays(base / "one", 0, "state")
    assert s2.keys() == s1.keys() and len(s1) > 10
    for k in s1:   # new params and Adam moments after the step
        np.testing.assert_allclose(s2[k], s1[k], rtol=1e-6, atol=1e-6, err_msg=k)
    assert int(s1["['step']"]) == 1


def test_two_process_orbax_save_restore(runs):
    base, two, one = runs
    for r in two:   # restored (other mesh, same two processes) == what was saved, bit for bit
        assert r["restore_equal"] is True
        assert r["restore_meta"] == {"policy_version": 1, "processes": 2}
        assert r["saved_steps"] == [1]
    # the one-process run resumes the two-process checkpoint exactly
    assert one["restored_from_processes"] == 2
    saved = read_arrays(base / "two", 0, "state")
    restored = read_arrays(base / "one", 0, "restored")
    assert saved.keys() == restored.keys()
    for k in saved:
        np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)


def test_only_process_zero_writes_metrics_and_hf_export(runs):
    base, two, _ = runs
    rows = read_metrics(base / "run")
    assert [(r["step"], r["rank"]) for r in rows] == [(1, 0)]
    assert rows[0]["loss"] == pytest.approx(two[0]["loss"], rel=1e-7)
    cfg, params = models.load_hf_checkpoint(base / "hf")      # gathered from both processes
    saved = read_arrays(base / "two", 0, "state")
    flat = {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path({"params": params})[0]}
    assert flat.keys() <= saved.keys() and len(flat) == cfg.num_layers * 11 + 3
    for k, v in flat.items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    assert not list(base.glob("*export*"))                    # no temp dirs left behind


def test_harness_fails_fast_on_hang_and_crash(tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(LaunchError, match=r"timed out after 3s"):
        launch(hang, num_processes=2, timeout_s=3, workdir=tmp_path / "h")
    crash = tmp_path / "crash.py"
    crash.write_text(textwrap.dedent("""\
        import os, sys, time
        if os.environ["ORCHESTRA_PROCESS_ID"] == "1":
            sys.exit("boom from rank 1")
        time.sleep(600)
    """))
    with pytest.raises(LaunchError, match=r"(?s)process 1 exited with 1.*boom from rank 1"):
        launch(crash, num_processes=2, timeout_s=120, workdir=tmp_path / "c")


def test_initialize_settings(monkeypatch):
    for k in ("ORCHESTRA_COORDINATOR", "ORCHESTRA_NUM_PROCESSES", "ORCHESTRA_PROCESS_ID",
              "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES",
              "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.initialize() == "single"
    assert distributed.initialize(num_processes=1) == "single"
    monkeypatch.setenv("ORCHESTRA_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match=r"ORCHESTRA_COORDINATOR.* incomplete: missing "
                                         r"coordinator_address, process_id"):
        distributed.initialize()
    monkeypatch.setenv("ORCHESTRA_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="ORCHESTRA_PROCESS_ID='x' is not an integer"):
        distributed.initialize()
    with pytest.raises(ValueError, match=r"process_id 2 not in \[0, 2\)"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    monkeypatch.delenv("ORCHESTRA_NUM_PROCESSES")
    monkeypatch.delenv("ORCHESTRA_PROCESS_ID")
    slurm = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    assert distributed._cluster_detected() is None          # a one-task SLURM job: single
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert distributed._cluster_detected() == "slurm"
    assert distributed.is_main_process()
    np.testing.assert_array_equal(distributed.process_rows(6), np.arange(6))

"""metrics.jsonl (JSON-safe, flushed, no duplicate steps on resume), TensorBoard events, timers."""
import json
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from orchestra_jax.train import metrics as M
from orchestra_jax.train.metrics import MetricsWriter, PhaseTimer, read_metrics


def _row(loss, **kw):
    return {"loss": loss, "grad_norm": 1.0, "param_norm": 2.0, "tokens_per_s": 100.0,
            "step_s": 0.5, **kw}


# --- an independent reader of TensorBoard event files (TFRecord framing + masked CRC32C) ------
def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    c = _crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _events(tbdir):
    out = []
    for f in sorted(tbdir.glob("events.out.tfevents.*")):
        buf = f.read_bytes()
        i = 0
        while i < len(buf):
            header = buf[i:i + 8]
            (n,) = struct.unpack("<Q", header)
            (hcrc,) = struct.unpack("<I", buf[i + 8:i + 12])
            data = buf[i + 12:i + 12 + n]
            (dcrc,) = struct.unpack("<I", buf[i + 12 + n:i + 16 + n])
            assert hcrc == _masked(header) and dcrc == _masked(data), f"bad CRC in {f.name}"
            out.append(event_pb2.Event.FromString(data))
            i += 16 + n
    return out


def _scalars(events):
    return [(e.step, v.tag, v.simple_value) for e in events if e.HasField("summary")
            for v in e.summary.value]


def test_rows_json_safe_flushed_and_validated(tmp_path):
    w = MetricsWriter(tmp_path, tensorboard=False)
    w.write(0, {"heldout_loss": 3.0})       # step 0: evaluation before training, free-form
    row = w.write(1, _row(jnp.float32(1.25), lr=np.float64(1e-6), nan=float("nan"),
                          inf=jnp.inf, tokens=np.int64(4096), hist=jnp.arange(3),
                          ok=np.bool_(True)))
    # visible before close (flushed per write)
    (_, got) = read_metrics(tmp_path)
    assert got == row and list(got)[0] == "step"
    assert got["loss"] == 1.25 and got["nan"] is None and got["inf"] is None
    assert got["tokens"] == 4096 and got["hist"] == [0, 1, 2] and got["ok"] is True
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1]) == got
    with pytest.raises(ValueError, match=r"lack required keys \['grad_norm'"):
        w.write(2, {"loss": 1.0})
    with pytest.raises(ValueError, match="step 0 written after step 1"):
        w.write(0, {"heldout_loss": 1.0})
    with pytest.raises(ValueError, match="step 1 written after step 1"):
        w.write(1, _row(1.0))
    with pytest.raises(TypeError, match="metric 'bad' at step 2"):
        w.write(2, _row(1.0, bad=object()))
    w.close()
    MetricsWriter(tmp_path / "other", enabled=False).write(1, _row(1.0))
    assert not (tmp_path / "other").exists()          # non-main processes write nothing


def test_resume_drops_rows_after_checkpoint_step(tmp_path):
    with MetricsWriter(tmp_path, total_steps=6) as w:
        for s in range(1, 7):
            w.write(s, _row(10.0 - s))
        assert w._bar.n == 6
    # a kill -9 mid-write leaves a torn line
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    # the run resumes from the checkpoint of step 4: steps 5, 6 (and the torn 7) are redone
    with MetricsWriter(tmp_path, resume_step=4) as w:
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
        for s in range(5, 8):
            w.write(s, _row(100.0 + s))
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 8))               # no duplicates, no gap
    assert [r["loss"] for r in rows] == [9.0, 8.0, 7.0, 6.0, 105.0, 106.0, 107.0]
    # TensorBoard: both runs' events, with a purge marker so steps > 4 of run 1 are discarded
    events = _events(tmp_path / "tensorboard")
    sc = _scalars(events)
    assert (3, "loss", 7.0) in sc and (6, "loss", 4.0) in sc and (6, "loss", 106.0) in sc
    assert ("step_s" in {t for _, t, _ in sc})
    starts = [e.step for e in events if e.HasField("session_log")
              and e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [5]


def test_truncate_metrics_is_atomic_and_idempotent(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in (1, 2, 3, 2, 3)))
    assert M.truncate_metrics(p, 2) == 3                # rows 3, (dup) 2, 3 go; last 2 kept
    assert read_metrics(p) == [{"step": 1, "loss": 1}, {"step": 2, "loss": 2}]
    assert M.truncate_metrics(p, 2) == 0
    assert not list(tmp_path.glob("*.tmp"))
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        M.truncate_metrics(p, 5)


def test_phase_timer(monkeypatch):
    clock = iter([0.0, 0.25, 1.0, 3.0, 3.5, 3.75])
    monkeypatch.setattr(M.time, "perf_counter", lambda: next(clock))
    t = PhaseTimer()
    with t.phase("data"):
        pass
    with t.phase("step"):
        pass
    with t.phase("data"):
        pass
    assert t.metrics() == {"time/data_s": 0.5, "time/step_s": 2.0}
    assert t.pop() == {"time/data_s": 0.5, "time/step_s": 2.0}
    assert t.pop() == {}

"""Trajectories → samples (both units) → first-fit packed batches → sharded arrays."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax import models
from orchestra_jax.rollout.trajectory import Trajectory, TurnRecord
from orchestra_jax.sharding import make_mesh
from orchestra_jax.train.logprobs import token_logprobs
from orchestra_jax.train.batch import (BATCH_KEYS, Sample, SampleTooLongError, batch_sharding,
                                       local_rows, pack, shard_batch, trajectory_samples)

# Hand-built 3-turn episode: prompt(5) resp0(3) obs(4) resp1(2) obs(3) resp2(4) = 21 tokens.
SPANS = [(5, 8), (12, 14), (17, 21)]
PROMPTS = [(0, 5), (8, 12), (14, 17)]


def three_turn_trajectory() -> Trajectory:
    n = 21
    tokens = list(range(100, 100 + n))
    mask = [0] * n
    logp = [0.0] * n
    for s, e in SPANS:
        for i in range(s, e):
            mask[i] = 1
            logp[i] = -0.1 * (i + 1)
    turns = [TurnRecord(index=k, prompt_span=list(PROMPTS[k]), response_span=list(SPANS[k]))
             for k in range(3)]
    return Trajectory(task_id="t0", tokens=tokens, loss_mask=mask, rollout_logprobs=logp,
                      turns=turns)


def _segments(batch, r, seg):
    return np.flatnonzero(batch["segment_ids"][r] == seg)


def test_trajectory_unit_masks_targets_advantages():
    traj = three_turn_trajectory()
    (s,) = trajectory_samples(traj, advantage=0.7, unit="trajectory")
    np.testing.assert_array_equal(s.tokens, traj.tokens)
    (b,), st = pack([s], rows=1, length=32)
    n = 21
    np.testing.assert_array_equal(b["tokens"][0, :n], traj.tokens)
    np.testing.assert_array_equal(b["targets"][0, :n - 1], traj.tokens[1:])
    assert (b["targets"][0, n - 1:] == 0).all()
    np.testing.assert_array_equal(b["positions"][0, :n], np.arange(n))
    np.testing.assert_array_equal(b["segment_ids"][0], [1] * n + [0] * 11)
    # position i trains on target token i+1 exactly when i+1 is a response token
    want_mask = np.zeros(32, np.float32)
    want_lp = np.zeros(32, np.float32)
    for s0, e0 in SPANS:
        want_mask[s0 - 1:e0 - 1] = 1
        want_lp[s0 - 1:e0 - 1] = [-0.1 * (i + 1) for i in range(s0, e0)]
    np.testing.assert_array_equal(b["loss_mask"][0], want_mask)
    np.testing.assert_allclose(b["old_logprobs"][0], want_lp, rtol=1e-6)
    np.testing.assert_allclose(b["advantages"][0], [0.7] * n + [0.0] * 11, rtol=1e-6)
    assert st.loss_tokens == 9 and st.real_tokens == 21
    assert st.padding_efficiency == pytest.approx(21 / 32)
    assert {k: v.dtype for k, v in b.items()} == {
        "tokens": np.int32, "targets": np.int32, "positions": np.int32, "segment_ids": np.int32,
        "loss_mask": np.float32, "advantages": np.float32, "old_logprobs": np.float32}


def test_turn_unit_prompt_is_context_at_that_turn():
    traj = three_turn_trajectory()
    samples = trajectory_samples(traj, advantage=-1.5, unit="turn")
    assert len(samples) == 3
    for (s0, e0), smp in zip(SPANS, samples):
        np.testing.assert_array_equal(smp.tokens, traj.tokens[:e0])      # context + this turn
        assert smp.tokens[:s0].tolist() == traj.tokens[:s0]               # prompt = context
        want = np.zeros(e0)
        want[s0:e0] = 1
        np.testing.assert_array_equal(smp.loss_mask, want)                # only this turn
        assert smp.advantage == -1.5
    batches, st = pack(samples, rows=2, length=24)
    # 8 + 14 = 22 fits row 0; 21 opens row 1
    assert st.placements == [[(0, 0, 0), (0, 8, 1), (1, 0, 2)]]
    b = batches[0]
    assert st.loss_tokens == 3 + 2 + 4
    seg2 = _segments(b, 0, 2)
    np.testing.assert_array_equal(b["tokens"][0, seg2], traj.tokens[:14])
    np.testing.assert_array_equal(b["positions"][0, seg2], np.arange(14))   # restarts
    # loss of turn 1's sample only on its response (predicting tokens 12, 13)
    np.testing.assert_array_equal(np.flatnonzero(b["loss_mask"][0, seg2]), [11, 12])
    assert b["targets"][0, seg2[-1]] == 0                                   # no cross-segment target
    np.testing.assert_allclose(b["advantages"][0, :22], -1.5)


def test_empty_turns_and_bad_unit():
    traj = three_turn_trajectory()
    traj.turns.append(TurnRecord(index=3, prompt_span=[21, 21], response_span=[21, 21]))
    assert len(trajectory_samples(traj, 0.0, unit="turn")) == 3
    with pytest.raises(ValueError, match="unit must be one of"):
        trajectory_samples(traj, 0.0, unit="episode")
    bad = three_turn_trajectory()
    bad.loss_mask[0] = 1
    with pytest.raises(ValueError, match="loss_mask differs"):
        trajectory_samples(bad, 0.0, unit="turn")


def _random_samples(rng, n, lo=3, hi=20):
    out = []
    for i in range(n):
        k = int(rng.integers(lo, hi))
        m = (rng.random(k) < 0.5).astype(np.float32)
        m[0] = 0
        out.append(Sample(rng.integers(1, 250, k), m, -rng.random(k) * m, rng.normal(),
                          source=f"s{i}"))
    return out


def test_pack_first_fit_no_overlap_multi_batch_deterministic():
    rng = np.random.default_rng(0)
    samples = _random_samples(rng, 40)
    batches, st = pack(samples, rows=4, length=32)
    again, st2 = pack(samples, rows=4, length=32)
    assert st.placements == st2.placements
    assert len(batches) == st.num_batches > 1               # did not fit in one batch: several
    seen = sorted(i for pl in st.placements for (_, _, i) in pl)
    assert seen == list(range(40))                          # nothing dropped, nothing twice
    total = sum(len(s) for s in samples)
    assert st.real_tokens == total
    assert st.padding_efficiency == pytest.approx(total / (len(batches) * 4 * 32))
    assert st.loss_tokens == sum(int(s.loss_mask[1:].sum()) for s in samples)
    for b, b2 in zip(batches, again):                        # deterministic
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(b[k], b2[k])
    for b, pl in zip(batches, st.placements):
        for (r, start, i) in pl:
            s = samples[i]
            n = len(s)
            seg = b["segment_ids"][r, start]
            idx = np.flatnonzero(b["segment_ids"][r] == seg)
            np.testing.assert_array_equal(idx, np.arange(start, start + n))  # contiguous, own
            np.testing.assert_array_equal(b["tokens"][r, idx], s.tokens)
            np.testing.assert_array_equal(b["positions"][r, idx], np.arange(n))
            np.testing.assert_allclose(b["advantages"][r, idx], s.advantage, rtol=1e-6)
        pad = b["segment_ids"] == 0                          # padding carries nothing
        for k in ("tokens", "targets", "positions", "loss_mask", "old_logprobs", "advantages"):
            assert (b[k][pad] == 0).all()


def test_pack_first_fit_rule():
    mk = lambda n: Sample(np.arange(1, n + 1), np.r_[0, np.ones(n - 1)], np.zeros(n))
    _, st = pack([mk(6), mk(8), mk(3), mk(2), mk(5)], rows=8, length=10)
    # 6 → row0 (4 left); 8 → row1 (2 left); 3 → row0 (1 left); 2 → row1 (0); 5 → row2
    assert st.placements == [[(0, 0, 0), (0, 6, 2), (1, 0, 1), (1, 8, 3), (2, 0, 4)]]
    _, st = pack([mk(6), mk(8), mk(3), mk(2), mk(5)], rows=8, length=10, decreasing=True)
    assert st.placements == [[(0, 0, 1), (0, 8, 3), (1, 0, 0), (1, 6, 2), (2, 0, 4)]]


def test_overflow_truncate_skip_error():
    traj = three_turn_trajectory()
    samples = trajectory_samples(traj, 1.0, unit="turn")       # lengths 8, 14, 21
    batches, st = pack(samples, rows=3, length=16)
    assert st.truncated_samples == 1 and st.truncated_tokens == 5
    (r, start, i) = st.placements[0][-1]
    assert i == 2
    seg = batches[0]["segment_ids"][r] == batches[0]["segment_ids"][r, start]
    np.testing.assert_array_equal(batches[0]["tokens"][r, seg], traj.tokens[5:21])  # left cut
    assert batches[0]["loss_mask"][r, seg].sum() == 4        # the turn's 4 tokens still trained
    _, st = pack(samples, rows=3, length=16, overflow="skip")
    assert st.skipped_samples == 1 and st.num_samples == 3
    assert sorted(i for (_, _, i) in st.placements[0]) == [0, 1]
    with pytest.raises(SampleTooLongError, match=r"sample 2 \('t0/turn2'\) has 21 tokens"):
        pack(samples, rows=3, length=16, overflow="error")
    # trajectory unit: the first turn's response would be cut → clear error, not silent loss
    (whole,) = trajectory_samples(traj, 1.0, unit="trajectory")
    with pytest.raises(SampleTooLongError, match="left-truncating"):
        pack([whole], rows=1, length=16)


def test_sample_validation():
    with pytest.raises(ValueError, match="loss_mask\\[0\\] must be 0"):
        Sample(np.array([1, 2]), np.array([1, 1]), np.zeros(2))
    with pytest.raises(ValueError, match="shapes"):
        Sample(np.array([1, 2, 3]), np.array([0, 1]), np.zeros(3))
    with pytest.raises(ValueError, match="integer"):
        Sample(np.array([1.5, 2.0]), np.array([0, 1]), np.zeros(2))
    with pytest.raises(TypeError, match="Sample objects"):
        pack([{"tokens": [1, 2]}], rows=1, length=4)


def test_packed_logprobs_equal_each_sample_alone():
    cfg = models.presets["tiny"]
    params = models.init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    samples = _random_samples(rng, 7, lo=4, hi=14)
    batches, st = pack(samples, rows=2, length=32)
    assert st.num_batches == 1
    b = batches[0]

    @jax.jit
    def logp(tokens, targets, positions, seg):
        logits, _ = models.apply(cfg, params, tokens, positions, seg)
        ls = jax.nn.log_softmax(logits, -1)
        return jnp.take_along_axis(ls, targets[..., None], -1)[..., 0]

    packed = np.asarray(logp(b["tokens"], b["targets"], b["positions"], b["segment_ids"]))
    # each sample alone: its own row from position 0, no segment ids (causal; the zero tail
    # after it cannot influence earlier positions), one call for all of them
    alone_tok = np.zeros((len(samples), 32), np.int32)
    for i, s in enumerate(samples):
        alone_tok[i, :len(s)] = s.tokens
    alone = np.asarray(logp(alone_tok, np.roll(alone_tok, -1, axis=1),
                            np.broadcast_to(np.arange(32, dtype=np.int32), alone_tok.shape),
                            np.ones_like(alone_tok)))
    # the learner's chunked scorer on the packed batch (what the losses use)
    chunked = np.asarray(jax.jit(lambda b: token_logprobs(
        cfg, params, b["tokens"], b["targets"], positions=b["positions"],
        segment_ids=b["segment_ids"], chunk_size=8))(b))
    for (r, start, i) in st.placements[0]:
        n = len(samples[i])
        np.testing.assert_allclose(packed[r, start:start + n - 1], alone[i, :n - 1], atol=1e-5)
        np.testing.assert_allclose(chunked[r, start:start + n - 1], alone[i, :n - 1], atol=1e-5)


def test_shard_batch_rows_follow_rules_table():
    rng = np.random.default_rng(2)
    (b,), _ = pack(_random_samples(rng, 12), rows=8, length=32)
    mesh = make_mesh((2, 2, 2))
    out = shard_batch(local_rows(b, mesh), mesh)
    assert set(out) == set(BATCH_KEYS)
    for k, v in out.items():
        assert v.sharding == batch_sharding(mesh, (8, 32))
        assert v.sharding.spec[0] == ("data", "fsdp")
        np.testing.assert_array_equal(np.asarray(v), b[k])
        assert v.addressable_shards[0].data.shape == (2, 32)
    with pytest.raises(ValueError, match="must feed 8 rows"):
        shard_batch({k: v[:4] for k, v in b.items()}, mesh, global_rows=8)

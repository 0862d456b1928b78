"""models/sampling.py's draw: inverse-CDF sampling + exact top-p by rejection (bisection fallback)
give the distribution ``filter_logits`` defines — checked empirically on small vocabularies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import sampling
from orchestra_jax.models.sampling import _inverse_cdf, filter_logits, sample_token

N = 20000
PROBS = np.array([[0.4, 0.2, 0.15, 0.1, 0.08, 0.04, 0.02, 0.01],
                  [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02]], np.float32)   # row 1: ties


@jax.jit
def _draws(logits, keys, temperature, top_p, top_k):   # one compile per logits shape
    return jax.vmap(lambda k: sample_token(logits, k, temperature, top_p, top_k)[0])(keys)


def _empirical(logits, top_p, top_k, temperature=1.0):
    toks = np.asarray(_draws(logits, jax.random.split(jax.random.key(0), N),
                             jnp.float32(temperature), jnp.float32(top_p), jnp.int32(top_k)))
    v = logits.shape[-1]
    return np.stack([np.bincount(toks[:, r], minlength=v) / N for r in range(toks.shape[1])])


def _target(logits, top_p, top_k, temperature=1.0):
    return np.asarray(jax.nn.softmax(filter_logits(logits / temperature, jnp.float32(top_p),
                                                   jnp.int32(top_k)), axis=-1))


@pytest.mark.parametrize("top_p,top_k", [(1.0, -1), (0.7, -1), (0.5, -1), (0.9, 3), (1e-6, -1)])
def test_draw_matches_the_filtered_distribution(top_p, top_k):
    logits = jnp.log(jnp.asarray(PROBS))
    emp, ref = _empirical(logits, top_p, top_k), _target(logits, top_p, top_k)
    assert np.all(emp[ref == 0] == 0)                     # never a filtered-out token
    assert np.abs(emp - ref).max() < 0.015                # ~4 sigma at N=20000


def test_bisection_fallback_gives_the_same_distribution(monkeypatch):
    # one rejection round only: most draws from this flat-tailed row need the fallback
    monkeypatch.setattr(sampling, "_MAX_REJECT_ROUNDS", 1)
    _draws.clear_cache() if hasattr(_draws, "clear_cache") else None   # retrace with it
    p = np.full((1, 64), 0.3 / 62, np.float32)
    p[0, :2] = [0.4, 0.3]
    logits = jnp.log(jnp.asarray(p))
    emp, ref = _empirical(logits, 0.6, -1), _target(logits, 0.6, -1)
    assert np.count_nonzero(ref) == 2
    assert np.all(emp[ref == 0] == 0) and np.abs(emp - ref).max() < 0.015


def test_inverse_cdf_skips_zero_mass_and_spans_blocks():
    v = 3 * sampling._BLOCK + 5                            # several blocks + a ragged tail
    probs = np.zeros((3, v), np.float32)
    probs[:, [0, sampling._BLOCK + 1, v - 1]] = [0.25, 0.5, 0.25]
    u = jnp.asarray([0.0, 0.5, 0.999999], jnp.float32)
    got = np.asarray(_inverse_cdf(jnp.asarray(probs), u)).tolist()
    assert got == [0, sampling._BLOCK + 1, v - 1]

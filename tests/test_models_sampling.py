"""KV-cache sampler vs HF generate and vs the full forward; filters; stop tokens; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from orchestra_jax.models import forward, init_params, load_hf_checkpoint, presets
from orchestra_jax.models.sampling import bucket, filter_logits, generate
from tests.models_util import write_hf


@pytest.fixture(scope="module")
def hf_tied(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_tied")
    model = write_hf("qwen3_tied", path)
    config, params = load_hf_checkpoint(path, compute_dtype=jnp.float32)
    return model, config, params


def _prompts(vocab, lens, seed=0):
    rs = np.random.RandomState(seed)
    return [[int(t) for t in rs.randint(1, vocab, n)] for n in lens]


@pytest.mark.parametrize("name", ["qwen3_untied", "qwen3_tied"])
def test_greedy_matches_hf_generate(tmp_path, name):
    # layer_scale 5: at the default init the tied model's greedy output only repeats the last
    # prompt token, which a broken KV cache would reproduce too
    model = write_hf(name, tmp_path, layer_scale=5.0)
    config, params = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    prompts = _prompts(config.vocab_size, (7, 3, 12))
    with jax.default_matmul_precision("highest"):
        out = generate(config, params, prompts, max_new_tokens=32, temperature=0.0)
    for prompt, toks, reason in zip(prompts, out.tokens, out.finish_reasons):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        assert toks == ref[0, len(prompt):].tolist()
        assert reason == "length"
    assert len({t for toks in out.tokens for t in toks}) >= 12   # a context-dependent output


def _full_forward_logprobs(config, params, prompt, toks):
    logits = np.asarray(forward(config, params, np.array([prompt + toks], np.int32)))[0]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    return np.array([logp[len(prompt) - 1 + i, t] for i, t in enumerate(toks)])


@pytest.mark.parametrize("scan", [False, True])
def test_sampled_logprobs_equal_full_forward(hf_tied, scan):
    _, config, params = hf_tied
    if scan:
        config = config.replace(scan_layers=True)
        params = {**{k: v for k, v in params.items() if not k.startswith("layers_")},
                  "layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                         *[params[f"layers_{i}"] for i in range(config.num_layers)])}
    prompts = _prompts(config.vocab_size, (5, 17, 1, 9), seed=1)
    out = generate(config, params, prompts, max_new_tokens=12, temperature=1.3, top_p=0.9,
                   top_k=50, rng=jax.random.key(7))
    greedy = generate(config, params, prompts, max_new_tokens=12, temperature=0.0)
    assert out.tokens != greedy.tokens  # really sampled
    for prompt, toks, lps in zip(prompts, out.tokens, out.logprobs):
        assert len(toks) == len(lps) == 12
        ref = _full_forward_logprobs(config, params, prompt, toks)
        assert np.abs(ref - np.array(lps)).max() <= 1e-4


def test_filters_reduce_to_greedy_and_seeds_reproduce(hf_tied):
    _, config, params = hf_tied
    prompts = _prompts(config.vocab_size, (4, 10, 6), seed=2)
    greedy = generate(config, params, prompts, max_new_tokens=16, temperature=0.0)
    k1 = generate(config, params, prompts, max_new_tokens=16, temperature=1.0, top_k=1,
                  rng=jax.random.key(1))
    p0 = generate(config, params, prompts, max_new_tokens=16, temperature=1.0, top_p=1e-6,
                  rng=jax.random.key(2))
    assert k1.tokens == greedy.tokens and p0.tokens == greedy.tokens
    a = generate(config, params, prompts, max_new_tokens=16, rng=jax.random.key(3))
    b = generate(config, params, prompts, max_new_tokens=16, rng=jax.random.key(3))
    c = generate(config, params, prompts, max_new_tokens=16, rng=jax.random.key(4))
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_filter_logits_semantics():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda p, k: np.isfinite(np.asarray(filter_logits(logits, jnp.float32(p),
                                                             jnp.int32(k))))[0].tolist()
    assert keep(1.0, 2) == [True, True, False, False]
    assert keep(0.7, -1) == [True, True, False, False]   # 0.5 < 0.7, 0.8 >= 0.7
    assert keep(0.5, -1) == [True, False, False, False]
    assert keep(1.0, -1) == [True] * 4
    assert keep(0.9, 3) == [True, True, True, False]


def test_stop_tokens_honoured(hf_tied):
    _, config, params = hf_tied
    prompts = _prompts(config.vocab_size, (6, 3), seed=3)
    free = generate(config, params, prompts, max_new_tokens=20, temperature=0.0)
    stop = free.tokens[0][5]
    first = free.tokens[0].index(stop)
    out = generate(config, params, prompts, max_new_tokens=20, temperature=0.0,
                   stop_token_ids=(stop, 10**6 % config.vocab_size))
    assert out.tokens[0] == free.tokens[0][:first + 1] and out.finish_reasons[0] == "stop"
    assert len(out.logprobs[0]) == first + 1
    if stop not in free.tokens[1]:
        assert out.tokens[1] == free.tokens[1] and out.finish_reasons[1] == "length"


def test_bad_inputs_and_buckets():
    config = presets["tiny"]
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match="empty"):
        generate(config, params, [[1], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="outside"):
        generate(config, params, [[1, config.vocab_size]], max_new_tokens=4)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(config, params, [[1] * 10], max_new_tokens=config.max_position_embeddings)
    with pytest.raises(ValueError, match="top_p"):
        generate(config, params, [[1]], max_new_tokens=4, top_p=0.0)
    assert generate(config, params, [], max_new_tokens=4).tokens == []
    assert [bucket(n, 16) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]

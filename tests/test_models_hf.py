"""Logit parity with transformers and HF checkpoint round trips (float32, CPU)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from orchestra_jax.models import (CheckpointError, ModelConfig, forward, init_params,
                                  load_hf_checkpoint, presets, save_hf_checkpoint)
from orchestra_jax.models.hf_io import read_safetensors_lazy
from tests.models_util import hf_logits, write_hf

TOL = 1e-4


def _tokens(vocab, shape=(2, 13), seed=0):
    return np.random.RandomState(seed).randint(0, vocab, shape).astype(np.int32)


@pytest.mark.parametrize("name", ["qwen3_untied", "qwen3_tied", "llama"])
def test_logit_parity_with_transformers(tmp_path, name):
    model = write_hf(name, tmp_path)
    config, params = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    assert config.qk_norm == (name != "llama")
    assert config.tie_word_embeddings == (name == "qwen3_tied")
    assert ("lm_head" in params) == (name != "qwen3_tied")
    toks = _tokens(config.vocab_size)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(forward(config, params, toks))
    ref = hf_logits(model, toks)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL


def test_scan_and_unscanned_identical(tmp_path):
    write_hf("qwen3_tied", tmp_path)
    toks = _tokens(320)
    c0, p0 = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    c1, p1 = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32, scan_layers=True)
    assert "layers" in p1 and p1["layers"]["attn"]["q_proj"].shape[0] == 3
    c2 = c1.replace(remat_policy="full")
    l0, l1, l2 = (np.asarray(forward(c, p, toks)) for c, p in ((c0, p0), (c1, p1), (c2, p1)))
    assert np.abs(l0 - l1).max() <= 1e-5
    assert np.abs(l0 - l2).max() <= 1e-5


@pytest.mark.parametrize("scan", [False, True])
def test_round_trip_hf_ours_hf(tmp_path, scan):
    model = write_hf("qwen3_untied", tmp_path / "hf")
    config, params = load_hf_checkpoint(tmp_path / "hf", compute_dtype=jnp.float32,
                                        scan_layers=scan)
    files = save_hf_checkpoint(config, params, tmp_path / "ours", max_shard_bytes=40_000)
    assert len(files) > 1
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    cfg = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert cfg["rope_theta"] == 10000.0 and cfg["torch_dtype"] == "float32"
    assert cfg["rope_parameters"]["rope_theta"] == 10000.0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    toks = _tokens(256)
    np.testing.assert_array_equal(hf_logits(reloaded, toks), hf_logits(model, toks))
    # and back into ours
    c2, p2 = load_hf_checkpoint(tmp_path / "ours", compute_dtype=jnp.float32, scan_layers=scan)
    assert c2 == config
    jax.tree.map(np.testing.assert_array_equal, params, p2)


def test_save_over_an_existing_checkpoint_replaces_it(tmp_path):
    config = presets["tiny"]
    old, new = (init_params(config, jax.random.key(k)) for k in (1, 2))
    assert len(save_hf_checkpoint(config, old, tmp_path, max_shard_bytes=40_000)) > 1
    (tmp_path / "model_ema.safetensors").write_bytes(b"not ours")
    assert save_hf_checkpoint(config, new, tmp_path) == ["model.safetensors"]   # now one file
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors",
                                                               "model_ema.safetensors"]
    (tmp_path / "model_ema.safetensors").unlink()
    _, back = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    jax.tree.map(np.testing.assert_array_equal, back, new)
    save_hf_checkpoint(config, old, tmp_path, max_shard_bytes=40_000)            # and back
    _, back = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    jax.tree.map(np.testing.assert_array_equal, back, old)


def test_hf_sharded_checkpoint_loads(tmp_path):
    model = write_hf("qwen3_untied", tmp_path, max_shard_size="30KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    config, params = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    toks = _tokens(256)
    assert np.abs(np.asarray(forward(config, params, toks)) - hf_logits(model, toks)).max() <= TOL


def test_bf16_checkpoint_loads_without_torch_path(tmp_path):
    model = write_hf("qwen3_tied", tmp_path, dtype=torch.bfloat16)
    raw = read_safetensors_lazy(tmp_path / "model.safetensors")
    assert str(raw["model.norm.weight"].dtype) == "bfloat16"
    config, params = load_hf_checkpoint(tmp_path, compute_dtype=jnp.float32)
    ref_w = model.model.layers[0].self_attn.q_proj.weight.detach().float().numpy()
    ours = np.asarray(params["layers_0"]["attn"]["q_proj"])
    np.testing.assert_array_equal(ours.reshape(ours.shape[0], -1).T, ref_w)
    # bf16 save → transformers reads back the same bf16 weights
    save_hf_checkpoint(config, params, tmp_path / "out", dtype="bfloat16")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    assert torch.equal(back.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_our_random_init_loads_in_transformers(tmp_path):
    config = presets["tiny"]
    params = init_params(config, jax.random.key(1))
    save_hf_checkpoint(config, params, tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == "Qwen3ForCausalLM"
    toks = _tokens(config.vocab_size)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(forward(config, params, toks))
    assert np.abs(ours - hf_logits(model, toks)).max() <= TOL


def test_config_conversion_and_presets():
    c8 = presets["qwen3-8b"]
    assert (c8.num_layers, c8.hidden_size, c8.num_heads, c8.num_kv_heads, c8.head_dim,
            c8.intermediate_size, c8.vocab_size, c8.rope_theta) == (
        36, 4096, 32, 8, 128, 12288, 151936, 1e6)
    assert not c8.tie_word_embeddings
    assert presets["qwen3-0.6b"].tie_word_embeddings and presets["qwen3-1.7b"].tie_word_embeddings
    # parameter counts match the published model sizes
    assert abs(c8.num_params / 1e9 - 8.19) < 0.02
    assert abs(presets["qwen3-0.6b"].num_params / 1e9 - 0.596) < 0.01
    for name, c in presets.items():
        hf = c.to_hf_config()
        back = ModelConfig.from_hf_config(hf, param_dtype=c.param_dtype, dtype=c.dtype)
        assert back == c, name
        tc = transformers.AutoConfig.for_model(**{k: v for k, v in hf.items()
                                                  if k != "model_type"}, model_type="qwen3")
        assert tc.num_hidden_layers == c.num_layers


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_hf_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"vocab_size": 256,')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_hf_checkpoint(tmp_path)
    write_hf("qwen3_untied", tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["hidden_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_hf_checkpoint(tmp_path)
    weights = tmp_path / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:len(blob) // 2])                     # truncated download
    with pytest.raises(CheckpointError, match="outside the file"):
        read_safetensors_lazy(weights)
    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="header"):
        read_safetensors_lazy(weights)
    with pytest.raises(ValueError, match="rope scaling"):
        ModelConfig.from_hf_config({**cfg, "rope_parameters": {"rope_type": "yarn",
                                                               "rope_theta": 1.0}})
    with pytest.raises(ValueError, match="multiple"):
        presets["tiny"].replace(num_kv_heads=3)
    with pytest.raises(ValueError, match="remat_policy"):
        presets["tiny"].replace(remat_policy="sometimes")
    with pytest.raises(ValueError, match="tokens must be"):
        forward(presets["tiny"], init_params(presets["tiny"], jax.random.key(0)), np.zeros(3))


def test_packed_segments_equal_separate_sequences():
    config = presets["tiny"]
    params = init_params(config, jax.random.key(2))
    a, b = _tokens(config.vocab_size, (1, 7), 3), _tokens(config.vocab_size, (1, 5), 4)
    packed = np.concatenate([a, b, np.zeros((1, 4), np.int32)], axis=1)        # + 4 pad
    seg = np.array([[1] * 7 + [2] * 5 + [0] * 4], np.int32)
    pos = np.array([list(range(7)) + list(range(5)) + [0] * 4], np.int32)
    out = np.asarray(forward(config, params, packed, positions=pos, segment_ids=seg))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, :7], np.asarray(forward(config, params, a)), atol=1e-5)
    np.testing.assert_allclose(out[:, 7:12], np.asarray(forward(config, params, b)), atol=1e-5)


def test_bf16_compute_and_params_track_float32():
    config = presets["tiny"]
    params = init_params(config, jax.random.key(5))
    toks = _tokens(config.vocab_size, (2, 9), 6)
    ref = np.asarray(forward(config, params, toks))
    bf = np.asarray(forward(config.replace(dtype="bfloat16"), params, toks))
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    both = np.asarray(forward(config.replace(dtype="bfloat16", param_dtype="bfloat16"), p16, toks))
    assert bf.dtype == np.float32 and both.dtype == np.float32      # logits always f32
    scale = np.abs(ref).max()
    assert np.abs(bf - ref).max() < 0.05 * scale and np.abs(both - ref).max() < 0.05 * scale
    assert np.abs(bf - ref).max() > 0                                # really ran in bf16

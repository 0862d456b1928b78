"""Helpers for the model tests: tiny random HF checkpoints written by transformers itself."""
import pathlib

import numpy as np
import torch
import transformers

# Two Qwen3 sizes (one tied) + one Llama, all tiny so every test stays fast.
HF_CONFIGS = {
    "qwen3_untied": dict(arch="qwen3", vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, tie_word_embeddings=False, rope_theta=10000.0),
    "qwen3_tied": dict(arch="qwen3", vocab_size=320, hidden_size=48, intermediate_size=96,
                       num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3,
                       head_dim=24, tie_word_embeddings=True, rope_theta=1_000_000.0,
                       rms_norm_eps=1e-5),
    "llama": dict(arch="llama", vocab_size=256, hidden_size=64, intermediate_size=160,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                  tie_word_embeddings=False, rope_theta=500000.0),
}


def hf_model(name: str, seed: int = 0, layer_scale: float = 1.0):
    """A random transformers model (float32, eval mode) for one of HF_CONFIGS.

    ``layer_scale`` multiplies every decoder-layer weight matrix (not embeddings, not norms): at
    the default init a tied model's greedy output just repeats the last prompt token, at 5 it
    depends on the context.
    """
    kw = dict(HF_CONFIGS[name])
    arch = kw.pop("arch")
    torch.manual_seed(seed)
    if arch == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    with torch.no_grad():  # non-trivial norm scales so a missing/misplaced norm is caught
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
            elif ".layers." in n:
                p.mul_(layer_scale)
    return model.eval()


def write_hf(name: str, path: pathlib.Path, max_shard_size=None, dtype=None, seed: int = 0,
             layer_scale: float = 1.0):
    """Writes the model with save_pretrained; returns the torch model."""
    model = hf_model(name, seed, layer_scale)
    if dtype is not None:
        model = model.to(dtype)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kw)
    return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()

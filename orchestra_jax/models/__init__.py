"""orchestra_jax.models — Qwen3 (and Llama-style) decoder in Flax linen, HF checkpoint I/O, sampling.

Public API::

    from orchestra_jax.models import ModelConfig, presets, init_params, forward
    from orchestra_jax.models import load_hf_checkpoint, save_hf_checkpoint, generate
    from orchestra_jax.models import load_gguf   # llama.cpp GGUF (e.g. SmolLM2) → our model
"""

from orchestra_jax.models.config import REMAT_POLICIES, ModelConfig, presets
from orchestra_jax.models.gguf_io import GGUFError, GGUFTokenizerInfo, load_gguf
from orchestra_jax.models.hf_io import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from orchestra_jax.models.qwen3 import (abstract_params, apply, forward, init_cache, init_params,
                                        output_embedding,
                                        param_logical_axes, param_shardings_for, shard_params)

__all__ = [
    "ModelConfig", "presets", "REMAT_POLICIES", "init_params", "forward", "apply", "init_cache",
    "abstract_params", "param_logical_axes", "param_shardings_for", "shard_params",
    "output_embedding",
    "load_hf_checkpoint", "save_hf_checkpoint", "CheckpointError", "generate",
    "load_gguf", "GGUFError", "GGUFTokenizerInfo", "SampleOutput",
]


def __getattr__(name):  # sampling imports lazily (it is the heaviest module to trace)
    if name in ("generate", "SampleOutput"):
        from orchestra_jax.models import sampling
        return getattr(sampling, name)
    raise AttributeError(name)

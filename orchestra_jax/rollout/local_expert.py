"""A :class:`~orchestra_jax.tools.llm_client.ChatModel` backed by any Engine + tokenizer.

Lets local models (the in-process JAX sampler, an SGLang server through its Engine client) act as
experts, user simulators or judges, fully offline: messages (and tools) are rendered with the
tokenizer's chat template, the engine generates, the text is decoded, Qwen3-style
``<think>``/``<tool_call>`` blocks are parsed into ``reasoning``/``tool_calls``.

``response_prefix`` pre-fills the start of the assistant turn (e.g. ``"```python\\n"`` to make a
weak model write code) and ``response_suffix`` closes it; both become part of ``text`` but are
not counted as completion tokens. ``max_new_tokens_cap`` bounds generation whatever
``max_tokens`` a caller asks for (CPU demos).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

from orchestra_jax.chat.parser import parse_tool_calls
from orchestra_jax.chat.template import ChatTemplate, encode_text
from orchestra_jax.rollout.engine import Engine, EngineError, SamplingParams
from orchestra_jax.tools.llm_client import ChatResponse, ExpertError


class LocalChatModel:
    """``async chat(messages, *, max_tokens, temperature, tools=None) -> ChatResponse``.

    Args:
      engine: any Engine. tokenizer: its tokenizer (chat template + decode).
      model: the name reported in responses (and used for pricing by callers).
      enable_thinking: passed to the template (default False: no thinking for experts).
      max_context: prompts longer than this (tokens) are refused with ExpertError.
    """

    def __init__(self, engine: Engine, tokenizer, *, model: str = "local",
                 template: Optional[ChatTemplate] = None, enable_thinking: Optional[bool] = False,
                 max_context: Optional[int] = None, max_new_tokens_cap: Optional[int] = None,
                 response_prefix: str = "", response_suffix: str = "", top_p: float = 1.0,
                 seed: Optional[int] = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.model = model
        self.template = template or ChatTemplate.from_tokenizer(tokenizer)
        self.enable_thinking = enable_thinking
        self.max_context = max_context
        self.max_new_tokens_cap = max_new_tokens_cap
        self.response_prefix = response_prefix
        self.response_suffix = response_suffix
        self.top_p = top_p
        self.seed = seed
        self._stop = tuple(i for i in (tokenizer.convert_tokens_to_ids(t) for t in
                                       ("<|im_end|>", "<|endoftext|>")) if i is not None)

    async def chat(self, messages: Sequence[dict], *, max_tokens: int = 1024,
                   temperature: float = 0.0, tools: Optional[list[dict]] = None) -> ChatResponse:
        t0 = time.perf_counter()
        try:
            text = self.template.render(messages, tools=tools, add_generation_prompt=True,
                                        enable_thinking=self.enable_thinking)
        except Exception as e:  # noqa: BLE001
            raise ExpertError(f"{self.model}: could not render messages: {e}", model=self.model)
        prompt = encode_text(self.tokenizer, text + self.response_prefix)
        if self.max_context is not None and len(prompt) >= self.max_context:
            raise ExpertError(f"{self.model}: prompt of {len(prompt)} tokens exceeds max_context "
                              f"{self.max_context}", model=self.model)
        n = max(1, int(max_tokens))
        if self.max_new_tokens_cap is not None:
            n = min(n, self.max_new_tokens_cap)
        sampling = SamplingParams(max_new_tokens=n, temperature=float(temperature),
                                  top_p=self.top_p, stop_token_ids=self._stop, seed=self.seed)
        try:
            (out,) = await self.engine.generate([prompt], sampling)
        except EngineError as e:
            raise ExpertError(f"{self.model}: engine failed: {e}", model=self.model) from None
        if out.finish_reason == "error":
            raise ExpertError(f"{self.model}: engine error: {out.error}", model=self.model)
        ids = [t for t in out.token_ids if t not in self._stop]
        body = self.response_prefix + self.tokenizer.decode(ids, skip_special_tokens=False) + \
            self.response_suffix
        reasoning, tool_calls = None, []
        if "</think>" in body:
            reasoning, body = body.split("</think>", 1)
            reasoning = reasoning.replace("<think>", "").strip()
            body = body.lstrip("\n")
        if tools and "<tool_call>" in body:
            parsed = parse_tool_calls(body, tools, require_call=False)
            tool_calls = parsed.calls
            body = parsed.content
        return ChatResponse(text=body, tool_calls=tool_calls, prompt_tokens=len(prompt),
                            completion_tokens=len(out.token_ids),
                            latency_s=time.perf_counter() - t0, model=self.model,
                            finish_reason=out.finish_reason, reasoning=reasoning)

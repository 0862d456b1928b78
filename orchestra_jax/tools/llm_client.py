"""Expert LLMs: the :class:`ChatModel` protocol and an OpenAI-compatible HTTP client.

Anything with ``async chat(messages, *, max_tokens, temperature, tools=None) -> ChatResponse`` can
serve as an expert, user simulator or judge: :class:`OpenAIChatClient` (any server exposing
``POST {base_url}/chat/completions``: OpenAI, vLLM, SGLang, sglang-jax) or an in-process local model
(``orchestra_jax.rollout.local_expert``).

The client bounds every call: ``timeout_s`` is the total wall-clock budget of one ``chat`` call
(all attempts, connect, read and back-off), retries (``max_retries``, default 2) only on 429/5xx/
connection errors/timeouts with exponential back-off and ``Retry-After`` (capped). The API key is
read from the environment variable named in the config and is redacted from every error and log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import httpx

from orchestra_jax.tools.http_retry import (HTTPCallError, RetryPolicy, check_base_url, post_json,
                                            redact)
from orchestra_jax.tools.pricing import PriceSheet


class ExpertError(RuntimeError):
    """An expert model call failed (timeout, HTTP error, malformed response). Never holds secrets."""

    def __init__(self, message: str, *, model: str = "", status: Optional[int] = None,
                 attempts: int = 0):
        super().__init__(message)
        self.model = model
        self.status = status
        self.attempts = attempts


@dataclasses.dataclass
class ChatResponse:
    """One chat completion.

    ``tool_calls`` are ``{"name", "arguments": dict}`` dicts (a call whose arguments were not valid
    JSON gets ``arguments == {}`` and a ``"parse_error"`` key). ``latency_s`` is wall-clock seconds
    of the whole call including retries; ``cost_usd`` is set when the client knows prices.
    """

    text: str
    tool_calls: list[dict] = dataclasses.field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    model: str = ""
    finish_reason: Optional[str] = None
    reasoning: Optional[str] = None
    cost_usd: Optional[float] = None
    attempts: int = 1


@runtime_checkable
class ChatModel(Protocol):
    """What the toolkit needs from an expert model."""

    async def chat(self, messages: Sequence[dict], *, max_tokens: int, temperature: float,
                   tools: Optional[list[dict]] = None) -> ChatResponse:
        ...


def parse_tool_calls(raw: Any) -> list[dict]:
    """OpenAI ``message.tool_calls`` -> ``[{"name", "arguments"}]`` (never raises).

    Entries that are not objects become ``{"name": "", "arguments": {}, "parse_error": ...}``;
    a ``tool_calls`` value that is not a list is one such entry."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        return [{"name": "", "arguments": {},
                 "parse_error": f"tool_calls is a {type(raw).__name__}, not a list"}]
    out = []
    for tc in raw:
        if not isinstance(tc, dict):
            out.append({"name": "", "arguments": {},
                        "parse_error": f"tool call is a {type(tc).__name__}, not an object"})
            continue
        fn = tc.get("function")
        fn = fn if isinstance(fn, dict) else {}
        name = fn.get("name")
        args = fn.get("arguments")
        call: dict = {"name": name if isinstance(name, str) else "", "arguments": {}}
        if isinstance(args, dict):
            call["arguments"] = args
        elif isinstance(args, str):
            try:
                parsed = json.loads(args) if args.strip() else {}
                if isinstance(parsed, dict):
                    call["arguments"] = parsed
                else:
                    call["parse_error"] = f"arguments JSON is a {type(parsed).__name__}, not an object"
            except (json.JSONDecodeError, RecursionError) as e:
                call["parse_error"] = f"arguments are not valid JSON: {getattr(e, 'msg', e)}"
        elif args is not None:
            call["parse_error"] = f"arguments of type {type(args).__name__}"
        out.append(call)
    return out


def _token_count(usage: dict, key: str, model: str) -> int:
    v = usage.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
        raise ExpertError(f"{model or 'expert'}: malformed chat completion: usage.{key} = {v!r} "
                          f"is not a non-negative integer", model=model)
    return int(v)


def parse_chat_completion(body: Any, model: str = "") -> ChatResponse:
    """Parses an OpenAI ``chat.completion`` JSON body; raises :class:`ExpertError` if malformed
    (no ``choices[0].message`` object, non-object ``usage``, token counts that are not
    non-negative integers)."""
    def bad(what: str) -> ExpertError:
        return ExpertError(f"{model or 'expert'}: malformed chat completion ({what}): "
                           f"{str(body)[:300]}", model=model)

    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise bad("no choices[0]") from None
    if not isinstance(choice, dict):
        raise bad("choices[0] is not an object")
    msg = choice.get("message") or {}
    if not isinstance(msg, dict):
        raise bad("choices[0].message is not an object")
    text = msg.get("content") or ""
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in text)
    usage = body.get("usage") or {}
    if not isinstance(usage, dict):
        raise bad("usage is not an object")
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    finish = choice.get("finish_reason")
    return ChatResponse(text=str(text), tool_calls=parse_tool_calls(msg.get("tool_calls")),
                        prompt_tokens=_token_count(usage, "prompt_tokens", model),
                        completion_tokens=_token_count(usage, "completion_tokens", model),
                        model=str(body.get("model") or model),
                        finish_reason=finish if isinstance(finish, str) else None,
                        reasoning=reasoning if isinstance(reasoning, str) else None)


@dataclasses.dataclass
class ExpertConfig:
    """How to reach one expert.

    Attributes:
      base_url: server root including ``/v1`` (e.g. ``http://127.0.0.1:30000/v1``).
      model: the ``model`` field sent to the server.
      price_name: name in the price sheet (defaults to ``model``).
      api_key_env: name of the environment variable holding the API key (None: no auth header).
      timeout_s: total seconds per ``chat`` call, retries included.
      max_retries: retries after the first attempt (429/5xx/connection errors/timeouts only).
      extra_body: merged into every request (e.g. ``{"chat_template_kwargs": {...}}``).
      token_limit_param: request field that carries the output budget: ``"max_tokens"`` or
        ``"max_completion_tokens"`` (OpenAI's reasoning models reject ``max_tokens``); None = the
        latter for ``gpt-5*`` / ``o1*`` / ``o3*`` / ``o4*`` models, the former otherwise.
    """

    base_url: str
    model: str
    price_name: Optional[str] = None
    api_key_env: Optional[str] = None
    timeout_s: float = 300.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    max_backoff_s: float = 8.0
    retry_after_cap_s: float = 30.0
    extra_body: dict = dataclasses.field(default_factory=dict)
    token_limit_param: Optional[str] = None

    def __post_init__(self):
        if self.token_limit_param not in (None, "max_tokens", "max_completion_tokens"):
            raise ValueError(f"token_limit_param must be 'max_tokens', 'max_completion_tokens' or "
                             f"None (auto), got {self.token_limit_param!r}")


_REASONING_MODEL = re.compile(r"^(?:openai/)?(?:gpt-5|o[134])(?:$|[-.])", re.I)


def token_limit_param(config: ExpertConfig) -> str:
    """The request field for the output-token budget of ``config``'s model (see ExpertConfig)."""
    if config.token_limit_param:
        return config.token_limit_param
    return "max_completion_tokens" if _REASONING_MODEL.match(config.model) else "max_tokens"


class OpenAIChatClient:
    """Async OpenAI-compatible chat client implementing :class:`ChatModel`."""

    def __init__(self, config: ExpertConfig, *, prices: Optional[PriceSheet] = None,
                 client: Optional[httpx.AsyncClient] = None):
        self.config = config
        self.prices = prices
        try:
            check_base_url(config.base_url, f"expert {config.model!r}: base_url")
        except ValueError as e:
            raise ExpertError(str(e), model=config.model) from None
        self._api_key: Optional[str] = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ExpertError(f"expert {config.model!r}: environment variable "
                                  f"{config.api_key_env} (API key) is not set", model=config.model)
            self._api_key = key
        self._client = client
        self._own_client = client is None
        self.policy = RetryPolicy(timeout_s=config.timeout_s, max_retries=config.max_retries,
                                  backoff_base_s=config.backoff_base_s,
                                  max_backoff_s=config.max_backoff_s,
                                  retry_after_cap_s=config.retry_after_cap_s)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatClient(model={self.config.model!r}, base_url={self.config.base_url!r})"

    @property
    def model(self) -> str:
        return self.config.model

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # httpx's own timeouts are a backstop; the real bound is RetryPolicy.timeout_s.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout_s),
                                             trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> "OpenAIChatClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def chat(self, messages: Sequence[dict], *, max_tokens: int = 1024,
                   temperature: float = 0.0, tools: Optional[list[dict]] = None) -> ChatResponse:
        """One chat completion; raises :class:`ExpertError` (redacted) on failure."""
        cfg = self.config
        payload: dict[str, Any] = {"model": cfg.model, "messages": list(messages),
                                   token_limit_param(cfg): int(max_tokens),
                                   "temperature": float(temperature)}
        if tools:
            payload["tools"] = tools
        payload.update(cfg.extra_body)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        url = cfg.base_url.rstrip("/") + "/chat/completions"
        t0 = time.perf_counter()
        try:
            body, attempts = await post_json(self._http(), url, payload, headers=headers,
                                             policy=self.policy, secrets=[self._api_key],
                                             what=f"chat completion ({cfg.model})")
        except HTTPCallError as e:
            raise ExpertError(redact(str(e), [self._api_key]), model=cfg.model, status=e.status,
                              attempts=e.attempts) from None
        resp = parse_chat_completion(body, cfg.model)
        resp.latency_s = time.perf_counter() - t0
        resp.attempts = attempts
        if self.prices is not None:
            resp.cost_usd = self.prices.cost_of_llm_call(cfg.price_name or cfg.model,
                                                         resp.prompt_tokens,
                                                         resp.completion_tokens)
        return resp


def build_expert_clients(specs: dict[str, dict], *, prices: Optional[PriceSheet] = None
                         ) -> dict[str, OpenAIChatClient]:
    """``{model name: ExpertConfig fields}`` -> ``{model name: OpenAIChatClient}``.

    The dict key is the concrete model name used by :class:`~orchestra_jax.tools.aliases.ModelMapping`
    and the price sheet; ``model`` (the server-side name) defaults to it.
    """
    out = {}
    for name, spec in specs.items():
        spec = dict(spec)
        spec.setdefault("model", name)
        spec.setdefault("price_name", name)
        out[name] = OpenAIChatClient(ExpertConfig(**spec), prices=prices)
    return out

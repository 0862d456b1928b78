"""Rendering chat messages to text and token ids with a jinja chat template.

:class:`ChatTemplate` renders exactly like ``transformers``' ``apply_chat_template`` (same jinja
environment: ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, the non-escaping ``tojson``
filter, ``raise_exception``, ``namespace``) but without needing a tokenizer object, so the
episode loop can render message deltas cheaply. Messages are OpenAI-style dicts:
``{"role": "system"|"user"|"assistant"|"tool", "content": str, "reasoning_content"?: str,
"tool_calls"?: [{"name", "arguments"}] | [{"type": "function", "function": {...}}]}``;
keys whose value is ``None`` are dropped first, as transformers does.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any, Mapping, Optional, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from orchestra_jax.chat.tokenizer import qwen3_chat_template

Message = Mapping[str, Any]


class TemplateError(ValueError):
    """A chat template failed to render (bad messages or a template ``raise_exception``)."""


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.globals["namespace"] = jinja2.utils.Namespace
    return env.from_string(source)


def normalize_messages(messages: Sequence[Message]) -> list[dict]:
    """Copies messages as plain dicts without ``None`` values (what transformers does)."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TemplateError(f"message {i} must be a dict, got {type(m).__name__}")
        if "role" not in m:
            raise TemplateError(f"message {i} has no 'role'")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


class ChatTemplate:
    """A compiled chat template.

    Args:
      source: jinja source; ``None`` = the project's Qwen3 template.
    """

    def __init__(self, source: Optional[str] = None):
        self.source = source if source is not None else qwen3_chat_template()
        self._template = _compile(self.source)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ChatTemplate":
        """The tokenizer's own ``chat_template`` (or ours when it has none)."""
        src = getattr(tokenizer, "chat_template", None)
        if isinstance(src, dict):  # named templates: transformers picks "default"
            src = src.get("default") or next(iter(src.values()))
        return cls(src or None)

    def render(self, messages: Sequence[Message], *, tools: Optional[Sequence[dict]] = None,
               add_generation_prompt: bool = False, enable_thinking: Optional[bool] = None,
               **kwargs: Any) -> str:
        """Renders messages (and the OpenAI-format ``tools`` list) to the prompt text.

        ``enable_thinking=None`` leaves the variable undefined (Qwen3's default: thinking on).
        """
        msgs = normalize_messages(messages)
        ctx: dict[str, Any] = dict(kwargs)
        if enable_thinking is not None:
            ctx["enable_thinking"] = enable_thinking
        try:
            return self._template.render(messages=msgs, tools=list(tools) if tools else None,
                                         add_generation_prompt=add_generation_prompt, **ctx)
        except jinja2.exceptions.TemplateError as e:
            raise TemplateError(f"chat template failed: {e}") from None
        except (TypeError, AttributeError, KeyError) as e:
            raise TemplateError(f"chat template failed on these messages: "
                                f"{type(e).__name__}: {e}") from None


def render_messages(messages: Sequence[Message], *, tools: Optional[Sequence[dict]] = None,
                    add_generation_prompt: bool = False, enable_thinking: Optional[bool] = None,
                    template: Optional[str] = None) -> str:
    """Renders with the given jinja source (default: the project's Qwen3 template)."""
    return ChatTemplate(template).render(messages, tools=tools,
                                         add_generation_prompt=add_generation_prompt,
                                         enable_thinking=enable_thinking)


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of rendered chat text: added tokens parsed, no BOS/EOS added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def render_tokens(tokenizer, messages: Sequence[Message], *, tools: Optional[Sequence[dict]] = None,
                  add_generation_prompt: bool = False, enable_thinking: Optional[bool] = None,
                  template: Optional[ChatTemplate] = None) -> list[int]:
    """Renders with the tokenizer's template (or ``template``) and encodes the text."""
    tmpl = template or ChatTemplate.from_tokenizer(tokenizer)
    return encode_text(tokenizer, tmpl.render(messages, tools=tools,
                                              add_generation_prompt=add_generation_prompt,
                                              enable_thinking=enable_thinking))

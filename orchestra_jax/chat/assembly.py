"""Turn-by-turn token assembly of one episode: exact policy tokens, template-rendered env tokens.

An episode is one growing token sequence::

    [prompt: system + tools + user task + "<|im_start|>assistant\\n"]   mask 0
    [turn 1: the policy's sampled ids, verbatim, incl. its <|im_end|>]  mask 1, rollout log-probs
    ["\\n<|im_start|>user\\n<observation><|im_end|>\\n<|im_start|>assistant\\n"]  mask 0
    [turn 2: sampled ids] ...

Sampled tokens are never decoded and re-encoded: what the policy produced is what the trainer
sees, so the rollout log-probs stay aligned token by token (the release instead rebuilt the
prompt string every turn). Environment text is rendered by the chat template: the delta for new
messages is cut out of a rendering of ``[system, user, assistant(SENTINEL), *new]`` right after
``SENTINEL`` + the end-of-turn token, so env tokens are exactly what the template would produce
after an assistant turn. Tokenising that delta separately is exact because it starts right after
a special token (``<|im_end|>``), where BPE pieces always split.

Observations are appended as a **user** turn (paper §2.2, default) or as Qwen3 ``tool`` messages
(``<tool_response>`` blocks in a user turn, ``observation_role="tool"``).

The transcript is append-only: older assistant turns keep the thinking the policy actually
sampled (Qwen3's template would drop the thinking of turns before the latest user query when
re-rendering a history; we never re-render). ``decode(tokens)`` equals the template rendering of
the same messages whenever the template is itself append-only for them (tool-role observations,
or turns with canonical ``<think>\\n…\\n</think>\\n\\n`` text) — see tests/test_chat_assembly.py.

Context limits (paper §4.2: 24k prompt tokens, 8k generated tokens per turn):
:meth:`TokenAssembler.next_turn_budget` returns how many tokens the next turn may generate, or 0
when the next prompt exceeds ``max_prompt_tokens`` (or the total cap is reached); the episode then
stops with finish reason ``"context"``. Nothing is ever dropped from the middle of the sequence.
Control tokens inside env text are neutralised (:func:`neutralize_control_tokens`); overlong
observations are cut (head kept) to ``max_observation_tokens`` before they are appended,
with a visible ``[... truncated N tokens]`` note.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from orchestra_jax.chat.template import ChatTemplate, Message, TemplateError, encode_text

SENTINEL = "\u2063ORCHESTRA_SENTINEL\u2063"


@dataclasses.dataclass(frozen=True)
class ContextLimits:
    """Token budgets of one episode (units: tokens).

    max_prompt_tokens: a turn is only generated while the prompt (all tokens so far) is at most
      this long (paper: 24,000).
    max_new_tokens_per_turn: generation cap per turn (paper: 8,000).
    max_total_tokens: optional cap on prompt + generated tokens of the whole sequence (e.g. the
      model's context window); the next turn's budget shrinks to fit it.
    max_observation_tokens: an environment message longer than this is cut (head kept).
    """

    max_prompt_tokens: int = 24_000
    max_new_tokens_per_turn: int = 8_000
    max_total_tokens: Optional[int] = None
    max_observation_tokens: int = 8_000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None and v < 1:
                raise ValueError(f"ContextLimits.{f.name} must be >= 1, got {v}")


@dataclasses.dataclass
class Span:
    """Half-open token range ``[start, end)`` in the assembled sequence."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class TokenAssembler:
    """Builds one episode's token sequence, loss mask and rollout log-probs.

    Args:
      tokenizer: a transformers tokenizer (``encode``/``decode``/``convert_tokens_to_ids``).
      template: chat template (default: the tokenizer's own, else the project's Qwen3 one).
      tools: OpenAI-format tool list rendered into the system prompt.
      enable_thinking: passed to the template (``False`` adds Qwen3's empty think block to every
        generation prompt; ``None`` leaves it undefined = Qwen3 default).
      observation_role: ``"user"`` (paper) or ``"tool"`` (Qwen3 ``<tool_response>`` form).
      limits: :class:`ContextLimits`.
      end_of_turn: the text that closes an assistant turn (Qwen: ``<|im_end|>``).
    """

    def __init__(self, tokenizer, *, template: Optional[ChatTemplate] = None,
                 tools: Optional[Sequence[dict]] = None, enable_thinking: Optional[bool] = None,
                 observation_role: str = "user", limits: ContextLimits = ContextLimits(),
                 end_of_turn: str = "<|im_end|>"):
        if observation_role not in ("user", "tool"):
            raise ValueError(f"observation_role must be 'user' or 'tool', got {observation_role!r}")
        self.tokenizer = tokenizer
        self.template = template or ChatTemplate.from_tokenizer(tokenizer)
        self.tools = list(tools) if tools else None
        self.enable_thinking = enable_thinking
        self.observation_role = observation_role
        self.limits = limits
        self.end_of_turn = end_of_turn
        eot = tokenizer.convert_tokens_to_ids(end_of_turn)
        if eot is None or eot == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"tokenizer has no end-of-turn token {end_of_turn!r}")
        self.end_of_turn_id = int(eot)
        # Special added tokens (<|im_start|>, <|im_end|>, ...) that env text must not forge.
        self.control_tokens = sorted(set(getattr(tokenizer, "all_special_tokens", []) or []) |
                                     {end_of_turn}, key=len, reverse=True)
        self.tokens: list[int] = []
        self.loss_mask: list[int] = []
        self.logprobs: list[float] = []
        self.messages: list[dict] = []  # the conversation, assistant turns as raw decoded text
        self.prompt_spans: list[Span] = []  # env/prompt token ranges, in order
        self.response_spans: list[Span] = []  # policy token ranges, in order
        self._open = False  # True while the sequence ends in a generation prompt

    # ---- building ---------------------------------------------------------------------------
    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.template.render(messages, tools=self.tools,
                                    add_generation_prompt=add_generation_prompt,
                                    enable_thinking=self.enable_thinking)

    def _append_env(self, ids: Sequence[int]) -> Span:
        s = len(self.tokens)
        self.tokens.extend(int(i) for i in ids)
        self.loss_mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))
        span = Span(s, len(self.tokens))
        self.prompt_spans.append(span)
        return span

    def start(self, messages: Sequence[Message]) -> Span:
        """Renders the initial conversation (system/user...) plus the generation prompt."""
        if self.tokens:
            raise RuntimeError("start() called twice")
        msgs = [dict(m) for m in messages]
        if not msgs:
            raise ValueError("an episode needs at least one message")
        ids = encode_text(self.tokenizer, self._render(msgs, add_generation_prompt=True))
        self.messages.extend(msgs)
        self._open = True
        return self._append_env(ids)

    def add_policy_turn(self, token_ids: Sequence[int], logprobs: Sequence[float]) -> Span:
        """Appends the policy's sampled ids verbatim (mask 1) with their rollout log-probs."""
        if not self._open:
            raise RuntimeError("add_policy_turn() needs a generation prompt first "
                               "(start() or add_messages())")
        if len(token_ids) != len(logprobs):
            raise ValueError(f"{len(token_ids)} tokens but {len(logprobs)} log-probs")
        s = len(self.tokens)
        self.tokens.extend(int(t) for t in token_ids)
        self.loss_mask.extend([1] * len(token_ids))
        self.logprobs.extend(float(x) for x in logprobs)
        span = Span(s, len(self.tokens))
        self.response_spans.append(span)
        self.messages.append({"role": "assistant", "content": self.tokenizer.decode(
            list(token_ids), skip_special_tokens=False)})
        self._open = False
        return span

    def observation_messages(self, observations: Sequence[str]) -> list[dict]:
        """Env messages for tool observations in the configured role."""
        if self.observation_role == "tool":
            return [{"role": "tool", "content": o} for o in observations]
        return [{"role": "user", "content": "\n\n".join(observations)}]

    def truncate_text(self, text: str) -> str:
        """Cuts ``text`` to ``limits.max_observation_tokens`` tokens (head kept, note appended)."""
        cap = self.limits.max_observation_tokens
        # Fast path: a byte-level BPE token covers at least one UTF-8 byte (NOT one character:
        # rare CJK / emoji characters take 2+ tokens); +1 for a tokenizer's leading-space piece.
        if len(text.encode("utf-8", errors="surrogatepass")) + 1 <= cap:
            return text
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= cap:
            return text
        head = self.tokenizer.decode(ids[:cap], skip_special_tokens=False)
        return f"{head}\n[... truncated {len(ids) - cap} tokens]"

    def env_delta_text(self, messages: Sequence[Message], *, closed_by_policy: bool) -> str:
        """Template text that follows an assistant turn when ``messages`` come next."""
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                 {"role": "assistant", "content": SENTINEL}]
        full = self._render(probe + [dict(m) for m in messages], add_generation_prompt=True)
        at = full.rfind(SENTINEL)
        if at < 0:
            raise TemplateError("chat template did not render assistant content verbatim")
        rest = full[at + len(SENTINEL):]
        if not rest.startswith(self.end_of_turn):
            raise TemplateError(f"chat template does not close assistant turns with "
                                f"{self.end_of_turn!r}")
        return rest[len(self.end_of_turn):] if closed_by_policy else rest

    def add_messages(self, messages: Sequence[Message], *, truncate: bool = True) -> Span:
        """Appends env messages (user / tool turns) plus the next generation prompt (mask 0).

        If the policy's last turn did not end with the end-of-turn token (cut by the length
        limit), the closing token is added here as an env token.
        """
        if self._open:
            raise RuntimeError("add_messages() after a generation prompt: the policy must act first")
        if not self.response_spans:
            raise RuntimeError("add_messages() before the first policy turn")
        msgs = []
        for m in messages:
            m = dict(m)
            if isinstance(m.get("content"), str):
                m["content"] = neutralize_control_tokens(m["content"], self.control_tokens)
                if truncate:
                    m["content"] = self.truncate_text(m["content"])
            msgs.append(m)
        closed = bool(self.tokens) and self.tokens[-1] == self.end_of_turn_id
        text = self.env_delta_text(msgs, closed_by_policy=closed)
        ids = encode_text(self.tokenizer, text)
        self.messages.extend(msgs)
        self._open = True
        return self._append_env(ids)

    def add_observations(self, observations: Sequence[str]) -> Span:
        """Appends tool observations as one user turn (or tool messages) + generation prompt."""
        return self.add_messages(self.observation_messages(list(observations)))

    # ---- limits -----------------------------------------------------------------------------
    def next_turn_budget(self) -> int:
        """Max new tokens for the next turn; 0 = the context is full (finish ``"context"``)."""
        n = len(self.tokens)
        if n > self.limits.max_prompt_tokens:
            return 0
        budget = self.limits.max_new_tokens_per_turn
        if self.limits.max_total_tokens is not None:
            budget = min(budget, self.limits.max_total_tokens - n)
        return max(budget, 0)

    # ---- views ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=False)

    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)

    def state(self) -> dict[str, Any]:
        """A JSON-friendly snapshot (tokens, mask, log-probs, spans)."""
        return {"tokens": list(self.tokens), "loss_mask": list(self.loss_mask),
                "rollout_logprobs": list(self.logprobs),
                "prompt_spans": [[s.start, s.end] for s in self.prompt_spans],
                "response_spans": [[s.start, s.end] for s in self.response_spans]}


def check_mask_alignment(tokens: Sequence[int], loss_mask: Sequence[int],
                         logprobs: Sequence[float]) -> None:
    """Raises ValueError unless the three arrays align and non-policy log-probs are 0."""
    if not len(tokens) == len(loss_mask) == len(logprobs):
        raise ValueError(f"lengths differ: tokens {len(tokens)}, mask {len(loss_mask)}, "
                         f"logprobs {len(logprobs)}")
    for i, (m, lp) in enumerate(zip(loss_mask, logprobs)):
        if m not in (0, 1):
            raise ValueError(f"loss_mask[{i}] = {m!r} is not 0/1")
        if m == 0 and lp != 0.0:
            raise ValueError(f"log-prob {lp} on non-policy token {i}")


def neutralize_control_tokens(text: str, control_tokens: Sequence[str]) -> str:
    """Makes control-token strings inside env text (e.g. a web page containing ``<|im_end|>``)
    plain text by inserting U+200B after their first character, so an observation can never
    forge a turn boundary."""
    for t in control_tokens:
        if t and t in text:
            text = text.replace(t, t[0] + "\u200b" + t[1:])
    return text


__all__ = ("ContextLimits", "Span", "TokenAssembler", "check_mask_alignment",
           "neutralize_control_tokens", "SENTINEL")

"""The engine interface every rollout engine implements.

The episode loop only ever sees :class:`Engine`: token ids in, token ids and per-token
log-probabilities out. Two implementations exist:

* :class:`orchestra_jax.rollout.local_engine.LocalJaxEngine` — the in-process JAX sampler
    (KV-cache prefill + decode, ``orchestra_jax.models.sampling``).
* :class:`orchestra_jax.rollout.sglang_client.SGLangEngine` — SGLang's native ``/generate`` API
    over HTTP (upstream SGLang on GPU, sglang-jax on CPU/TPU).

Both are ``async`` so many episodes can wait on the engine concurrently.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol, Sequence, runtime_checkable


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings (SGLang field names).

    ``temperature == 0`` means greedy. ``top_k <= 0`` and ``top_p >= 1`` disable those filters.
    ``stop_token_ids`` end a sequence; the stop token itself is returned (never trimmed) so the
    trajectory keeps exactly what the policy produced.
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: tuple[int, ...] = ()
    seed: Optional[int] = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass
class GenerateOutput:
    """What an engine returns for one prompt.

    ``token_ids`` are the generated tokens (stop token included when one was hit);
    ``logprobs[i]`` is log p(token_ids[i] | prefix) under the engine's sampling distribution
    *before* temperature/top-k/top-p (i.e. the model's own log-softmax), matching SGLang's
    ``output_token_logprobs``. ``finish_reason`` is ``"stop"`` (stop token), ``"length"``
    (max_new_tokens or context limit) or ``"error"`` (then ``error`` says why and the tokens
    are whatever arrived before the failure).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_tokens: int = 0
    latency_s: float = 0.0
    error: Optional[str] = None


class EngineError(RuntimeError):
    """An engine could not serve a request (server down, timeout, bad response)."""


@runtime_checkable
class Engine(Protocol):
    """Anything the episode loop can sample from."""

    async def generate(self, prompts: Sequence[Sequence[int]],
                                         sampling: SamplingParams) -> list[GenerateOutput]:
        """Samples one continuation per prompt. Never re-tokenises; ids in, ids out."""
        ...

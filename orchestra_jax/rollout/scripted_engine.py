"""``ScriptedPolicyEngine`` — a TEST/DEMO engine: a fixed token script, genuine log-probs.

A random tiny policy almost never writes a valid ``<tool_call>``, so tests and demos that must
drive the tool paths deterministically (search -> enhance_reasoning -> answer) use this engine:
it implements the :class:`~orchestra_jax.rollout.engine.Engine` protocol by emitting, per call,
the next entry of a script (token ids, or text encoded with the tokenizer) — and it computes
the log-probabilities of those tokens with the REAL model's forward pass
(:func:`orchestra_jax.rollout.logprob_check.recompute_logprobs`), so the trajectory records it
produces (tokens, mask, log-probs) are exactly what a policy with those params would be scored
with. It does not sample; never use it for training data.

``script`` is either a list (entry ``i`` answers the ``i``-th prompt this engine receives,
across calls) or a callable ``(prompt_ids, call_index) -> ids | str``. The output is cut to
``max_new_tokens`` (finish ``"length"``); it ends with ``"stop"`` when its last token is one of
``stop_token_ids``. An exhausted script returns ``finish_reason="error"``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

from orchestra_jax.rollout.engine import GenerateOutput, SamplingParams
from orchestra_jax.rollout.logprob_check import recompute_logprobs

ScriptEntry = Union[str, Sequence[int]]
Script = Union[Sequence[ScriptEntry], Callable[[list[int], int], ScriptEntry]]


class ScriptedPolicyEngine:
    """Engine protocol over a fixed script; log-probs from the real model (test/demo only).

    Args:
      config, params: the model whose forward scores the scripted tokens.
      script: see module docstring.
      tokenizer: needed when script entries are text.
    """

    def __init__(self, config: Any, params: Any, script: Script, tokenizer: Any = None):
        self.config = config
        self.params = params
        self.script = script
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self.calls = 0

    def _entry(self, prompt: list[int]) -> Optional[list[int]]:
        with self._lock:
            i = self.calls
            self.calls += 1
        if callable(self.script):
            e = self.script(prompt, i)
        elif i < len(self.script):
            e = self.script[i]
        else:
            return None
        if isinstance(e, str):
            if self.tokenizer is None:
                raise ValueError("text script entries need a tokenizer")
            return list(self.tokenizer.encode(e, add_special_tokens=False))
        return [int(t) for t in e]

    def generate_sync(self, prompts: Sequence[Sequence[int]],
                      sampling: SamplingParams) -> list[GenerateOutput]:
        t0 = time.perf_counter()
        outs: list[GenerateOutput] = []
        for p in prompts:
            p = list(map(int, p))
            ids = self._entry(p)
            if ids is None:
                outs.append(GenerateOutput([], [], "error", len(p), 0.0, "script exhausted"))
                continue
            if not ids:
                outs.append(GenerateOutput([], [], "error", len(p), 0.0, "empty script entry"))
                continue
            finish = "length" if len(ids) > sampling.max_new_tokens else "stop"
            ids = ids[: sampling.max_new_tokens]
            if finish == "stop" and ids[-1] not in sampling.stop_token_ids:
                finish = "length"
            lps = recompute_logprobs(self.config, self.params, [p], [ids])[0]
            outs.append(GenerateOutput(ids, [float(x) for x in lps], finish, len(p)))
        dt = time.perf_counter() - t0
        for o in outs:
            o.latency_s = dt
        return outs

    async def generate(self, prompts: Sequence[Sequence[int]],
                       sampling: SamplingParams) -> list[GenerateOutput]:
        return await asyncio.to_thread(self.generate_sync, prompts, sampling)

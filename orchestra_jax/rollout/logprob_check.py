"""Rollout-vs-trainer log-prob mismatch: recompute the engine's per-token log-probs like the trainer.

The trainer scores a trajectory with one causal pass over prompt + completion, projected to the
vocabulary in chunks (:func:`orchestra_jax.models.logprobs.token_logprobs`, the same function
``train/`` uses, so no ``[B, L, V]`` logits); the rollout
engine (SGLang, the local KV-cache sampler) reports ``logprobs[i] = log p(token_i | prefix)`` while
decoding. :func:`logprob_gap` measures how far the two disagree (mean/max |Δ| in nats), the metric
the RL loop logs to watch the rollout–trainer mismatch (and to size truncated importance sampling).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from orchestra_jax.rollout.engine import GenerateOutput


def _bucket(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << (max(1, n) - 1).bit_length())


_SCORE = None


def _score(config, params, tokens, targets):
    global _SCORE
    if _SCORE is None:  # jax imports lazily (this module is imported by light-weight callers)
        import jax

        from orchestra_jax.models.logprobs import token_logprobs
        _SCORE = jax.jit(token_logprobs, static_argnums=0)
    return _SCORE(config, params, tokens, targets)


def recompute_logprobs(config: Any, params: Any, prompts: Sequence[Sequence[int]],
                       completions: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """log p(completion[i] | prompt + completion[:i]) from one batched causal pass
    (:func:`~orchestra_jax.models.logprobs.token_logprobs`, chunked over the length).

    Sequences are right-padded to a power-of-two length and batch (fewer recompiles); causal
    attention makes the padding irrelevant. Returns one float32 array per sequence (nats).
    """
    import jax.numpy as jnp

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions)]
    if not seqs:
        return []
    length = _bucket(max(len(s) for s in seqs))
    batch = _bucket(len(seqs), minimum=1)
    tokens = np.zeros((batch, length + 1), np.int32)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = s
    # position t predicts token t+1
    logp = np.asarray(_score(config, params, jnp.asarray(tokens[:, :-1]),
                             jnp.asarray(tokens[:, 1:])))
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        out.append(logp[i, len(p) - 1:len(p) - 1 + len(c)].astype(np.float32))
    return out


def logprob_gap(config: Any, params: Any, prompts: Sequence[Sequence[int]],
                outputs: Sequence[GenerateOutput]) -> dict[str, float]:
    """Engine log-probs vs the trainer's recomputation over all generated tokens.

    Returns ``{"mean_abs": mean |Δ|, "max_abs": max |Δ|, "mean": mean Δ (engine - trainer),
    "n_tokens": count}`` in nats. Outputs with finish_reason "error" are skipped.
    """
    keep = [(p, o) for p, o in zip(prompts, outputs) if o.finish_reason != "error" and o.token_ids]
    if not keep:
        raise ValueError("no successful outputs to compare")
    for p, o in keep:
        if len(o.logprobs) != len(o.token_ids):
            raise ValueError(f"{len(o.token_ids)} tokens but {len(o.logprobs)} logprobs")
    ref = recompute_logprobs(config, params, [p for p, _ in keep], [o.token_ids for _, o in keep])
    diff = np.concatenate([np.asarray(o.logprobs, np.float64) - r for (_, o), r in zip(keep, ref)])
    return {"mean_abs": float(np.abs(diff).mean()), "max_abs": float(np.abs(diff).max()),
            "mean": float(diff.mean()), "n_tokens": int(diff.size)}

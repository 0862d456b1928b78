"""Chunked per-token log-probs / entropy for the learner (no ``[B, L, V]`` logits).

The implementation is :mod:`orchestra_jax.models.logprobs` (the model's output head applied in
length chunks under ``jax.checkpoint``); it sits in ``models/`` because the rollout layer scores
tokens with the same function and may not import ``train/``. Import it from here in training
code::

    from orchestra_jax.train.logprobs import token_logprobs
    logp, ent = token_logprobs(cfg, params, tokens, targets, positions=pos, segment_ids=seg,
                               chunk_size=512, return_entropy=True)    # [B, L] f32 each
"""

from orchestra_jax.models.logprobs import hidden_logprobs, token_logprobs

__all__ = ["token_logprobs", "hidden_logprobs"]

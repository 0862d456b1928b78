"""Learner losses as ``(sum, weight, aux)`` so micro-batch accumulation is exact.

A loss function has the signature ``loss_fn(params, batch, ref_params=None) -> (loss_sum, weight,
aux)``: the batch's loss is ``loss_sum / weight``, and for any split of the rows into micro-batches
``Σ loss_sum / Σ weight`` is the full batch's loss (``train.step`` accumulates gradients of
``loss_sum`` and divides once). ``aux`` maps a diagnostic's name to a ``(sum, weight)`` pair
combined the same way. Batches follow the learner contract (see ``train/batch.py``): ``[R, L]``
``tokens``, ``targets``, ``positions``, ``segment_ids``, ``loss_mask``, ``advantages``,
``old_logprobs`` (optional ``ref_logprobs``, ``rollout_logprobs``).

GRPO (:func:`grpo_loss`) per trained token uses ``rl.losses.ppo_loss`` itself (vmapped to one
token at a time, so every clip/KL/entropy/TIS rule is the library's), then aggregates:

==========================  ==========================================  ============================
``loss_agg``                per-token weight in ``loss_sum``            ``weight``
==========================  ==========================================  ============================
``token-mean`` [C]          1                                           Σ loss_mask (tokens)
``seq-mean-token-sum``      1                                           number of non-empty samples
``seq-mean-token-mean``     1 / (trained tokens of the token's sample)  number of non-empty samples
==========================  ==========================================  ============================

A "sample" is a segment of a packed row (``segment_ids``; the whole row when absent), never a
row, and rows are never split across micro-batches, so all three modes accumulate exactly.

Old log-probs (``GRPOLossConfig.recompute_old_logprobs``): False [ours] takes
``batch['old_logprobs']`` (the rollout engine's, or a trainer pre-pass filled in with
:func:`make_logprob_fn` before the first update of a rollout batch, as the release does);
True uses the current params' log-probs under ``stop_gradient`` (ratio 1 on the first update),
exact only when this step is the first update since the params that sampled the batch; the
batch's log-probs then serve as the rollout log-probs (TIS, ``rollout_kl`` diagnostics).
Reference log-probs are needed only when ``kl_coef > 0``: ``batch['ref_logprobs']`` when
present, else a forward pass of the frozen ``ref_params`` (no gradient).

SFT (:func:`sft_loss`): masked token cross-entropy, ``loss_sum = Σ -log p(target)·mask``,
``weight = Σ mask``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from orchestra_jax.models import ModelConfig
from orchestra_jax.rl.losses import PPOLossConfig, ppo_loss
from orchestra_jax.models import apply
from orchestra_jax.models.logprobs import selected_hidden_logprobs
from orchestra_jax.train.logprobs import token_logprobs

Batch = dict
LossFn = Callable[..., tuple]

MODEL_KEYS = ("tokens", "targets", "positions", "segment_ids", "loss_mask")

# per-token diagnostics of ppo_loss that are token means (other keys are max/min/counts)
_TOKEN_DIAGS = ("pg_clipfrac_low", "pg_clipfrac_high", "dual_clip_frac", "ratio_mean",
                "approx_kl_old", "kl", "rollout_kl", "rollout_abs_logp_diff", "tis_weight_mean",
                "tis_clipfrac")


@dataclasses.dataclass(frozen=True)
class GRPOLossConfig:
    """Static settings of :func:`grpo_loss` (hashable)."""
    ppo: PPOLossConfig = PPOLossConfig()     # clip ε, dual clip, KL, entropy, aggregation [C]
    recompute_old_logprobs: bool = False     # [ours] see the module docstring
    chunk_size: int = 512                    # [ours] tokens per chunk of the vocabulary projection
    # [ours] project only the trained positions (at most this many per micro-batch; see
    # models.logprobs.selected_hidden_logprobs); None = every position
    max_loss_tokens: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.ppo, PPOLossConfig):
            raise TypeError(f"ppo must be a PPOLossConfig, got {type(self.ppo).__name__}")
        if isinstance(self.chunk_size, bool) or int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}")


def check_batch(batch: Batch, keys: tuple, who: str) -> tuple[int, int]:
    """Raises ``ValueError`` naming the first missing or mis-shaped key; returns ``(R, L)``."""
    if not isinstance(batch, dict):
        raise TypeError(f"{who}: batch must be a dict of [R, L] arrays, got {type(batch).__name__}")
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"{who}: batch is missing {missing} (has {sorted(batch)}; needs "
                         f"{list(keys)})")
    shape = tuple(jnp.shape(batch["tokens"]))
    if len(shape) != 2:
        raise ValueError(f"{who}: batch['tokens'] must be [rows, length], got shape {shape}")
    for k, v in batch.items():
        if tuple(jnp.shape(v)) != shape:
            raise ValueError(f"{who}: batch[{k!r}] has shape {tuple(jnp.shape(v))}, "
                             f"expected {shape} like batch['tokens']")
    return shape


def _logprobs(model_cfg, params, batch, chunk_size, return_entropy=False, max_tokens=None):
    if max_tokens is not None:
        hidden, _ = apply(model_cfg, params, batch["tokens"], batch["positions"],
                          batch["segment_ids"], return_hidden=True)
        return selected_hidden_logprobs(model_cfg, params, hidden, batch["targets"],
                                        batch["loss_mask"], max_tokens=int(max_tokens),
                                        chunk_size=chunk_size, return_entropy=return_entropy)
    return token_logprobs(model_cfg, params, batch["tokens"], batch["targets"],
                          positions=batch["positions"], segment_ids=batch["segment_ids"],
                          chunk_size=chunk_size, return_entropy=return_entropy)


def make_logprob_fn(model_cfg: ModelConfig, chunk_size: int = 512) -> Callable:
    """``fn(params, batch) -> [R, L] f32`` log p(target) where ``loss_mask``, 0 elsewhere.

    The forward-only pass that fills ``batch['old_logprobs']`` (trainer's old policy, before the
    first update of a rollout batch) or ``batch['ref_logprobs']`` (frozen reference). Jit it.
    """
    def fn(params, batch):
        check_batch(batch, MODEL_KEYS, "make_logprob_fn")
        lp = _logprobs(model_cfg, params, batch, chunk_size)
        return jnp.where(batch["loss_mask"] > 0, lp, 0.0)
    return fn


def _segment_token_counts(mask: jax.Array, segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per token: trained-token count of its sample; and the number of non-empty samples."""
    r, l = mask.shape
    flat = (jnp.arange(r, dtype=jnp.int32)[:, None] * (l + 1) + segment_ids).reshape(-1)
    counts = jax.ops.segment_sum(mask.reshape(-1).astype(jnp.float32), flat,
                                 num_segments=r * (l + 1))
    return counts[flat].reshape(r, l), jnp.sum((counts > 0).astype(jnp.float32))


def _per_token_ppo(cfg: PPOLossConfig, logp, old, adv, mask, ref, ent, rollout):
    """``ppo_loss`` evaluated at every token alone → per-token loss [R, L] and diagnostics."""
    tok_cfg = dataclasses.replace(cfg, loss_agg="token-mean")

    def one(lp, o, a, m, r, e, ro):
        e2 = lambda x: None if x is None else x[None, None]
        loss, diag = ppo_loss(e2(lp), e2(o), e2(a), e2(m), ref_logp=e2(r), rollout_logp=e2(ro),
                              entropy=e2(e), cfg=tok_cfg)
        return loss, {k: v for k, v in diag.items() if k in _TOKEN_DIAGS}

    return jax.vmap(jax.vmap(one))(logp, old, adv, mask, ref, ent, rollout)


def grpo_loss(model_cfg: ModelConfig, loss_cfg: GRPOLossConfig = GRPOLossConfig()) -> LossFn:
    """The GRPO/PPO clipped-surrogate loss over chunked log-probs (see the module docstring).

    Returns ``fn(params, batch, ref_params=None) -> (loss_sum, weight, aux)``; ``aux`` holds
    ``(sum, weight)`` pairs: ``pg_loss`` (weighted like the loss), and token means ``entropy``,
    ``pg_clipfrac_low``, ``pg_clipfrac_high``, ``dual_clip_frac``, ``ratio_mean``,
    ``approx_kl_old``, ``logprob_gap`` (mean |trainer log-prob − batch old log-prob|), ``kl``
    (when KL is on), ``rollout_kl`` / ``rollout_abs_logp_diff`` / ``tis_*`` (when rollout
    log-probs are available).
    """
    cfg = loss_cfg.ppo
    need = MODEL_KEYS + ("advantages",) + (() if loss_cfg.recompute_old_logprobs
                                           else ("old_logprobs",))

    def fn(params, batch: Batch, ref_params=None):
        check_batch(batch, need, "grpo_loss")
        mask = batch["loss_mask"] > 0
        maskf = mask.astype(jnp.float32)
        logp, entropy = _logprobs(model_cfg, params, batch, loss_cfg.chunk_size,
                                  return_entropy=True, max_tokens=loss_cfg.max_loss_tokens)
        batch_old = batch.get("old_logprobs")
        if loss_cfg.recompute_old_logprobs:
            old = jax.lax.stop_gradient(logp)
            rollout = batch.get("rollout_logprobs", batch_old)
        else:
            old = batch_old
            rollout = batch.get("rollout_logprobs")
        ref = None
        if cfg.kl_coef > 0:
            if "ref_logprobs" in batch:
                ref = batch["ref_logprobs"]
            elif ref_params is not None:
                ref = jax.lax.stop_gradient(_logprobs(model_cfg, ref_params, batch,
                                                      loss_cfg.chunk_size,
                                                      max_tokens=loss_cfg.max_loss_tokens))
            else:
                raise ValueError("grpo_loss: kl_coef > 0 needs ref_params or "
                                 "batch['ref_logprobs'] (set kl_coef=0 to disable the KL term)")
        # the entropy bonus needs its gradient only when its coefficient is non-zero
        ent = entropy if cfg.entropy_coef > 0 else jax.lax.stop_gradient(entropy)
        tok_loss, diag = _per_token_ppo(cfg, logp, old, batch["advantages"], mask, ref, ent,
                                        rollout)
        segs = batch["segment_ids"]
        if cfg.loss_agg == "token-mean":
            w, weight = maskf, jnp.sum(maskf)
        else:
            ntok, weight = _segment_token_counts(maskf, segs)
            w = (maskf / jnp.maximum(ntok, 1.0) if cfg.loss_agg == "seq-mean-token-mean"
                 else maskf)
        loss_sum = jnp.sum(tok_loss * w)
        ntokens = jnp.sum(maskf)
        sg = jax.lax.stop_gradient
        tok = lambda x: (jnp.sum(jnp.where(mask, sg(x), 0.0)), ntokens)
        # pg part of the per-token loss (the loss minus its KL / entropy terms)
        pg = sg(tok_loss)
        if ref is not None:
            pg = pg - cfg.kl_coef * diag["kl"]
        pg = pg + cfg.entropy_coef * sg(entropy)
        aux = {"pg_loss": (jnp.sum(pg * w), weight), "entropy": tok(entropy)}
        aux.update({k: tok(v) for k, v in diag.items()})
        if batch_old is not None:
            aux["logprob_gap"] = tok(jnp.abs(logp - batch_old))
        return loss_sum, weight, aux

    return fn


def sft_loss(model_cfg: ModelConfig, chunk_size: int = 512,
             max_loss_tokens: Optional[int] = None) -> LossFn:
    """Masked next-token cross-entropy: ``(Σ -log p(target)·mask, Σ mask, {})``.

    ``aux`` is empty (the loss is already the mean NLL per trained token); ``ref_params`` is
    accepted and ignored so SFT and GRPO share the step signature.
    """
    def fn(params, batch: Batch, ref_params=None):
        del ref_params
        check_batch(batch, MODEL_KEYS, "sft_loss")
        maskf = (batch["loss_mask"] > 0).astype(jnp.float32)
        logp = _logprobs(model_cfg, params, batch, chunk_size, max_tokens=max_loss_tokens)
        return jnp.sum(jnp.where(maskf > 0, -logp, 0.0)), jnp.sum(maskf), {}

    return fn

"""Token-level PPO clipped surrogate with the release's extras (paper Eq. 4; verl policy loss).

Per response token (log-probs in nats, Δ = logp - old_logp clamped to [-20, 20]):

    ratio = exp(Δ)
    pg    = max(-A·ratio, -A·clip(ratio, 1-ε_low, 1+ε_high))        asymmetric clip [C] 0.2 / 0.28
    pg    = min(pg, -A·c)            where A < 0                     dual clip [C] c = 10
    pg   *= w = min(exp(old_logp - rollout_logp), C), stop-grad      optional truncated IS (TIS)
    kl    = k1: Δr | k2: ½Δr² | k3: exp(-Δr) - 1 + Δr,  Δr = logp - ref_logp   [C] k2, coef 1e-4
    loss  = agg(pg) + kl_coef·agg(kl) - entropy_coef·agg(entropy)

Clipping regions (token counts reported as fractions of valid tokens):
  * high clip: A > 0 and ratio > 1+ε_high (gradient 0);
  * low clip:  A < 0 and ratio < 1-ε_low  (gradient 0);
  * dual clip: A < 0 and ratio > c        (loss -A·c, gradient 0);
  * otherwise unclipped (gradient -A·ratio·∂logp).

Aggregation (`loss_agg`): "token-mean" = Σ x·mask / Σ mask over the whole batch; "seq-mean-token-sum"
= mean over non-empty sequences of Σ_t x; "seq-mean-token-mean" = mean over non-empty sequences of the
per-sequence token mean. With `denominator` (e.g. under gradient accumulation over micro-batches) the
sum is divided by it instead: the global token count for "token-mean", the global number of non-empty
sequences for the seq-mean modes, so summing micro-batch losses gives the full-batch loss.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from orchestra_jax.rl import _checks

Array = jax.Array

KL_TYPES = ("k1", "k2", "k3")
LOSS_AGGS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")
_LOG_RATIO_CLAMP = 20.0   # verl clamps log-ratios to [-20, 20] before exp
_K3_CLAMP = 10.0          # verl clamps the k3 ("low_var_kl") estimate to [-10, 10]


@dataclasses.dataclass(frozen=True)
class PPOLossConfig:
    """Static (hashable) settings of `ppo_loss`; defaults are the release's [C] values."""
    clip_low: float = 0.2            # ε_low  [C] clip_ratio_low
    clip_high: float = 0.28          # ε_high [C] clip_ratio_high (DAPO clip-higher)
    dual_clip: float | None = 10.0   # c      [C] clip_ratio_c; None disables; must be > 1
    kl_type: str = "k2"              # [C] kl_loss_type=mse -> k2 = ½(Δlogp)²
    kl_coef: float = 1e-4            # [C] kl_loss_coef; 0 disables (ref_logp then optional)
    entropy_coef: float = 0.0        # [C] entropy_coeff
    loss_agg: str = "token-mean"     # [C] verl default loss_agg_mode
    tis_cap: float | None = None     # truncated-IS cap C; None disables (not in the release)

    def __post_init__(self) -> None:
        if not self.clip_low >= 0 or not self.clip_high >= 0 or self.clip_low >= 1:
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, "
                             f"got {self.clip_low}, {self.clip_high}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        _checks.check_choice("kl_type", self.kl_type, KL_TYPES)
        _checks.check_choice("loss_agg", self.loss_agg, LOSS_AGGS)
        if self.kl_coef < 0 or self.entropy_coef < 0:
            raise ValueError(f"kl_coef and entropy_coef must be >= 0, "
                             f"got {self.kl_coef}, {self.entropy_coef}")
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ValueError(f"tis_cap must be > 0 (or None), got {self.tis_cap}")


def kl_penalty(logp: Any, ref_logp: Any, kl_type: str = "k2") -> Array:
    """Per-token KL(π || π_ref) estimate from sampled-token log-probs (nats); same shape as logp.

    k1 = Δ, k2 = ½Δ², k3 = exp(-Δ) - 1 + Δ (Δ = logp - ref_logp, clamped to ±20; k3 clamped to ±10).
    """
    _checks.check_choice("kl_type", kl_type, KL_TYPES)
    d = jnp.asarray(logp) - jnp.asarray(ref_logp)
    if kl_type == "k1":
        return d
    if kl_type == "k2":
        return 0.5 * d * d
    d = jnp.clip(d, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return jnp.clip(jnp.exp(-d) - 1.0 + d, -_K3_CLAMP, _K3_CLAMP)


def aggregate(x: Array, mask: Array, mode: str = "token-mean",
              denominator: Any = None) -> Array:
    """Reduce per-token values x [B, L] with mask [B, L] to a scalar (see module doc). Empty -> 0.

    `denominator` (optional): global token count ("token-mean") or global non-empty sequence count
    (seq-mean modes) to divide by instead of this batch's own.
    """
    _checks.check_choice("loss_agg", mode, LOSS_AGGS)
    m = mask.astype(x.dtype)
    xm = jnp.where(mask, x, 0.0)
    if mode == "token-mean":
        denom = jnp.sum(m) if denominator is None else jnp.asarray(denominator, x.dtype)
        return jnp.sum(xm) / jnp.maximum(denom, 1.0)
    ntok = jnp.sum(m, axis=-1)
    nonempty = ntok > 0
    nseq = (jnp.sum(nonempty.astype(x.dtype)) if denominator is None
            else jnp.asarray(denominator, x.dtype))
    nseq = jnp.maximum(nseq, 1.0)
    seq = jnp.sum(xm, axis=-1)
    if mode == "seq-mean-token-mean":
        seq = seq / jnp.maximum(ntok, 1.0)
    return jnp.sum(jnp.where(nonempty, seq, 0.0)) / nseq


def _masked_mean(x: Array, mask: Array) -> Array:
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1).astype(x.dtype)


def _masked_max(x: Array, mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.max(jnp.where(mask, x, -jnp.inf)), 0.0)


def _masked_min(x: Array, mask: Array) -> Array:
    return jnp.where(jnp.any(mask), jnp.min(jnp.where(mask, x, jnp.inf)), 0.0)


def ppo_loss(logp: Any, old_logp: Any, advantages: Any, mask: Any, *, ref_logp: Any = None,
             rollout_logp: Any = None, entropy: Any = None, cfg: PPOLossConfig = PPOLossConfig(),
             denominator: Any = None) -> tuple[Array, dict[str, Array]]:
    """Clipped-surrogate policy loss to minimise, plus diagnostics.

    Args:
      logp: [B, L] log π_θ(token) of the sampled response tokens under the current params (nats);
        the only argument gradients should flow through (plus `entropy`, if given).
      old_logp: [B, L] log-probs under the params that generated the batch, recomputed by the trainer.
      advantages: [B, L] per token, or [B] per sequence (broadcast over its tokens).
      mask: [B, L] bool/0-1, True on response tokens that are trained (policy tokens, kept by filters).
      ref_logp: [B, L] reference-policy log-probs; required when cfg.kl_coef > 0.
      rollout_logp: [B, L] log-probs reported by the rollout engine; enables TIS if cfg.tis_cap.
      entropy: [B, L] per-token policy entropies (nats); required when cfg.entropy_coef > 0.
      cfg: PPOLossConfig (hashable: pass via functools.partial or as a static argument under jit).
      denominator: optional global normaliser (tokens for "token-mean", sequences for seq-mean
        modes) so that micro-batch losses sum to the full-batch loss under gradient accumulation.
    Returns:
      (loss scalar, diagnostics dict of scalars: pg_loss, kl, kl_loss, entropy, pg_clipfrac_low,
       pg_clipfrac_high, dual_clip_frac, ratio_mean/max/min, approx_kl_old, tis_weight_mean/max/min,
       tis_clipfrac, rollout_kl (k3 estimate of KL(rollout || old) on rollout samples),
       num_tokens).
    """
    _checks.check_ndim("logp", logp, 2)
    shape = tuple(jnp.shape(logp))
    _checks.check_shape("old_logp", old_logp, shape)
    _checks.check_shape("mask", mask, shape)
    if jnp.ndim(advantages) == 1:
        _checks.check_shape("advantages", advantages, shape[:1])
    else:
        _checks.check_shape("advantages", advantages, shape)
    for name, x in (("ref_logp", ref_logp), ("rollout_logp", rollout_logp), ("entropy", entropy)):
        if x is not None:
            _checks.check_shape(name, x, shape)
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("ref_logp is required when cfg.kl_coef > 0 (set kl_coef=0 to disable KL)")
    if cfg.entropy_coef > 0 and entropy is None:
        raise ValueError("entropy is required when cfg.entropy_coef > 0")
    if cfg.tis_cap is not None and rollout_logp is None:
        raise ValueError("rollout_logp is required when cfg.tis_cap is set")

    m = jnp.asarray(mask).astype(bool)
    dtype = jnp.result_type(jnp.asarray(logp).dtype, jnp.float32)

    def clean(x: Any) -> Array:
        # Padding may hold garbage (e.g. -inf log-probs); zero it so no NaN reaches values or grads.
        return jnp.where(m, jnp.asarray(x, dtype), 0.0)

    logp = clean(logp)
    old = clean(old_logp)
    adv = jnp.asarray(advantages, dtype)
    if adv.ndim == 1:
        adv = jnp.broadcast_to(adv[:, None], shape)
    adv = clean(adv)

    log_ratio = jnp.clip(logp - old, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    surr = -adv * ratio
    surr_clipped = -adv * jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    pg = jnp.maximum(surr, surr_clipped)
    neg = adv < 0
    if cfg.dual_clip is not None:
        pg = jnp.where(neg, jnp.minimum(pg, -adv * cfg.dual_clip), pg)
        dual = neg & (ratio > cfg.dual_clip)
    else:
        dual = jnp.zeros(shape, bool)
    clip_high = (adv > 0) & (ratio > 1.0 + cfg.clip_high)
    clip_low = neg & (ratio < 1.0 - cfg.clip_low)

    diag: dict[str, Array] = {}
    if rollout_logp is not None:
        mismatch = old - clean(rollout_logp)          # log(π_old / π_rollout)
        d = jnp.clip(mismatch, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        # KL(π_rollout || π_old) from tokens sampled by the rollout policy: k3 with
        # r = π_old/π_rollout = exp(d) is r - 1 - log r (>= 0, unbiased under π_rollout).
        diag["rollout_kl"] = _masked_mean(jnp.exp(d) - 1.0 - d, m)
        diag["rollout_abs_logp_diff"] = _masked_mean(jnp.abs(mismatch), m)
        if cfg.tis_cap is not None:
            w = jax.lax.stop_gradient(jnp.exp(jnp.minimum(d, math.log(cfg.tis_cap))))
            pg = pg * w
            diag["tis_weight_mean"] = _masked_mean(w, m)
            diag["tis_weight_max"] = _masked_max(w, m)
            diag["tis_weight_min"] = _masked_min(w, m)
            diag["tis_clipfrac"] = _masked_mean((d >= math.log(cfg.tis_cap)).astype(dtype), m)

    pg_loss = aggregate(pg, m, cfg.loss_agg, denominator)
    loss = pg_loss
    if ref_logp is not None:
        kl = kl_penalty(logp, clean(ref_logp), cfg.kl_type)
        kl_loss = aggregate(kl, m, cfg.loss_agg, denominator)
        loss = loss + cfg.kl_coef * kl_loss
        diag["kl"] = _masked_mean(kl, m)
        diag["kl_loss"] = kl_loss
    if entropy is not None:
        ent = clean(entropy)
        ent_loss = aggregate(ent, m, cfg.loss_agg, denominator)
        loss = loss - cfg.entropy_coef * ent_loss
        diag["entropy"] = ent_loss

    f = lambda b: _masked_mean(b.astype(dtype), m)
    diag.update({
        "pg_loss": pg_loss,
        "pg_clipfrac_low": f(clip_low),
        "pg_clipfrac_high": f(clip_high),
        "dual_clip_frac": f(dual),
        "ratio_mean": _masked_mean(ratio, m),
        "ratio_max": _masked_max(ratio, m),
        "ratio_min": _masked_min(ratio, m),
        "approx_kl_old": _masked_mean(0.5 * log_ratio ** 2, m),
        "num_tokens": jnp.sum(m).astype(jnp.int32),
    })
    diag = {k: jax.lax.stop_gradient(v) for k, v in diag.items()}
    return loss, diag

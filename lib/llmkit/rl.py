"""Reinforcement learning from a reward: PPO with a KL penalty, and a monitor (chapter 11).

The recipe of Ziegler et al. (2019), as the ``trl`` library and InstructGPT (Ouyang et al.,
2022) run it. A *policy* (a language model with a value head) continues prompts; a reward
model scores each continuation; the policy is updated to raise the score while a *frozen
reference copy* of the starting model keeps it close to where it began::

    from llmkit import rl

    policy = rl.PolicyWithValue(model)            # value head zero-initialised
    ref = rl.reference_copy(model)                # frozen, never trained
    config = rl.PPOConfig(batch_size=32, max_new_tokens=16, init_kl_coef=0.2, target_kl=6.0)
    result = rl.train_ppo(policy, ref, prompts, score_fn, config, steps=100)
    result.history[-1]["score"], result.alarm     # metrics per step; why it stopped

**One step** (:func:`ppo_step`):

1. *Rollout* (:func:`rollout`): sample a continuation of every prompt with a temperature
   (prompts of different lengths are left-padded, with an attention mask); score it; run
   policy, reference and value head once over ``prompt + response`` for the
   log-probabilities of the sampled tokens, computed from the logits divided by the same
   temperature, so that they are those of the distribution the tokens were drawn from.
   Dropout is off throughout (the policy is in evaluation mode), so that the same weights
   give the same probabilities when sampling and when training.
2. *Rewards* (:func:`per_token_rewards`): ``-beta * KL`` on every response token, a
   per-token estimate of ``KL(policy || reference)`` (:func:`kl_penalty`), plus the score on
   the **last real** response token.
3. *Advantages* (:func:`gae`): generalised advantage estimation (Schulman et al., 2016),
   then whitened over the real tokens (:func:`whiten`).
4. *Update* (:func:`ppo_update`): several epochs of minibatches of the clipped losses
   (:func:`ppo_policy_loss`, :func:`ppo_value_loss`; Schulman et al., 2017), stopping an
   update early when the approximate KL between the new and the sampling policy passes a
   limit.
5. *The KL coefficient* ``beta`` adapts (:class:`KLController`, Ziegler et al. 2019):
   it grows when the measured KL is above the target and shrinks when below.

**The monitor** (:class:`Monitor`), Toyota's *Andon cord*: declarative :class:`Rule` s on
the metrics of every step (KL above a limit, a negative KL, ratio blow-ups, entropy
collapse, a sudden jump of the reward, NaN or inf, and any canary you give) that stop
training, write the last healthy policy as a checkpoint (:mod:`llmkit.checkpoint`) and say
which rule fired on what values. :func:`train_ppo` runs one by default.

**Sign bugs on purpose.** Ziegler et al. (2019) report a refactor that flipped the sign of
the reward and of the KL penalty, found only after a night of training. ``PPOConfig(flip=
...)`` flips chosen terms: ``"score"`` (the per-token reward becomes ``-score - beta*KL``),
``"kl"`` (``score + beta*KL``: the penalty becomes a bonus), both (``-score + beta*KL``), or
``"advantage"`` (every advantage negated after whitening: PPO descends instead of ascends).

Tensor layout: a batch of ``b`` rollouts is ``ids (b, P + R)``, the prompts left-padded to
``P`` columns, the responses right-padded to ``R`` (a row that produced the end-of-sequence
token stops there). Per-token quantities (log-probabilities, values, rewards, advantages)
are ``(b, R)``, with ``response_mask (b, R)`` marking the real response tokens.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate

__all__ = [
    "KL_KINDS",
    "FLIPS",
    "PolicyWithValue",
    "reference_copy",
    "masked_mean",
    "masked_var",
    "whiten",
    "last_token_index",
    "kl_penalty",
    "per_token_rewards",
    "gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "KLController",
    "PPOConfig",
    "Rollout",
    "token_logprobs",
    "rollout",
    "compute_advantages",
    "ppo_update",
    "ppo_step",
    "Rule",
    "Alarm",
    "Monitor",
    "PPOResult",
    "train_ppo",
    "METRIC_LABELS",
    "plot_metrics",
    "SENTIMENT_PPO_RECIPES",
    "sentiment_ppo_recipe",
    "sentiment_ppo",
]

KL_KINDS = ("k1", "k3")
#: What :class:`PPOConfig`'s ``flip`` can flip on purpose (the sign-flip bug).
FLIPS = ("score", "kl", "advantage")


# ----------------------------------------------------------------------------- checks


def _tensor(name: str, x: Any, dims: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None and x.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(x.shape)}")
    return x


def _float(name: str, x: Any, dims: int | None = None) -> torch.Tensor:
    x = _tensor(name, x, dims)
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _same_shape(name: str, x: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    if x.shape != like.shape:
        raise ValueError(
            f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(x.shape)}"
        )


def _mask(mask: Any, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """``mask`` as a bool tensor of ``like``'s shape (``None``: all real)."""
    if mask is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    mask = _tensor(name, mask)
    _same_shape(name, mask, "the values", like)
    if mask.dtype != torch.bool:
        if mask.dtype.is_complex or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must be bool or hold only 0 and 1 (1 = real token)")
        mask = mask != 0
    return mask.to(like.device)


# ------------------------------------------------------------------------- the models


class PolicyWithValue(nn.Module):
    """A causal language model with a value head: ``(ids, mask) -> (logits, values)``.

    The value head is ``nn.Linear(d_model, 1)`` on the model's final hidden state (what the
    language-model head reads), initialised to zero weights and bias: at the start every
    value is exactly 0, so the first advantages are the rewards-to-go themselves and the
    head cannot disturb the policy's first update.

    Args:
        model: a :class:`~llmkit.gpt.GPT` or :class:`~llmkit.llama.Llama` (anything with
            ``hidden_states(ids, attention_mask=...)``, ``lm_head`` and ``config.d_model``).
            It is trained in place.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not (
            isinstance(model, nn.Module)
            and callable(getattr(model, "hidden_states", None))
            and isinstance(getattr(model, "lm_head", None), nn.Module)
        ):
            raise TypeError(
                "model must be a decoder with hidden_states() and lm_head (llmkit.gpt.GPT, "
                f"llmkit.llama.Llama), got {type(model).__name__}"
            )
        self.model = model
        self.config = model.config
        self.value_head = nn.Linear(int(model.config.d_model), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(b, t, vocab)`` and values ``(b, t)`` (float32) for ``ids (b, t)``.

        ``values[:, i]`` estimates the return from the state ``ids[:, : i + 1]``, before the
        token ``ids[:, i + 1]`` is chosen.
        """
        hidden = self.model.hidden_states(ids, attention_mask=attention_mask)  # (b, t, d)
        logits = self.model.lm_head(hidden)  # (b, t, vocab)
        values = self.value_head(hidden).squeeze(-1).float()  # (b, t)
        return logits, values


def reference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (or of a :class:`PolicyWithValue`'s model): evaluation
    mode, no gradients, its own weights (training the policy never moves it)."""
    if isinstance(model, PolicyWithValue):
        model = model.model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


# ------------------------------------------------------------------ masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None):
    """Mean of ``x`` over the positions where ``mask`` is true (all of them, or along
    ``dim``); 0 where no position is real."""
    x = _float("x", x)
    m = _mask(mask, x).to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The (population) variance of ``x`` over the real positions, a 0-d tensor."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(
    x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True
) -> torch.Tensor:
    """``(x - mean) / std`` over the real positions (padding set to 0).

    Whitening the advantages of a batch makes the size of a policy step independent of the
    reward's scale; about half the tokens get pushed up and half down.

    Args:
        x: ``(b, R)`` floats.
        mask: ``(b, R)``, true on real tokens (``None``: all).
        shift_mean: ``False`` keeps the mean (scales only).
    """
    m = _mask(mask, _float("x", x))
    mean, var = masked_mean(x, m), masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """The column of each row's last real token, ``(b,)`` long, from a ``(b, R)`` mask
    (padding on either side); every row needs a real token."""
    m = _mask(_tensor("mask", mask, 2), mask)
    if not bool(m.any(dim=1).all()):
        rows = (~m.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"mask must have a real token in every row; rows {rows[:5]}")
    positions = torch.arange(m.shape[1], device=m.device)
    return (m.long() * (positions + 1)).argmax(dim=1)


# -------------------------------------------------------------- rewards and advantages


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """A per-token estimate of ``KL(policy || reference)`` from sampled tokens.

    With ``log r = ref_logp - logp`` the log-ratio of the sampled token (Schulman's
    "Approximating KL divergence", 2020):

    * ``"k1"``: ``logp - ref_logp = -log r``; unbiased, but single tokens can be negative;
    * ``"k3"``: ``(r - 1) - log r``; unbiased too, and never negative.

    Args:
        logp, ref_logp: ``(...)`` log-probabilities of the sampled tokens under the policy
            and the reference.
    Returns:
        ``(...)``, the estimate per token.
    """
    _float("logp", logp)
    _float("ref_logp", ref_logp)
    _same_shape("ref_logp", ref_logp, "logp", logp)
    validate.one_of("kind", kind, KL_KINDS)
    if kind == "k1":
        return logp - ref_logp
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def per_token_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward of every response token: ``-beta * KL`` plus the score at the end.

    ``rewards[i, t] = -beta * kl_penalty(logp, ref_logp)[i, t]`` on every real token, and
    ``scores[i]`` is added on the **last real token** of row ``i`` (padding may be on either
    side); padding gets 0. The sum of a row's rewards is the KL-regularised objective of
    Ziegler et al. (2019): ``score - beta * KL(policy || reference)``.

    Args:
        scores: ``(b,)``, the reward model's score of each response.
        logp, ref_logp: ``(b, R)`` log-probabilities of the response tokens.
        mask: ``(b, R)``, true on real response tokens (at least one per row).
        beta: the KL coefficient, ``>= 0``.
    Returns:
        ``rewards (b, R)`` and ``kl (b, R)``, the per-token KL estimate (0 on padding).
    """
    scores = _float("scores", scores, 1)
    logp = _float("logp", logp, 2)
    if scores.shape[0] != logp.shape[0]:
        raise ValueError(
            f"scores must have one entry per row of logp ({logp.shape[0]}), got "
            f"{tuple(scores.shape)}"
        )
    beta = validate.number("beta", beta, low=0.0)
    m = _mask(mask, logp)
    kl = torch.where(m, kl_penalty(logp, ref_logp, kind), torch.zeros_like(logp))
    rewards = -beta * kl
    last = last_token_index(m)
    rows = torch.arange(logp.shape[0], device=logp.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016), batched with a mask.

    Over the real tokens of a row, in order, ``delta_t = r_t + gamma * V_{t+1} - V_t`` (the
    value after the row's last real token is 0: the episode ends there) and
    ``A_t = sum_l (gamma * lam)^l * delta_{t+l}``, computed backwards as
    ``A_t = delta_t + gamma * lam * A_{t+1}``. Padding (anywhere in the row) is skipped: it
    neither ends nor interrupts the row. The returns, the value head's targets, are
    ``A_t + V_t``.

    Args:
        rewards, values: ``(b, R)``.
        mask: ``(b, R)``, true on real tokens (``None``: all).
        gamma: the discount, in ``[0, 1]``; lam: the GAE parameter, in ``[0, 1]``.
    Returns:
        ``advantages (b, R)`` and ``returns (b, R)``, 0 on padding (no gradient).
    """
    rewards = _float("rewards", rewards, 2)
    values = _float("values", values, 2)
    _same_shape("values", values, "rewards", rewards)
    gamma = validate.number("gamma", gamma, 0.0, 1.0)
    lam = validate.number("lam", lam, 0.0, 1.0)
    m = _mask(mask, rewards)
    rewards, values = rewards.detach(), values.detach()
    b, n = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(n)):
        real = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(real, adv, torch.zeros_like(adv))
        next_adv = torch.where(real, adv, next_adv)
        next_value = torch.where(real, values[:, t], next_value)
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns


# ---------------------------------------------------------------------------- losses


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate loss (Schulman et al., 2017), a mean over the real tokens.

    With ``ratio = exp(logp - old_logp)``, the loss of a token is
    ``max(-A * ratio, -A * clip(ratio, 1 - clip, 1 + clip))``, the negative of the
    pessimistic surrogate: once the ratio has left ``[1 - clip, 1 + clip]`` on the side the
    advantage pushes it towards, the clipped term is the larger and its gradient is 0.

    Args:
        logp: ``(b, R)`` log-probabilities of the sampled tokens under the policy being
            trained (with gradients).
        old_logp: ``(b, R)`` the same under the policy that sampled them (constants).
        advantages: ``(b, R)`` (constants).
        clip: ``epsilon`` in ``(0, 1)``.
        mask: ``(b, R)``, true on real tokens (``None``: all).
    Returns:
        the loss (0-d) and statistics (floats): ``clip_fraction`` (share of real tokens
        where the clipped term is taken), ``approx_kl`` (mean ``(ratio - 1) - log ratio``,
        an estimate of ``KL(old || new)``), ``ratio_mean``, ``ratio_min``, ``ratio_max``.
    """
    logp = _float("logp", logp)
    for name, x in (("old_logp", old_logp), ("advantages", advantages)):
        _same_shape(name, _float(name, x), "logp", logp)
    clip = validate.number("clip", clip)
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clip must lie in (0, 1), got {clip}")
    m = _mask(mask, logp)
    log_ratio = logp - old_logp.detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach()
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        r = ratio[m]
        stats = {
            "clip_fraction": float(masked_mean((clipped > unclipped).float(), m)),
            "approx_kl": float(masked_mean(torch.expm1(-log_ratio) + log_ratio, m)),
            "ratio_mean": float(r.mean()) if r.numel() else 1.0,
            "ratio_min": float(r.min()) if r.numel() else 1.0,
            "ratio_max": float(r.max()) if r.numel() else 1.0,
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float | None = 0.2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped value loss: ``0.5 * max((V - G)^2, (clip(V, V_old +- clip) - G)^2)``.

    Args:
        values: ``(b, R)`` the value head now (with gradients); old_values: at sampling;
            returns: ``(b, R)`` the targets ``G`` from :func:`gae`.
        clip: how far a value may move from ``old_values`` before its gradient stops
            (``None``: no clipping, plain squared error).
        mask: ``(b, R)``, true on real tokens (``None``: all).
    Returns:
        the loss (0-d), and ``value_error`` (mean squared error of ``values`` against the
        returns) and ``value_clip_fraction``.
    """
    values = _float("values", values)
    for name, x in (("old_values", old_values), ("returns", returns)):
        _same_shape(name, _float(name, x), "values", values)
    m = _mask(mask, values)
    returns, old_values = returns.detach(), old_values.detach()
    err = (values - returns) ** 2
    if clip is None:
        worst, clipped_frac = err, 0.0
    else:
        clip = validate.positive("clip", clip)
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err_clipped = (v_clipped - returns) ** 2
        worst = torch.maximum(err, err_clipped)
        clipped_frac = float(masked_mean((err_clipped > err).float(), m))
    loss = 0.5 * masked_mean(worst, m)
    return loss, {
        "value_error": float(masked_mean(err.detach(), m)),
        "value_clip_fraction": clipped_frac,
    }


# ------------------------------------------------------------------- KL controller


class KLController:
    """The KL coefficient ``beta``: fixed, or adaptive (Ziegler et al., 2019).

    Adaptive (``target`` given): after a step that measured ``kl`` (nats per response)
    over ``n`` rollouts, ``e = clip(kl / target - 1, -0.2, 0.2)`` and
    ``beta <- beta * (1 + e * n / horizon)``: above the target beta grows, below it shrinks,
    by at most 20 % per ``horizon`` rollouts.

    Args:
        init: the starting ``beta``, ``>= 0``.
        target: the KL aimed at (``None``: ``beta`` stays fixed).
        horizon: rollouts over which a full correction applies (``> 0``).
    """

    def __init__(self, init: float, target: float | None = None, horizon: float = 10_000) -> None:
        self.value = validate.number("init", init, low=0.0)
        self.target = None if target is None else validate.positive("target", target)
        self.horizon = validate.positive("horizon", horizon)

    def update(self, kl: float, n: int) -> float:
        """Adapt to the measured ``kl`` over ``n`` rollouts; return the new ``beta``."""
        kl = validate.number("kl", kl)
        n = validate.positive_int("n", n)
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n / self.horizon
        return self.value

    def __repr__(self) -> str:
        return (
            f"KLController(value={self.value:.4g}, target={self.target}, horizon={self.horizon:g})"
        )


# ------------------------------------------------------------------------- the config


@dataclass
class PPOConfig:
    """The settings of :func:`train_ppo` (defaults after ``trl``'s sentiment example).

    Sampling: ``batch_size`` prompts per step, ``max_new_tokens`` per response,
    ``temperature`` (the log-probabilities use the same one), optional ``top_k`` (sampling
    and log-probabilities from the same filtered distribution), ``eos_token_id`` (a row stops
    after it) and ``pad_id``.
    Rewards: ``init_kl_coef`` (beta), ``target_kl`` (nats per response; ``None``: fixed beta),
    ``horizon``, ``kl_kind`` (:func:`kl_penalty`), ``gamma``, ``lam``,
    ``whiten_advantages``, ``score_clip`` (scores clipped to +-this; ``None``: not).
    Update: ``ppo_epochs`` passes over the batch in minibatches of ``minibatch_size``,
    ``lr`` (Adam), ``clip`` (policy ratio), ``value_clip``, ``vf_coef`` (weight of the value
    loss), ``max_grad_norm``, ``early_stop_kl`` (stop an update once a minibatch's
    approximate KL exceeds it; ``None``: never).
    ``flip``: flip on purpose the sign of ``"score"``, ``"kl"`` (the penalty's) and/or
    ``"advantage"``, to reproduce sign bugs (default: none).
    """

    batch_size: int = 32
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    eos_token_id: int | None = None
    pad_id: int = 0
    init_kl_coef: float = 0.2
    target_kl: float | None = 6.0
    horizon: float = 10_000.0
    kl_kind: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    score_clip: float | None = None
    ppo_epochs: int = 4
    minibatch_size: int = 8
    lr: float = 1.41e-5
    clip: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.1
    max_grad_norm: float | None = 1.0
    early_stop_kl: float | None = None
    flip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate.positive_int("batch_size", self.batch_size)
        validate.positive_int("max_new_tokens", self.max_new_tokens)
        validate.positive("temperature", self.temperature)
        if self.top_k is not None:
            validate.positive_int("top_k", self.top_k)
        if self.eos_token_id is not None:
            validate.integer("eos_token_id", self.eos_token_id, minimum=0)
        validate.integer("pad_id", self.pad_id, minimum=0)
        validate.number("init_kl_coef", self.init_kl_coef, low=0.0)
        if self.target_kl is not None:
            validate.positive("target_kl", self.target_kl)
        validate.positive("horizon", self.horizon)
        validate.one_of("kl_kind", self.kl_kind, KL_KINDS)
        validate.number("gamma", self.gamma, 0.0, 1.0)
        validate.number("lam", self.lam, 0.0, 1.0)
        validate.boolean("whiten_advantages", self.whiten_advantages)
        if self.score_clip is not None:
            validate.positive("score_clip", self.score_clip)
        validate.positive_int("ppo_epochs", self.ppo_epochs)
        validate.positive_int("minibatch_size", self.minibatch_size)
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size must be <= batch_size ({self.batch_size}), got "
                f"{self.minibatch_size}"
            )
        validate.positive("lr", self.lr)
        if not 0.0 < validate.number("clip", self.clip) < 1.0:
            raise ValueError(f"clip must lie in (0, 1), got {self.clip}")
        if self.value_clip is not None:
            validate.positive("value_clip", self.value_clip)
        validate.number("vf_coef", self.vf_coef, low=0.0)
        if self.max_grad_norm is not None:
            validate.positive("max_grad_norm", self.max_grad_norm)
        if self.early_stop_kl is not None:
            validate.positive("early_stop_kl", self.early_stop_kl)
        if isinstance(self.flip, str):
            raise TypeError(f"flip must be a tuple of names from {FLIPS}, got {self.flip!r}")
        self.flip = tuple(self.flip)
        for name in self.flip:
            validate.one_of("flip", name, FLIPS)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        d = asdict(self)
        d["flip"] = list(self.flip)
        return d


# ----------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """One batch of sampled responses and what the update needs of them.

    ``ids``/``attention_mask`` ``(b, P + R)``: left-padded prompts, right-padded responses;
    ``response_mask`` ``(b, R)``; ``logprobs``, ``ref_logprobs``, ``values``, ``kl``,
    ``rewards``, ``advantages``, ``returns``: ``(b, R)`` float32, 0 on padding; ``scores``
    ``(b,)`` as the reward model gave them (before any flip or clip); ``entropy`` ``(b, R)``
    of the sampling distribution; ``prompts``, ``responses``: the token lists.
    """

    prompts: list[list[int]]
    responses: list[list[int]]
    ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    scores: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def prompt_len(self) -> int:
        """``P``, the padded prompt width."""
        return self.ids.shape[1] - self.response_mask.shape[1]


def _pad_batch(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], width: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ids``, ``attention_mask`` ``(b, P + width)`` and ``response_mask`` ``(b, width)``."""
    p = max(len(x) for x in prompts)
    b = len(prompts)
    ids = torch.full((b, p + width), pad_id, dtype=torch.long)
    mask = torch.zeros(b, p + width, dtype=torch.bool)
    for i, (q, r) in enumerate(zip(prompts, responses, strict=True)):
        ids[i, p - len(q) : p] = torch.tensor(list(q), dtype=torch.long)
        mask[i, p - len(q) : p] = True
        if r:
            ids[i, p : p + len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, p : p + len(r)] = True
    return ids, mask, mask[:, p:].clone()


def token_logprobs(
    model: nn.Module,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    *,
    with_values: bool = False,
    with_entropy: bool = False,
) -> dict[str, torch.Tensor]:
    """Log-probabilities of the last ``response_len`` tokens of each row, one forward pass.

    The logits predicting each response token are divided by ``temperature`` (and filtered
    to the ``top_k`` best, if given) before the log-softmax: the distribution the token was
    sampled from (:func:`llmkit.decoding.filter_logits`).

    Args:
        model: a :class:`PolicyWithValue` (values available) or a causal LM
            (``model(ids, attention_mask=...) -> logits``).
        ids, attention_mask: ``(b, P + R)``; ``response_len``: ``R``.
    Returns:
        ``{"logprobs": (b, R)}`` float32, plus ``"values"`` ``(b, R)`` (the value of the
        state before each response token) and ``"entropy"`` ``(b, R)`` when asked.
    """
    from llmkit.decoding import filter_logits

    n = validate.positive_int("response_len", response_len)
    if n >= ids.shape[1]:
        raise ValueError(f"response_len must be < the sequence length {ids.shape[1]}, got {n}")
    if isinstance(model, PolicyWithValue):
        logits, values = model(ids, attention_mask=attention_mask)
    else:
        if with_values:
            raise ValueError("with_values needs a PolicyWithValue")
        logits, values = model(ids, attention_mask=attention_mask), None
    logits = filter_logits(logits[:, -n - 1 : -1].float(), temperature, top_k)  # (b, R, V)
    logp_all = F.log_softmax(logits, dim=-1)
    targets = ids[:, -n:]
    out = {"logprobs": logp_all.gather(-1, targets[..., None]).squeeze(-1)}
    if with_values:
        out["values"] = values[:, -n - 1 : -1]
    if with_entropy:
        p = logp_all.exp()
        out["entropy"] = -(p * logp_all.masked_fill(p == 0, 0.0)).sum(-1)
    return out


def _check_prompts(prompts: Any, vocab: int) -> list[list[int]]:
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, list | tuple) or not p:
            raise ValueError(f"prompts[{i}] must be a non-empty list of token ids, got {p!r}")
        if not all(isinstance(t, int) and 0 <= t < vocab for t in p):
            raise ValueError(f"prompts[{i}] must hold ints in [0, {vocab}) (vocab_size)")
        out.append(list(p))
    return out


@torch.no_grad()
def rollout(
    policy: PolicyWithValue,
    ref_model: nn.Module,
    prompts: Sequence[Sequence[int]],
    score_fn: Callable[[list[list[int]], list[list[int]]], torch.Tensor],
    config: PPOConfig,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample a response to every prompt, score it, and measure it under all three models.

    Sampling is :func:`llmkit.decoding.generate_batch` (left padding, an attention mask,
    the KV cache) with ``config.temperature`` and ``config.top_k``; the log-probabilities
    of policy and reference come from one padded forward pass each, through the same
    temperature and filter. Dropout is off (evaluation mode) for both.

    Args:
        policy: the :class:`PolicyWithValue` being trained.
        ref_model: the frozen reference (:func:`reference_copy`).
        prompts: ``b`` prompts, lists of token ids of any lengths.
        score_fn: ``(prompts, responses) -> scores (b,)``, the reward model; a response is
            a (possibly empty) list of new token ids.
        generator: for sampling.
    """
    from llmkit.decoding import generate_batch

    if not isinstance(policy, PolicyWithValue):
        raise TypeError(f"policy must be a PolicyWithValue, got {type(policy).__name__}")
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
    prompts = _check_prompts(prompts, int(policy.config.vocab_size))
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    try:
        responses = generate_batch(
            policy.model,
            prompts,
            config.max_new_tokens,
            "sample",
            eos_token_id=config.eos_token_id,
            pad_id=config.pad_id,
            temperature=config.temperature,
            top_k=config.top_k,
            generator=generator,
        )
        empty = [i for i, r in enumerate(responses) if not r]
        if empty:
            raise ValueError(f"rows {empty[:5]} produced no token (max_new_tokens >= 1)")
        width = max(len(r) for r in responses)
        ids, mask, resp_mask = _pad_batch(prompts, responses, width, config.pad_id)
        ids, mask, resp_mask = ids.to(device), mask.to(device), resp_mask.to(device)
        mine = token_logprobs(
            policy,
            ids,
            mask,
            width,
            config.temperature,
            config.top_k,
            with_values=True,
            with_entropy=True,
        )
        ref = token_logprobs(ref_model, ids, mask, width, config.temperature, config.top_k)
    finally:
        policy.train(was_training)
    scores = score_fn(prompts, responses)
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores, dtype=torch.float32)
    scores = scores.detach().float().reshape(-1).to(device)
    if scores.shape[0] != len(prompts):
        raise ValueError(
            f"score_fn must return one score per prompt ({len(prompts)}), got {tuple(scores.shape)}"
        )
    zero = torch.zeros_like(mine["logprobs"])
    return Rollout(
        prompts=prompts,
        responses=responses,
        ids=ids,
        attention_mask=mask,
        response_mask=resp_mask,
        scores=scores,
        logprobs=torch.where(resp_mask, mine["logprobs"], zero),
        ref_logprobs=torch.where(resp_mask, ref["logprobs"], zero),
        values=torch.where(resp_mask, mine["values"], zero),
        entropy=torch.where(resp_mask, mine["entropy"], zero),
    )


def compute_advantages(batch: Rollout, beta: float, config: PPOConfig) -> None:
    """Fill ``kl``, ``rewards``, ``advantages`` and ``returns`` of a rollout in place.

    Scores clipped to ``config.score_clip`` (if set), :func:`per_token_rewards` with
    ``beta`` and ``config.kl_kind``, :func:`gae`, whitening over the real tokens (if
    ``config.whiten_advantages``), and the sign flips of ``config.flip``.
    """
    scores = batch.scores
    if config.score_clip is not None:
        scores = scores.clamp(-config.score_clip, config.score_clip)
    if "score" in config.flip:
        scores = -scores
    rewards, kl = per_token_rewards(
        scores,
        batch.logprobs,
        batch.ref_logprobs,
        batch.response_mask,
        beta,
        config.kl_kind,
    )
    if "kl" in config.flip:  # -(-beta * kl) = +beta * kl: the penalty becomes a bonus
        rewards = rewards + 2 * beta * kl
    adv, ret = gae(rewards, batch.values, batch.response_mask, config.gamma, config.lam)
    if config.whiten_advantages:
        adv = whiten(adv, batch.response_mask)
    if "advantage" in config.flip:
        adv = -adv
    batch.kl, batch.rewards, batch.advantages, batch.returns = kl, rewards, adv, ret


def ppo_update(
    policy: PolicyWithValue,
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    config: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Several epochs of minibatches of the clipped losses on one rollout.

    Each epoch shuffles the rows and takes minibatches of ``config.minibatch_size``; the
    loss is ``ppo_policy_loss + vf_coef * ppo_value_loss``, the gradient clipped to
    ``max_grad_norm``. Dropout stays off. When a minibatch's approximate KL exceeds
    ``config.early_stop_kl``, the update stops after that minibatch.

    Returns:
        the statistics averaged over the minibatches done: ``policy_loss``, ``value_loss``,
        ``clip_fraction``, ``approx_kl``, ``ratio_mean``, ``value_error``,
        ``value_clip_fraction``; ``ratio_min``/``ratio_max`` over all of them;
        ``minibatches`` done and ``early_stopped`` (0 or 1).
    """
    if batch.advantages is None or batch.returns is None:
        raise ValueError("batch has no advantages: compute them first (ppo_step does)")
    b = batch.ids.shape[0]
    n = batch.response_mask.shape[1]
    was_training = policy.training
    policy.eval()  # dropout off: the probabilities of the sampling policy
    sums: dict[str, float] = {}
    ratio_min, ratio_max, done, stopped = math.inf, -math.inf, 0, False
    try:
        for _ in range(config.ppo_epochs):
            order = torch.randperm(b, generator=generator).tolist()
            for start in range(0, b, config.minibatch_size):
                rows = torch.tensor(order[start : start + config.minibatch_size])
                rows = rows.to(batch.ids.device)
                m = batch.response_mask[rows]
                out = token_logprobs(
                    policy,
                    batch.ids[rows],
                    batch.attention_mask[rows],
                    n,
                    config.temperature,
                    config.top_k,
                    with_values=True,
                )
                pl, ps = ppo_policy_loss(
                    out["logprobs"], batch.logprobs[rows], batch.advantages[rows], config.clip, m
                )
                vl, vs = ppo_value_loss(
                    out["values"], batch.values[rows], batch.returns[rows], config.value_clip, m
                )
                loss = pl + config.vf_coef * vl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                done += 1
                stats = {
                    "policy_loss": pl.detach().item(),
                    "value_loss": vl.detach().item(),
                    **ps,
                    **vs,
                }
                ratio_min = min(ratio_min, stats.pop("ratio_min"))
                ratio_max = max(ratio_max, stats.pop("ratio_max"))
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                if config.early_stop_kl is not None and ps["approx_kl"] > config.early_stop_kl:
                    stopped = True
                    break
            if stopped:
                break
    finally:
        policy.train(was_training)
    out_stats = {k: v / done for k, v in sums.items()}
    out_stats.update(
        ratio_min=ratio_min,
        ratio_max=ratio_max,
        minibatches=float(done),
        early_stopped=float(stopped),
    )
    return out_stats


def ppo_step(
    policy: PolicyWithValue,
    ref_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    score_fn: Callable[[list[list[int]], list[list[int]]], torch.Tensor],
    config: PPOConfig,
    kl_ctl: KLController,
    generator: torch.Generator | None = None,
    monitor: Monitor | None = None,
    history: Sequence[Mapping[str, float]] = (),
    before_update: Callable[[], None] | None = None,
) -> tuple[Rollout, dict[str, float], Alarm | None]:
    """One PPO step: rollout, rewards and advantages, update, adapt ``beta``.

    With a ``monitor``, the rollout's metrics are checked before the update and the
    update's after it; an alarm on the rollout skips the update. ``before_update`` is
    called when the rollout passed, just before the update (:func:`train_ppo` keeps the
    weights that produced a healthy rollout there).

    Returns:
        the rollout, the step's metrics (:func:`train_ppo` lists them) and the alarm, if
        one rule fired.
    """
    if not isinstance(kl_ctl, KLController):
        raise TypeError(f"kl_ctl must be a KLController, got {type(kl_ctl).__name__}")
    t0 = time.perf_counter()
    batch = rollout(policy, ref_model, prompts, score_fn, config, generator)
    beta = kl_ctl.value
    compute_advantages(batch, beta, config)
    m = batch.response_mask
    seq_kl = batch.kl.sum(1)
    metrics: dict[str, float] = {
        "score": float(batch.scores.mean()),
        "score_std": float(batch.scores.std()) if len(batch.prompts) > 1 else 0.0,
        "kl": float(seq_kl.mean()),
        "kl_coef": float(beta),
        "entropy": float(masked_mean(batch.entropy, m)),
        "non_score_reward": float((-beta * batch.kl).sum(1).mean()),
        "response_len": float(m.sum(1).float().mean()),
        "advantage_mean": float(masked_mean(batch.advantages, m)),
        "return_mean": float(masked_mean(batch.returns, m)),
        "value_mean": float(masked_mean(batch.values, m)),
    }
    alarm = monitor.check(metrics, history, batch) if monitor is not None else None
    if alarm is None:
        if before_update is not None:
            before_update()
        metrics.update(ppo_update(policy, optimizer, batch, config, generator))
        if monitor is not None:
            alarm = monitor.check(metrics, history, None, phase="update")
        kl_ctl.update(metrics["kl"], len(batch.prompts))
    metrics["seconds"] = time.perf_counter() - t0
    return batch, metrics, alarm


# ------------------------------------------------------------------------- the monitor


@dataclass(frozen=True)
class Rule:
    """One health rule of a :class:`Monitor`.

    ``check(metrics, history, rollout) -> message | None``: ``metrics`` the current step's,
    ``history`` the earlier steps' (oldest first), ``rollout`` the step's :class:`Rollout`
    (``None`` when the rule runs after the update); a message (what is wrong, with the
    values) means the rule fires. ``phase``: ``"rollout"`` (checked before the update,
    on the rollout's metrics) or ``"update"`` (after it, on the update's statistics).
    Build rules with the class methods.
    """

    name: str
    check: Callable[
        [Mapping[str, float], Sequence[Mapping[str, float]], Rollout | None], str | None
    ]
    phase: str = "rollout"

    @classmethod
    def kl_above(cls, limit: float) -> Rule:
        """The KL to the reference (nats per response) above ``limit``."""
        limit = validate.positive("limit", limit)

        def check(m, h, r):  # noqa: ANN001, ARG001
            kl = m.get("kl", 0.0)
            return f"KL {kl:.3f} nats > limit {limit:g}" if kl > limit else None

        return cls("kl_above", check)

    @classmethod
    def kl_negative(cls, tolerance: float = 0.5) -> Rule:
        """A mean ``k1`` KL below ``-tolerance``: the sampled tokens are likelier under the
        reference than under the policy that drew them, which sampling cannot do on
        average (a temperature or padding mismatch between sampling and scoring)."""
        tolerance = validate.number("tolerance", tolerance, low=0.0)

        def check(m, h, r):  # noqa: ANN001, ARG001
            kl = m.get("kl", 0.0)
            return f"KL {kl:.3f} nats < -{tolerance:g}" if kl < -tolerance else None

        return cls("kl_negative", check)

    @classmethod
    def ratio_above(cls, limit: float = 10.0) -> Rule:
        """The largest probability ratio new/old in an update above ``limit``, or the
        smallest below ``1 / limit`` (the clip no longer holds the policy)."""
        limit = validate.number("limit", limit, low=1.0)

        def check(m, h, r):  # noqa: ANN001, ARG001
            hi, lo = m.get("ratio_max", 1.0), m.get("ratio_min", 1.0)
            if hi > limit or lo < 1.0 / limit:
                return f"ratio in [{lo:.3g}, {hi:.3g}], outside [1/{limit:g}, {limit:g}]"
            return None

        return cls("ratio_blowup", check, phase="update")

    @classmethod
    def entropy_collapse(cls, fraction: float = 0.1, minimum: float = 0.0) -> Rule:
        """The entropy per token below ``fraction`` of the first step's, or below
        ``minimum`` (nats): the policy writes the same text whatever the prompt."""
        fraction = validate.number("fraction", fraction, 0.0, 1.0)
        minimum = validate.number("minimum", minimum, low=0.0)

        def check(m, h, r):  # noqa: ANN001, ARG001
            ent = m.get("entropy", math.inf)
            first = h[0].get("entropy", ent) if h else ent
            if ent < minimum or ent < fraction * first:
                return (
                    f"entropy {ent:.3f} nats/token < max({fraction:g} x first step's "
                    f"{first:.3f}, {minimum:g})"
                )
            return None

        return cls("entropy_collapse", check)

    @classmethod
    def reward_jump(cls, max_jump: float) -> Rule:
        """The mean score changed by more than ``max_jump`` since the previous step."""
        max_jump = validate.positive("max_jump", max_jump)

        def check(m, h, r):  # noqa: ANN001, ARG001
            if not h or "score" not in h[-1]:
                return None
            jump = m.get("score", 0.0) - h[-1]["score"]
            if abs(jump) > max_jump:
                return (
                    f"mean score jumped {h[-1]['score']:.3f} -> {m['score']:.3f} "
                    f"(|{jump:.3f}| > {max_jump:g})"
                )
            return None

        return cls("reward_jump", check)

    @classmethod
    def reward_drop(cls, max_drop: float) -> Rule:
        """The mean score more than ``max_drop`` below the first step's: PPO maximises the
        reward, so a run whose reward falls is optimising something else (a sign bug)."""
        max_drop = validate.positive("max_drop", max_drop)

        def check(m, h, r):  # noqa: ANN001, ARG001
            if not h or "score" not in h[0]:
                return None
            drop = h[0]["score"] - m.get("score", 0.0)
            if drop > max_drop:
                return (
                    f"mean score fell {h[0]['score']:.3f} -> {m['score']:.3f} since the first "
                    f"step ({drop:.3f} > {max_drop:g})"
                )
            return None

        return cls("reward_drop", check)

    @classmethod
    def not_finite(cls, phase: str = "rollout") -> Rule:
        """A NaN or infinite metric."""
        validate.one_of("phase", phase, ("rollout", "update"))

        def check(m, h, r):  # noqa: ANN001, ARG001
            bad = {k: v for k, v in m.items() if not math.isfinite(v)}
            return f"not finite: {bad}" if bad else None

        return cls("not_finite" if phase == "rollout" else "not_finite_update", check, phase)

    @classmethod
    def canary(
        cls, fn: Callable[[Mapping[str, float], Rollout], str | None], name: str = "canary"
    ) -> Rule:
        """A user's own test of the rollout: ``fn(metrics, rollout) -> message | None`` (a
        second, independent classifier whose verdict moves against the reward, a list of
        words that must not appear, ...). It may add its own numbers to ``metrics``."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")

        def check(m, h, r):  # noqa: ANN001, ARG001
            return None if r is None else fn(m, r)

        return cls(name, check)


@dataclass
class Alarm:
    """A rule fired: which, at which step, on what values; the checkpoint written."""

    rule: str
    step: int
    message: str
    metrics: dict[str, float]
    checkpoint: Path | None = None

    def __str__(self) -> str:
        where = f"; last good policy in {self.checkpoint}" if self.checkpoint else ""
        return f"stopped at step {self.step} by rule {self.rule!r}: {self.message}{where}"


class Monitor:
    """The stop-the-line cord: rules checked on every step's metrics.

    ``Monitor()`` holds the default rules: NaN/inf, ``kl_above(kl_max)``,
    ``kl_negative()``, ``ratio_above(ratio_max)``, ``entropy_collapse(entropy_fraction)``,
    plus ``reward_jump(reward_jump)`` and ``reward_drop(reward_drop)`` when given (their
    limits are in the reward's units, which only you know), plus ``canary`` when given.
    ``ratio_max=10`` follows ``trl``'s ``ratio_threshold``. Pass
    ``rules=[...]`` to choose them all yourself.

    Args:
        rules: the rules (``None``: the defaults built from the other arguments).
        kl_max, ratio_max, entropy_fraction, reward_jump: the defaults' limits.
        canary: a user test, ``(metrics, rollout) -> message | None``.
    """

    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        kl_max: float = 30.0,
        ratio_max: float = 10.0,
        entropy_fraction: float = 0.1,
        reward_jump: float | None = None,
        reward_drop: float | None = None,
        canary: Callable[[Mapping[str, float], Rollout], str | None] | None = None,
    ) -> None:
        if rules is None:
            rules = [
                Rule.not_finite(),
                Rule.not_finite("update"),
                Rule.kl_above(kl_max),
                Rule.kl_negative(),
                Rule.ratio_above(ratio_max),
                Rule.entropy_collapse(entropy_fraction),
            ]
            if reward_jump is not None:
                rules.append(Rule.reward_jump(reward_jump))
            if reward_drop is not None:
                rules.append(Rule.reward_drop(reward_drop))
            if canary is not None:
                rules.append(Rule.canary(canary))
        rules = list(rules)
        for i, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{i}] must be a Rule, got {type(rule).__name__}")
        self.rules = rules

    def check(
        self,
        metrics: Mapping[str, float],
        history: Sequence[Mapping[str, float]] = (),
        rollout: Rollout | None = None,
        phase: str = "rollout",
    ) -> Alarm | None:
        """The first rule of ``phase`` that fires, as an :class:`Alarm` (step =
        ``len(history)``), or ``None``."""
        validate.one_of("phase", phase, ("rollout", "update"))
        for rule in self.rules:
            if rule.phase != phase:
                continue
            message = rule.check(metrics, history, rollout)
            if message:
                return Alarm(rule.name, len(history), message, dict(metrics))
        return None

    def watch(self, stream: Sequence[Mapping[str, float]]) -> Alarm | None:
        """Replay a stream of per-step metrics (both phases, no rollouts); the first alarm."""
        history: list[Mapping[str, float]] = []
        for metrics in stream:
            for phase in ("rollout", "update"):
                alarm = self.check(metrics, history, None, phase)
                if alarm is not None:
                    return alarm
            history.append(metrics)
        return None

    def __repr__(self) -> str:
        return f"Monitor(rules={[r.name for r in self.rules]})"


# ------------------------------------------------------------------------ the loop


@dataclass
class PPOResult:
    """What :func:`train_ppo` did: ``history`` (one metrics dict per step done), the
    ``alarm`` that stopped it (``None``: it ran every step) and the last rollout."""

    history: list[dict[str, float]]
    alarm: Alarm | None = None
    last_rollout: Rollout | None = None
    kl_coef: float = field(default=0.0)


def train_ppo(
    policy: PolicyWithValue,
    ref_model: nn.Module,
    prompts: Sequence[Sequence[int]],
    score_fn: Callable[[list[list[int]], list[list[int]]], torch.Tensor],
    config: PPOConfig,
    steps: int,
    *,
    monitor: Monitor | bool = True,
    checkpoint_dir: str | Path | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, dict[str, float], Rollout], None] | None = None,
) -> PPOResult:
    """Train ``policy`` with PPO for ``steps`` steps, with the monitor on by default.

    Each step draws ``config.batch_size`` prompts (with replacement, from ``generator``)
    and runs :func:`ppo_step`. When a rule of the monitor fires, training stops: the policy
    is put back to the weights that produced the last healthy rollout (those of the first
    step when none was), and those are written with
    :func:`llmkit.checkpoint.save_checkpoint` to ``checkpoint_dir`` (default: a new
    temporary directory), the history and the alarm in its record.

    Args:
        policy, ref_model: :class:`PolicyWithValue` and :func:`reference_copy`.
        prompts: the pool of prompts (token-id lists).
        score_fn: ``(prompts, responses) -> scores (b,)``.
        config: a :class:`PPOConfig`; steps: ``>= 1``.
        monitor: ``True`` (default :class:`Monitor`), a :class:`Monitor`, or ``False``
            (none: not recommended).
        optimizer: default Adam at ``config.lr`` over the policy's parameters.
        generator: draws the prompts, the samples and the minibatch order.
        callback: called after every step with ``(step, metrics, rollout)``.
    """
    from llmkit import checkpoint as ckpt

    if not isinstance(policy, PolicyWithValue):
        raise TypeError(f"policy must be a PolicyWithValue, got {type(policy).__name__}")
    if not isinstance(config, PPOConfig):
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}")
    steps = validate.positive_int("steps", steps)
    pool = _check_prompts(prompts, int(policy.config.vocab_size))
    if monitor is True:
        monitor = Monitor()
    elif monitor is False:
        monitor = None
    elif not isinstance(monitor, Monitor):
        raise TypeError(f"monitor must be a Monitor or a bool, got {type(monitor).__name__}")
    if optimizer is None:
        optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    kl_ctl = KLController(config.init_kl_coef, config.target_kl, config.horizon)
    history: list[dict[str, float]] = []
    last_good = {k: v.detach().clone() for k, v in policy.state_dict().items()}

    def keep() -> None:  # the weights that just produced a healthy rollout
        for k, v in policy.state_dict().items():
            last_good[k].copy_(v)

    batch = None
    for step in range(steps):
        picks = torch.randint(len(pool), (config.batch_size,), generator=generator).tolist()
        batch, metrics, alarm = ppo_step(
            policy,
            ref_model,
            optimizer,
            [pool[i] for i in picks],
            score_fn,
            config,
            kl_ctl,
            generator,
            monitor,
            history,
            keep,
        )
        if alarm is not None:
            if alarm.metrics.keys() != metrics.keys():
                alarm.metrics = dict(metrics)
            history.append(metrics)
            policy.load_state_dict(last_good)
            path = (
                Path(checkpoint_dir)
                if checkpoint_dir is not None
                else Path(tempfile.mkdtemp(prefix="llmkit-ppo-")) / "last_good"
            )
            record = {
                "steps": history,
                "alarm": {"rule": alarm.rule, "step": alarm.step, "message": alarm.message},
                "ppo_config": config.to_dict(),
            }
            alarm.checkpoint = ckpt.save_checkpoint(
                path, policy, step=step, history=record, model_config=_config_dict(policy)
            )
            return PPOResult(history, alarm, batch, kl_ctl.value)
        history.append(metrics)
        if callback is not None:
            callback(step, metrics, batch)
    return PPOResult(history, None, batch, kl_ctl.value)


def _config_dict(policy: PolicyWithValue) -> dict | None:
    cfg = policy.config
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    return None


# ---------------------------------------------------------------------------- plotting

#: What :func:`plot_metrics` draws by default, with each panel's axis label.
METRIC_LABELS = {
    "score": "mean score",
    "kl": "KL to reference (nats/response)",
    "entropy": "entropy (nats/token)",
    "clip_fraction": "clip fraction",
    "ratio_max": "largest ratio new/old",
    "value_error": "value error (MSE)",
}


def plot_metrics(
    history: Sequence[Mapping[str, float]],
    keys: Sequence[str] = tuple(METRIC_LABELS),
    axes: Any = None,
    *,
    label: str | None = None,
) -> Any:
    """One panel per metric against the PPO step (the ``history`` of :func:`train_ppo`).

    Args:
        history: one metrics dict per step.
        keys: the metrics to draw (labels from :data:`METRIC_LABELS`, else the key).
        axes: a sequence of ``len(keys)`` matplotlib Axes to draw on (to compare runs);
            ``None``: a new figure, panels in rows of three.
        label: the legend entry of this run.
    Returns:
        the Axes, flattened.
    """
    if not isinstance(history, Sequence) or not all(isinstance(h, Mapping) for h in history):
        raise TypeError("history must be a list of metric dicts (PPOResult.history)")
    keys = list(keys)
    if not keys:
        raise ValueError("keys must name at least one metric")
    if axes is None:
        import matplotlib.pyplot as plt

        cols = min(3, len(keys))
        rows = -(-len(keys) // cols)
        _, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
        axes = list(grid.flat)
        for ax in axes[len(keys) :]:
            ax.set_visible(False)
    axes = list(axes)
    if len(axes) < len(keys):
        raise ValueError(f"axes must hold at least {len(keys)} Axes, got {len(axes)}")
    for ax, key in zip(axes, keys, strict=False):
        steps = [i for i, h in enumerate(history) if key in h]
        ax.plot(steps, [history[i][key] for i in steps], linewidth=1.2, label=label)
        ax.set_xlabel("PPO step")
        ax.set_ylabel(METRIC_LABELS.get(key, key))
        ax.grid(True, alpha=0.3)
        if label:
            ax.legend(fontsize="small")
    return axes[: len(keys)]


# ------------------------------------------------------------- chapter 11's experiment

#: Chapter 11's PPO runs (:func:`sentiment_ppo`), per profile: ``steps`` PPO steps;
#: ``ppo``: :class:`PPOConfig` fields (``init_kl_coef``, ``target_kl`` and ``flip`` come
#: from :func:`sentiment_ppo`'s arguments); ``prompts``: the training prompts
#: (:func:`llmkit.pretrained.review_prompts` of the validation split); ``eval``: the fixed
#: held-out prompts (the first ``n`` of the test split) and the seed of their samples;
#: ``monitor``: the limits of the course's monitor (``reward_drop`` in logits,
#: ``canary_drop`` in probability); ``seed``: draws the prompts, samples and minibatches.
SENTIMENT_PPO_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {
        "steps": 3,
        "ppo": {
            "batch_size": 8,
            "max_new_tokens": 8,
            "minibatch_size": 4,
            "ppo_epochs": 2,
            "lr": 1e-4,
            "horizon": 1000.0,
        },
        "prompts": {"split": "validation", "n": 64},
        "eval": {"split": "test", "n": 8, "seed": 1234},
        "monitor": {"reward_drop": 1.5, "canary_drop": 0.1},
        "seed": 0,
    },
    "book": {
        "steps": 60,
        "ppo": {
            "batch_size": 64,
            "max_new_tokens": 20,
            "minibatch_size": 16,
            "ppo_epochs": 4,
            "lr": 3e-4,
            "horizon": 1000.0,
        },
        "prompts": {"split": "validation", "n": None},
        "eval": {"split": "test", "n": 128, "seed": 1234},
        "monitor": {"reward_drop": 1.5, "canary_drop": 0.1},
        "seed": 0,
    },
    "full": {
        "steps": 200,
        "ppo": {
            "batch_size": 128,
            "max_new_tokens": 24,
            "minibatch_size": 32,
            "ppo_epochs": 4,
            "lr": 1e-4,
            "horizon": 10_000.0,
        },
        "prompts": {"split": "validation", "n": None},
        "eval": {"split": "test", "n": 512, "seed": 1234},
        "monitor": {"reward_drop": 1.5, "canary_drop": 0.1},
        "seed": 0,
    },
}

_SENTIMENT_PPO_FORMAT = 1


def sentiment_ppo_recipe(profile: str | None = None) -> dict[str, Any]:
    """A copy of :func:`sentiment_ppo`'s recipe for ``profile`` (default: the current one)."""
    from llmkit import cache

    return copy.deepcopy(SENTIMENT_PPO_RECIPES[cache.profile_name(profile)])


def _texts(tokenizer: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]):
    """Prompt (without its leading ``<|endoftext|>``) + response (cut at it), as text."""
    eot = tokenizer.special_tokens["<|endoftext|>"]
    out = []
    for p, r in zip(prompts, responses, strict=True):
        r = list(r)
        if eot in r:
            r = r[: r.index(eot)]
        out.append(tokenizer.decode([t for t in p if t != eot] + r))
    return out


def _distinct2(responses: Sequence[Sequence[int]]) -> float:
    bigrams = [tuple(r[i : i + 2]) for r in responses for i in range(len(r) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def _evaluate(
    policy: PolicyWithValue,
    ref: nn.Module,
    prompts: list[list[int]],
    tokenizer: Any,
    reward: Callable[[list[str]], torch.Tensor],
    judge: Any,
    config: PPOConfig,
    seed: int,
) -> tuple[dict[str, float], list[str], list[float]]:
    """One sample per fixed prompt: mean score, KL, judge's P(positive), fluency numbers."""
    texts: list[str] = []

    def score_fn(p: list[list[int]], r: list[list[int]]) -> torch.Tensor:
        texts.extend(_texts(tokenizer, p, r))
        return reward(texts[-len(p) :])

    g = torch.Generator().manual_seed(seed)
    eval_config = PPOConfig(**{**config.to_dict(), "batch_size": len(prompts), "flip": ()})
    batch = rollout(policy, ref, prompts, score_fn, eval_config, g)
    m = batch.response_mask
    seq_kl = ((batch.logprobs - batch.ref_logprobs) * m).sum(1)
    judge_p = judge.probabilities(texts)[:, 1]
    stats = {
        "score": float(batch.scores.mean()),
        "score_std": float(batch.scores.std()) if len(prompts) > 1 else 0.0,
        "positive": float((batch.scores > 0).float().mean()),
        "kl": float(seq_kl.mean()),
        "kl_std": float(seq_kl.std()) if len(prompts) > 1 else 0.0,
        "judge_positive": float(judge_p.mean()),
        "ref_nll": float(masked_mean(-batch.ref_logprobs, m)),
        "entropy": float(masked_mean(batch.entropy, m)),
        "response_len": float(m.sum(1).float().mean()),
        "distinct_2": _distinct2(batch.responses),
        "n": float(len(prompts)),
    }
    return stats, texts, [float(s) for s in batch.scores]


def sentiment_ppo(
    beta: float = 0.2,
    *,
    adaptive: bool = True,
    target_kl: float = 6.0,
    flip: Sequence[str] = (),
    monitor: bool = True,
    steps: int | None = None,
    profile: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    cached_only: bool = False,
) -> dict[str, Any] | None:
    """Chapter 11's experiment: PPO makes the review model write positive reviews; cached.

    The policy starts as :func:`llmkit.pretrained.review_gpt` (with a zero value head), the
    reference is a frozen copy of it, the reward is
    :func:`llmkit.pretrained.sentiment_reward` on ``prompt + response`` as text, and the
    prompts are :func:`llmkit.pretrained.review_prompts` of the validation split. PPO runs
    :data:`SENTIMENT_PPO_RECIPES` ``[profile]`` with :func:`train_ppo`.

    Before and after training the policy continues a **fixed** set of held-out prompts (the
    test split's, one sample each with a fixed seed): the result's ``eval`` holds, for both,
    the mean ``score``, the share ``positive`` (score > 0), the mean ``kl`` (nats per
    response: the summed ``log pi - log pi_ref`` of the sampled tokens, an unbiased
    estimate of KL(pi || pi_ref)), ``judge_positive`` (the mean probability of "positive"
    under an independent bag-of-words classifier, :func:`llmkit.bert_tasks.tfidf_classifier`
    fitted on sentence polarity's training split), ``ref_nll`` (the reference model's mean
    loss on the response tokens: how natural the text still is to the starting model),
    ``entropy``, ``response_len`` and ``distinct_2`` (distinct token bigrams / bigrams).

    The result is cached as JSON in ``<cache>/models/sentiment_ppo-<profile>-<hash>.json``
    (the hash covers the arguments, the recipe and the cache entries of the three models),
    so a later chapter can read it without training (``cached_only=True``).

    Args:
        beta: the initial KL coefficient (``>= 0``).
        adaptive: adapt ``beta`` to ``target_kl`` (:class:`KLController`) or keep it fixed.
        target_kl: nats per response (used when ``adaptive``).
        flip: sign flips (:data:`FLIPS`; :class:`PPOConfig`) to reproduce sign bugs.
        monitor: run the course's :class:`Monitor`: the default rules, ``reward_drop`` and a
            canary (the judge's mean P(positive) on the step's samples more than
            ``canary_drop`` below the first step's). When it fires, training stops, the last
            healthy policy is restored, written to
            ``<cache>/models/sentiment_ppo-<profile>-<hash>-last_good/``, and evaluated.
        steps: PPO steps (default: the recipe's).
        profile, cache_dir, progress: as :func:`llmkit.pretrained.review_gpt`.
        cached_only: return the cached result, or ``None`` when there is none.
    Returns:
        ``{"args", "recipe", "profile", "history"`` (metrics per step, with
        ``judge_positive``), ``"alarm"`` (``None`` or ``{"rule", "step", "message",
        "checkpoint"}``), ``"eval": {"before", "after"}``, ``"samples"`` (the first eight
        held-out prompts: ``prompt``, ``before``, ``after`` texts and their scores),
        ``"kl_coef"`` (final beta), ``"seconds"``, ``"load_average"`` (1-minute, start and
        end), ``"hardware"``, ``"cached"}``.
    """
    from llmkit import bert_tasks, cache, pretrained
    from llmkit.data import load_sentence_polarity

    profile = cache.profile_name(profile)
    beta = validate.number("beta", beta, low=0.0)
    validate.boolean("adaptive", adaptive)
    target_kl = validate.positive("target_kl", target_kl)
    if isinstance(flip, str):
        raise TypeError(f"flip must be a tuple of names from {FLIPS}, got {flip!r}")
    flip = tuple(sorted(set(flip)))
    for name in flip:
        validate.one_of("flip", name, FLIPS)
    validate.boolean("monitor", monitor)
    validate.boolean("progress", progress)
    validate.boolean("cached_only", cached_only)
    recipe = sentiment_ppo_recipe(profile)
    if steps is not None:
        recipe["steps"] = validate.positive_int("steps", steps)
    args = {
        "beta": beta,
        "adaptive": adaptive,
        "target_kl": target_kl if adaptive else None,
        "flip": list(flip),
        "monitor": monitor,
    }
    payload = {
        "format": _SENTIMENT_PPO_FORMAT,
        "args": args,
        "recipe": recipe,
        "policy": pretrained.review_gpt_dir(profile, cache_dir=cache_dir).name,
        "reward": pretrained.sentiment_reward_dir(profile, cache_dir=cache_dir).name,
        "judge": "tfidf_classifier on sentence-polarity train/validation",
    }
    file = cache.entry_path(
        "sentiment_ppo", profile, cache.fingerprint(payload), cache_dir, ".json"
    )

    def load(path: Path) -> dict[str, Any]:
        import json

        result = json.loads(path.read_text())
        result["cached"] = True
        cache.log(progress, f"loaded the {profile} PPO run {_describe(args)} from {path.name}")
        return result

    def train_now() -> dict[str, Any] | None:
        if cached_only:
            return None
        start = time.perf_counter()
        load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        model, tokenizer, _ = pretrained.review_gpt(
            profile, cache_dir=cache_dir, progress=progress, device="cpu"
        )
        reward = pretrained.sentiment_reward(profile, cache_dir=cache_dir, progress=progress)
        polarity = load_sentence_polarity()
        judge = bert_tasks.tfidf_classifier(polarity["train"], polarity["validation"])
        eot = tokenizer.special_tokens["<|endoftext|>"]
        ppo = PPOConfig(
            **recipe["ppo"],
            init_kl_coef=beta,
            target_kl=target_kl if adaptive else None,
            eos_token_id=eot,
            pad_id=eot,
            flip=flip,
        )
        pool = pretrained.review_prompts(
            tokenizer, recipe["prompts"]["split"], n=recipe["prompts"]["n"]
        )
        held_out = pretrained.review_prompts(
            tokenizer, recipe["eval"]["split"], n=recipe["eval"]["n"]
        )
        ref = reference_copy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe["seed"])
            policy = PolicyWithValue(model)
        before, before_texts, before_scores = _evaluate(
            policy, ref, held_out, tokenizer, reward, judge, ppo, recipe["eval"]["seed"]
        )
        judged: list[float] = []  # the judge's mean P(positive), one per training step

        def score_fn(p: list[list[int]], r: list[list[int]]) -> torch.Tensor:
            texts = _texts(tokenizer, p, r)
            judged.append(float(judge.probabilities(texts)[:, 1].mean()))
            return reward(texts)

        limits = recipe["monitor"]

        def canary(metrics: Mapping[str, float], batch: Rollout) -> str | None:  # noqa: ARG001
            now, first = judged[-1], judged[0]
            if first - now > limits["canary_drop"]:
                return (
                    f"the independent tf-idf judge's mean P(positive) fell {first:.3f} -> "
                    f"{now:.3f} since the first step (> {limits['canary_drop']:g})"
                )
            return None

        watch: Monitor | bool = False
        if monitor:
            watch = Monitor(reward_drop=limits["reward_drop"], canary=canary)
        checkpoint = file.parent / f"{file.stem}-last_good"
        g = torch.Generator().manual_seed(recipe["seed"])
        cache.log(
            progress,
            f"PPO {_describe(args)}: {recipe['steps']} steps of {ppo.batch_size} prompts",
        )

        def report(step: int, metrics: dict[str, float], batch: Rollout) -> None:  # noqa: ARG001
            every = max(1, recipe["steps"] // 6)
            if (step + 1) % every == 0 or step + 1 == recipe["steps"]:
                cache.log(
                    progress,
                    f"step {step + 1:>4}  score {metrics['score']:+.3f}  KL {metrics['kl']:6.3f}"
                    f"  beta {metrics['kl_coef']:.3f}  {time.perf_counter() - start:6.1f} s",
                )

        with torch.random.fork_rng(devices=[]):
            result = train_ppo(
                policy,
                ref,
                pool,
                score_fn,
                ppo,
                recipe["steps"],
                monitor=watch,
                checkpoint_dir=checkpoint,
                generator=g,
                callback=report,
            )
        history = [dict(h) for h in result.history]
        for h, j in zip(history, judged, strict=False):
            h["judge_positive"] = j
        after, after_texts, after_scores = _evaluate(
            policy, ref, held_out, tokenizer, reward, judge, ppo, recipe["eval"]["seed"]
        )
        alarm = None
        if result.alarm is not None:
            alarm = {
                "rule": result.alarm.rule,
                "step": result.alarm.step,
                "message": result.alarm.message,
                "checkpoint": str(result.alarm.checkpoint),
            }
            cache.log(progress, str(result.alarm))
        load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        prompts_text = _texts(tokenizer, held_out, [[] for _ in held_out])
        out = {
            "format": _SENTIMENT_PPO_FORMAT,
            "profile": profile,
            "args": args,
            "recipe": recipe,
            "payload": payload,
            "history": history,
            "alarm": alarm,
            "eval": {"before": before, "after": after},
            "samples": [
                {
                    "prompt": prompts_text[i],
                    "before": before_texts[i],
                    "after": after_texts[i],
                    "score_before": before_scores[i],
                    "score_after": after_scores[i],
                }
                for i in range(min(8, len(held_out)))
            ],
            "kl_coef": result.kl_coef,
            "judge": judge.info,
            "seconds": time.perf_counter() - start,
            "load_average": [load_start, load_end],
            "hardware": cache.describe_hardware("cpu"),
        }
        cache.log(
            progress,
            f"held-out: score {before['score']:+.3f} -> {after['score']:+.3f}, KL "
            f"{after['kl']:.2f} nats, judge P(positive) {before['judge_positive']:.3f} -> "
            f"{after['judge_positive']:.3f} ({out['seconds']:.0f} s)",
        )
        cache.write_json(file, out)
        out["cached"] = False
        return out

    return cache.load_or_train(file, load, train_now, "PPO result")


def _describe(args: Mapping[str, Any]) -> str:
    beta = f"beta {args['beta']:g}" + (f" -> KL {args['target_kl']:g}" if args["adaptive"] else "")
    flip = f", flip {'+'.join(args['flip'])}" if args["flip"] else ""
    return f"({beta}{flip}{', monitor' if args['monitor'] else ''})"

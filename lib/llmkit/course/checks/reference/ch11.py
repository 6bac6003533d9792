"""Reference answers and known slips for lab 11 (RLHF with PPO). See the package docstring.
The references call :mod:`llmkit.rl` (off limits in the lab, reachable here because the
checks compute the expected value after the student's call); the slips are written out."""

from __future__ import annotations

import torch


def _last(mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(mask.shape[1])
    return (mask.long() * (positions + 1)).argmax(dim=1)


def _first(mask: torch.Tensor) -> torch.Tensor:
    return mask.long().argmax(dim=1)


# ------------------------------------------------------------------ per_token_rewards


def per_token_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``llmkit.rl.per_token_rewards`` with the k1 estimate, the rewards only."""
    from llmkit.rl import per_token_rewards as library

    return library(scores, logp, ref_logp, mask, beta, "k1")[0]


def _kl_part(logp, ref_logp, mask, beta, sign=-1.0, masked=True):
    kl = logp - ref_logp
    out = sign * beta * kl
    return torch.where(mask, out, torch.zeros_like(out)) if masked else out


def rewards_kl_sign(scores, logp, ref_logp, mask, beta):
    """``+beta * KL``: the penalty turned into a bonus for moving away."""
    out = _kl_part(logp, ref_logp, mask, beta, sign=1.0)
    out[torch.arange(len(scores)), _last(mask)] += scores
    return out


def rewards_score_first(scores, logp, ref_logp, mask, beta):
    """The score on the first real token."""
    out = _kl_part(logp, ref_logp, mask, beta)
    out[torch.arange(len(scores)), _first(mask)] += scores
    return out


def rewards_score_last_column(scores, logp, ref_logp, mask, beta):
    """The score in the last column, a padding token in rows shorter than the batch."""
    out = _kl_part(logp, ref_logp, mask, beta)
    out[:, -1] += scores
    return out


def rewards_penalty_on_padding(scores, logp, ref_logp, mask, beta):
    """The KL penalty on padding too (the score on the right token)."""
    out = _kl_part(logp, ref_logp, mask, beta, masked=False)
    out[torch.arange(len(scores)), _last(mask)] += scores
    return out


# ------------------------------------------------------------------------------ gae


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``llmkit.rl.gae``."""
    from llmkit.rl import gae as library

    return tuple(library(rewards, values, mask, gamma, lam))


def _gae(rewards, values, mask, gamma, lam, *, use_mask=True, bootstrap_pad=False):
    """GAE written out row by row; the options make the slips."""
    b, n = rewards.shape
    adv = torch.zeros_like(rewards)
    for i in range(b):
        cols = [t for t in range(n) if mask[i, t]] if use_mask else list(range(n))
        after = cols[-1] + 1
        next_v = values[i, after] if bootstrap_pad and after < n else 0.0
        last_a = 0.0
        for t in reversed(cols):
            delta = rewards[i, t] + gamma * next_v - values[i, t]
            last_a = delta + gamma * lam * last_a
            adv[i, t] = last_a
            next_v = values[i, t]
    zero = torch.zeros_like(adv)
    adv = torch.where(mask, adv, zero)
    return adv, torch.where(mask, adv + values, zero)


def gae_no_mask(rewards, values, mask, gamma, lam):
    """GAE over every column, padding included, then padding zeroed."""
    return _gae(rewards, values, mask, gamma, lam, use_mask=False)


def gae_bootstrap_padding(rewards, values, mask, gamma, lam):
    """At the last real token, ``V_{t+1}`` taken from the padding after it instead of 0."""
    return _gae(rewards, values, mask, gamma, lam, bootstrap_pad=True)


def gae_no_lambda(rewards, values, mask, gamma, lam):
    """``A_t = delta_t + gamma * A_{t+1}``: lambda left out."""
    return _gae(rewards, values, mask, gamma, 1.0)


def gae_returns_reward_to_go(rewards, values, mask, gamma, lam):
    """The right advantages, but the returns the discounted rewards-to-go."""
    adv, _ = _gae(rewards, values, mask, gamma, lam)
    ret = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        acc = 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[i, t]:
                acc = rewards[i, t] + gamma * acc
                ret[i, t] = acc
    return adv, ret


# ------------------------------------------------------------------- ppo_policy_loss


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """``llmkit.rl.ppo_policy_loss``, the loss only."""
    from llmkit.rl import ppo_policy_loss as library

    return library(logp, old_logp, advantages, clip, mask)[0]


def _mean(x, mask):
    return (x * mask).sum() / mask.sum()


def loss_min(logp, old_logp, advantages, clip, mask):
    """``min`` of the negated surrogates: the optimistic bound."""
    ratio = torch.exp(logp - old_logp)
    a = advantages
    return _mean(torch.minimum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)), mask)


def loss_clip_advantage(logp, old_logp, advantages, clip, mask):
    """The advantage clipped to ``[1 - clip, 1 + clip]`` instead of the ratio."""
    ratio = torch.exp(logp - old_logp)
    a = advantages
    return _mean(torch.maximum(-a * ratio, -a.clamp(1 - clip, 1 + clip) * ratio), mask)


def loss_no_mask(logp, old_logp, advantages, clip, mask):
    """The mean over every position, padding included."""
    ratio = torch.exp(logp - old_logp)
    a = advantages
    return torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)).mean()


def loss_ratio_inverted(logp, old_logp, advantages, clip, mask):
    """``ratio = old / new``."""
    ratio = torch.exp(old_logp - logp)
    a = advantages
    return _mean(torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip)), mask)

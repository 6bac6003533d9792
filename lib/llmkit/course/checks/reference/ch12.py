"""Reference answers and known slips for lab 12 (direct preference optimisation). See the
package docstring. The references call :mod:`llmkit.dpo` (off limits in the lab, reachable
here because the checks compute the expected value after the student's call); the slips are
written out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


# ------------------------------------------------------------------ sequence_logprobs


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``llmkit.dpo.sequence_logprobs``: each row's sum of log p over its response tokens."""
    from llmkit.dpo import sequence_logprobs as reference

    return reference(model, ids, labels)


def _token_logps(
    model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, shift: bool = True, naive=False
):
    """``(logp, y)``: log-probabilities ``(b, n)`` of the tokens ``y`` they score."""
    logits = model(ids)
    logp = logits.softmax(-1).log() if naive else logits.log_softmax(-1)
    if shift:
        logp, y = logp[:, :-1], labels[:, 1:]
    else:
        y = labels
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked, y


def logprobs_not_shifted(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor):
    """Scores ``labels[:, t]`` with the logits at ``t`` (which predict token ``t + 1``)."""
    picked, y = _token_logps(model, ids, labels, shift=False)
    return (picked * (y != IGNORE)).sum(1)


def logprobs_log_of_softmax(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor):
    """``softmax(...).log()``: a probability that rounds to 0 gives ``-inf``."""
    picked, y = _token_logps(model, ids, labels, naive=True)
    return torch.where(y != IGNORE, picked, 0.0).sum(1)


def logprobs_every_token(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor):
    """Counts every token of ``ids[:, 1:]``: the prompt's and the padding's too."""
    return _token_logps(model, ids, ids)[0].sum(1)


def logprobs_mean(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor):
    """The mean over the response tokens instead of their sum."""
    picked, y = _token_logps(model, ids, labels)
    keep = y != IGNORE
    return (picked * keep).sum(1) / keep.sum(1)


# --------------------------------------------------------------------------- dpo_loss


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``llmkit.dpo.dpo_loss`` (sigmoid, no smoothing): ``(loss, chosen, rejected rewards)``."""
    from llmkit.dpo import dpo_loss as reference

    return reference(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def _loss(
    pc, pr, rc, rr, beta, *, outside=False, ref_sign=1.0, swap=False, total=False, naive=False
):
    h = (pc - pr) - ref_sign * (rc - rr)
    if swap:
        h = -h
    if naive:
        losses = -torch.log(torch.sigmoid(beta * h))
    else:
        losses = -beta * F.logsigmoid(h) if outside else -F.logsigmoid(beta * h)
    loss = losses.sum() if total else losses.mean()
    return loss, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def loss_log_of_sigmoid(pc, pr, rc, rr, beta):
    """``-log(sigmoid(beta * h))``: ``inf`` once ``sigmoid`` rounds to 0."""
    return _loss(pc, pr, rc, rr, beta, naive=True)


def loss_beta_outside(pc, pr, rc, rr, beta):
    """``-beta * log sigmoid(h)`` instead of ``-log sigmoid(beta * h)``."""
    return _loss(pc, pr, rc, rr, beta, outside=True)


def loss_reference_added(pc, pr, rc, rr, beta):
    """Adds the reference's log-ratio instead of subtracting it."""
    return _loss(pc, pr, rc, rr, beta, ref_sign=-1.0)


def loss_swapped(pc, pr, rc, rr, beta):
    """Rewards the rejected reply: ``h`` is rejected minus chosen."""
    return _loss(pc, pr, rc, rr, beta, swap=True)


def loss_sum(pc, pr, rc, rr, beta):
    """The sum over the pairs instead of the mean."""
    return _loss(pc, pr, rc, rr, beta, total=True)

"""Reference answers and known slips for lab 10 (reward models). See the package docstring.
The references call :mod:`llmkit.reward` (off limits in the lab, reachable here because the
checks compute the expected value after the student's call); the slips are written out."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


# ------------------------------------------------------------------ bradley_terry_loss


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """``llmkit.reward.bradley_terry_loss``: ``mean(-logsigmoid(r_chosen - r_rejected))``."""
    from llmkit.reward import bradley_terry_loss as library

    return library(r_chosen, r_rejected)


def bt_log_of_sigmoid(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(x))``: ``sigmoid(-100)`` underflows to 0 in float32, its log to -inf."""
    return -torch.log(torch.sigmoid(r_chosen - r_rejected)).mean()


def bt_sign_swapped(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """The margin the wrong way round: the loss of preferring the rejected answers."""
    return -F.logsigmoid(r_rejected - r_chosen).mean()


def bt_sum(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """The sum over pairs instead of the mean."""
    return -F.logsigmoid(r_chosen - r_rejected).sum()


def bt_no_minus(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """The log-likelihood itself (to be maximised), not its negative (a loss)."""
    return F.logsigmoid(r_chosen - r_rejected).mean()


# ------------------------------------------------------------------- pairwise_accuracy


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """``llmkit.reward.pairwise_accuracy``: the share of wins, a tie counting one half."""
    from llmkit.reward import pairwise_accuracy as library

    return library(r_chosen, r_rejected)


def accuracy_ties_win(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """``>=``: a tie counts as a win."""
    return float((r_chosen >= r_rejected).float().mean())


def accuracy_ties_lose(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """``>``: a tie counts as a loss."""
    return float((r_chosen > r_rejected).float().mean())


def accuracy_count(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """The number of wins (ties 1/2), not their share."""
    wins = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    return float(wins.sum())


def accuracy_reversed(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """The share of pairs the rejected answer wins."""
    wins = (r_rejected > r_chosen).float() + 0.5 * (r_chosen == r_rejected).float()
    return float(wins.mean())


# --------------------------------------------------------------------- preference_pair


def preference_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """``tuple(llmkit.reward.preference_pair(chosen, rejected))``."""
    from llmkit.reward import preference_pair as library

    return tuple(library(chosen, rejected))


def _turns(text: str) -> list[str]:
    from llmkit.reward import split_turns

    return split_turns(text)


def pair_common_characters(chosen: str, rejected: str) -> tuple[str, str, str]:
    """The longest common prefix of characters: it can end inside a turn."""
    prefix = os.path.commonprefix([chosen, rejected])
    return prefix, chosen[len(prefix) :], rejected[len(prefix) :]


def pair_last_marker(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Cut both at their last ``"\\n\\nAssistant:"``, the prefix taken from ``chosen``:
    right only when every earlier turn is shared."""
    k = max(chosen.rfind(ASSISTANT), 0)
    j = max(rejected.rfind(ASSISTANT), 0)
    return chosen[:k], chosen[k:], rejected[j:]


def pair_no_last_turn(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Every shared turn goes into the prefix, even all of them (empty endings)."""
    tc, tr = _turns(chosen), _turns(rejected)
    k = 0
    while k < min(len(tc), len(tr)) and tc[k] == tr[k]:
        k += 1
    prefix = "".join(tc[:k])
    return prefix, chosen[len(prefix) :], rejected[len(prefix) :]


def pair_marker_in_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """The marker of the first differing turn goes into the prefix when both endings start
    with the same one (the split is after ``"\\n\\nAssistant:"``, not before it)."""
    prefix, c, r = preference_pair(chosen, rejected)
    for marker in (HUMAN, ASSISTANT):
        if c.startswith(marker) and r.startswith(marker):
            n = len(marker)
            return prefix + marker, c[n:], r[n:]
    return prefix, c, r

"""Lab 10's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, right answers written differently pass, and llmkit.reward and the torch
losses that compute the Bradley-Terry loss in one call are off limits."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from llmkit import reward
from llmkit.course.checks import ch10

# Answers, right and wrong, written out here: llmkit's objects and the checks' references
# are off limits.

H, A = ch10.HUMAN, ch10.ASSISTANT


def loss(rc, rr, how="stable"):
    d = rc - rr
    if how == "stable":
        return -F.logsigmoid(d).mean()
    if how == "softplus":  # -log sigmoid(x) = softplus(-x): allowed, and right
        return F.softplus(-d).mean()
    if how == "naive":
        return -torch.log(torch.sigmoid(d)).mean()
    if how == "log1p":
        return torch.log1p(torch.exp(-d)).mean()
    if how == "swapped":
        return -F.logsigmoid(-d).mean()
    if how == "sum":
        return -F.logsigmoid(d).sum()
    if how == "no_minus":
        return F.logsigmoid(d).mean()
    raise AssertionError(how)


def accuracy(rc, rr, how="half"):
    if how == "half":
        return sum(
            1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rc, rr, strict=True)
        ) / len(rc)
    if how == "ge":
        return (rc >= rr).float().mean().item()
    if how == "gt":
        return (rc > rr).float().mean().item()
    if how == "count":
        return ((rc > rr).float() + 0.5 * (rc == rr).float()).sum().item()
    if how == "reversed":
        return ((rr > rc).float() + 0.5 * (rc == rr).float()).mean().item()
    raise AssertionError(how)


def turns(text):
    out, start = [], 0
    for i in range(1, len(text)):
        if text.startswith(H, i) or text.startswith(A, i):
            out.append(text[start:i])
            start = i
    return out + [text[start:]] if text else out


def pair(c, r, how="right"):
    if how == "chars":
        p = os.path.commonprefix([c, r])
        return p, c[len(p) :], r[len(p) :]
    if how == "last_marker":
        k, j = max(c.rfind(A), 0), max(r.rfind(A), 0)
        return c[:k], c[k:], r[j:]
    tc, tr = turns(c), turns(r)
    limit = min(len(tc), len(tr)) - (0 if how == "all_shared" else 1)
    k = 0
    while k < limit and tc[k] == tr[k]:
        k += 1
    p = "".join(tc[:k])
    out = (p, c[len(p) :], r[len(p) :])
    if how == "marker_in_prefix":
        for m in (H, A):
            if out[1].startswith(m) and out[2].startswith(m):
                return p + m, out[1][len(m) :], out[2][len(m) :]
    return out


def with_(fn, how):
    return lambda *args: fn(*args, how=how)


SLIPS = [
    ("bradley_terry_loss", with_(loss, "naive"), "log\\(sigmoid\\(x\\)\\) breaks"),
    ("bradley_terry_loss", with_(loss, "log1p"), "log\\(sigmoid\\(x\\)\\) breaks"),
    ("bradley_terry_loss", with_(loss, "swapped"), "the margin is r_chosen - r_rejected"),
    ("bradley_terry_loss", with_(loss, "sum"), "not the sum"),
    ("bradley_terry_loss", with_(loss, "no_minus"), "negative log-likelihood"),
    ("pairwise_accuracy", with_(accuracy, "ge"), "with >=, a constant"),
    ("pairwise_accuracy", with_(accuracy, "gt"), "with >, a constant"),
    ("pairwise_accuracy", with_(accuracy, "count"), "not a count"),
    ("pairwise_accuracy", with_(accuracy, "reversed"), "the chosen answer's reward"),
    ("preference_pair", with_(pair, "chars"), "never inside a turn"),
    ("preference_pair", with_(pair, "last_marker"), "find the first turn that differs"),
    ("preference_pair", with_(pair, "all_shared"), "at least its last turn"),
    ("preference_pair", with_(pair, "marker_in_prefix"), "ends before the marker"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch10, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_right_answers_pass():
    ch10.check_bradley_terry_loss(loss, seed=1)
    ch10.check_bradley_terry_loss(with_(loss, "softplus"), seed=2)
    ch10.check_pairwise_accuracy(accuracy, seed=1)
    ch10.check_preference_pair(pair, seed=1)


def test_the_naive_loss_is_infinite_at_margin_minus_100():
    """What the margin -100 case catches, and that the stable form gets it right."""
    rc, rr = torch.tensor([0.0]), torch.tensor([100.0])
    assert torch.isinf(loss(rc, rr, "naive"))
    assert loss(rc, rr).item() == pytest.approx(100.0)


def test_the_checks_agree_with_llmkit_reward():
    """The rule of the lab's pair extraction is llmkit.reward's on the check's own cases."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        case = ch10._pair_case(rng)
        assert pair(*case.args) == tuple(reward.preference_pair(*case.args))


def _bce(rc, rr):
    return F.binary_cross_entropy_with_logits(rc - rr, torch.ones_like(rc))


def _bce_module(rc, rr):
    return torch.nn.BCEWithLogitsLoss()(rc - rr, torch.ones_like(rc))


def _bce_torch(rc, rr):  # the same loss, without torch.nn.functional
    return torch.binary_cross_entropy_with_logits(rc - rr, torch.ones_like(rc), None, None, 1)


def _bce_aten(rc, rr):
    ones = torch.ones_like(rc)
    return torch.ops.aten.binary_cross_entropy_with_logits(rc - rr, ones, None, None, 1)


def _soft_margin_c(rc, rr):
    return torch._C._nn.soft_margin_loss(rc - rr, torch.ones_like(rc), 1)


def _bce_on_sigmoid_c(rc, rr):
    return torch._C._nn.binary_cross_entropy(torch.sigmoid(rc - rr), torch.ones_like(rc), None, 1)


def _soft_margin(rc, rr):
    return F.soft_margin_loss(rc - rr, torch.ones_like(rc))


def _bce_on_sigmoid(rc, rr):
    return F.binary_cross_entropy(torch.sigmoid(rc - rr), torch.ones_like(rc))


def _library_loss(rc, rr):
    return reward.bradley_terry_loss(rc, rr)


def _library_accuracy(rc, rr):
    return reward.pairwise_accuracy(rc, rr)


def _library_pair(c, r):
    return tuple(reward.preference_pair(c, r))


def _library_turns(c, r):
    reward.split_turns(c)  # any use of llmkit.reward is off limits
    return pair(c, r)


SHORTCUTS = [
    ("bradley_terry_loss", _bce, "binary_cross_entropy_with_logits"),
    ("bradley_terry_loss", _bce_module, "BCEWithLogitsLoss"),
    ("bradley_terry_loss", _bce_torch, "binary_cross_entropy_with_logits"),
    ("bradley_terry_loss", _bce_aten, "binary_cross_entropy_with_logits"),
    ("bradley_terry_loss", _soft_margin_c, "soft_margin_loss"),
    ("bradley_terry_loss", _bce_on_sigmoid_c, "binary_cross_entropy"),
    ("bradley_terry_loss", _soft_margin, "soft_margin_loss"),
    ("bradley_terry_loss", _bce_on_sigmoid, "binary_cross_entropy"),
    ("bradley_terry_loss", _library_loss, "llmkit.reward"),
    ("pairwise_accuracy", _library_accuracy, "llmkit.reward"),
    ("preference_pair", _library_pair, "llmkit.reward"),
    ("preference_pair", _library_turns, "llmkit.reward"),
]


@pytest.mark.parametrize(("exercise", "shortcut", "label"), SHORTCUTS)
def test_library_versions_are_off_limits(exercise, shortcut, label):
    with pytest.raises(AssertionError, match=f"must be written without .*{label}"):
        getattr(ch10, f"check_{exercise}")(shortcut, seed=0)
    # the shortcuts compute the right values: only the tripwire stops them
    rc, rr = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 2.0])
    if exercise == "bradley_terry_loss":
        torch.testing.assert_close(shortcut(rc, rr), loss(rc, rr))


def _detached_loss(rc, rr):
    return torch.tensor(loss(rc, rr).item())  # the right value, no gradient


def _value_without_gradient(rc, rr):
    return loss(rc.detach(), rr.detach()) + 0.0 * (rc + rr).sum()  # the value, a zero gradient


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (_detached_loss, "carries no gradient to the rewards"),
        (_value_without_gradient, "not the right gradient"),
    ],
)
def test_a_loss_without_the_right_gradient_fails(wrong, message):
    with pytest.raises(AssertionError, match=message):
        ch10.check_bradley_terry_loss(wrong, seed=0)


def test_a_swapped_margin_is_named_where_its_value_is_right():
    """At equal rewards the swapped loss has the right value (ln 2); its gradient differs
    and the message names the slip."""
    with pytest.raises(AssertionError, match="right value here but not the right gradient"):
        ch10.check_bradley_terry_loss(with_(loss, "swapped"), seed=0)

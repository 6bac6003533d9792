"""Lab 12's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, right answers written differently pass, llmkit.dpo and the torch
losses that compute an exercise are off limits, and an answer without gradients fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmkit import dpo
from llmkit.course.checks import ch12

# Answers, right and wrong, written out here: llmkit.dpo and the checks' references are
# off limits.


def logprobs(model, ids, labels, shift=True, every=False, mean=False, detach=False, naive=False):
    logits = model(ids)
    if naive:
        logp = logits.softmax(-1).log()
    else:
        logp = logits - logits.logsumexp(-1, keepdim=True)  # log_softmax, written differently
    y = ids if every else labels
    if shift:
        logp, y = logp[:, :-1], y[:, 1:]
    keep = y != -100
    picked = torch.gather(logp, 2, torch.where(keep, y, 0)[..., None])[..., 0]
    total = torch.where(keep, picked, 0.0).sum(dim=1)
    out = total / keep.sum(1) if mean else total
    return out.detach() if detach else out


def loss(pc, pr, rc, rr, beta, outside=False, sign=1.0, swap=False, total=False,
         detach=False, naive=False):  # fmt: skip
    chosen, rejected = pc - rc, pr - rr
    h = (pc - pr) - sign * (rc - rr)
    h = -h if swap else h
    if naive:  # log(1 + exp(-x)): overflows to inf at x = -1780
        per_pair = torch.log1p(torch.exp(-beta * h))
    else:  # softplus(-x) = -log sigmoid(x), written out stably
        per_pair = beta * F.softplus(-h) if outside else F.softplus(-beta * h)
    value = per_pair.sum() if total else per_pair.mean()
    value = value.detach() if detach else value
    return value, beta * chosen, beta * rejected


def with_(fn, **kw):
    return lambda *args: fn(*args, **kw)


SLIPS = [
    ("sequence_logprobs", with_(logprobs, shift=False), "predict the token at t \\+ 1"),
    ("sequence_logprobs", with_(logprobs, every=True), "response tokens only"),
    ("sequence_logprobs", with_(logprobs, mean=True), "not their mean"),
    ("sequence_logprobs", with_(logprobs, naive=True), "use log_softmax"),
    ("dpo_loss", with_(loss, naive=True), "log\\(sigmoid\\(x\\)\\) breaks"),
    ("dpo_loss", with_(loss, outside=True), "beta scales h inside"),
    ("dpo_loss", with_(loss, sign=-1.0), "subtract the reference"),
    ("dpo_loss", with_(loss, swap=True), "h is chosen minus rejected"),
    ("dpo_loss", with_(loss, total=True), "do not sum them"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch12, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_right_answers_pass(capsys):
    ch12.check_sequence_logprobs(logprobs, seed=1)
    ch12.check_dpo_loss(loss, seed=1)
    assert capsys.readouterr().out.count("✔") == 2


@pytest.mark.parametrize(
    ("exercise", "answer"),
    [("sequence_logprobs", with_(logprobs, detach=True)), ("dpo_loss", with_(loss, detach=True))],
)
def test_answers_without_gradient_fail(exercise, answer):
    with pytest.raises(AssertionError, match="no gradient"):
        getattr(ch12, f"check_{exercise}")(answer, seed=0)


def _cross_entropy_logprobs(model, ids, labels):
    logits = model(ids)[:, :-1]
    nll = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")
    return -nll.sum(1)


def _bce_loss(pc, pr, rc, rr, beta):
    h = (pc - pr) - (rc - rr)
    value = F.binary_cross_entropy_with_logits(beta * h, torch.ones_like(h))
    return value, beta * (pc - rc), beta * (pr - rr)


def _soft_margin_loss(pc, pr, rc, rr, beta):
    h = (pc - pr) - (rc - rr)
    return F.soft_margin_loss(beta * h, torch.ones_like(h)), beta * (pc - rc), beta * (pr - rr)


def _aten_nll_logprobs(model, ids, labels):
    """nll_loss's aten op, called directly (no torch.nn.functional on the way)."""
    logp = model(ids).log_softmax(-1)[:, :-1]
    b, n, v = logp.shape
    flat = torch.ops.aten.nll_loss_forward(logp.reshape(-1, v), labels[:, 1:].reshape(-1),
                                           None, 0, -100)[0]  # fmt: skip
    return -flat.reshape(b, n).sum(1)


def _nll_loss2d_logprobs(model, ids, labels):
    logp = model(ids).log_softmax(-1)[:, :-1].permute(0, 2, 1).unsqueeze(-1).contiguous()
    out = torch._C._nn.nll_loss2d(logp, labels[:, 1:].unsqueeze(-1), None, 0, -100)
    return -out.squeeze(-1).sum(1)


def _decoding_logprobs(model, ids, labels):
    from llmkit.decoding import sequence_logprob

    start = int((labels[0] != -100).nonzero()[0])  # right for one-row cases only
    return sequence_logprob(model, ids, start)


SHORTCUTS = [
    ("sequence_logprobs", _decoding_logprobs, "sequence_logprob"),
    ("sequence_logprobs", dpo.sequence_logprobs, "llmkit.dpo"),
    ("sequence_logprobs", _cross_entropy_logprobs, "cross_entropy"),
    ("sequence_logprobs", _aten_nll_logprobs, "nll_loss_forward"),
    ("sequence_logprobs", _nll_loss2d_logprobs, "nll_loss2d"),
    ("dpo_loss", lambda *a: dpo.dpo_loss(*a), "llmkit.dpo"),
    ("dpo_loss", _bce_loss, "binary_cross_entropy_with_logits"),
    ("dpo_loss", _soft_margin_loss, "soft_margin_loss"),
]


@pytest.mark.parametrize(("exercise", "shortcut", "label"), SHORTCUTS)
def test_library_versions_are_off_limits(exercise, shortcut, label):
    with pytest.raises(AssertionError, match=f"must be written without .*{label}"):
        getattr(ch12, f"check_{exercise}")(shortcut, seed=0)


def test_shortcuts_compute_the_right_values():
    """The shortcuts above fail for being shortcuts, not for wrong values."""
    model, ids, labels = ch12._fixed_logprobs()[1].args
    for shortcut in (_aten_nll_logprobs, _nll_loss2d_logprobs):
        torch.testing.assert_close(
            shortcut(model, ids, labels), dpo.sequence_logprobs(model, ids, labels)
        )
    torch.manual_seed(0)
    pc, pr, rc, rr = (-5 * torch.rand(4, dtype=torch.float64) for _ in range(4))
    want = dpo.dpo_loss(pc, pr, rc, rr, 0.3)[0]
    assert torch.allclose(_bce_loss(pc, pr, rc, rr, 0.3)[0], want)
    assert torch.allclose(_soft_margin_loss(pc, pr, rc, rr, 0.3)[0], want)
    assert torch.allclose(loss(pc, pr, rc, rr, 0.3)[0], want)


def _logprobs_without_gradient(model, ids, labels):
    """The right values computed under no_grad, made to carry a (zero) gradient."""
    with torch.no_grad():
        value = logprobs(model, ids, labels)
    return value + 0.0 * model(ids).sum()


def _loss_without_gradient(pc, pr, rc, rr, beta):
    value, chosen, rejected = loss(pc.detach(), pr.detach(), rc, rr, beta)
    return value + 0.0 * (pc.sum() + pr.sum()), chosen, rejected


@pytest.mark.parametrize(
    ("exercise", "wrong"),
    [("sequence_logprobs", _logprobs_without_gradient), ("dpo_loss", _loss_without_gradient)],
)
def test_a_right_value_with_the_wrong_gradient_fails(exercise, wrong):
    with pytest.raises(AssertionError, match="not the right gradient"):
        getattr(ch12, f"check_{exercise}")(wrong, seed=0)

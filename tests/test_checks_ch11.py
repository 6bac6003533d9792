"""Lab 11's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, right answers written differently pass, a detached loss fails, and
llmkit.rl is off limits."""

from __future__ import annotations

import pytest
import torch

from llmkit import rl
from llmkit.course.checks import ch11

# Answers, right and wrong, written out here: llmkit's objects and the checks' references
# are off limits.


def rewards(scores, logp, ref_logp, mask, beta, how="right"):
    sign = 1.0 if how == "kl_sign" else -1.0
    out = sign * beta * (logp - ref_logp)
    if how != "pad_penalty":
        out = out * mask
    b, n = mask.shape
    for i in range(b):
        cols = [t for t in range(n) if mask[i, t]]
        col = {"first": cols[0], "last_column": n - 1}.get(how, cols[-1])
        out[i, col] = out[i, col] + scores[i]
    return out


def gae(r, v, mask, gamma, lam, how="right"):
    b, n = r.shape
    adv = torch.zeros_like(r)
    ret = torch.zeros_like(r)
    for i in range(b):
        length = int(mask[i].sum()) if how != "no_mask" else n
        next_v = v[i, length] if how == "bootstrap" and length < n else 0.0
        a, g = 0.0, 0.0
        for t in reversed(range(length)):
            delta = r[i, t] + gamma * next_v - v[i, t]
            a = delta + gamma * (1.0 if how == "no_lambda" else lam) * a
            g = r[i, t] + gamma * g
            adv[i, t] = a
            ret[i, t] = g if how == "rtg" else a + v[i, t]
            next_v = v[i, t]
    return adv * mask, ret * mask


def loss(logp, old, adv, clip, mask, how="right"):
    ratio = torch.exp(old - logp) if how == "inverted" else torch.exp(logp - old)
    if how == "clip_adv":
        terms = torch.maximum(-adv * ratio, -adv.clamp(1 - clip, 1 + clip) * ratio)
    else:
        clipped = -adv * torch.clamp(ratio, 1 - clip, 1 + clip)
        pick = torch.minimum if how == "min" else torch.maximum
        terms = pick(-adv * ratio, clipped)
    if how == "no_mask":
        return terms.mean()
    if how == "detached":
        return terms[mask].mean().detach()
    return terms[mask].mean()


def with_(fn, how):
    return lambda *args: fn(*args, how=how)


SLIPS = [
    ("per_token_rewards", with_(rewards, "kl_sign"), "the KL term is a penalty"),
    ("per_token_rewards", with_(rewards, "first"), "not on the first"),
    ("per_token_rewards", with_(rewards, "last_column"), "the last column is padding"),
    ("per_token_rewards", with_(rewards, "pad_penalty"), "apply the mask to the KL"),
    ("gae", with_(gae, "bootstrap"), "the value after it is 0"),
    ("gae", with_(gae, "no_mask"), "over the real tokens only"),
    ("gae", with_(gae, "no_lambda"), "lam weighs the later TD errors"),
    ("gae", with_(gae, "rtg"), "not the discounted sum of rewards"),
    ("ppo_policy_loss", with_(loss, "min"), "the pessimistic bound"),
    ("ppo_policy_loss", with_(loss, "clip_adv"), "not the advantage"),
    ("ppo_policy_loss", with_(loss, "no_mask"), "average over the real tokens only"),
    ("ppo_policy_loss", with_(loss, "inverted"), "new over old"),
    ("ppo_policy_loss", with_(loss, "detached"), "no gradient to logp"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch11, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_right_answers_pass():
    ch11.check_per_token_rewards(rewards, seed=1)
    ch11.check_gae(gae, seed=1)
    ch11.check_ppo_policy_loss(loss, seed=1)


def test_the_checks_agree_with_llmkit_rl():
    """The written-out answers equal llmkit.rl on the checks' own random cases."""
    import random

    rng = random.Random(0)
    for _ in range(50):
        args = ch11._rewards_case(rng).args
        torch.testing.assert_close(rewards(*args), rl.per_token_rewards(*args)[0])
        args = ch11._gae_case(rng).args
        for a, b in zip(gae(*args), rl.gae(*args), strict=True):
            torch.testing.assert_close(a, b)
        logp, old, adv, clip, mask = ch11._loss_case(rng).args
        torch.testing.assert_close(
            loss(logp, old, adv, clip, mask), rl.ppo_policy_loss(logp, old, adv, clip, mask)[0]
        )


def _library_rewards(scores, logp, ref_logp, mask, beta):
    return rl.per_token_rewards(scores, logp, ref_logp, mask, beta)[0]


def _library_gae(r, v, mask, gamma, lam):
    return tuple(rl.gae(r, v, mask, gamma, lam))


def _library_loss(logp, old, adv, clip, mask):
    return rl.ppo_policy_loss(logp, old, adv, clip, mask)[0]


def _library_helper(logp, old, adv, clip, mask):
    ratio = torch.exp(logp - old)
    terms = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    return rl.masked_mean(terms, mask)  # any use of llmkit.rl is off limits


SHORTCUTS = [
    ("per_token_rewards", _library_rewards),
    ("gae", _library_gae),
    ("ppo_policy_loss", _library_loss),
    ("ppo_policy_loss", _library_helper),
]


@pytest.mark.parametrize(("exercise", "shortcut"), SHORTCUTS)
def test_llmkit_rl_is_off_limits(exercise, shortcut):
    with pytest.raises(AssertionError, match="must be written without .*llmkit.rl"):
        getattr(ch11, f"check_{exercise}")(shortcut, seed=0)


def _value_without_gradient(logp, old, adv, clip, mask):
    """The right value from a detached logp, made to carry a (zero) gradient."""
    return loss(logp.detach(), old, adv, clip, mask) + 0.0 * logp.sum()


def _clip_on_the_detached_side(logp, old, adv, clip, mask):
    """The clipped term from a detached ratio: right value, gradient lost where it is
    the larger one."""
    ratio = torch.exp(logp - old)
    clipped = -adv * torch.clamp(ratio.detach(), 1 - clip, 1 + clip)
    return torch.maximum(-adv * ratio, clipped)[mask].mean()


@pytest.mark.parametrize("wrong", [_value_without_gradient, _clip_on_the_detached_side])
def test_a_loss_with_the_wrong_gradient_fails(wrong):
    with pytest.raises(AssertionError, match="not the right gradient with respect to logp"):
        ch11.check_ppo_policy_loss(wrong, seed=0)

"""Checks of lab 11 (RLHF with PPO): one :class:`Exercise` per exercise.

=================  ==============================================  ==========================
exercise           the student's function                          reference
=================  ==============================================  ==========================
per_token_rewards  ``(scores, logp, ref_logp, mask, beta) ->        ``llmkit.rl.
                   rewards``: ``-beta * (logp - ref_logp)`` on      per_token_rewards`` (k1)
                   real tokens, the score on each row's last one
gae                ``(rewards, values, mask, gamma, lam) ->         ``llmkit.rl.gae``
                   (advantages, returns)`` over the real tokens
ppo_policy_loss    ``(logp, old_logp, advantages, clip, mask) ->    ``llmkit.rl.
                   loss``: the clipped surrogate, negated, mean     ppo_policy_loss``
                   over real tokens
=================  ==============================================  ==========================

Off limits in every exercise: :mod:`llmkit.rl` (which computes all three). Tensors are
float32 ``(b, R)`` (``scores`` ``(b,)``), masks bool ``(b, R)`` with at least one real
token per row. In ``per_token_rewards`` the padding may come before the real tokens, after
them, or both; in ``gae`` and ``ppo_policy_loss`` it comes after them (right padding).
Padding positions hold arbitrary numbers, never zeros, so that code that reads them gives
another answer. In ``ppo_policy_loss``, ``logp`` requires grad and the loss must carry the
reference's gradient to it (a value computed from a detached ``logp`` fails).
"""

from __future__ import annotations

import random

import torch

from .runner import Case, Exercise, Slip, gradient_after

__all__ = ["check_per_token_rewards", "check_gae", "check_ppo_policy_loss"]

_REF = "llmkit.course.checks.reference.ch11"
_LLMKIT = ["llmkit.rl"]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _mask(lengths: list[int], width: int, starts: list[int] | None = None) -> torch.Tensor:
    starts = starts or [0] * len(lengths)
    m = torch.zeros(len(lengths), width, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        m[i, s : s + n] = True
    return m


def _random_mask(rng: random.Random, b: int, width: int, sides: bool) -> torch.Tensor:
    lengths = [rng.randint(1, width) for _ in range(b)]
    starts = [rng.randint(0, width - n) if sides else 0 for n in lengths]
    if sides is False and b > 1 and width > 1:
        lengths[0] = width  # one full row, so that shorter rows are padded
    return _mask(lengths, width, starts)


def _gauss(rng: random.Random, shape: tuple[int, int], scale: float = 1.0) -> torch.Tensor:
    return torch.tensor(
        [[rng.gauss(0.0, scale) for _ in range(shape[1])] for _ in range(shape[0])],
        dtype=torch.float32,
    )


# ------------------------------------------------------------------ per_token_rewards


def _fixed_rewards() -> list[Case]:
    logp = _t([[-1.0, -2.0, -0.5, -3.0]])
    ref = _t([[-1.5, -1.0, -0.5, -2.0]])
    two_logp = _t([[-1.0, -2.0, -0.5], [-0.2, -0.7, -4.0]])
    two_ref = _t([[-1.1, -1.5, -0.9], [-0.2, -1.7, -1.0]])
    return [
        Case((torch.tensor([2.0]), logp, ref, _mask([4], 4), 0.1), label="one full row"),
        Case((torch.tensor([2.0]), logp, ref, _mask([4], 4), 0.0), label="beta = 0"),
        Case(
            (torch.tensor([1.0, -3.0]), two_logp, two_ref, _mask([3, 1], 3), 0.2),
            label="right padding (lengths 3 and 1)",
        ),
        Case(
            (torch.tensor([1.0, -3.0]), two_logp, two_ref, _mask([2, 1], 3, [1, 2]), 0.2),
            label="left padding (lengths 2 and 1)",
        ),
        Case(
            (torch.tensor([0.5, 4.0]), two_logp, two_ref, _mask([1, 1], 3, [1, 1]), 0.5),
            label="padding on both sides",
        ),
    ]


def _rewards_case(rng: random.Random) -> Case:
    b, n = rng.randint(1, 5), rng.randint(1, 7)
    mask = _random_mask(rng, b, n, sides=rng.random() < 0.6)
    logp = -_gauss(rng, (b, n)).abs() - 0.1
    ref = -_gauss(rng, (b, n)).abs() - 0.1
    scores = torch.tensor([rng.gauss(0.0, 2.0) for _ in range(b)], dtype=torch.float32)
    return Case((scores, logp, ref, mask, rng.choice([0.05, 0.2, 1.0])))


PER_TOKEN_REWARDS = Exercise(
    name="per_token_rewards",
    reference=f"{_REF}:per_token_rewards",
    forbid=_LLMKIT,
    fixed=_fixed_rewards,
    random=_rewards_case,
    cases=30,
    rtol=1e-5,
    atol=1e-6,
    hint="every real token gets -beta * (logp - ref_logp); the row's score is added on its "
    "last real token (the last True of its mask row); padding gets 0",
    slips=[
        Slip(
            f"{_REF}:rewards_kl_sign",
            "the KL term is a penalty: -beta * (logp - ref_logp). With +beta the policy is "
            "paid for moving away from the reference (half of Ziegler et al.'s sign bug)",
        ),
        Slip(
            f"{_REF}:rewards_score_first",
            "the score belongs to the whole response: put it on the last real token, "
            "after which nothing is left to choose, not on the first",
        ),
        Slip(
            f"{_REF}:rewards_score_last_column",
            "the last column is padding in shorter rows: find each row's last real token "
            "from its mask",
        ),
        Slip(
            f"{_REF}:rewards_penalty_on_padding",
            "padding is not part of the response: its reward is 0 (apply the mask to the KL term)",
        ),
    ],
)


# ------------------------------------------------------------------------------ gae


def _fixed_gae() -> list[Case]:
    r = _t([[0.0, 0.0, 1.0]])
    v = _t([[0.5, -0.5, 0.25]])
    r2 = _t([[0.1, -0.2, 2.0, 9.0], [1.0, 7.0, 7.0, 7.0]])
    v2 = _t([[0.3, 0.1, -0.4, 5.0], [0.2, 3.0, 3.0, 3.0]])
    return [
        Case((r, torch.zeros(1, 3), _mask([3], 3), 1.0, 1.0), label="values 0, gamma=lam=1"),
        Case((r, v, _mask([3], 3), 1.0, 0.0), label="lam = 0 (one-step TD errors)"),
        Case((r, v, _mask([3], 3), 0.9, 0.95), label="one row, gamma 0.9, lam 0.95"),
        Case((r2, v2, _mask([3, 1], 4), 1.0, 0.95), label="right padding holding numbers"),
        Case((r2, v2, _mask([4, 2], 4), 0.5, 0.5)),
    ]


def _gae_case(rng: random.Random) -> Case:
    b, n = rng.randint(1, 5), rng.randint(1, 7)
    mask = _random_mask(rng, b, n, sides=False)
    rewards = _gauss(rng, (b, n))
    values = _gauss(rng, (b, n))
    gamma = rng.choice([1.0, 0.99, 0.9, 0.5])
    lam = rng.choice([0.95, 0.9, 0.5, 0.0, 1.0])
    return Case((rewards, values, mask, gamma, lam))


GAE = Exercise(
    name="gae",
    reference=f"{_REF}:gae",
    forbid=_LLMKIT,
    fixed=_fixed_gae,
    random=_gae_case,
    cases=30,
    rtol=1e-5,
    atol=1e-5,
    hint="go backwards over each row's real tokens: delta_t = r_t + gamma * V_{t+1} - V_t "
    "(V after the last real token is 0), A_t = delta_t + gamma * lam * A_{t+1}; returns "
    "are A_t + V_t; padding gets 0 in both",
    slips=[
        Slip(
            f"{_REF}:gae_bootstrap_padding",
            "the episode ends at the last real token: the value after it is 0, not the "
            "value the value head wrote at the padding position after it",
        ),
        Slip(
            f"{_REF}:gae_no_mask",
            "padding is not part of the episode: run the recursion over the real tokens "
            "only (the padding's rewards and values must not flow into the advantages)",
        ),
        Slip(
            f"{_REF}:gae_no_lambda",
            "A_t = delta_t + gamma * lam * A_{t+1}: lam weighs the later TD errors",
        ),
        Slip(
            f"{_REF}:gae_returns_reward_to_go",
            "the returns (the value head's targets) are advantages + values, "
            "A_t + V_t, not the discounted sum of rewards",
        ),
    ],
)


# ------------------------------------------------------------------- ppo_policy_loss


def _loss_args(logp, old, adv, clip, mask):
    return (logp.clone().requires_grad_(True), old, adv, clip, mask)


def _fixed_loss() -> list[Case]:
    ratios = torch.tensor([[0.5, 0.9, 1.1, 1.5]])
    old = _t([[-1.0, -2.0, -0.5, -1.5]])
    logp = old + ratios.log()
    plus, minus = torch.ones(1, 4), -torch.ones(1, 4)
    full = _mask([4], 4)
    old2 = _t([[-1.0, -2.0, -0.5], [-1.2, -0.3, -9.0]])
    logp2 = _t([[-0.8, -2.1, -0.9], [-1.0, -0.9, -0.1]])
    adv2 = _t([[1.0, -0.5, 2.0], [-1.5, 0.7, 50.0]])
    return [
        Case(_loss_args(old, old, plus, 0.2, full), label="ratio 1 everywhere, advantages 1"),
        Case(_loss_args(logp, old, plus, 0.2, full), label="ratios 0.5..1.5, advantages +1"),
        Case(_loss_args(logp, old, minus, 0.2, full), label="ratios 0.5..1.5, advantages -1"),
        Case(_loss_args(logp, old, 3.0 * plus, 0.1, full), label="advantages 3, clip 0.1"),
        Case(_loss_args(logp2, old2, adv2, 0.2, _mask([3, 2], 3)), label="right padding"),
    ]


def _loss_case(rng: random.Random) -> Case:
    b, n = rng.randint(1, 5), rng.randint(1, 7)
    mask = _random_mask(rng, b, n, sides=False)
    old = -_gauss(rng, (b, n)).abs() - 0.1
    logp = old + _gauss(rng, (b, n), rng.choice([0.05, 0.3, 0.8]))
    adv = _gauss(rng, (b, n), rng.choice([0.5, 1.0, 3.0]))
    return Case(_loss_args(logp, old, adv, rng.choice([0.1, 0.2, 0.3]), mask))


_PPO_SLIPS = [
    Slip(
        f"{_REF}:loss_min",
        "PPO takes the pessimistic bound: min of the two surrogates, so max of their "
        "negations (with min, a ratio far outside the clip still gets pushed further)",
    ),
    Slip(
        f"{_REF}:loss_clip_advantage",
        "clip the probability ratio to [1 - clip, 1 + clip], not the advantage",
    ),
    Slip(
        f"{_REF}:loss_no_mask",
        "average over the real tokens only: padding is not part of any response",
    ),
    Slip(
        f"{_REF}:loss_ratio_inverted",
        "the ratio is new over old: exp(logp - old_logp)",
    ),
]


PPO_POLICY_LOSS = Exercise(
    name="ppo_policy_loss",
    reference=f"{_REF}:ppo_policy_loss",
    forbid=_LLMKIT,
    fixed=_fixed_loss,
    random=_loss_case,
    cases=30,
    rtol=1e-5,
    atol=1e-6,
    after=gradient_after(
        f"{_REF}:ppo_policy_loss",
        lambda case: case.args[:1],
        what="your loss",
        wrt="logp",
        hint="build it from logp with torch operations (no .item(), .detach() or "
        "torch.tensor(...) of a number): training needs its gradient",
        slips=_PPO_SLIPS,
    ),
    hint="ratio = exp(logp - old_logp); per token max(-A * ratio, -A * clamp(ratio, 1 - clip, "
    "1 + clip)); the mean over the real tokens, as a 0-d tensor",
    slips=_PPO_SLIPS,
)


def check_per_token_rewards(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``per_token_rewards(scores, logp, ref_logp, mask, beta)``; see the table above."""
    PER_TOKEN_REWARDS.check(fn, cases=cases, seed=seed)


def check_gae(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``gae(rewards, values, mask, gamma, lam)``."""
    GAE.check(fn, cases=cases, seed=seed)


def check_ppo_policy_loss(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``ppo_policy_loss(logp, old_logp, advantages, clip, mask)``."""
    PPO_POLICY_LOSS.check(fn, cases=cases, seed=seed)

"""Checks of lab 10 (reward models): one :class:`Exercise` per exercise.

===================  ============================================  ============================
exercise             the student's function                        reference
===================  ============================================  ============================
bradley_terry_loss   ``(r_chosen, r_rejected) -> scalar tensor``:  ``llmkit.reward.
                     ``mean(-log sigmoid(r_chosen - r_rejected))``  bradley_terry_loss``
pairwise_accuracy    ``(r_chosen, r_rejected) -> float``: share    ``llmkit.reward.
                     of wins, ties 1/2                             pairwise_accuracy``
preference_pair      ``(chosen, rejected) -> (prefix, chosen_end,  ``llmkit.reward.
                     rejected_end)`` split at a turn boundary      preference_pair``
===================  ============================================  ============================

Off limits in every exercise: :mod:`llmkit.reward` (which computes all three). In
``bradley_terry_loss`` also the torch losses that *are* the Bradley-Terry loss in one call:
``binary_cross_entropy_with_logits`` (with targets 1, it is exactly
``mean(-logsigmoid(x))``), ``soft_margin_loss`` (``mean(log(1 + exp(-y x)))``, the same
with ``y = 1``) and ``binary_cross_entropy`` (on ``sigmoid(x)``; it clamps the log at -100),
as functions of ``torch.nn.functional``, through their ``nn`` modules and through the
routes that skip ``torch.nn.functional`` (``torch.binary_cross_entropy_with_logits``,
``torch._C._nn``, ``torch.ops.aten``).
``F.logsigmoid`` and ``F.softplus`` stay allowed: they are the numerically stable building
block the exercise is about, not the loss. ``margin_ranking_loss`` stays allowed too: it
is a hinge, not the Bradley-Terry loss, and gives other values.

Rewards are float32 ``(b,)`` tensors (in the loss cases they require grad, and the loss
must carry the reference's gradient to them); the loss cases include margins of +-100 and -200
(where ``log(sigmoid(x))`` gives ``inf`` and a clamped log gives 100). The accuracy cases
draw rewards from a few values, so that ties are common. The transcripts are HH-RLHF-like,
turns opened by ``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"``, starting with a turn marker.
"""

from __future__ import annotations

import random

import torch

from .runner import Case, Exercise, Slip, gradient_after

__all__ = [
    "HUMAN",
    "ASSISTANT",
    "check_bradley_terry_loss",
    "check_pairwise_accuracy",
    "check_preference_pair",
]

_REF = "llmkit.course.checks.reference.ch10"
_LLMKIT = ["llmkit.reward"]
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TORCH_LOSSES = [
    "torch.nn.functional:binary_cross_entropy_with_logits",
    "torch.nn.functional:binary_cross_entropy",
    "torch.nn.functional:soft_margin_loss",
    # the same losses reached without torch.nn.functional (torch.ops.aten routes included)
    "torch:binary_cross_entropy_with_logits",
    "torch._C._nn:binary_cross_entropy",
    "torch._C._nn:soft_margin_loss",
    "torch.nn:BCEWithLogitsLoss",
    "torch.nn:BCELoss",
    "torch.nn:SoftMarginLoss",
]


# ------------------------------------------------------------------ bradley_terry_loss


def _rewards(values: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def _loss_args(chosen: list[float], rejected: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards as a reward model gives them: with gradients to train it."""
    return _rewards(chosen, grad=True), _rewards(rejected, grad=True)


def _fixed_loss() -> list[Case]:
    return [
        Case(_loss_args([0.0], [0.0]), label="one pair, equal rewards"),
        Case(_loss_args([1.0, -2.0, 3.5], [1.0, -2.0, 3.5]), label="equal rewards"),
        Case(_loss_args([2.0], [-1.0]), label="one pair, margin +3"),
        Case(_loss_args([0.5, 1.0, -0.25, 4.0], [1.5, -1.0, 0.0, 2.0])),
        Case(_loss_args([100.0], [0.0]), label="margin +100"),
        Case(_loss_args([0.0, 1.0], [100.0, 0.0]), label="margins -100 and +1"),
        Case(_loss_args([-100.0, 3.0], [100.0, 3.0]), label="margins -200 and 0"),
    ]


def _loss_case(rng: random.Random) -> Case:
    b = rng.randint(1, 16)
    scale = rng.choice([0.5, 2.0, 10.0])
    chosen = [rng.gauss(0.0, scale) for _ in range(b)]
    rejected = [rng.gauss(0.0, scale) for _ in range(b)]
    return Case(_loss_args(chosen, rejected))


_BT_SLIPS = [
    Slip(
        f"{_REF}:bt_log_of_sigmoid",
        "log(sigmoid(x)) breaks at large margins: sigmoid(-100) rounds to 0 in float32 "
        "and its log to -inf (log(1 + exp(-x)) overflows the same way); use "
        "F.logsigmoid(x), which computes log sigmoid(x) without rounding to 0 first",
    ),
    Slip(
        f"{_REF}:bt_sign_swapped",
        "the margin is r_chosen - r_rejected: the loss is small when the chosen answer "
        "has the higher reward",
    ),
    Slip(f"{_REF}:bt_sum", "take the mean over the pairs, not the sum"),
    Slip(
        f"{_REF}:bt_no_minus",
        "a loss is the negative log-likelihood: -log sigmoid(...), which is >= 0",
    ),
]


BRADLEY_TERRY_LOSS = Exercise(
    name="bradley_terry_loss",
    reference=f"{_REF}:bradley_terry_loss",
    forbid=[*_LLMKIT, *_TORCH_LOSSES],
    fixed=_fixed_loss,
    random=_loss_case,
    cases=30,
    rtol=1e-5,
    atol=1e-5,
    after=gradient_after(
        f"{_REF}:bradley_terry_loss",
        lambda case: case.args,
        what="your loss",
        wrt="the rewards",
        hint="build it from the rewards with torch operations (no .item(), .detach() or "
        "torch.tensor(...) of a number): the reward model trains through its gradient",
        slips=_BT_SLIPS,
    ),
    hint="the loss is the mean over pairs of -log sigmoid(r_chosen - r_rejected), a 0-d "
    "float tensor; ln 2 = 0.693 when the rewards are equal",
    slips=_BT_SLIPS,
)


# ------------------------------------------------------------------- pairwise_accuracy


def _fixed_accuracy() -> list[Case]:
    return [
        Case((_rewards([1.0]), _rewards([0.0])), label="one win"),
        Case((_rewards([0.0]), _rewards([1.0])), label="one loss"),
        Case((_rewards([0.5]), _rewards([0.5])), label="one tie"),
        Case((_rewards([3.0, 1.0, 0.0, 2.0]), _rewards([1.0, 1.0, 2.0, 2.0]))),
        Case((_rewards([0.0] * 5), _rewards([0.0] * 5)), label="a constant reward"),
        Case((_rewards([-1.0, 100.0, 7.0]), _rewards([-2.0, 99.0, 6.5])), label="all wins"),
    ]


def _accuracy_case(rng: random.Random) -> Case:
    b = rng.randint(1, 20)
    values = rng.choice([[0.0, 1.0], [-1.0, 0.0, 1.0, 2.0], [0.25 * k for k in range(-8, 9)]])
    chosen = [rng.choice(values) for _ in range(b)]
    rejected = [rng.choice(values) for _ in range(b)]
    return Case((_rewards(chosen), _rewards(rejected)))


PAIRWISE_ACCURACY = Exercise(
    name="pairwise_accuracy",
    reference=f"{_REF}:pairwise_accuracy",
    forbid=_LLMKIT,
    fixed=_fixed_accuracy,
    random=_accuracy_case,
    cases=30,
    hint="a pair scores 1 when r_chosen > r_rejected, 1/2 on a tie and 0 otherwise; return "
    "the mean over the pairs as a Python float",
    slips=[
        Slip(
            f"{_REF}:accuracy_ties_win",
            "a tie is neither a win nor a loss: it counts one half (with >=, a constant "
            "reward would score 100 %)",
        ),
        Slip(
            f"{_REF}:accuracy_ties_lose",
            "a tie counts one half, not zero (with >, a constant reward would score 0 %, "
            "worse than chance)",
        ),
        Slip(f"{_REF}:accuracy_count", "return the share of the pairs (a mean), not a count"),
        Slip(
            f"{_REF}:accuracy_reversed",
            "count the pairs where the chosen answer's reward is the higher one",
        ),
    ],
)


# --------------------------------------------------------------------- preference_pair

_WORDS = ["Sure", " I", " think", " so", ".", " No", "!", " a\nb", " Human", " Assistant:", " é"]


def _content(rng: random.Random) -> str:
    return "".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 4)))


def _conversation(rng: random.Random, n: int) -> list[str]:
    return [(HUMAN if k % 2 == 0 else ASSISTANT) + _content(rng) for k in range(n)]


def _pair_case(rng: random.Random) -> Case:
    kind = rng.choice(["usual", "usual", "same start", "earlier", "identical", "longer"])
    turns = _conversation(rng, 2 * rng.randint(0, 3) + 1)  # ends with a human turn
    opening = ASSISTANT + rng.choice(["", " Sure", " I think"])
    chosen = [*turns, opening + _content(rng)]
    rejected = [*turns, opening + _content(rng)]
    if kind == "earlier" and len(turns) > 1:
        k = rng.randrange(len(turns))
        rejected[k] = rejected[k] + " (edited)"
    elif kind == "identical":
        rejected = list(chosen)
    elif kind == "longer":
        rejected = [*chosen, HUMAN + _content(rng), ASSISTANT + _content(rng)]
    return Case(("".join(chosen), "".join(rejected)))


def _fixed_pairs() -> list[Case]:
    h, a = HUMAN, ASSISTANT
    prompt = f"{h} What is 2 + 2?{a} Four.{h} And 3 + 3?"
    return [
        Case((f"{h} Hi{a} Hello!", f"{h} Hi{a} Go away."), label="one exchange"),
        Case((prompt + f"{a} Six.", prompt + f"{a} Sixty-six.")),
        Case((f"{h} Hi{a} I think so.", f"{h} Hi{a} I think not."), label="same first words"),
        Case((f"{h} Hi{a} Hello", f"{h} Hi{a} Hello"), label="identical transcripts"),
        Case((f"{h} Hi{a}", f"{h} Hi{a} Hello"), label="an empty answer"),
        Case(
            (f"{h} Hi{a} Hello{h} A joke?{a} Knock knock.", f"{h} Hi{a} Hey{h} A joke?{a} No."),
            label="an earlier turn differs",
        ),
        Case((f"{h} Hi{a} Yes{h} Why?{a} Because.", f"{h} Hi{a} Yes"), label="more turns"),
    ]


PREFERENCE_PAIR = Exercise(
    name="preference_pair",
    reference=f"{_REF}:preference_pair",
    forbid=_LLMKIT,
    fixed=_fixed_pairs,
    random=_pair_case,
    cases=40,
    hint="cut both transcripts into turns (a turn starts at '\\n\\nHuman:' or "
    "'\\n\\nAssistant:'); the prefix is the longest run of whole turns both share from the "
    "start, but never every turn of either; the endings are the rest, so that "
    "prefix + ending is the transcript",
    slips=[
        Slip(
            f"{_REF}:pair_no_last_turn",
            "each ending keeps at least its last turn, even when the transcripts are "
            "identical: the prefix is at most all turns but the last",
        ),
        Slip(
            f"{_REF}:pair_common_characters",
            "split at a turn boundary, never inside a turn: two answers that begin with the "
            "same words are still two different turns",
        ),
        Slip(
            f"{_REF}:pair_last_marker",
            "the endings hold everything after the shared turns: when an earlier turn "
            "differs, or one transcript goes on longer, that is more than the last answer; "
            "find the first turn that differs, not the last '\\n\\nAssistant:'",
        ),
        Slip(
            f"{_REF}:pair_marker_in_prefix",
            "the prefix ends before the marker of the first differing turn: each ending starts "
            "with '\\n\\nHuman:' or '\\n\\nAssistant:'",
        ),
    ],
)


def check_bradley_terry_loss(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``bradley_terry_loss(r_chosen, r_rejected)``; see the table above."""
    BRADLEY_TERRY_LOSS.check(fn, cases=cases, seed=seed)


def check_pairwise_accuracy(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``pairwise_accuracy(r_chosen, r_rejected)``."""
    PAIRWISE_ACCURACY.check(fn, cases=cases, seed=seed)


def check_preference_pair(fn, cases: int = 40, seed: int | None = None) -> None:
    """Check ``preference_pair(chosen, rejected)``."""
    PREFERENCE_PAIR.check(fn, cases=cases, seed=seed)

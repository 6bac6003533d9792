"""Checks of lab 12 (direct preference optimisation): one :class:`Exercise` per exercise.

=================  =============================================  =============================
exercise           the student's function                         reference
=================  =============================================  =============================
sequence_logprobs  ``(model, ids, labels) -> (b,)``: the sum of   ``llmkit.dpo.sequence_
                   log p of each row's response tokens; labels    logprobs``
                   aligned with ids, -100 on prompt and padding
dpo_loss           ``(pc, pr, rc, rr, beta) -> (loss, chosen      ``llmkit.dpo.dpo_loss`` (the
                   rewards, rejected rewards)``                   sigmoid loss, no smoothing)
=================  =============================================  =============================

Off limits in both exercises: :mod:`llmkit.dpo`. In ``sequence_logprobs`` also what computes
the per-token loss for you (``F.cross_entropy``, ``F.nll_loss``, their modules, the
``torch._C._nn`` and ``torch.ops.aten`` ops under them, the course's loss helpers and
``llmkit.decoding.sequence_logprob``, which sums a continuation's log-probabilities): the
exercise is to pick each target's log-probability out of
``log_softmax`` with ``gather``. In ``dpo_loss`` also the binary cross-entropy and soft-margin
losses, which *are* ``-log sigmoid(x)`` under another name; ``F.logsigmoid`` stays allowed,
a numerically stable building block like ``log_softmax``: the exercise is what goes into it.

The models are small random GPTs (:class:`llmkit.gpt.GPT`, float64) whose every weight
matters, one of them so confident that ``softmax(...).log()`` gives ``-inf``; ``ids`` are
padded on the right with 0. The DPO cases include a pair at ``beta * h = -1780``, where
``log(sigmoid(x))`` gives ``inf`` even in float64. Both results must carry the reference's
gradient (to the model's weights; to the policy's log-probabilities).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from llmkit.gpt import GPT, GPTConfig

from .runner import Case, Exercise, Slip, gradient_after

__all__ = ["check_sequence_logprobs", "check_dpo_loss"]

_REF = "llmkit.course.checks.reference.ch12"
_DPO = ["llmkit.dpo"]
_CROSS_ENTROPY = [
    "torch.nn.functional:cross_entropy",
    "torch.nn.functional:nll_loss",
    "torch._C._nn:cross_entropy_loss",
    "torch._C._nn:nll_loss",
    "torch._C._nn:nll_loss_nd",
    "torch._C._nn:nll_loss2d",
    "torch.ops:aten.nll_loss_forward",  # the aten ops under nll_loss, reachable directly
    "torch.ops:aten.nll_loss2d_forward",
    "torch.nn:CrossEntropyLoss",
    "torch.nn:NLLLoss",
    "llmkit.train:cross_entropy_loss",
    "llmkit.lm:CausalLM.loss",
    "llmkit.sft:target_loss",
    "llmkit.decoding:sequence_logprob",
    "llmkit.seq2seq:_masked_cross_entropy",
    "llmkit.seq2seq:seq2seq_loss",
    "llmkit.bigram:BigramLM.loss",
]
_BCE = [
    "torch.nn.functional:binary_cross_entropy_with_logits",
    "torch.nn.functional:binary_cross_entropy",
    "torch.nn.functional:soft_margin_loss",
    "torch:binary_cross_entropy_with_logits",
    "torch._C._nn:binary_cross_entropy",
    "torch._C._nn:soft_margin_loss",
    "torch.nn:BCEWithLogitsLoss",
    "torch.nn:BCELoss",
    "torch.nn:SoftMarginLoss",
]


def _first(result: Any) -> Any:
    return result[0] if isinstance(result, tuple | list) and result else result


_NO_GRADIENT = (
    "DPO trains through it: compute it with tensor operations, without .detach(), .item() "
    "or torch.no_grad()"
)


# ------------------------------------------------------------------ sequence_logprobs


def _random_gpt(rng: random.Random, block: tuple[int, int] = (4, 10)) -> GPT:
    """A small float64 GPT with sharp, varied next-token distributions (weights scaled up,
    random biases), so that a shifted or misplaced log-probability shows."""
    n_head = rng.randint(1, 2)
    config = GPTConfig(
        vocab_size=rng.randint(5, 16),
        block_size=rng.randint(*block),
        n_layer=rng.randint(1, 2),
        n_head=n_head,
        d_model=n_head * rng.choice([4, 8]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.randrange(2**31))
        model = GPT(config).to(torch.float64).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.5)
                elif p.dim() >= 2:
                    p.mul_(rng.uniform(4.0, 10.0))
    return model


def _about(model: GPT) -> str:
    c = model.config
    return (
        f"a GPT with vocab_size={c.vocab_size}, block_size={c.block_size}, "
        f"n_layer={c.n_layer}, d_model={c.d_model}"
    )


def _rows(rng: random.Random, b: int, t: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(b, t, dtype=torch.long)
    labels = torch.full((b, t), -100, dtype=torch.long)
    lengths = [t] + [rng.randint(2, t) for _ in range(b - 1)]  # the longest fills the row
    rng.shuffle(lengths)
    for r, n in enumerate(lengths):
        row = [rng.randrange(vocab) for _ in range(n)]
        prompt = rng.randint(1, n - 1)
        ids[r, :n] = torch.tensor(row)
        labels[r, prompt:n] = torch.tensor(row[prompt:])
    return ids, labels


def _logprob_case(rng: random.Random) -> Case:
    model = _random_gpt(rng)
    c = model.config
    b, t = rng.randint(1, 4), rng.randint(2, c.block_size)
    ids, labels = _rows(rng, b, t, c.vocab_size)
    return Case((model, ids, labels), label=f"{_about(model)}; ids of shape {(b, t)}")


def _fixed_logprobs() -> list[Case]:
    rng = random.Random(12)
    model = _random_gpt(rng, block=(6, 6))
    one = Case(
        (model, torch.tensor([[1, 2, 3, 4]]), torch.tensor([[-100, -100, 3, 4]])),
        label=f"{_about(model)}; one row: prompt [1, 2], response [3, 4]",
    )
    padded = Case(
        (
            model,
            torch.tensor([[1, 2, 3, 4, 0, 0], [4, 3, 2, 1, 3, 2]]),
            torch.tensor([[-100, 2, 3, 4, -100, -100], [-100, -100, -100, -100, 3, 2]]),
        ),
        label=f"{_about(model)}; two rows, the first padded with two 0s",
    )
    sharp = _random_gpt(random.Random(5), block=(6, 6))
    with torch.no_grad():
        sharp.lm_head.weight.mul_(400.0)  # logits thousands apart: softmax rounds to 0
    confident = Case(
        (sharp, torch.tensor([[1, 2, 3, 4, 1, 2]]), torch.tensor([[-100, -100, 3, 4, 1, 2]])),
        label=f"a very confident {_about(sharp)} (logits thousands apart); prompt [1, 2]",
    )
    return [one, padded, _logprob_case(random.Random(1)), confident]


_LOGPROB_SLIPS = [
    Slip(
        f"{_REF}:logprobs_log_of_softmax",
        "softmax(...).log() rounds small probabilities to 0 first (then log gives -inf; in "
        "float32 below about -104 already): use log_softmax, which stays finite",
    ),
    Slip(
        f"{_REF}:logprobs_not_shifted",
        "the logits at position t predict the token at t + 1: score labels[:, 1:] "
        "with the log-probabilities at [:, :-1]",
    ),
    Slip(
        f"{_REF}:logprobs_every_token",
        "count the response tokens only: the prompt and the padding have label -100",
    ),
    Slip(
        f"{_REF}:logprobs_mean",
        "the log-probability of a sequence is the sum over its tokens, not their mean",
    ),
]


SEQUENCE_LOGPROBS = Exercise(
    name="sequence_logprobs",
    reference=f"{_REF}:sequence_logprobs",
    forbid=[*_DPO, *_CROSS_ENTROPY],
    fixed=_fixed_logprobs,
    random=_logprob_case,
    cases=15,
    hint="logits = model(ids); log_softmax over the vocabulary; the logits at position t "
    "score token t + 1, so gather labels[:, 1:] from the log-probabilities at [:, :-1] and "
    "sum each row over the positions whose label is not -100",
    crash_hint="labels equal to -100 are not token ids: replace them by a valid index before "
    "gather (labels.clamp(min=0)) and leave those positions out of the sum",
    slips=_LOGPROB_SLIPS,
    after=gradient_after(
        f"{_REF}:sequence_logprobs",
        lambda case: list(case.args[0].parameters()),
        what="your result",
        wrt="the model's weights",
        hint=_NO_GRADIENT,
        slips=_LOGPROB_SLIPS,
    ),
)


# --------------------------------------------------------------------------- dpo_loss


def _logps(rng: random.Random, b: int, grad: bool) -> torch.Tensor:
    x = torch.tensor([-rng.uniform(0.5, 40.0) for _ in range(b)], dtype=torch.float64)
    return x.requires_grad_(grad)


def _loss_case(rng: random.Random) -> Case:
    b = rng.randint(1, 6)
    beta = rng.choice([0.05, 0.1, 0.3, 1.0, 2.0])
    pc, pr = _logps(rng, b, True), _logps(rng, b, True)
    if rng.random() < 0.5:  # the policy near the reference, as early in training
        rc = (pc.detach() + torch.tensor([rng.uniform(-2, 2) for _ in range(b)])).double()
        rr = (pr.detach() + torch.tensor([rng.uniform(-2, 2) for _ in range(b)])).double()
    else:
        rc, rr = _logps(rng, b, False), _logps(rng, b, False)
    return Case((pc, pr, rc, rr, beta))


def _fixed_loss() -> list[Case]:
    def t(*v: float, grad: bool = False) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float64, requires_grad=grad)

    return [
        Case((t(-3.0, grad=True), t(-5.0, grad=True), t(-4.0), t(-4.5), 0.2)),
        # the policy equals the reference: every reward is 0, the loss ln 2
        Case(
            (t(-2.0, -7.0, grad=True), t(-3.0, -1.0, grad=True), t(-2.0, -7.0), t(-3.0, -1.0), 0.1)
        ),
        Case(
            (
                t(-10.0, -20.0, -30.0, grad=True),
                t(-30.0, -20.0, -10.0, grad=True),
                t(-12.0, -21.0, -29.0),
                t(-29.0, -19.0, -12.0),
                1.0,
            )
        ),
        # the policy far more sure of the rejected reply than the reference: beta * h = -1780,
        # where sigmoid rounds to 0 even in float64 (log(sigmoid) gives inf, not 1780)
        Case(
            (
                t(-900.0, -5.0, grad=True),
                t(-10.0, -6.0, grad=True),
                t(-10.0, -5.0),
                t(-900.0, -6.0),
                1.0,
            ),
            label="one pair far apart (beta * h = -1780) and one with h = 0",
        ),
    ]


_DPO_SLIPS = [
    Slip(
        f"{_REF}:loss_log_of_sigmoid",
        "log(sigmoid(x)) breaks when the policy is far from the reference: sigmoid(-1780) "
        "rounds to 0 (in float32 already below -104) and its log to -inf (log(1 + exp(-x)) "
        "overflows the same way); use F.logsigmoid(x)",
    ),
    Slip(
        f"{_REF}:loss_beta_outside",
        "beta scales h inside the sigmoid: -logsigmoid(beta * h), not -beta * logsigmoid(h)",
    ),
    Slip(
        f"{_REF}:loss_reference_added",
        "subtract the reference: h = (pc - pr) - (rc - rr), the policy's log-ratio minus "
        "the reference's",
    ),
    Slip(
        f"{_REF}:loss_swapped",
        "the loss must fall when the chosen reply gains on the rejected one: h is chosen "
        "minus rejected",
    ),
    Slip(f"{_REF}:loss_sum", "average the per-pair losses over the batch, do not sum them"),
]


DPO_LOSS = Exercise(
    name="dpo_loss",
    reference=f"{_REF}:dpo_loss",
    forbid=[*_DPO, *_BCE],
    fixed=_fixed_loss,
    random=_loss_case,
    cases=30,
    hint="rewards: beta * (policy - reference) log-probabilities of each reply; h = (chosen "
    "policy - chosen reference) - (rejected policy - rejected reference); loss: the mean of "
    "-logsigmoid(beta * h) over the pairs",
    slips=_DPO_SLIPS,
    after=gradient_after(
        f"{_REF}:dpo_loss",
        lambda case: case.args[:2],
        pick=_first,
        what="your loss",
        wrt="the policy's log-probabilities",
        hint=_NO_GRADIENT,
        slips=_DPO_SLIPS,
    ),
)


def check_sequence_logprobs(fn, cases: int = 15, seed: int | None = None) -> None:
    """Check ``sequence_logprobs(model, ids, labels)``; see the table above."""
    SEQUENCE_LOGPROBS.check(fn, cases=cases, seed=seed)


def check_dpo_loss(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``dpo_loss(pc, pr, rc, rr, beta)``."""
    DPO_LOSS.check(fn, cases=cases, seed=seed)

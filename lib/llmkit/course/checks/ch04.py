"""Checks of lab 04 (decoding strategies): one :class:`Exercise` per exercise.

=================  =======================================================  ===================
exercise           the student's function                                   reference
=================  =======================================================  ===================
apply_temperature  ``(logits (..., V), temperature) -> (..., V)``            ``llmkit.decoding``
top_k_filter       ``(logits (..., V), k) -> (..., V)``                      ``llmkit.decoding``
top_p_filter       ``(logits (..., V), p) -> (..., V)``                      ``llmkit.decoding``
sampling_probs     ``(logits, temperature, top_k, top_p) -> probabilities``  ``reference.ch04``
beam_search_step   ``(sums (n,), logprobs (n, V), beam_width)``              ``reference.ch04``
                   ``-> (scores, parents, tokens)``, each ``(min(B, nV),)``
=================  =======================================================  ===================

Off limits in every exercise: all of :mod:`llmkit.decoding`; in the four filter
exercises also ``transformers``' temperature, top-k and top-p logits warpers (when
``transformers`` is installed). ``torch.topk``, ``sort``, ``softmax`` are building blocks.

- **Ties**: top-k inputs are drawn from a few integer values, so ties at the k-th largest
  logit are common (all of them are kept, as in ``transformers``). For top-p, tied
  logits that straddle the threshold may be split either way, so that check compares
  the *values* each row keeps, not their positions. Random ``p`` stay ``1e-4`` away from
  every cumulative probability, so that rounding never decides.
- **Each exercise on its own**: while ``sampling_probs`` runs, the student's
  ``apply_temperature``, ``top_k_filter`` and ``top_p_filter`` are the library's.
"""

from __future__ import annotations

import importlib.util
import math
import random

import numpy as np
import torch

from .runner import Case, Exercise, Slip, compare

__all__ = [
    "check_apply_temperature",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_sampling_probs",
    "check_beam_search_step",
]

_REF = "llmkit.course.checks.reference.ch04"
_INF = float("inf")
_MARGIN = 1e-4  # random p stay this far from every cumulative probability
_WARPERS = (
    [f"transformers:{w}LogitsWarper" for w in ("Temperature", "TopK", "TopP")]
    if importlib.util.find_spec("transformers") is not None
    else []
)
_FILTERS_OFF_LIMITS = ["llmkit.decoding", *_WARPERS]


# ----------------------------------------------------------------------- random inputs


def _gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _shape(rng: random.Random, vocab: int) -> tuple[int, ...]:
    kind = rng.random()
    if kind < 0.4:
        return (vocab,)
    if kind < 0.8:
        return (rng.randint(1, 4), vocab)
    return (rng.randint(1, 3), rng.randint(1, 3), vocab)


def _nucleus_margin(logits: torch.Tensor, p: float) -> float:
    """How far ``p`` is from the probability mass before any token of positive
    probability (what top-p compares with ``p``), over all rows."""
    probs = torch.softmax(logits.double(), dim=-1).reshape(-1, logits.shape[-1])
    sorted_probs = probs.sort(dim=-1, descending=True).values
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    return float((before - p).abs()[sorted_probs > 1e-12].min())


def _safe_p(rng: random.Random, logits: torch.Tensor) -> float:
    for _ in range(200):
        p = round(rng.uniform(0.05, 0.999), 4)
        if _nucleus_margin(logits, p) > _MARGIN:
            return p
    return 1.0  # pragma: no cover - practically unreachable


def _temperature_case(rng: random.Random) -> Case:
    g = _gen(rng)
    shape = _shape(rng, rng.randint(1, 10))
    logits = rng.uniform(0.5, 5.0) * torch.randn(shape, generator=g)
    if rng.random() < 0.3:
        logits[torch.rand(shape, generator=g) < 0.2] = -_INF
    return Case((logits, round(math.exp(rng.uniform(math.log(0.05), math.log(20))), 3)))


def _top_k_case(rng: random.Random) -> Case:
    vocab = rng.randint(1, 10)
    levels = rng.randint(2, 5)  # few distinct values: ties are common
    logits = torch.randint(0, levels, _shape(rng, vocab), generator=_gen(rng)).float() - 1.5
    return Case((logits, rng.randint(1, vocab + 2)))


def _top_p_case(rng: random.Random) -> Case:
    vocab = rng.randint(1, 12)
    shape, g = _shape(rng, vocab), _gen(rng)
    if rng.random() < 0.3:  # ties
        logits = torch.randint(0, 4, shape, generator=g).float()
    else:
        logits = rng.uniform(0.5, 3.0) * torch.randn(shape, generator=g)
    if rng.random() < 0.25 and vocab > 1:  # some tokens already removed (e.g. by top-k)
        mask = torch.rand(shape, generator=g) < 0.3
        mask[..., 0] = False
        logits = logits.masked_fill(mask, -_INF)
    return Case((logits, _safe_p(rng, logits)))


def _sampling_case(rng: random.Random) -> Case:
    from llmkit.decoding import top_k_filter

    vocab = rng.randint(2, 12)
    logits = rng.uniform(1.0, 3.0) * torch.randn(_shape(rng, vocab), generator=_gen(rng))
    t = rng.choice([1.0, round(rng.uniform(0.2, 3.0), 2)])
    k = rng.choice([None, rng.randint(1, vocab)])
    p = None
    if rng.random() < 0.7:
        p = _safe_p(rng, top_k_filter(logits / t, k) if k is not None else logits / t)
    return _sampling(logits, t, k, p)


def _sampling(logits, t: float, k: int | None, p: float | None) -> Case:  # noqa: ANN001
    logits = torch.as_tensor(logits)
    return Case((logits,), {"temperature": t, "top_k": k, "top_p": p})


def _beam_case(rng: random.Random) -> Case:
    n, vocab, beam = rng.randint(1, 5), rng.randint(2, 9), rng.randint(1, 6)
    g = _gen(rng)
    sums = -(torch.rand(n, generator=g) * 6.0).sort().values  # best beam first
    logits = rng.uniform(0.5, 3.0) * torch.randn(n, vocab, generator=g)
    if rng.random() < 0.3:  # zero-probability tokens, leaving enough candidates
        mask = torch.rand(n, vocab, generator=g) < 0.3
        mask[:, 0] = False
        if int((~mask).sum()) >= beam:
            logits = logits.masked_fill(mask, -_INF)
    return Case((sums, torch.log_softmax(logits, dim=-1), beam))


# ------------------------------------------------------------------ top-p comparison


def _kept_rows(t: torch.Tensor) -> list[list[float]]:
    rows = t.double().reshape(-1, t.shape[-1])
    return [sorted(r[torch.isfinite(r)].tolist()) for r in rows]


def _compare_top_p(got, expected, case: Case) -> str | None:  # noqa: ANN001
    """Removed entries -inf, kept ones their logit, and per row the same kept values
    as ``expected`` (which of several tied logits are kept may differ)."""
    with np.errstate(invalid="ignore"):  # inf - inf in compare's largest difference
        problem = compare(got, expected)
        if problem is None or "differs" not in problem:
            return problem  # a match, or the wrong type, shape or dtype
        logits = case.args[0]
        if compare(got, logits.masked_fill(got == -_INF, -_INF)) is not None:
            return "a kept logit changed its value, or a removed one is not -inf"
    rows = list(zip(_kept_rows(got), _kept_rows(expected), strict=True))
    for i, (a, b) in enumerate(rows):
        row = "your result" if len(rows) == 1 else f"row {i} of your result"
        if len(a) != len(b):
            return f"{row} keeps {len(a)} token{'s' * (len(a) != 1)}, expected {len(b)}"
        if not all(math.isclose(u, v, abs_tol=1e-6) for u, v in zip(a, b, strict=True)):
            return f"{row} keeps other tokens than expected"
    return None


# ------------------------------------------------------------------------ exercises

_LOG = [math.log(v) for v in (0.5, 0.3, 0.15, 0.05)]

APPLY_TEMPERATURE = Exercise(
    name="apply_temperature",
    reference="llmkit.decoding:apply_temperature",
    forbid=_FILTERS_OFF_LIMITS,
    fixed=[
        (torch.tensor([2.0, -1.0]), 0.5),
        (torch.tensor([1.0, 2.0, 3.0]), 1.0),
        (torch.tensor([0.5, -_INF, 1.5, 0.0]), 2.0),
        (torch.tensor([[3.0, 1.0], [-2.0, 0.25]]), 0.1),
        (torch.tensor([4.0]), 10.0),
    ],
    random=_temperature_case,
    cases=25,
    hint="divide the logits by the temperature: softmax(logits / T)",
    slips=[
        Slip(
            f"{_REF}:temperature_multiplies",
            "you multiplied by the temperature; divide by it (T < 1 sharpens)",
        ),
        Slip(
            f"{_REF}:temperature_softmax",
            "return the scaled logits, not probabilities (no softmax here)",
        ),
    ],
)

TOP_K_FILTER = Exercise(
    name="top_k_filter",
    reference="llmkit.decoding:top_k_filter",
    forbid=_FILTERS_OFF_LIMITS,
    fixed=[
        (torch.tensor([1.0, 3.0, 2.0, 3.0]), 1),  # a tie at the top: both kept
        (torch.tensor([1.0, 3.0, 2.0, 3.0]), 2),
        (torch.tensor([0.5, 2.0, 2.0, 2.0, -1.0]), 2),  # the k-th largest is tied: 3 kept
        (torch.tensor([0.1, 0.7, 0.3]), 3),  # k == V: everything
        (torch.tensor([0.1, 0.7, 0.3]), 5),  # k > V: everything
        (torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 1.0, -1.0]]), 2),
        (torch.tensor([-_INF, 1.0, 0.5, -_INF]), 3),  # entries already -inf stay -inf
    ],
    random=_top_k_case,
    cases=25,
    hint="find the k-th largest logit of each row (torch.topk(...).values[..., -1:]) and "
    "set every logit strictly smaller than it to -inf",
    crash_hint="k may be larger than the vocabulary (torch.topk refuses it): keep every token",
    slips=[
        Slip(
            f"{_REF}:top_k_strict",
            "the k-th largest logit itself is kept: remove only the strictly smaller ones",
        ),
        Slip(
            f"{_REF}:top_k_exactly_k",
            "keep every logit equal to the k-th largest one (ties are all kept, as in "
            "transformers), so a row may keep more than k tokens",
        ),
        Slip(f"{_REF}:top_k_zero", "set the removed logits to -inf (float('-inf')), not to 0"),
    ],
)

TOP_P_FILTER = Exercise(
    name="top_p_filter",
    reference="llmkit.decoding:top_p_filter",
    forbid=_FILTERS_OFF_LIMITS,
    fixed=[
        (torch.tensor(_LOG), 0.7),  # 0.5 < 0.7 <= 0.8: two tokens
        (torch.tensor(_LOG[::-1]), 0.7),  # the same, least probable token first
        (torch.tensor(_LOG), 0.45),  # the top token alone reaches p
        (torch.tensor(_LOG), 0.81),  # crossing at the third token
        (torch.tensor(_LOG), 1.0),  # everything
        (torch.tensor([0.0, 0.0, 0.0, 0.0]), 0.6),  # ties everywhere: any 3 of 4
        (torch.tensor([3.0, 1.0, 1.0, 1.0, -2.0]), 0.93),  # tied logits at the boundary
        (torch.tensor([-_INF, 2.0, 1.0, -_INF, 0.0]), 0.8),  # -inf entries stay -inf
        (torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), 0.62),  # nuclei of 2 sizes
    ],
    random=_top_p_case,
    cases=25,
    compare=_compare_top_p,
    hint="sort the probabilities (softmax of the logits) in descending order, keep tokens "
    "while the probability before them is still below p, and set the others to -inf",
    slips=[
        Slip(
            f"{_REF}:top_p_drops_crossing",
            "you removed the token that crosses p: keep it, the nucleus is the smallest "
            "set whose probability reaches p",
        ),
        Slip(
            f"{_REF}:top_p_one_too_many",
            "you keep one token too many: stop at the token where the sum reaches p",
        ),
        Slip(
            f"{_REF}:top_p_sorted_mask",
            "keep the most probable tokens: after sorting, map the sorted positions back "
            "to the original ones (scatter with the sort indices)",
        ),
        Slip(f"{_REF}:top_p_zero", "set the removed logits to -inf (float('-inf')), not to 0"),
    ],
)

SAMPLING_PROBS = Exercise(
    name="sampling_probs",
    reference=f"{_REF}:sampling_probs",
    forbid=_FILTERS_OFF_LIMITS,
    substitute={
        "apply_temperature": "llmkit.decoding:apply_temperature",
        "top_k_filter": "llmkit.decoding:top_k_filter",
        "top_p_filter": "llmkit.decoding:top_p_filter",
    },
    fixed=[
        _sampling([2.0, 1.0, 0.0, -1.0], 1.0, None, None),
        _sampling([2.0, 1.0, 0.0, -1.0], 0.5, None, None),
        _sampling([2.0, 1.0, 0.0, -1.0], 1.0, 2, None),
        _sampling([2.0, 1.0, 0.0, -1.0], 1.0, None, 0.8),
        _sampling([2.0, 1.0, 0.0, -1.0], 3.0, None, 0.8),  # the nucleus grows with T
        _sampling([2.0, 1.5, 1.0, 0.0, -1.0], 1.0, 3, 0.7),
        # top-k first renormalises: 0.3 / 0.55 > 0.5 alone (top-p first would keep two)
        _sampling([math.log(v) for v in (0.3, 0.25, 0.2, 0.15, 0.1)], 1.0, 2, 0.5),
    ],
    random=_sampling_case,
    cases=25,
    rtol=1e-4,
    hint="temperature, then top-k, then top-p, then softmax over the last dimension",
    slips=[
        Slip(
            f"{_REF}:sampling_returns_logits",
            "return probabilities (the softmax of the filtered logits), not logits",
        ),
        Slip(
            f"{_REF}:sampling_temperature_last",
            "apply the temperature first: which tokens are in the top-p nucleus depends on "
            "the temperature",
        ),
        Slip(
            f"{_REF}:sampling_top_p_first",
            "filter with top-k first, then top-p on what is left (the order of "
            "transformers' generate)",
        ),
        Slip(f"{_REF}:sampling_no_temperature", "divide the logits by the temperature"),
    ],
)

_L = math.log
BEAM_SEARCH_STEP = Exercise(
    name="beam_search_step",
    reference=f"{_REF}:beam_search_step",
    forbid=["llmkit.decoding"],
    fixed=[
        # the first step: one beam (the prompt), V = 3, B = 2
        (torch.tensor([0.0]), torch.tensor([[_L(0.5), _L(0.3), _L(0.2)]]), 2),
        # B > V on the first step: only 3 candidates exist
        (torch.tensor([0.0]), torch.tensor([[_L(0.5), _L(0.3), _L(0.2)]]), 4),
        # the strong beam keeps both places; the weak one drops out
        (
            torch.tensor([_L(0.6), _L(0.4)]),
            torch.tensor([[_L(0.5), _L(0.45), _L(0.05)], [_L(0.6), _L(0.3), _L(0.1)]]),
            2,
        ),
        # the weaker beam's best extension beats the stronger beam's
        (
            torch.tensor([_L(0.5), _L(0.4)]),
            torch.tensor([[_L(0.4), _L(0.35), _L(0.25)], [_L(0.9), _L(0.05), _L(0.05)]]),
            2,
        ),
        # zero-probability tokens are never preferred
        (
            torch.tensor([_L(0.7), _L(0.3)]),
            torch.tensor([[_L(0.6), _L(0.4), -_INF], [-_INF, _L(0.8), _L(0.2)]]),
            3,
        ),
    ],
    random=_beam_case,
    cases=25,
    atol=1e-5,
    hint="score every candidate sums[i] + logprobs[i, v], then keep the beam_width best of "
    "all n * V together, best first, as three tensors (scores, parents, tokens)",
    slips=[
        Slip(
            f"{_REF}:beam_forgets_sums",
            "a candidate's score is the beam's running score plus the token's "
            "log-probability: sums[i] + logprobs[i, v]",
        ),
        Slip(
            f"{_REF}:beam_swapped",
            "parents and tokens are swapped: the flattened candidate c = i * V + v has "
            "parent c // V and token c % V",
        ),
        Slip(f"{_REF}:beam_unsorted", "the right survivors in the wrong order: best first"),
        Slip(
            f"{_REF}:beam_per_beam",
            "compare the candidates of all beams together: a strong beam may supply "
            "several survivors and a weak one none",
        ),
    ],
)


def check_apply_temperature(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``apply_temperature(logits, temperature)``; see the table above."""
    APPLY_TEMPERATURE.check(fn, cases=cases, seed=seed)


def check_top_k_filter(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``top_k_filter(logits, k)`` (ties with the k-th largest kept)."""
    TOP_K_FILTER.check(fn, cases=cases, seed=seed)


def check_top_p_filter(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``top_p_filter(logits, p)`` (the token that crosses p kept)."""
    TOP_P_FILTER.check(fn, cases=cases, seed=seed)


def check_sampling_probs(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``sampling_probs(logits, temperature=1.0, top_k=None, top_p=None)``."""
    SAMPLING_PROBS.check(fn, cases=cases, seed=seed)


def check_beam_search_step(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``beam_search_step(sums, logprobs, beam_width) -> (scores, parents, tokens)``."""
    BEAM_SEARCH_STEP.check(fn, cases=cases, seed=seed)

"""Check functions for the chapter-04 lab ("Decoding strategies").

One function per exercise. Each calls the student's function on fixed edge cases and
seeded random inputs, compares with :mod:`llmkit.decoding`, prints one line on success
(:func:`~llmkit.course.checks.passed`) and raises ``AssertionError`` on failure: its
first line names the exercise and says what is wrong, then the input, the expected and
the actual result, and a ``hint:`` line. A ``NotImplementedError`` from an unfinished
stub is let through.

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it),
  else fresh inputs on every run; see :mod:`llmkit.course.checks`.
- **The library is not an answer**: each check refuses ``llmkit``'s own function.
- **Ties**: the top-k inputs are drawn from a few integer values, so ties at the k-th
  largest logit are common (all of them must be kept, as in ``transformers``). For
  top-p, tied logits that straddle the threshold may be split either way (the sort
  decides, in ``transformers`` too), so that check compares the *values* kept in each
  row, not their positions among equal logits. Random ``p`` are drawn away (by
  ``1e-4``) from the cumulative probabilities, so that rounding never decides.
- **Each exercise on its own**: while :func:`check_sampling_probs` runs, callables named
  ``apply_temperature``, ``top_k_filter`` and ``top_p_filter`` in the student's globals
  are replaced by the library's (restored afterwards), so a mistake in a filter costs
  that filter's points only.

==========================  ==========================================================
check                       student's function
==========================  ==========================================================
``check_apply_temperature`` ``apply_temperature(logits (..., V), temperature) -> (..., V)``
``check_top_k_filter``      ``top_k_filter(logits (..., V), k) -> (..., V)``
``check_top_p_filter``      ``top_p_filter(logits (..., V), p) -> (..., V)``
``check_sampling_probs``    ``sampling_probs(logits, temperature, top_k, top_p) -> probs``
``check_beam_search_step``  ``beam_search_step(sums (n,), logprobs (n, V), beam_width)``
                            ``-> (scores (m,), parents (m,), tokens (m,))``
==========================  ==========================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from llmkit.course.checks import (
    _unwrap,
    call_student,
    check_cases,
    check_rng,
    passed,
    reject_library,
)
from llmkit.decoding import apply_temperature as _ref_temperature
from llmkit.decoding import filter_logits as _ref_filter
from llmkit.decoding import top_k_filter as _ref_top_k
from llmkit.decoding import top_p_filter as _ref_top_p

__all__ = [
    "check_apply_temperature",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_sampling_probs",
    "check_beam_search_step",
    "reference_beam_search_step",
]

DEFAULT_CASES = 25
_MARGIN = 1e-4  # random p stay this far from every cumulative probability
_INF = float("inf")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def reference_beam_search_step(
    sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pruning step of beam search, as the lab asks for it.

    Every live beam ``i`` (running score ``sums[i]``) extended by every token ``v``
    (log-probability ``logprobs[i, v]``) is a candidate with score
    ``sums[i] + logprobs[i, v]``; keep the ``min(beam_width, n * V)`` best, best first.

    Args:
        sums: ``(n,)`` running log-probabilities of the live beams.
        logprobs: ``(n, V)`` next-token log-probabilities of each beam.
        beam_width: ``B >= 1``.
    Returns:
        ``(scores, parents, tokens)``, each ``(m,)`` with ``m = min(B, n * V)``: the
        survivors' scores (descending), the beam each extends, and the appended token.
    """
    n, vocab = logprobs.shape
    candidates = (sums[:, None] + logprobs).reshape(-1)  # (n * V,)
    scores, idx = torch.topk(candidates, min(beam_width, n * vocab))
    return scores, idx // vocab, idx % vocab


def _rng(seed: int | None) -> random.Random:
    return check_rng(seed)


def _torch_gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


_check_cases = check_cases


def _show(x: Any, limit: int = 400) -> str:
    """A compact, copy-pastable text of a tensor (or anything else)."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point:
            values = _round(x.tolist())
            s = f"torch.tensor({values})".replace("inf", "float('inf')")
        else:
            s = f"torch.tensor({x.tolist()})"
    elif isinstance(x, tuple):
        s = "(" + ", ".join(_show(v, limit) for v in x) + ")"
    else:
        s = repr(x)
    return s if len(s) <= limit else s[: limit - 5] + " ...)"


def _round(v: Any) -> Any:
    if isinstance(v, list):
        return [_round(u) for u in v]
    if isinstance(v, float) and math.isfinite(v):
        return round(v, 4)
    return v


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args, **kwargs)


def _fail(name: str, inputs: str, expected: Any, got: Any, hint: str) -> AssertionError:
    msg = (
        f"{name}: wrong result\n  input:    {inputs}\n  expected: {_show(expected)}\n"
        f"  got:      {_show(got)}"
    )
    if got is None:
        hint = "your function returned None -- did you forget `return`?"
    return AssertionError(f"{msg}\n  hint: {hint}")


def _as_tensor(name: str, inputs: str, expected: torch.Tensor, got: Any) -> torch.Tensor:
    """The student's result as a float tensor of the expected shape, or a failed check."""
    if got is None:
        raise _fail(name, inputs, expected, got, "")
    try:
        t = torch.as_tensor(got)
    except Exception:  # noqa: BLE001
        raise _fail(name, inputs, expected, got, "return a torch.Tensor") from None
    if tuple(t.shape) != tuple(expected.shape):
        raise _fail(
            name,
            inputs,
            expected,
            got,
            f"the result must have the shape of the logits, {tuple(expected.shape)}, "
            f"got {tuple(t.shape)}",
        )
    if not t.dtype.is_floating_point:
        raise _fail(name, inputs, expected, got, "return floating-point logits")
    return t.detach().double()


def _same_logits(got: torch.Tensor, expected: torch.Tensor, exact: bool = False) -> bool:
    """Equal -inf positions (and +inf) and close finite values."""
    e = expected.double()
    if not torch.equal(torch.isinf(got), torch.isinf(e)):
        return False
    if not torch.equal(got[torch.isinf(got)], e[torch.isinf(e)]):
        return False
    finite = torch.isfinite(e)
    if exact:
        return torch.equal(got[finite], e[finite])
    return torch.allclose(got[finite], e[finite], rtol=1e-5, atol=1e-6)


def _random_shape(rng: random.Random, vocab: int) -> tuple[int, ...]:
    kind = rng.random()
    if kind < 0.4:
        return (vocab,)
    if kind < 0.8:
        return (rng.randint(1, 4), vocab)
    return (rng.randint(1, 3), rng.randint(1, 3), vocab)


def _nucleus_margin(logits: torch.Tensor, p: float) -> float:
    """The distance between ``p`` and the probability mass strictly above each token of
    positive probability (the quantity top-p compares with ``p``), over all rows."""
    probs = F.softmax(logits.double(), dim=-1).reshape(-1, logits.shape[-1])
    sorted_probs = probs.sort(dim=-1, descending=True).values
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more probable tokens
    positive = sorted_probs > 1e-12
    return float((before - p).abs()[positive].min())


def _safe_p(rng: random.Random, logits: torch.Tensor, low: float = 0.05) -> float:
    """A random p in (low, 1) that no rounding can put on the other side of a boundary."""
    for _ in range(200):
        p = round(rng.uniform(low, 0.999), 4)
        if _nucleus_margin(logits, p) > _MARGIN:
            return p
    return 1.0  # pragma: no cover - practically unreachable


# --------------------------------------------------------------------------------------
# apply_temperature
# --------------------------------------------------------------------------------------


def check_apply_temperature(
    fn: Callable[[torch.Tensor, float], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(logits, temperature) -> logits / temperature`` against
    :func:`llmkit.decoding.apply_temperature` (shapes ``(V,)``, ``(b, V)``, ``(b, t, V)``,
    ``-inf`` entries included)."""
    name = "apply_temperature"
    reject_library(name, fn, _ref_temperature)
    fixed: list[tuple[list, float]] = [
        ([2.0, -1.0], 0.5),
        ([1.0, 2.0, 3.0], 1.0),
        ([0.5, -_INF, 1.5, 0.0], 2.0),
        ([[3.0, 1.0], [-2.0, 0.25]], 0.1),
        ([4.0], 10.0),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = [(torch.tensor(x), t) for x, t in fixed]
    while len(inputs) < cases:
        g = _torch_gen(rng)
        shape = _random_shape(rng, rng.randint(1, 10))
        logits = rng.uniform(0.5, 5.0) * torch.randn(shape, generator=g)
        if rng.random() < 0.3:
            logits[torch.rand(shape, generator=g) < 0.2] = -_INF
        inputs.append((logits, round(math.exp(rng.uniform(math.log(0.05), math.log(20))), 3)))
    for logits, t in inputs:
        expected = _ref_temperature(logits.clone(), t)
        shown = f"logits={_show(logits)}, temperature={t}"
        arg = logits.clone()
        got = _as_tensor(name, shown, expected, _call(fn, name, shown, arg, t))
        if not _same_logits(got, expected):
            hint = "divide the logits by the temperature: softmax(logits / T)"
            if t != 1 and _same_logits(got, logits * t):
                hint = "you multiplied by the temperature; divide by it (T < 1 sharpens)"
            elif _same_logits(got, F.softmax(expected, dim=-1)):
                hint = "return the scaled logits, not probabilities (no softmax here)"
            raise _fail(name, shown, expected, got, hint)
        if not torch.equal(arg, logits):
            raise AssertionError(
                f"{name}: your function modified its input logits ({shown}); return a new tensor"
            )
    passed(name, f"{len(inputs)} random cases match llmkit.decoding.apply_temperature")


# --------------------------------------------------------------------------------------
# top_k_filter
# --------------------------------------------------------------------------------------


def check_top_k_filter(
    fn: Callable[[torch.Tensor, int], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(logits, k)`` against :func:`llmkit.decoding.top_k_filter`: the
    logits strictly below the ``k``-th largest of each row become ``-inf``; ties with
    the ``k``-th largest are kept; ``k >= V`` keeps everything."""
    name = "top_k_filter"
    reject_library(name, fn, _ref_top_k)
    fixed: list[tuple[list, int]] = [
        ([1.0, 3.0, 2.0, 3.0], 1),  # a tie at the top: both kept
        ([1.0, 3.0, 2.0, 3.0], 2),
        ([0.5, 2.0, 2.0, 2.0, -1.0], 2),  # the k-th largest is tied: all three kept
        ([0.1, 0.7, 0.3], 3),  # k == V: everything
        ([0.1, 0.7, 0.3], 5),  # k > V: everything
        ([[4.0, 1.0, 3.0, 2.0], [0.0, 0.0, 1.0, -1.0]], 2),
        ([-_INF, 1.0, 0.5, -_INF], 3),  # entries already -inf stay -inf
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = [(torch.tensor(x), k) for x, k in fixed]
    while len(inputs) < cases:
        vocab = rng.randint(1, 10)
        shape = _random_shape(rng, vocab)
        levels = rng.randint(2, 5)  # few distinct values: ties are common
        g = _torch_gen(rng)
        logits = torch.randint(0, levels, shape, generator=g).float() - 1.5
        inputs.append((logits, rng.randint(1, vocab + 2)))
    for logits, k in inputs:
        expected = _ref_top_k(logits.clone(), k)
        shown = f"logits={_show(logits)}, k={k}"
        arg = logits.clone()
        got = _as_tensor(name, shown, expected, _call(fn, name, shown, arg, k))
        if not _same_logits(got, expected, exact=True):
            kept_got = torch.isfinite(got).sum(dim=-1)
            kept_exp = torch.isfinite(expected).sum(dim=-1)
            vocab = logits.shape[-1]
            hint = (
                "find the k-th largest logit of each row (torch.topk(...).values[..., -1:]) "
                "and set every logit strictly smaller than it to -inf"
            )
            if bool((got == 0).any()) and not bool((expected == 0).any()):
                hint = "set the removed logits to -inf (float('-inf')), not to 0"
            elif k > vocab:
                hint = f"k = {k} is larger than the vocabulary ({vocab}): keep every token"
            elif bool((kept_got < kept_exp).all()) and bool((kept_got == k - 1).all()):
                hint = "the k-th largest logit itself is kept: remove only the strictly smaller"
            elif bool((kept_got <= kept_exp).all()):
                hint = (
                    "keep every logit equal to the k-th largest one (ties are all kept, as in "
                    "transformers), so a row may keep more than k tokens"
                )
            raise _fail(name, shown, expected, got, hint)
        if not torch.equal(arg, logits):
            raise AssertionError(
                f"{name}: your function modified its input logits ({shown}); return a new tensor"
            )
    passed(name, f"{len(inputs)} random cases (ties included) match llmkit.decoding.top_k_filter")


# --------------------------------------------------------------------------------------
# top_p_filter
# --------------------------------------------------------------------------------------


def _kept_values(t: torch.Tensor) -> list[list[float]]:
    """Per row, the sorted finite values."""
    rows = t.double().reshape(-1, t.shape[-1])
    return [sorted(r[torch.isfinite(r)].tolist()) for r in rows]


def _top_p_matches(got: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor) -> bool:
    """Removed entries are -inf, kept ones hold their logit, and each row keeps the same
    values as the reference (which tied logits are kept may differ)."""
    x = logits.double()
    finite = torch.isfinite(got)
    if bool(torch.isnan(got).any()) or bool((got[~finite] != -_INF).any()):
        return False
    if not torch.allclose(got[finite], x[finite], rtol=0, atol=1e-6):
        return False
    exp_rows, got_rows = _kept_values(expected), _kept_values(got)
    return all(
        len(a) == len(b)
        and all(math.isclose(u, v, abs_tol=1e-6) for u, v in zip(a, b, strict=True))
        for a, b in zip(exp_rows, got_rows, strict=True)
    )


def _is_top_set(got: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether, in every row, no removed token has a larger logit than a kept one."""
    x = logits.double().reshape(-1, logits.shape[-1])
    kept = torch.isfinite(got.reshape(-1, logits.shape[-1]))
    for row, k in zip(x, kept, strict=True):
        removed = row[~k & torch.isfinite(row)]
        if bool(k.any()) and len(removed) and float(removed.max()) > float(row[k].min()):
            return False
    return True


def check_top_p_filter(
    fn: Callable[[torch.Tensor, float], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(logits, p)`` against :func:`llmkit.decoding.top_p_filter`: per row,
    keep the smallest set of most probable tokens whose probability reaches ``p`` (the
    token that crosses ``p`` is kept), set the others to ``-inf``."""
    name = "top_p_filter"
    reject_library(name, fn, _ref_top_p)
    quarter = [math.log(v) for v in (0.5, 0.3, 0.15, 0.05)]
    fixed: list[tuple[list, float]] = [
        (quarter, 0.7),  # 0.5 < 0.7 <= 0.8: two tokens
        (quarter[::-1], 0.7),  # the same, least probable token first
        (quarter, 0.45),  # the top token alone reaches p
        (quarter, 0.81),  # crossing at the third token
        (quarter, 1.0),  # everything
        ([0.0, 0.0, 0.0, 0.0], 0.6),  # ties everywhere: any 3 of 4
        ([3.0, 1.0, 1.0, 1.0, -2.0], 0.93),  # tied logits at the boundary
        ([-_INF, 2.0, 1.0, -_INF, 0.0], 0.8),  # entries already -inf stay -inf
        ([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], 0.62),  # rows of different nucleus sizes
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = [(torch.tensor(x), p) for x, p in fixed]
    while len(inputs) < cases:
        vocab = rng.randint(1, 12)
        shape = _random_shape(rng, vocab)
        g = _torch_gen(rng)
        if rng.random() < 0.3:  # ties
            logits = torch.randint(0, 4, shape, generator=g).float()
        else:
            logits = rng.uniform(0.5, 3.0) * torch.randn(shape, generator=g)
        if rng.random() < 0.25 and vocab > 1:  # some tokens already removed (e.g. by top-k)
            mask = torch.rand(shape, generator=g) < 0.3
            mask[..., 0] = False
            logits = logits.masked_fill(mask, -_INF)
        inputs.append((logits, _safe_p(rng, logits)))
    for logits, p in inputs:
        expected = _ref_top_p(logits.clone(), p)
        shown = f"logits={_show(logits)}, p={p}"
        arg = logits.clone()
        got = _as_tensor(name, shown, expected, _call(fn, name, shown, arg, p))
        if not _top_p_matches(got, expected, logits):
            rows = got.reshape(-1, got.shape[-1])
            kept_got = torch.isfinite(rows).sum(dim=-1)
            kept_exp = torch.isfinite(expected.reshape(-1, got.shape[-1])).sum(dim=-1)
            hint = (
                "sort the probabilities (softmax of the logits) in descending order, keep "
                "tokens while the probability before them is still below p, and set the "
                "others to -inf"
            )
            if bool((got == 0).any()) and not bool((expected == 0).any()):
                hint = "set the removed logits to -inf (float('-inf')), not to 0"
            elif not _is_top_set(got, logits):
                hint = (
                    "keep the most probable tokens: after sorting, map the sorted positions "
                    "back to the original ones (scatter with the sort indices)"
                )
            elif torch.equal(kept_got, kept_exp - 1):
                hint = (
                    "you removed the token that crosses p: keep it, the nucleus is the "
                    "smallest set whose probability reaches p"
                )
            elif torch.equal(kept_got, kept_exp + 1):
                hint = "you keep one token too many: stop at the token where the sum reaches p"
            raise _fail(name, shown, expected, got, hint)
        if not torch.equal(arg, logits):
            raise AssertionError(
                f"{name}: your function modified its input logits ({shown}); return a new tensor"
            )
    passed(name, f"{len(inputs)} random cases (ties included) match llmkit.decoding.top_p_filter")


# --------------------------------------------------------------------------------------
# sampling_probs
# --------------------------------------------------------------------------------------


@contextmanager
def _reference_filters(fn: Any) -> Iterator[None]:
    """While the block runs, callables named ``apply_temperature``, ``top_k_filter`` and
    ``top_p_filter`` in ``fn``'s globals are the library's; restored afterwards."""
    g = getattr(_unwrap(fn), "__globals__", None)
    refs = {
        "apply_temperature": _ref_temperature,
        "top_k_filter": _ref_top_k,
        "top_p_filter": _ref_top_p,
    }
    if not isinstance(g, dict):
        yield
        return
    saved = {k: g[k] for k in refs if callable(g.get(k))}
    g.update({k: refs[k] for k in saved})
    try:
        yield
    finally:
        g.update(saved)


def _softmax_of(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits.double(), dim=-1)


def _wrong_orders(
    logits: torch.Tensor, t: float, k: int | None, p: float | None
) -> list[tuple[torch.Tensor, str]]:
    """Distributions of common mistakes, with the hint each deserves."""
    out: list[tuple[torch.Tensor, str]] = []

    def k_(x: torch.Tensor) -> torch.Tensor:
        return x if k is None else _ref_top_k(x, k)

    def p_(x: torch.Tensor) -> torch.Tensor:
        return x if p is None or p >= 1 else _ref_top_p(x, p)

    if t != 1 and p is not None and p < 1:
        out.append(
            (
                _softmax_of(p_(k_(logits)) / t),
                "apply the temperature first: which tokens are in the top-p nucleus depends "
                "on the temperature",
            )
        )
    if k is not None and p is not None and p < 1:
        out.append(
            (
                _softmax_of(k_(p_(logits / t))),
                "filter with top-k first, then top-p on what is left (the order of "
                "transformers' generate)",
            )
        )
    out.append((_softmax_of(p_(k_(logits))), "divide the logits by the temperature"))
    return out


def check_sampling_probs(
    fn: Callable[..., Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(logits, temperature=..., top_k=..., top_p=...) -> probabilities`` against
    ``softmax(llmkit.decoding.filter_logits(...))``: temperature, then top-k, then top-p,
    then softmax; ``top_k=None`` / ``top_p=None`` switch a filter off."""
    name = "sampling_probs"
    reject_library(name, fn, _ref_filter)
    fixed: list[tuple[list, float, int | None, float | None]] = [
        ([2.0, 1.0, 0.0, -1.0], 1.0, None, None),
        ([2.0, 1.0, 0.0, -1.0], 0.5, None, None),
        ([2.0, 1.0, 0.0, -1.0], 1.0, 2, None),
        ([2.0, 1.0, 0.0, -1.0], 1.0, None, 0.8),
        ([2.0, 1.0, 0.0, -1.0], 3.0, None, 0.8),  # the nucleus grows with T: 2 -> 3 tokens
        ([2.0, 1.5, 1.0, 0.0, -1.0], 1.0, 3, 0.7),
        # top-k first renormalises: 0.3 / 0.55 > 0.5 alone (top-p first would keep two)
        ([math.log(v) for v in (0.3, 0.25, 0.2, 0.15, 0.1)], 1.0, 2, 0.5),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = [(torch.tensor(x), t, k, p) for x, t, k, p in fixed]
    while len(inputs) < cases:
        vocab = rng.randint(2, 12)
        shape = _random_shape(rng, vocab)
        logits = rng.uniform(1.0, 3.0) * torch.randn(shape, generator=_torch_gen(rng))
        t = rng.choice([1.0, round(rng.uniform(0.2, 3.0), 2)])
        k = rng.choice([None, rng.randint(1, vocab)])
        p = None
        if rng.random() < 0.7:
            p = _safe_p(rng, _ref_top_k(logits / t, k) if k is not None else logits / t)
        inputs.append((logits, t, k, p))
    with _reference_filters(fn):
        for logits, t, k, p in inputs:
            expected = F.softmax(_ref_filter(logits.clone(), t, k, p), dim=-1)
            shown = f"logits={_show(logits)}, temperature={t}, top_k={k}, top_p={p}"
            arg = logits.clone()
            raw = _call(fn, name, shown, arg, temperature=t, top_k=k, top_p=p)
            got = _as_tensor(name, shown, expected, raw)
            if not torch.allclose(got, expected.double(), rtol=1e-4, atol=1e-6):
                hint = "temperature, then top-k, then top-p, then softmax over the last dimension"
                if bool(torch.isinf(got).any()) or bool((got < 0).any()):
                    hint = "return probabilities (the softmax of the filtered logits), not logits"
                for wrong, why in _wrong_orders(logits, t, k, p):
                    if torch.allclose(got, wrong, rtol=1e-4, atol=1e-6):
                        hint = why
                        break
                raise _fail(name, shown, expected, got, hint)
            if not torch.equal(arg, logits):
                raise AssertionError(
                    f"{name}: your function modified its input logits ({shown}); "
                    "return a new tensor"
                )
    passed(name, f"{len(inputs)} random cases match softmax(llmkit.decoding.filter_logits)")


# --------------------------------------------------------------------------------------
# beam_search_step
# --------------------------------------------------------------------------------------


def _as_1d(name: str, shown: str, what: str, value: Any, size: int) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except Exception:  # noqa: BLE001
        raise AssertionError(
            f"{name}: {what} must be a 1-D tensor (or list), got {type(value).__name__}\n"
            f"  input:    {shown}\n  hint: return (scores, parents, tokens)"
        ) from None
    if t.dim() != 1 or t.shape[0] != size:
        raise AssertionError(
            f"{name}: {what} must have shape ({size},), got {tuple(t.shape)}\n"
            f"  input:    {shown}\n"
            f"  hint: keep min(beam_width, n * V) = {size} candidates (fewer only when there "
            "are fewer candidates than beam_width)"
        )
    return t


def check_beam_search_step(
    fn: Callable[[torch.Tensor, torch.Tensor, int], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(sums, logprobs, beam_width) -> (scores, parents, tokens)`` against
    :func:`reference_beam_search_step` (the pruning step of
    :func:`llmkit.decoding.beam_search`): the ``min(B, n * V)`` best one-token
    extensions of all beams together, best first. Random inputs have no ties."""
    name = "beam_search_step"
    reject_library(name, fn, reference_beam_search_step)
    log = math.log
    fixed: list[tuple[list[float], list[list[float]], int]] = [
        # the first step: one beam (the prompt), V = 3, B = 2
        ([0.0], [[log(0.5), log(0.3), log(0.2)]], 2),
        # B > V on the first step: only 3 candidates exist
        ([0.0], [[log(0.5), log(0.3), log(0.2)]], 4),
        # the strong beam keeps both places; the weak one drops out
        (
            [log(0.6), log(0.4)],
            [[log(0.5), log(0.45), log(0.05)], [log(0.6), log(0.3), log(0.1)]],
            2,
        ),
        # the weaker beam's best extension beats the stronger beam's
        (
            [log(0.5), log(0.4)],
            [[log(0.4), log(0.35), log(0.25)], [log(0.9), log(0.05), log(0.05)]],
            2,
        ),
        # zero-probability tokens are never preferred
        ([log(0.7), log(0.3)], [[log(0.6), log(0.4), -_INF], [-_INF, log(0.8), log(0.2)]], 3),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = [(torch.tensor(s), torch.tensor(lp), b) for s, lp, b in fixed]
    while len(inputs) < cases:
        n, vocab, beam = rng.randint(1, 5), rng.randint(2, 9), rng.randint(1, 6)
        g = _torch_gen(rng)
        sums = -(torch.rand(n, generator=g) * 6.0).sort().values  # best beam first
        logits = rng.uniform(0.5, 3.0) * torch.randn(n, vocab, generator=g)
        if rng.random() < 0.3:  # zero-probability tokens, leaving enough candidates
            mask = torch.rand(n, vocab, generator=g) < 0.3
            mask[:, 0] = False
            if int((~mask).sum()) >= beam:
                logits = logits.masked_fill(mask, -_INF)
        inputs.append((sums, F.log_softmax(logits, dim=-1), beam))
    for sums, logprobs, beam in inputs:
        exp_scores, exp_parents, exp_tokens = reference_beam_search_step(
            sums.clone(), logprobs.clone(), beam
        )
        size = exp_scores.shape[0]
        shown = f"sums={_show(sums)}, logprobs={_show(logprobs)}, beam_width={beam}"
        args = (sums.clone(), logprobs.clone())
        got = _call(fn, name, shown, *args, beam)
        expected = (exp_scores, exp_parents, exp_tokens)
        if got is None:
            raise _fail(name, shown, expected, got, "")
        try:
            scores, parents, tokens = got
        except (TypeError, ValueError):
            raise _fail(
                name, shown, expected, got, "return a tuple of three: (scores, parents, tokens)"
            ) from None
        scores = _as_1d(name, shown, "scores", scores, size).double()
        parents = _as_1d(name, shown, "parents", parents, size).long()
        tokens = _as_1d(name, shown, "tokens", tokens, size).long()
        ok = (
            torch.allclose(scores, exp_scores.double(), rtol=1e-5, atol=1e-5)
            and torch.equal(parents, exp_parents)
            and torch.equal(tokens, exp_tokens)
        )
        if not ok:
            got_t = (scores, parents, tokens)
            vocab = logprobs.shape[1]
            cand = sums.double()[:, None] + logprobs.double()
            picked_ok = bool(
                ((parents >= 0) & (parents < len(sums)) & (tokens >= 0) & (tokens < vocab)).all()
            )
            hint = (
                "score every candidate sums[i] + logprobs[i, v], then keep the beam_width best "
                "of all n * V together, best first"
            )
            lp_only = logprobs.double().reshape(-1).topk(size).values
            if torch.allclose(scores, lp_only, atol=1e-5) and not torch.allclose(
                scores, exp_scores.double(), atol=1e-5
            ):
                hint = (
                    "a candidate's score is the beam's running score plus the token's "
                    "log-probability: sums[i] + logprobs[i, v]"
                )
            elif (
                torch.allclose(scores, exp_scores.double(), atol=1e-5)
                and torch.equal(parents, exp_tokens)
                and torch.equal(tokens, exp_parents)
            ):
                hint = (
                    "parents and tokens are swapped: the flattened candidate c = i * V + v "
                    "has parent c // V and token c % V"
                )
            elif picked_ok and torch.allclose(scores, cand[parents, tokens], atol=1e-5):
                same_set = sorted(zip(parents.tolist(), tokens.tolist(), strict=True)) == sorted(
                    zip(exp_parents.tolist(), exp_tokens.tolist(), strict=True)
                )
                if same_set:
                    hint = "the right survivors in the wrong order: return them best first"
                elif len(set(parents.tolist())) == len(parents) and len(
                    set(exp_parents.tolist())
                ) < len(exp_parents):
                    hint = (
                        "compare the candidates of all beams together: a strong beam may "
                        "supply several survivors and a weak one none"
                    )
            elif picked_ok:
                hint = (
                    "the flattened candidate c = i * V + v has parent c // V and token c % V "
                    "(V = logprobs.shape[1])"
                )
            raise _fail(name, shown, expected, got_t, hint)
        if not (torch.equal(args[0], sums) and torch.equal(args[1], logprobs)):
            raise AssertionError(f"{name}: your function modified its inputs ({shown})")
    passed(name, f"{len(inputs)} random cases match the pruning step of llmkit.decoding")

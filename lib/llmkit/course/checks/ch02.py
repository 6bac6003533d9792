"""Check functions for the chapter-02 lab ("Attention and the transformer").

One function per exercise. Each calls the student's function on random inputs (plus fixed
edge cases), compares with ``llmkit``'s version, prints one verdict line via
:func:`~llmkit.course.checks.passed` on success and raises ``AssertionError`` on failure:
its first line says what is wrong, the input and the size of the difference, and a
``hint:`` line says what to look at. When the wrong answer matches a common mistake
(no ``1/sqrt(d)`` scaling, the mask applied after the softmax, heads split in the wrong
order, ...), the hint names that mistake. A ``NotImplementedError`` from an unfinished
stub is let through (the grader counts it as a failure).

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it, so
  regrading gives the same score), else fresh inputs on every run; see
  :mod:`llmkit.course.checks`.
- **The library is not an answer**: each check refuses ``llmkit``'s own function
  (``from llmkit.nn import attention``).
- **Each exercise on its own**: while :func:`check_multi_head_attention` runs, callables
  named ``attention``, ``causal_mask``, ``split_heads`` and ``merge_heads`` in the
  student's globals (their answers to the earlier exercises) are temporarily replaced by
  the reference versions (restored afterwards), so a mistake there costs its own points
  only.
- Inputs are ``float64``; results are compared with ``rtol = atol = 1e-5``, so an
  answer computed in ``float32`` also passes.

=============================  ==========================================================
check                          student's function
=============================  ==========================================================
``check_causal_mask``          ``causal_mask(t) -> (t, t) bool``
``check_attention``            ``attention(q, k, v, mask=None) -> (..., t, d_v)``
``check_split_heads``          ``split_heads(x: (b, t, h*d), n_heads) -> (b, h, t, d)``
``check_merge_heads``          ``merge_heads(x: (b, h, t, d)) -> (b, t, h*d)``
``check_multi_head_attention`` ``multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj,
                               n_heads) -> (b, t, d_model)``, causal, compared with
                               :class:`llmkit.nn.MultiHeadAttention` given the same weights
=============================  ==========================================================
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from einops import rearrange

from llmkit.course.checks import (
    _unwrap,
    call_student,
    check_cases,
    check_rng,
    passed,
    reject_library,
)
from llmkit.course.checks import failure as _fail
from llmkit.course.checks import require_result as _require_result
from llmkit.nn import MultiHeadAttention
from llmkit.nn import attention as _ref_attention
from llmkit.nn import causal_mask as _ref_causal_mask

__all__ = [
    "check_causal_mask",
    "check_attention",
    "check_split_heads",
    "check_merge_heads",
    "check_multi_head_attention",
    "reference_split_heads",
    "reference_merge_heads",
    "reference_multi_head_attention",
]

DEFAULT_CASES = 20
RTOL = 1e-5
ATOL = 1e-5


# --------------------------------------------------------------------------------------
# references that llmkit.nn has only inline (MultiHeadAttention uses einops directly)
# --------------------------------------------------------------------------------------


def reference_split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``x: (b, t, h*d) -> (b, h, t, d)``; head ``i`` takes columns ``i*d .. (i+1)*d - 1``."""
    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)


def reference_merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``x: (b, h, t, d) -> (b, t, h*d)``, the inverse of :func:`reference_split_heads`."""
    return rearrange(x, "b h t d -> b t (h d)")


def _module_with(
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor,
    n_heads: int,
    causal: bool = True,
) -> MultiHeadAttention:
    d_model = w_proj.shape[0]
    mha = MultiHeadAttention(d_model, n_heads, causal=causal, impl="manual")
    mha = mha.to(dtype=w_qkv.dtype).eval()
    with torch.no_grad():
        mha.qkv.weight.copy_(w_qkv)
        mha.qkv.bias.copy_(b_qkv)
        mha.proj.weight.copy_(w_proj)
        mha.proj.bias.copy_(b_proj)
    return mha


@torch.no_grad()
def reference_multi_head_attention(
    x: torch.Tensor,
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor,
    n_heads: int,
) -> torch.Tensor:
    """Causal multi-head self-attention with the given weights, computed by
    :class:`llmkit.nn.MultiHeadAttention` (``x: (b, t, d_model) -> (b, t, d_model)``)."""
    return _module_with(w_qkv, b_qkv, w_proj, b_proj, n_heads)(x)[0]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


_check_cases = check_cases


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(
        fn,
        name,
        inputs,
        *args,
        hint="read the shapes in the exercise text again; print the shapes of your "
        "intermediate tensors on this input",
    )


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _as_tensor(name: str, inputs: str, got: Any, expected: torch.Tensor) -> torch.Tensor:
    _require_result(got, name, inputs)
    if not isinstance(got, torch.Tensor):
        raise _fail(
            name,
            inputs,
            f"your function returned a {type(got).__name__}",
            f"return a torch.Tensor of shape {_shape(expected)}",
        )
    return got


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    return bool(
        torch.allclose(a.detach().double(), b.double(), rtol=RTOL, atol=ATOL, equal_nan=True)
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.detach().double() - b.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def _compare_values(
    name: str,
    inputs: str,
    got: torch.Tensor,
    expected: torch.Tensor,
    variants: list[tuple[Callable[[], torch.Tensor], str]],
    default_hint: str,
) -> None:
    """Fail unless ``got`` matches ``expected``; the hint names the first mistake in
    ``variants`` (``(compute the result of that mistake, hint)``) that ``got`` matches."""
    if got.shape != expected.shape:
        for make, hint in variants:
            try:
                wrong = make()
            except Exception:  # noqa: BLE001 - a variant that cannot be formed is no match
                continue
            if got.shape == wrong.shape and _close(got, wrong):
                raise _fail(name, inputs, f"shape {_shape(got)}, expected {_shape(expected)}", hint)
        raise _fail(
            name,
            inputs,
            f"your result has shape {_shape(got)}, expected {_shape(expected)}",
            default_hint,
        )
    if _close(got, expected):
        return
    if got.isnan().any() and not expected.isnan().any():
        problem = "your result contains NaN where the reference has none"
    else:
        problem = f"wrong values (max abs difference {_max_diff(got, expected):.3g})"
    for make, hint in variants:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001
            continue
        if _close(got, wrong):
            raise _fail(name, inputs, problem, hint)
    raise _fail(name, inputs, problem, default_hint)


@contextmanager
def _reference_helpers(fn: Any, references: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """While the block runs, callables named like the keys of ``references`` in ``fn``'s
    globals (the student's own answers to earlier exercises) are replaced by the reference
    functions; restored afterwards. A call whose arguments do not fit the reference's
    signature still reaches the student's function."""
    g = getattr(_unwrap(fn), "__globals__", None)
    if not isinstance(g, dict):
        yield
        return
    saved: dict[str, Any] = {}
    for helper, ref in references.items():
        own = g.get(helper)
        if not callable(own) or own is fn:
            continue
        saved[helper] = own
        g[helper] = _substitute(ref, own)
    try:
        yield
    finally:
        g.update(saved)


def _substitute(ref: Callable[..., Any], own: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(ref)

    def helper(*args: Any, **kwargs: Any) -> Any:
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            return own(*args, **kwargs)
        return ref(*args, **kwargs)

    return helper


def _attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    return _ref_attention(q, k, v, mask=mask)  # type: ignore[return-value]


def _causal_ref(t: int) -> torch.Tensor:
    return _ref_causal_mask(t)


# --------------------------------------------------------------------------------------
# exercise 1: the causal mask
# --------------------------------------------------------------------------------------


def check_causal_mask(
    fn: Callable[[int], Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(t) -> (t, t)`` bool mask (``True`` = may attend) against
    :func:`llmkit.nn.causal_mask`."""
    name = "causal_mask"
    reject_library(name, fn, _ref_causal_mask)
    fixed = [3, 1, 2, 6]
    _check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        inputs.append(rng.randint(1, 40))
    for t in inputs:
        expected = _ref_causal_mask(t)
        shown = f"t={t}"
        got = _as_tensor(name, shown, _call(fn, name, shown, t), expected)
        if got.dtype != torch.bool:
            raise _fail(
                name,
                shown,
                f"your mask has dtype {got.dtype}",
                "return a bool tensor (True = may attend), e.g. with torch.ones(t, t, "
                "dtype=torch.bool); attention uses it with masked_fill(~mask, -inf)",
            )
        if _shape(got) != (t, t):
            raise _fail(
                name,
                shown,
                f"shape {_shape(got)}, expected {(t, t)}",
                "one row per query, one column per key: shape (t, t)",
            )
        if torch.equal(got, expected):
            continue
        if torch.equal(got, torch.tril(torch.ones(t, t, dtype=torch.bool), -1)):
            hint = "a token may attend to itself: keep the diagonal (j <= i, not j < i)"
        elif torch.equal(got, expected.T):
            hint = (
                "your mask is transposed: row i is query i, and it may attend to the keys "
                "j <= i (the lower triangle), not to the future"
            )
        elif torch.equal(got, ~expected):
            hint = "True means *may attend*: you marked the forbidden positions instead"
        else:
            hint = "query i may attend to keys 0, 1, ..., i: the lower triangle with its diagonal"
        raise _fail(name, shown, "wrong mask", hint)
    passed(name, f"{len(inputs)} sizes match llmkit.nn.causal_mask")


# --------------------------------------------------------------------------------------
# exercise 2: attention
# --------------------------------------------------------------------------------------


def _attention_variants(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> list[tuple[Callable[[], torch.Tensor], str]]:
    d = q.shape[-1]
    d_v = v.shape[-1]

    def weighted(scores: torch.Tensor, use_mask: torch.Tensor | None, dim: int = -1):
        if use_mask is not None:
            scores = scores.masked_fill(~use_mask, float("-inf"))
        return torch.softmax(scores, dim=dim) @ v

    raw = q @ k.transpose(-2, -1)
    variants: list[tuple[Callable[[], torch.Tensor], str]] = [
        (
            lambda: weighted(raw, mask),
            "divide the scores q @ k^T by sqrt(d), d = q.shape[-1], before the softmax",
        ),
        (
            lambda: weighted(raw / d, mask),
            "divide the scores by sqrt(d), not by d",
        ),
        (
            lambda: weighted(raw / math.sqrt(d_v), mask),
            "scale by sqrt of the query/key width q.shape[-1], not of the value width",
        ),
        (
            lambda: weighted(raw / math.sqrt(d), mask, dim=-2),
            "take the softmax over the keys (the last dimension, dim=-1): each query's "
            "weights must sum to 1",
        ),
    ]
    if mask is not None:
        scaled = raw / math.sqrt(d)
        variants += [
            (
                lambda: (torch.softmax(scaled, dim=-1) * mask) @ v,
                "apply the mask *before* the softmax: set the masked scores to -inf, so "
                "the softmax gives them weight 0 and the other weights still sum to 1",
            ),
            (
                lambda: (torch.softmax(scaled, dim=-1).masked_fill(~mask, 0.0)) @ v,
                "apply the mask *before* the softmax: set the masked scores to -inf, so "
                "the softmax gives them weight 0 and the other weights still sum to 1",
            ),
            (
                lambda: weighted(scaled, ~mask),
                "True in the mask means *may attend*: mask out the positions where it is "
                "False (masked_fill(~mask, float('-inf')))",
            ),
            (
                lambda: weighted(scaled.masked_fill(~mask, 0.0), None),
                "a masked score must be -inf, not 0: exp(0) = 1 still gives it weight",
            ),
            (
                lambda: weighted(scaled, None),
                "you ignored the mask: set the scores where mask is False to -inf",
            ),
        ]
    return variants


def _attention_case(
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    g = _generator(rng)
    batch = [rng.randint(1, 3) for _ in range(rng.choice([0, 1, 1, 2]))]
    t = rng.randint(1, 9)
    s = t if rng.random() < 0.5 else rng.randint(1, 9)
    d = rng.randint(2, 12)
    d_v = d if rng.random() < 0.4 else rng.randint(1, 12)
    q = _randn(g, *batch, t, d) * rng.choice([0.5, 1.0, 2.0])
    k = _randn(g, *batch, s, d)
    v = _randn(g, *batch, s, d_v)
    kind = rng.choice(["none", "causal", "random", "random"])
    mask: torch.Tensor | None = None
    if kind == "causal" and s >= t:
        mask = _ref_causal_mask(t, s)
    elif kind in ("causal", "random"):
        shape = (t, s) if not batch or rng.random() < 0.5 else (*batch, t, s)
        mask = torch.rand(shape, generator=g) < 0.6
        first = torch.randint(0, s, (*shape[:-1], 1), generator=g)
        mask.scatter_(-1, first, True)  # every query may attend to at least one key
    return q, k, v, mask


def _show_attention(q, k, v, mask) -> str:
    m = "None" if mask is None else f"bool {_shape(mask)}"
    return f"q {_shape(q)}, k {_shape(k)}, v {_shape(v)}, mask={m}"


def check_attention(
    fn: Callable[..., Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(q, k, v, mask=None) -> (..., t, d_v)`` against :func:`llmkit.nn.attention`.

    Inputs: ``q (..., t, d)``, ``k (..., s, d)``, ``v (..., s, d_v)`` with zero, one or two
    leading batch dimensions, ``t != s`` and ``d != d_v`` in some cases, and no mask, the
    causal mask or a random mask (broadcast over the batch or not; every query may attend
    to at least one key)."""
    name = "attention"
    reject_library(name, fn, _ref_attention)
    g0 = torch.Generator().manual_seed(0)
    fixed = [
        (_randn(g0, 1, 3), _randn(g0, 1, 3), _randn(g0, 1, 2), None),
        (_randn(g0, 4, 8), _randn(g0, 4, 8), _randn(g0, 4, 8), None),
        (_randn(g0, 4, 8), _randn(g0, 4, 8), _randn(g0, 4, 5), _ref_causal_mask(4)),
        (_randn(g0, 2, 3, 8), _randn(g0, 2, 5, 8), _randn(g0, 2, 5, 4), _ref_causal_mask(3, 5)),
    ]
    _check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        inputs.append(_attention_case(rng))
    for q, k, v, mask in inputs:
        expected = _ref_attention(q, k, v, mask=mask)
        shown = _show_attention(q, k, v, mask)
        args = (q.clone(), k.clone(), v.clone()) + (() if mask is None else (mask.clone(),))
        got = _as_tensor(name, shown, _call(fn, name, shown, *args), expected)
        _compare_values(
            name,
            shown,
            got,
            expected,
            _attention_variants(q, k, v, mask),
            "scores = q @ k.transpose(-2, -1) / sqrt(d); masked_fill(~mask, -inf); softmax "
            "over the last dimension; weights @ v. Use transpose(-2, -1), not .T, so that "
            "leading batch dimensions are left alone",
        )
        if not (torch.equal(args[0], q) and torch.equal(args[1], k) and torch.equal(args[2], v)):
            raise AssertionError(f"{name}: your function modified its inputs ({shown})")
    passed(name, f"{len(inputs)} random cases match llmkit.nn.attention")


# --------------------------------------------------------------------------------------
# exercises 3 and 4: splitting and merging heads
# --------------------------------------------------------------------------------------


def _heads_case(rng: random.Random) -> tuple[int, int, int, int]:
    b = rng.randint(1, 3)
    h = rng.randint(2, 5)
    d = rng.randint(2, 6)
    t = rng.choice([n for n in range(1, 9) if n != h and n != d])
    return b, t, h, d


def check_split_heads(
    fn: Callable[[torch.Tensor, int], Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(x: (b, t, h*d), n_heads) -> (b, h, t, d)`` against
    ``rearrange(x, "b t (h d) -> b h t d", h=n_heads)``."""
    name = "split_heads"
    reject_library(name, fn, reference_split_heads)
    fixed = [(1, 1, 1, 4), (1, 3, 2, 4), (2, 5, 4, 3), (2, 3, 3, 3)]
    _check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        inputs.append(_heads_case(rng))
    for b, t, h, d in inputs:
        x = torch.arange(b * t * h * d, dtype=torch.float64).reshape(b, t, h * d)
        expected = reference_split_heads(x, h)
        shown = f"x of shape {(b, t, h * d)}, n_heads={h}"
        got = _as_tensor(name, shown, _call(fn, name, shown, x.clone(), h), expected)
        _compare_values(
            name,
            shown,
            got,
            expected,
            [
                (
                    lambda x=x, b=b, t=t, h=h, d=d: x.reshape(b, h, t, d),
                    "a reshape alone mixes positions and heads: view as (b, t, h, d) "
                    "first, then swap the t and h dimensions (transpose(1, 2)), or use "
                    "rearrange(x, 'b t (h d) -> b h t d', h=n_heads)",
                ),
                (
                    lambda x=x, h=h: rearrange(x, "b t (h d) -> b t h d", h=h),
                    "the heads must come before the positions: (b, h, t, d), so that "
                    "attention runs over t for each head; swap dimensions 1 and 2",
                ),
                (
                    lambda x=x, h=h: rearrange(x, "b t (d h) -> b h t d", h=h),
                    "head i takes the contiguous block of columns i*d .. (i+1)*d - 1, not "
                    "every n_heads-th column: the pattern is (h d), not (d h)",
                ),
            ],
            "x[b, t, i*d + j] must end up at out[b, i, t, j] (head i, position t, component j)",
        )
    passed(name, f"{len(inputs)} random shapes match rearrange('b t (h d) -> b h t d')")


def check_merge_heads(
    fn: Callable[[torch.Tensor], Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(x: (b, h, t, d)) -> (b, t, h*d)`` against
    ``rearrange(x, "b h t d -> b t (h d)")``."""
    name = "merge_heads"
    reject_library(name, fn, reference_merge_heads)
    fixed = [(1, 1, 1, 4), (1, 3, 2, 4), (2, 5, 4, 3), (2, 3, 3, 3)]
    _check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        inputs.append(_heads_case(rng))
    for b, t, h, d in inputs:
        x = torch.arange(b * h * t * d, dtype=torch.float64).reshape(b, h, t, d)
        expected = reference_merge_heads(x)
        shown = f"x of shape {(b, h, t, d)}"
        got = _as_tensor(name, shown, _call(fn, name, shown, x.clone()), expected)
        _compare_values(
            name,
            shown,
            got,
            expected,
            [
                (
                    lambda x=x, b=b, t=t, h=h, d=d: x.reshape(b, t, h * d),
                    "a reshape alone mixes positions and heads: swap the h and t "
                    "dimensions first (transpose(1, 2)), then reshape to (b, t, h*d), or use "
                    "rearrange(x, 'b h t d -> b t (h d)')",
                ),
                (
                    lambda x=x: rearrange(x, "b h t d -> b t (d h)"),
                    "head i fills the contiguous block of columns i*d .. (i+1)*d - 1: the "
                    "pattern is (h d), not (d h)",
                ),
            ],
            "x[b, i, t, j] (head i, position t, component j) must end up at out[b, t, i*d + j]",
        )
    passed(name, f"{len(inputs)} random shapes match rearrange('b h t d -> b t (h d)')")


# --------------------------------------------------------------------------------------
# exercise 5: multi-head attention
# --------------------------------------------------------------------------------------


def _mha_variants(
    x: torch.Tensor,
    w_qkv: torch.Tensor,
    b_qkv: torch.Tensor,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor,
    h: int,
) -> list[tuple[Callable[[], torch.Tensor], str]]:
    t = x.shape[1]
    d_model = w_proj.shape[0]

    def run(
        layout: str = "three h d",
        causal: bool = True,
        scale: float | None = None,
        project: bool = True,
    ) -> torch.Tensor:
        qkv = x @ w_qkv.T + b_qkv
        q, k, v = rearrange(qkv, f"b t ({layout}) -> three b h t d", three=3, h=h)
        scores = q @ k.transpose(-2, -1) / math.sqrt(scale or q.shape[-1])
        if causal:
            scores = scores.masked_fill(~_ref_causal_mask(t), float("-inf"))
        y = rearrange(torch.softmax(scores, dim=-1) @ v, "b h t d -> b t (h d)")
        return y @ w_proj.T + b_proj if project else y

    order = (
        "split the 3*d_model outputs of the QKV projection as (three, heads, head_dim): "
        "q = columns 0 .. d_model-1, k the next d_model, v the last d_model, and within "
        "each, head i = columns i*head_dim .. (i+1)*head_dim - 1"
    )
    return [
        (
            lambda: run(causal=False),
            "this is a decoder's self-attention: apply the causal mask (query i may attend "
            "to keys 0..i only)",
        ),
        (
            lambda: run(project=False),
            "finish with the output projection: merged @ w_proj.T + b_proj",
        ),
        (
            lambda: run(scale=d_model),
            "each head scales its scores by sqrt(head_dim) = sqrt(d_model // n_heads), "
            "not by sqrt(d_model)",
        ),
        (lambda: run(layout="h three d"), order),
        (lambda: run(layout="three d h"), order),
        (lambda: run(layout="h d three"), order),
    ]


def check_multi_head_attention(
    fn: Callable[..., Any], cases: int = 12, seed: int | None = None
) -> None:
    """Check ``fn(x, w_qkv, b_qkv, w_proj, b_proj, n_heads) -> (b, t, d_model)`` against
    :class:`llmkit.nn.MultiHeadAttention` (causal) holding the same weights.

    ``x: (b, t, d_model)``; ``w_qkv: (3*d_model, d_model)`` and ``b_qkv: (3*d_model,)``
    (the fused projection, ``nn.Linear`` layout: ``qkv = x @ w_qkv.T + b_qkv``, outputs
    laid out ``(three, heads, head_dim)``); ``w_proj: (d_model, d_model)``,
    ``b_proj: (d_model,)``. While the check runs, the student's ``attention``,
    ``causal_mask``, ``split_heads`` and ``merge_heads`` (if defined) are replaced by the
    reference versions, so this exercise is graded on its own."""
    name = "multi_head_attention"
    reject_library(name, fn, MultiHeadAttention, reference_multi_head_attention)
    fixed = [(1, 1, 1, 4), (1, 4, 2, 3), (2, 5, 4, 2), (2, 6, 3, 4)]
    _check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        b, t, h, d = _heads_case(rng)
        inputs.append((b, t, h, d))
    g = _generator(rng)
    helpers = {
        "attention": _attention_ref,
        "causal_mask": _causal_ref,
        "split_heads": reference_split_heads,
        "merge_heads": reference_merge_heads,
    }
    with _reference_helpers(fn, helpers):
        for b, t, h, d in inputs:
            d_model = h * d
            x = _randn(g, b, t, d_model)
            w_qkv = _randn(g, 3 * d_model, d_model) / math.sqrt(d_model)
            b_qkv = _randn(g, 3 * d_model) * 0.1
            w_proj = _randn(g, d_model, d_model) / math.sqrt(d_model)
            b_proj = _randn(g, d_model) * 0.1
            expected = reference_multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, h)
            shown = f"x of shape {(b, t, d_model)}, n_heads={h} (head_dim {d})"
            args = [a.clone() for a in (x, w_qkv, b_qkv, w_proj, b_proj)]
            got = _call(fn, name, shown, *args, h)
            if isinstance(got, tuple) and got and isinstance(got[0], torch.Tensor):
                got = got[0]  # (out, ...) like MultiHeadAttention.forward is fine too
            got = _as_tensor(name, shown, got, expected)
            _compare_values(
                name,
                shown,
                got,
                expected,
                _mha_variants(x, w_qkv, b_qkv, w_proj, b_proj, h),
                "qkv = x @ w_qkv.T + b_qkv; split into q, k, v and into heads "
                "(b, h, t, head_dim); causal attention per head; merge the heads; "
                "project with w_proj and b_proj",
            )
            for a, original in zip(args, (x, w_qkv, b_qkv, w_proj, b_proj), strict=True):
                if not torch.equal(a, original):
                    raise AssertionError(f"{name}: your function modified its inputs ({shown})")
    passed(name, f"{len(inputs)} random cases match llmkit.nn.MultiHeadAttention")

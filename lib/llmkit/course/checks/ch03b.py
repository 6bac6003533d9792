"""Checks of lab 03b (modern decoders): one :class:`Exercise` per exercise.

==========  ==============================================================  ==================
exercise    the student's function                                          reference
==========  ==============================================================  ==================
rms_norm    ``(x: (..., d), weight: (d,), eps=1e-5) -> (..., d)``            the formula
apply_rope  ``(x: (..., t, d), positions: (t,) long, base=10000.0)``         adjacent pairs
            ``-> (..., t, d)``
repeat_kv   ``(x: (b, g, s, d), n_rep) -> (b, g * n_rep, s, d)``             ``llmkit.nn``
==========  ==============================================================  ==================

Off limits in every exercise: ``llmkit.nn`` (its ``RMSNorm``, ``rope_frequencies``,
``rope_angles``, ``apply_rope``, ``repeat_kv``, ...) and ``llmkit.llama``; in ``rms_norm``
also PyTorch's RMSNorm (``torch.nn.functional.rms_norm``, ``torch.rms_norm``,
``torch.nn.RMSNorm``). Inputs are ``float64``; results are compared with any float dtype
(``rtol = atol = 1e-5``, and ``1e-4`` for ``apply_rope``, whose angles a float32 answer
computes less exactly), so an answer computed in ``float32`` passes too.
"""

from __future__ import annotations

import random

import torch

from .runner import Case, Exercise, Slip

__all__ = ["check_rms_norm", "check_apply_rope", "check_repeat_kv"]

_REF = "llmkit.course.checks.reference.ch03b"
_LLMKIT = ["llmkit.nn", "llmkit.llama"]
_TORCH_RMSNORM = [
    "torch.nn.functional:rms_norm",
    "torch:rms_norm",
    "torch.nn:RMSNorm",
]


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift


# ---------------------------------------------------------------------------- RMSNorm


def _rms_case(x: torch.Tensor, weight: torch.Tensor, eps: float | None = None) -> Case:
    label = f"x {tuple(x.shape)}, weight {tuple(weight.shape)}"
    if eps is None:
        return Case((x, weight), label=label)
    return Case((x, weight), {"eps": eps}, label=f"{label}, eps={eps}")


def _fixed_rms() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    ones = torch.ones(2, dtype=torch.float64)
    return [
        _rms_case(torch.tensor([[3.0, 4.0]], dtype=torch.float64), ones),
        _rms_case(_randn(g, 2, 8, shift=1.5), _randn(g, 8)),
        _rms_case(_randn(g, 3, 4, 6, scale=0.05), 1 + _randn(g, 6, scale=0.1), eps=0.01),
        _rms_case(_randn(g, 5, 16, shift=-2.0), _randn(g, 16), eps=0.5),
        _rms_case(torch.zeros(1, 4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)),
    ]


def _random_rms(rng: random.Random) -> Case:
    g = _generator(rng)
    d = rng.choice([1, 2, 3, 8, 16, 33, 64])
    lead = tuple(rng.randint(1, 4) for _ in range(rng.randint(0, 3)))
    x = _randn(g, *lead, d, scale=rng.choice([0.01, 0.1, 1.0, 5.0]), shift=rng.uniform(-1, 1))
    eps = rng.choice([None, 1e-6, 1e-5, 1e-2, 0.3])
    return _rms_case(x, _randn(g, d, scale=0.5, shift=1.0), eps)


RMS_NORM = Exercise(
    name="rms_norm",
    reference=f"{_REF}:rms_norm",
    forbid=_LLMKIT + _TORCH_RMSNORM,
    fixed=_fixed_rms,
    random=_random_rms,
    rtol=1e-5,
    atol=1e-5,
    dtype=False,
    hint="x / sqrt(mean(x ** 2 over the last dimension, keepdim=True) + eps) * weight",
    slips=[
        Slip(
            f"{_REF}:rms_norm_centred",
            "do not subtract the mean: RMSNorm only rescales (that is its difference from "
            "LayerNorm)",
        ),
        Slip(
            f"{_REF}:rms_norm_sum",
            "take the mean of the squares, not their sum (divide by the root *mean* square)",
        ),
        Slip(f"{_REF}:rms_norm_eps_outside", "add eps inside the square root: sqrt(mean + eps)"),
        Slip(f"{_REF}:rms_norm_no_weight", "multiply the normalised vector by the gain weight"),
    ],
)


# ---------------------------------------------------------------------------- RoPE


def _rope_case(x: torch.Tensor, positions: torch.Tensor, base: float | None = None) -> Case:
    pos = positions.tolist()
    shown = pos if len(pos) <= 6 else f"{pos[:3]} ... {pos[-1]}"
    label = f"x {tuple(x.shape)}, positions {shown}"
    if base is None:
        return Case((x, positions), label=label)
    return Case((x, positions), {"base": base}, label=f"{label}, base={base:g}")


def _fixed_rope() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    return [
        # one pair, positions 0 and 1, base 1: turn by 0 and by 1 radian
        _rope_case(
            torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64),
            torch.tensor([0, 1]),
            base=1.0,
        ),
        _rope_case(_randn(g, 3, 4), torch.arange(3)),
        _rope_case(_randn(g, 2, 3, 5, 8), torch.arange(5)),
        _rope_case(_randn(g, 1, 2, 4, 16), torch.tensor([7, 8, 9, 10]), base=100_000.0),
        _rope_case(_randn(g, 6, 2), torch.tensor([3, 0, 50, 1, 99, 2])),
    ]


def _random_rope(rng: random.Random) -> Case:
    g = _generator(rng)
    d = rng.choice([2, 4, 6, 8, 16, 32, 64])
    t = rng.randint(1, 12)
    lead = tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 2)))
    start = rng.choice([0, 0, rng.randint(1, 60)])
    positions = torch.arange(start, start + t)
    if rng.random() < 0.2:
        positions = torch.tensor([rng.randrange(100) for _ in range(t)])
    return _rope_case(_randn(g, *lead, t, d), positions, rng.choice([None, 500.0, 100_000.0]))


APPLY_ROPE = Exercise(
    name="apply_rope",
    reference=f"{_REF}:apply_rope",
    forbid=_LLMKIT,
    fixed=_fixed_rope,
    random=_random_rope,
    rtol=1e-4,
    atol=1e-4,
    dtype=False,
    hint="theta_i = base ** (-2 i / d) for i = 0 .. d/2 - 1; angle = position * theta_i; "
    "pair i is (x[..., 2i], x[..., 2i+1]) and becomes (x1 cos - x2 sin, x1 sin + x2 cos)",
    slips=[
        Slip(
            f"{_REF}:apply_rope_rotate_half",
            "this exercise pairs adjacent coordinates (x[2i], x[2i+1]), not (x[i], x[i + d/2]) "
            "(that is the rotate-half layout)",
        ),
        Slip(
            f"{_REF}:apply_rope_backwards",
            "you rotate the other way: the new pair is (x1 cos - x2 sin, x1 sin + x2 cos)",
        ),
        Slip(
            f"{_REF}:apply_rope_wrong_exponent",
            "the frequencies are theta_i = base ** (-2 i / d), i = 0 .. d/2 - 1: the exponent "
            "has a factor 2",
        ),
        Slip(
            f"{_REF}:apply_rope_own_positions",
            "rotate by the given positions (a KV cache starts later than 0), not by 0 .. t-1",
        ),
    ],
)


# ---------------------------------------------------------------------------- repeat_kv


def _kv_case(x: torch.Tensor, n_rep: int) -> Case:
    return Case((x, n_rep), label=f"x {tuple(x.shape)}, n_rep={n_rep}")


def _fixed_kv() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    heads = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    return [
        _kv_case(heads, 3),  # head g holds the value g everywhere
        _kv_case(_randn(g, 2, 2, 4, 8), 2),
        _kv_case(_randn(g, 1, 3, 5, 4), 1),
        _kv_case(_randn(g, 2, 1, 3, 4), 4),
    ]


def _random_kv(rng: random.Random) -> Case:
    g = _generator(rng)
    x = _randn(g, rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 7), rng.choice([2, 4, 8]))
    return _kv_case(x, rng.randint(1, 5))


REPEAT_KV = Exercise(
    name="repeat_kv",
    reference="llmkit.nn:repeat_kv",
    forbid=_LLMKIT,
    fixed=_fixed_kv,
    random=_random_kv,
    hint="query head j reads key/value head j // n_rep: repeat each head n_rep times in a "
    "row along dimension 1",
    slips=[
        Slip(
            f"{_REF}:repeat_kv_tiled",
            "repeat each head n_rep times in a row (heads 0, 0, 1, 1, ...), not the whole "
            "stack of heads (0, 1, 0, 1, ...): query head j reads key/value head j // n_rep",
        ),
        Slip(
            f"{_REF}:repeat_kv_positions",
            "repeat the heads (dimension 1), not the positions (dimension 2)",
        ),
    ],
)


def check_rms_norm(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``rms_norm(x, weight, eps=1e-5)``; see the table above."""
    RMS_NORM.check(fn, cases=cases, seed=seed)


def check_apply_rope(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``apply_rope(x, positions, base=10000.0)`` (adjacent pairs)."""
    APPLY_ROPE.check(fn, cases=cases, seed=seed)


def check_repeat_kv(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``repeat_kv(x, n_rep)``."""
    REPEAT_KV.check(fn, cases=cases, seed=seed)

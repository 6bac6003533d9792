"""Check functions for the chapter-07 lab ("Scale").

One function per exercise. Each calls the student's function on fixed cases (GPT-2 small,
Chinchilla, the two published Chinchilla fits) and seeded random inputs, compares with
:mod:`llmkit.scaling`, prints one verdict line via :func:`~llmkit.course.checks.passed` on
success and raises ``AssertionError`` on failure: its first line says what is wrong, then
the input, and a ``hint:`` line what to look at. When the wrong answer matches a common
mistake (position embeddings, LayerNorms, biases or the final LayerNorm forgotten, a tied
embedding counted twice; ``2ND`` for training, seconds or minutes instead of hours, the
utilisation forgotten or multiplied; the ``/6`` forgotten, the exponents swapped,
``D != C / (6 N)``; a fit in linear space, the sign of the exponent, ``log a`` instead of
``a``), the hint names it. A ``NotImplementedError`` from an unfinished stub is let
through (the grader counts it as a failure).

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it, so
  regrading gives the same score), else fresh inputs on every run; see
  :mod:`llmkit.course.checks`. Nothing here draws from numpy's or torch's global
  generators.
- **The library is not an answer**: each check refuses ``llmkit``'s own function.
- Counts of parameters are compared exactly; FLOPs, hours and fitted values with a
  relative tolerance of ``1e-6``.

==============================  =======================================================
check                           student's function
==============================  =======================================================
``check_gpt_parameters``        ``gpt_parameters(config: GPTConfig, tied=True) -> int``,
                                compared with ``gpt_parameter_count(config, tied)``
                                and, tied, with ``count_parameters(GPT(config))``
``check_training_cost``         ``training_cost(n_params, n_tokens, peak_flops,``
                                ``utilisation) -> (flops, gpu_hours)``, compared with
                                ``training_flops``
``check_compute_optimal``       ``compute_optimal(flops, E, A, B, alpha, beta)``
                                ``-> (N_opt, D_opt)``, compared with
                                ``llmkit.scaling.compute_optimal`` for both fits and
                                with its closed form for random constants
``check_fit_power_law``         ``fit_power_law(x, y) -> (coefficient, exponent)``,
                                compared with ``fit_power_law(x, y, n_bootstrap=0)``
==============================  =======================================================
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from llmkit.course.checks import call_student, check_cases, check_rng, passed, reject_library
from llmkit.course.checks import failure as _fail
from llmkit.course.checks import require_result as _require_result
from llmkit.gpt import GPT, GPTConfig
from llmkit.scaling import CHINCHILLA_FITS, count_parameters, gpt_parameter_count
from llmkit.scaling import compute_optimal as _ref_compute_optimal
from llmkit.scaling import fit_power_law as _ref_fit_power_law
from llmkit.scaling import training_flops as _ref_training_flops

__all__ = [
    "check_gpt_parameters",
    "check_training_cost",
    "check_compute_optimal",
    "check_fit_power_law",
    "reference_gpt_parameters",
    "reference_training_cost",
    "reference_compute_optimal",
    "reference_fit_power_law",
]

RTOL = 1e-6

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


_CRASH_HINTS = {
    "gpt_parameters": "config is an llmkit.gpt.GPTConfig: read config.vocab_size, "
    "config.block_size, config.n_layer, config.d_model and config.bias; return an int",
    "training_cost": "n_params, n_tokens, peak_flops (FLOP/s) and utilisation (a fraction "
    "in (0, 1]) are plain floats; return the pair (flops, gpu_hours)",
    "compute_optimal": "all six arguments are positive floats; return the pair "
    "(N_opt, D_opt) of floats",
    "fit_power_law": "x and y are 1-d numpy arrays of positive floats (at least 3 points); "
    "np.polyfit(np.log(x), np.log(y), 1) returns (slope, intercept)",
}


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args, hint=_CRASH_HINTS[name], **kwargs)


def _is_number(x: Any) -> bool:
    if isinstance(x, bool | np.bool_):
        return False
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x.item()
    return isinstance(x, numbers.Real)


def _as_float(x: Any) -> float:
    return float(x.item() if isinstance(x, np.ndarray) else x)


def _close(a: float, b: float, rtol: float = RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def _pair(name: str, shown: str, got: Any, what: str) -> tuple[float, float]:
    """The student's result as two finite floats, or a failure naming ``what``."""
    _require_result(got, name, shown)
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise _fail(
            name,
            shown,
            f"expected a pair {what}, got {type(got).__name__}",
            f"return both numbers: `return {what[1:-1]}`",
        )
    if not all(_is_number(v) for v in got):
        raise _fail(
            name,
            shown,
            f"expected two numbers, got ({type(got[0]).__name__}, {type(got[1]).__name__})",
            "return plain numbers (float(...)), not arrays or strings",
        )
    a, b = (_as_float(v) for v in got)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise _fail(
            name,
            shown,
            f"your result {(a, b)} is not finite",
            "look for an overflow or a division by zero",
        )
    return a, b


# --------------------------------------------------------------------------------------
# exercise 1: the parameter count of a GPT
# --------------------------------------------------------------------------------------


def reference_gpt_parameters(config: GPTConfig, tied: bool = True) -> int:
    """``gpt_parameter_count(config, tied)["total"]``, the reference of the exercise."""
    return gpt_parameter_count(config, tied=tied)["total"]


def _gpt_configs(rng: random.Random, cases: int) -> list[tuple[GPTConfig, bool]]:
    gpt2 = GPTConfig(vocab_size=50_257, block_size=1024, n_layer=12, n_head=12, d_model=768)
    fixed = [
        (gpt2, True),  # GPT-2 small: 124,439,808
        (gpt2, False),
        (GPTConfig(vocab_size=65, block_size=128, n_layer=4, n_head=4, d_model=128), True),
        (
            GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=2, d_model=16, bias=False),
            True,
        ),
        (GPTConfig(vocab_size=7, block_size=5, n_layer=3, n_head=1, d_model=8), False),
    ]
    check_cases(cases, len(fixed))
    out = list(fixed)
    while len(out) < cases:
        n_head = rng.randint(1, 4)
        config = GPTConfig(
            vocab_size=rng.randint(2, 500),
            block_size=rng.randint(1, 300),
            n_layer=rng.randint(1, 6),
            n_head=n_head,
            d_model=n_head * rng.randint(1, 24),
            bias=rng.random() < 0.5,
        )
        out.append((config, rng.random() < 0.5))
    return out


def _gpt_parts(config: GPTConfig, tied: bool) -> dict[str, int]:
    """The pieces the usual slips leave out or add, in parameters."""
    d, n, v = config.d_model, config.n_layer, config.vocab_size
    p = gpt_parameter_count(config, tied=tied)
    ln_bias = (2 * n + 1) * d if config.bias else 0
    return {
        "position": p["position_embedding"],
        "token": p["token_embedding"],
        "layernorm_all": p["layernorm"] + ln_bias,
        "layernorm_gains": p["layernorm"],
        "final_ln": d + (d if config.bias else 0),
        "block_ln": 2 * n * d * (2 if config.bias else 1),
        "linear_bias": n * 9 * d if config.bias else 0,
        "biases": p["biases"],
        "bias_when_off": 0 if config.bias else n * 11 * d + d,
        "lm_head": v * d,
        "lm_head_bias": v,
        # an MLP 2d or d wide instead of 4d: fewer weights, and fewer fc biases
        "mlp_2d": n * (4 * d * d + (2 * d if config.bias else 0)),
        "mlp_d": n * (6 * d * d + (3 * d if config.bias else 0)),
    }


# (wrong answer = right answer + sum of sign * part, hint). Checked one at a time, then
# in pairs, on the first case that fails.
_GPT_SLIPS: list[tuple[dict[str, int], str]] = [
    (
        {"position": -1},
        "you left out the position embeddings: wpe is a (block_size, d_model) table",
    ),
    (
        {"layernorm_all": -1},
        "you left out the LayerNorms: two per block (ln_1, ln_2) and the final ln_f, each "
        "with d_model gains (and d_model biases when config.bias)",
    ),
    (
        {"layernorm_gains": -1},
        "you left out (2 n_layer + 1) * d_model: every LayerNorm (ln_1 and ln_2 in each "
        "block, and ln_f) has d_model gains and, when config.bias, d_model biases",
    ),
    (
        {"final_ln": -1},
        "you forgot the final LayerNorm ln_f, after the last block (d_model gains, plus "
        "d_model biases when config.bias)",
    ),
    (
        {"block_ln": -1},
        "count the two LayerNorms of every block (ln_1 before attention, ln_2 before the "
        "MLP), not only the final ln_f",
    ),
    (
        {"linear_bias": -1},
        "with config.bias every linear layer has a bias: 3d (qkv) + d (attention proj) + "
        "4d (fc) + d (MLP proj) per block",
    ),
    (
        {"biases": -1},
        "you left out the biases: with config.bias, 3d + d + 4d + d in the linear layers "
        "and d per LayerNorm",
    ),
    (
        {"bias_when_off": 1},
        "with config.bias=False there are no biases at all (linear layers and LayerNorms)",
    ),
    (
        {"lm_head": 1},
        "with tied=True the output projection *is* the token embedding "
        "(lm_head.weight is wte.weight): count that (vocab_size, d_model) matrix once",
    ),
    (
        {"lm_head": -1},
        "with tied=False the lm_head is a separate (vocab_size, d_model) matrix: add it",
    ),
    ({"lm_head_bias": 1}, "the lm_head has no bias (nn.Linear(..., bias=False))"),
    (
        {"mlp_2d": -1},
        "the MLP's hidden layer is 4 * d_model wide: fc is (d, 4d) and proj (4d, d), "
        "8 d^2 weights per block (and 4d + d biases when config.bias)",
    ),
    (
        {"mlp_d": -1},
        "the MLP's hidden layer is 4 * d_model wide: fc is (d, 4d) and proj (4d, d), "
        "8 d^2 weights per block (and 4d + d biases when config.bias)",
    ),
    # last: with tied=False, a missing (V, d) matrix is more likely the lm_head
    ({"token": -1}, "you left out the token embedding wte, a (vocab_size, d_model) table"),
]


def _gpt_hint(config: GPTConfig, tied: bool, diff: int) -> str | None:
    """The hint of the slip (or pair of slips) that explains ``got - expected = diff``."""
    parts = _gpt_parts(config, tied)

    def delta(slip: dict[str, int]) -> int:
        return sum(sign * parts[k] for k, sign in slip.items())

    # counting the lm_head twice is a slip of the tied model, leaving it out of the untied
    usable = [
        (s, h)
        for s, h in _GPT_SLIPS
        if delta(s) != 0 and s.get("lm_head", 1 if tied else -1) == (1 if tied else -1)
    ]
    for slip, hint in usable:
        if delta(slip) == diff:
            return hint
    for (s1, h1), (s2, h2) in itertools.combinations(usable, 2):
        if not set(s1) & set(s2) and delta(s1) + delta(s2) == diff:
            return f"{h1}; and {h2}"
    return None


def _describe_config(config: GPTConfig, tied: bool) -> str:
    return (
        f"GPTConfig(vocab_size={config.vocab_size}, block_size={config.block_size}, "
        f"n_layer={config.n_layer}, n_head={config.n_head}, d_model={config.d_model}, "
        f"bias={config.bias}), tied={tied}"
    )


def _built_count(config: GPTConfig) -> int:
    """``count_parameters(GPT(config))`` on the meta device (nothing is allocated)."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return count_parameters(GPT(config))


def check_gpt_parameters(fn: Callable[..., Any], cases: int = 20, seed: int | None = None) -> None:
    """Check ``fn(config, tied=True) -> int`` against
    :func:`llmkit.scaling.gpt_parameter_count` (``["total"]``) on GPT-2 small and random
    small :class:`~llmkit.gpt.GPTConfig` s, with and without biases, tied and untied.
    Tied counts are also compared with a built model, ``count_parameters(GPT(config))``."""
    name = "gpt_parameters"
    reject_library(name, fn, gpt_parameter_count, reference_gpt_parameters)
    rng = check_rng(seed)
    inputs = _gpt_configs(rng, cases)
    for config, tied in inputs:
        expected = reference_gpt_parameters(config, tied)
        if tied and _built_count(config) != expected:  # a built GPT ties its lm_head
            raise RuntimeError(
                f"llmkit.scaling.gpt_parameter_count disagrees with GPT({config}): "
                "a bug in llmkit, not in your answer"
            )
        shown = _describe_config(config, tied)
        got = _call(fn, name, shown, config, tied=tied)
        _require_result(got, name, shown)
        if isinstance(got, dict):
            raise _fail(
                name,
                shown,
                "your function returned a dict",
                "return the total number of parameters, one int",
            )
        if not _is_number(got):
            raise _fail(
                name,
                shown,
                f"expected an int, got {type(got).__name__}",
                "return the total number of parameters, one int",
            )
        value = _as_float(got)
        if value != expected:
            if not float(value).is_integer():
                hint = "a parameter count is a whole number: add up integer products"
            else:
                diff = int(value) - expected
                hint = _gpt_hint(config, tied, diff) or (
                    "add up, for the config: wte (V, d), wpe (block_size, d); per block two "
                    "LayerNorms, qkv (d, 3d), attention proj (d, d), fc (d, 4d), MLP proj "
                    "(4d, d), with their biases when config.bias; ln_f; and a separate lm_head "
                    "(V, d) only when tied=False"
                )
            raise _fail(
                name,
                shown,
                f"you counted {value:,.0f} parameters, expected {expected:,} "
                f"({'+' if value > expected else '-'}{abs(value - expected):,.0f})",
                hint,
            )
    passed(name, f"{len(inputs)} configurations match llmkit.scaling.gpt_parameter_count")


# --------------------------------------------------------------------------------------
# exercise 2: training compute and GPU-hours
# --------------------------------------------------------------------------------------


def reference_training_cost(
    n_params: float, n_tokens: float, peak_flops: float, utilisation: float
) -> tuple[float, float]:
    """``(training_flops(N, D), flops / (peak_flops * utilisation) / 3600)``."""
    flops = _ref_training_flops(n_params, n_tokens)
    return flops, flops / (peak_flops * utilisation) / 3600.0


def _cost_cases(rng: random.Random, cases: int) -> list[tuple[float, float, float, float]]:
    fixed = [
        (70e9, 1.4e12, 989e12, 0.4),  # Chinchilla on H100s at 40 % MFU
        (124e6, 10e9, 312e12, 0.5),  # GPT-2 small on A100s
        (175e9, 300e9, 125e12, 0.25),  # GPT-3 on V100s
        (1e6, 1e6, 1e12, 1.0),  # perfect utilisation
    ]
    check_cases(cases, len(fixed))
    out = list(fixed)
    while len(out) < cases:
        out.append(
            (
                10 ** rng.uniform(6, 12),
                10 ** rng.uniform(8, 13),
                10 ** rng.uniform(13, 15.5),
                rng.uniform(0.15, 0.75),
            )
        )
    return out


def check_training_cost(fn: Callable[..., Any], cases: int = 12, seed: int | None = None) -> None:
    """Check ``fn(n_params, n_tokens, peak_flops, utilisation) -> (flops, gpu_hours)``:
    ``flops`` is :func:`llmkit.scaling.training_flops` (``6 N D``), ``gpu_hours`` the
    hours one GPU of peak ``peak_flops`` FLOP/s needs at that utilisation."""
    name = "training_cost"
    reject_library(name, fn, _ref_training_flops, reference_training_cost)
    rng = check_rng(seed)
    inputs = _cost_cases(rng, cases)
    for n, d, peak, util in inputs:
        flops, hours = reference_training_cost(n, d, peak, util)
        shown = f"n_params={n:.6g}, n_tokens={d:.6g}, peak_flops={peak:.6g}, utilisation={util:.4g}"
        got_flops, got_hours = _pair(
            name, shown, _call(fn, name, shown, n, d, peak, util), "(flops, gpu_hours)"
        )
        if not _close(got_flops, flops):
            ratio = got_flops / flops
            if _close(got_hours, flops) and _close(got_flops, hours):
                hint = "you returned (gpu_hours, flops): return (flops, gpu_hours)"
            elif _close(ratio, 1 / 3):
                hint = (
                    "2 N D is the forward pass only; training also runs the backward pass, "
                    "about twice the forward: 6 N D in all"
                )
            elif _close(ratio, 2 / 3):
                hint = "4 N D is the backward pass alone: add the forward 2 N D, 6 N D in all"
            elif _close(ratio, 0.5):
                hint = "a multiply-add is 2 FLOPs: training costs 6 N D, not 3 N D"
            else:
                hint = "training FLOPs are C = 6 * n_params * n_tokens"
            raise _fail(name, shown, f"flops is {got_flops:.6g}, expected {flops:.6g}", hint)
        if not _close(got_hours, hours):
            ratio = got_hours / hours
            if _close(ratio, 3600.0):
                hint = "you returned seconds: divide by 3600 for hours"
            elif _close(ratio, 60.0):
                hint = "you returned minutes: divide the seconds by 3600, not 60"
            elif _close(ratio, util):
                hint = (
                    "the GPU delivers only utilisation * peak_flops FLOP/s: divide by "
                    "peak_flops * utilisation, not by peak_flops alone"
                )
            elif _close(ratio, util * util):
                hint = (
                    "a lower utilisation means *more* hours: divide by the utilisation, "
                    "do not multiply by it"
                )
            elif _close(ratio, 1 / 3):
                hint = "compute the hours from the training FLOPs (6 N D), not the forward 2 N D"
            elif _close(ratio, 1 / 24):
                hint = "you returned days: GPU-hours are seconds / 3600"
            else:
                hint = "gpu_hours = flops / (peak_flops * utilisation) / 3600"
            raise _fail(name, shown, f"gpu_hours is {got_hours:.6g}, expected {hours:.6g}", hint)
    passed(name, f"{len(inputs)} training runs match llmkit.scaling.training_flops")


# --------------------------------------------------------------------------------------
# exercise 3: the compute-optimal split
# --------------------------------------------------------------------------------------


def reference_compute_optimal(
    flops: float, E: float, A: float, B: float, alpha: float, beta: float
) -> tuple[float, float]:
    """``(N_opt, D_opt)`` minimising ``E + A / N**alpha + B / D**beta`` under
    ``6 N D = flops``: the closed form of :func:`llmkit.scaling.compute_optimal` for any
    constants (``E`` does not move the optimum)."""
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n_opt = g * (flops / 6.0) ** (beta / (alpha + beta))
    return n_opt, (flops / 6.0) / n_opt


def _optimal_slips(
    c: float, A: float, B: float, a: float, b: float
) -> list[tuple[tuple[float, float], str]]:
    """Wrong ``(N, D)`` from the usual mistakes, with their hints."""
    s = a + b
    g = (a * A / (b * B)) ** (1 / s)
    out = []

    def add(n: float, d: float, hint: str) -> None:
        out.append(((n, d), hint))

    n_no6 = g * c ** (b / s)
    add(
        n_no6,
        c / n_no6,
        "you forgot the 6: the constraint is 6 N D = C, so use C / 6 in N_opt and "
        "D_opt = C / (6 N_opt)",
    )
    add(
        n_no6,
        c / (6 * n_no6),
        "you forgot the 6 in N_opt: N_opt = G (C / 6)^(beta / (alpha + beta))",
    )
    n = g * (c / 6) ** (b / s)
    add(n, c / n, "D_opt = C / (6 N_opt): the 6 of 6 N D = C belongs in D_opt too")
    n_swap = g * (c / 6) ** (a / s)
    add(
        n_swap,
        c / (6 * n_swap),
        "the exponents are swapped: N_opt grows like (C/6)^(beta / (alpha + beta)) (beta, "
        "the data exponent, on top), D_opt like (C/6)^(alpha / (alpha + beta))",
    )
    g_inv = 1 / g
    add(
        g_inv * (c / 6) ** (b / s),
        c / (6 * g_inv * (c / 6) ** (b / s)),
        "G is upside down: G = (alpha A / (beta B))^(1 / (alpha + beta))",
    )
    g_ab = (a * B / (b * A)) ** (1 / s)
    add(
        g_ab * (c / 6) ** (b / s),
        c / (6 * g_ab * (c / 6) ** (b / s)),
        "A and B are swapped in G: A goes with alpha (the N term), B with beta (the D term)",
    )
    g_pow = a * A / (b * B)
    add(
        g_pow * (c / 6) ** (b / s),
        c / (6 * g_pow * (c / 6) ** (b / s)),
        "G = (alpha A / (beta B)) raised to the power 1 / (alpha + beta)",
    )
    add(
        c / (6 * n),
        n,
        "you returned (D_opt, N_opt): return (N_opt, D_opt)",
    )
    return out


def _optimal_cases(
    rng: random.Random, cases: int
) -> list[tuple[float, float, float, float, float, float, str]]:
    out: list[tuple[float, float, float, float, float, float, str]] = []
    for fit_name, c in (("hoffmann", 5.76e23), ("epoch", 5.76e23), ("epoch", 1e21)):
        f = CHINCHILLA_FITS[fit_name]
        out.append((c, f.E, f.A, f.B, f.alpha, f.beta, fit_name))
    fixed = len(out)
    check_cases(cases, fixed)
    while len(out) < cases:
        if len(out) % 3 == 0:
            fit_name = rng.choice(sorted(CHINCHILLA_FITS))
            f = CHINCHILLA_FITS[fit_name]
            out.append((10 ** rng.uniform(17, 27), f.E, f.A, f.B, f.alpha, f.beta, fit_name))
        else:
            alpha, beta = rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.6)
            if abs(alpha - beta) < 0.02:  # swapped exponents must give different answers
                beta = alpha + 0.05
            out.append(
                (
                    10 ** rng.uniform(15, 27),
                    rng.uniform(0.5, 3.0),
                    10 ** rng.uniform(1, 4),
                    10 ** rng.uniform(1, 4),
                    alpha,
                    beta,
                    "",
                )
            )
    return out


def check_compute_optimal(fn: Callable[..., Any], cases: int = 15, seed: int | None = None) -> None:
    """Check ``fn(flops, E, A, B, alpha, beta) -> (N_opt, D_opt)``: the minimum of
    ``E + A / N**alpha + B / D**beta`` under ``6 N D = flops``, compared with
    :func:`llmkit.scaling.compute_optimal` for the ``"hoffmann"`` and ``"epoch"`` fits and
    with its closed form for random constants."""
    name = "compute_optimal"
    reject_library(name, fn, _ref_compute_optimal, reference_compute_optimal)
    rng = check_rng(seed)
    inputs = _optimal_cases(rng, cases)
    for c, E, A, B, alpha, beta, fit_name in inputs:
        if fit_name:
            expected = _ref_compute_optimal(c, fit=fit_name)
            source = f' (the "{fit_name}" fit)'
        else:
            expected = reference_compute_optimal(c, E, A, B, alpha, beta)
            source = ""
        shown = (
            f"flops={c:.6g}, E={E:.6g}, A={A:.6g}, B={B:.6g}, alpha={alpha:.6g}, "
            f"beta={beta:.6g}{source}"
        )
        got = _pair(name, shown, _call(fn, name, shown, c, E, A, B, alpha, beta), "(N, D)")
        if _close(got[0], expected[0]) and _close(got[1], expected[1]):
            continue
        problem = (
            f"got N_opt={got[0]:.6g}, D_opt={got[1]:.6g}, expected "
            f"N_opt={expected[0]:.6g}, D_opt={expected[1]:.6g}"
        )
        hint = None
        for (n, d), why in _optimal_slips(c, A, B, alpha, beta):
            if _close(got[0], n) and _close(got[1], d):
                hint = why
                break
        if hint is None and not _close(6 * got[0] * got[1], c, 1e-4):
            hint = (
                f"6 * N * D = {6 * got[0] * got[1]:.6g}, not the budget {c:.6g}: once "
                "N_opt is right, D_opt = C / (6 N_opt)"
            )
        raise _fail(
            name,
            shown,
            problem,
            hint
            or "N_opt = G (C/6)^(beta / (alpha + beta)) with G = (alpha A / (beta B))^(1 / "
            "(alpha + beta)): set the derivative of A N^-alpha + B (C / (6N))^-beta in N to zero",
        )
    passed(name, f"{len(inputs)} budgets match llmkit.scaling.compute_optimal")


# --------------------------------------------------------------------------------------
# exercise 4: a power law fitted in log space
# --------------------------------------------------------------------------------------


def reference_fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(coefficient, exponent)`` of ``llmkit.scaling.fit_power_law(x, y,
    n_bootstrap=0)``: least squares of ``log y = log a - b log x``."""
    fit = _ref_fit_power_law(x, y, n_bootstrap=0)
    return fit.coefficient, fit.exponent


def _linear_space_fit(x: np.ndarray, y: np.ndarray, p0: tuple[float, float]):
    """Least squares of ``y - a x^-b`` in linear space (the slip), or None."""
    from scipy.optimize import curve_fit

    try:
        with np.errstate(all="ignore"):
            (a, b), _ = curve_fit(lambda t, a, b: a * t ** (-b), x, y, p0=p0, maxfev=20_000)
        return float(a), float(b)
    except Exception:  # noqa: BLE001 - no fit, no match
        return None


def _power_cases(rng: random.Random, cases: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = [
        (np.array([1.0, 10.0, 100.0]), np.array([8.0, 4.0, 2.0])),  # a = 8, b = log10 2
        (np.array([1e6, 1e7, 1e8, 1e9]), 400.0 * np.array([1e6, 1e7, 1e8, 1e9]) ** -0.34),
    ]
    check_cases(cases, len(out))
    while len(out) < cases:
        n = rng.randint(4, 15)
        lo = rng.uniform(0, 6)
        x = np.sort(10 ** np.array([rng.uniform(lo, lo + rng.uniform(1.5, 4)) for _ in range(n)]))
        a = 10 ** rng.uniform(-1, 3)
        b = rng.uniform(0.03, 0.8) * (1 if len(out) % 5 else -1)  # a few rising curves
        noise = np.array([rng.gauss(0.0, 0.1) for _ in range(n)])
        out.append((x, a * x ** (-b) * np.exp(noise)))
    return out


def check_fit_power_law(fn: Callable[..., Any], cases: int = 12, seed: int | None = None) -> None:
    """Check ``fn(x, y) -> (coefficient, exponent)`` for ``y = a * x**(-b)`` against
    :func:`llmkit.scaling.fit_power_law` (``n_bootstrap=0``): linear least squares of
    ``log y`` on ``log x``, exponent positive for a falling curve. The data are exact power
    laws and noisy ones (multiplicative noise), falling and a few rising."""
    name = "fit_power_law"
    reject_library(name, fn, _ref_fit_power_law, reference_fit_power_law)
    rng = check_rng(seed)
    inputs = _power_cases(rng, cases)
    for x, y in inputs:
        a, b = reference_fit_power_law(x, y)
        shown = f"x={np.array2string(x, precision=4)}, y={np.array2string(y, precision=4)}"
        xs, ys = x.copy(), y.copy()
        got = _pair(name, shown, _call(fn, name, shown, xs, ys), "(coefficient, exponent)")
        if not (np.array_equal(xs, x) and np.array_equal(ys, y)):
            raise _fail(
                name,
                shown,
                "your function modified x or y",
                "compute np.log(x) into a new array instead of writing into x",
            )
        if _close(got[0], a) and _close(got[1], b):
            continue
        problem = f"got coefficient={got[0]:.6g}, exponent={got[1]:.6g}; expected {a:.6g}, {b:.6g}"
        slips = [
            ((a, -b), "the law is y = a x^(-b): the exponent is minus the slope of log y on log x"),
            ((math.log(a), b), "the coefficient is a = exp(intercept), not the intercept log a"),
            (
                (math.log(a), -b),
                "return a = exp(intercept) and b = -slope (the law is y = a x^(-b))",
            ),
            ((b, a), "you returned (exponent, coefficient): return (coefficient, exponent)"),
            (
                (10 ** math.log(a), b),
                "take logs and exponentials in the same base: exp of a natural-log intercept",
            ),
            (
                (math.exp(math.log10(a)), b),
                "take logs and exponentials in the same base: with np.log10 the coefficient "
                "is 10**intercept",
            ),
        ]
        hint = next(
            (why for (ca, cb), why in slips if _close(got[0], ca) and _close(got[1], cb)), None
        )
        if hint is None:
            lin = _linear_space_fit(x, y, (a, b))
            if lin is not None and _close(got[0], lin[0], 1e-3) and _close(got[1], lin[1], 1e-3):
                hint = (
                    "you fitted in linear space: fit a straight line to (log x, log y) by "
                    "least squares instead, where every point counts alike whatever its scale"
                )
        if hint is None and _close(got[1], b):
            hint = "the exponent is right: the coefficient is exp(intercept) of the same line"
        raise _fail(
            name,
            shown,
            problem,
            hint
            or "fit log y = log a - b log x by least squares: np.polyfit(np.log(x), "
            "np.log(y), 1) gives (slope, intercept), then a = exp(intercept), b = -slope",
        )
    passed(name, f"{len(inputs)} data sets match llmkit.scaling.fit_power_law")

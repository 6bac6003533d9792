"""Checks of lab 07 (scale): one :class:`Exercise` per exercise.

===============  ==================================================  =========================
exercise         the student's function                              off limits
===============  ==================================================  =========================
gpt_parameters   ``(config: GPTConfig, tied=True) -> int``            ``llmkit.scaling``, GPT
                                                                     and its blocks
training_cost    ``(n_params, n_tokens, peak_flops, utilisation)``   ``llmkit.scaling``
                 ``-> (flops, gpu_hours)``
compute_optimal  ``(flops, E, A, B, alpha, beta) -> (N_opt, D_opt)``  ``llmkit.scaling``
fit_power_law    ``(x, y) -> (coefficient, exponent)``                ``llmkit.scaling``, the
                                                                     least-squares solvers
===============  ==================================================  =========================

References (:mod:`llmkit.course.checks.reference.ch07`): the parameters of a GPT built on
the ``meta`` device; ``6 N D``; the closed-form Chinchilla optimum; and
``llmkit.scaling.fit_power_law(x, y, n_bootstrap=0)``. Parameter counts are compared
exactly, everything else with a relative tolerance of ``1e-6``.
"""

from __future__ import annotations

import random

import numpy as np

from .runner import Case, Exercise, Slip

__all__ = [
    "check_gpt_parameters",
    "check_training_cost",
    "check_compute_optimal",
    "check_fit_power_law",
]

_REF = "llmkit.course.checks.reference.ch07"
_MODELS = ["llmkit.gpt:GPT", "llmkit.nn:Block", "llmkit.nn:MultiHeadAttention", "llmkit.nn:MLP"]
_LSTSQ = [
    "numpy:polyfit",
    "numpy.linalg:lstsq",
    "scipy.linalg:lstsq",
    "scipy.stats:linregress",
    "scipy.optimize:curve_fit",
    "scipy.optimize:least_squares",
    "scipy.sparse.linalg:lsqr",
    "numpy.linalg:pinv",
    "torch.linalg:lstsq",
    "torch.linalg:pinv",
]


# ----------------------------------------------------------------------------- cases


def _config_case(config_kwargs: dict, tied: bool) -> Case:
    from llmkit.gpt import GPTConfig

    config = GPTConfig(**config_kwargs)
    shown = ", ".join(f"{k}={v}" for k, v in config_kwargs.items())
    return Case((config,), {"tied": tied}, label=f"config=GPTConfig({shown}), tied={tied}")


_GPT2 = {"vocab_size": 50_257, "block_size": 1024, "n_layer": 12, "n_head": 12, "d_model": 768}


def _random_config(rng: random.Random) -> Case:
    n_head = rng.randint(1, 4)
    kwargs = {
        "vocab_size": rng.randint(2, 500),
        "block_size": rng.randint(1, 300),
        "n_layer": rng.randint(1, 6),
        "n_head": n_head,
        "d_model": n_head * rng.randint(1, 24),
        "bias": rng.random() < 0.5,
    }
    return _config_case(kwargs, rng.random() < 0.5)


def _cost_case(n: float, d: float, peak: float, util: float) -> Case:
    return Case(
        (n, d, peak, util),
        label=f"n_params={n:.6g}, n_tokens={d:.6g}, peak_flops={peak:.6g}, utilisation={util:.4g}",
    )


def _random_cost(rng: random.Random) -> Case:
    return _cost_case(
        10 ** rng.uniform(6, 12),
        10 ** rng.uniform(8, 13),
        10 ** rng.uniform(13, 15.5),
        rng.uniform(0.15, 0.75),
    )


def _optimal_case(
    c: float,
    E: float,
    A: float,
    B: float,
    alpha: float,
    beta: float,  # noqa: N803
    fit: str = "",
) -> Case:
    label = (
        f"flops={c:.6g}, E={E:.6g}, A={A:.6g}, B={B:.6g}, alpha={alpha:.6g}, "
        f"beta={beta:.6g}" + (f' (the "{fit}" fit)' if fit else "")
    )
    return Case((c, E, A, B, alpha, beta), label=label)


def _published(fit: str, c: float) -> Case:
    from llmkit.scaling import CHINCHILLA_FITS

    f = CHINCHILLA_FITS[fit]
    return _optimal_case(c, f.E, f.A, f.B, f.alpha, f.beta, fit)


def _random_optimal(rng: random.Random) -> Case:
    if rng.random() < 0.3:
        return _published(rng.choice(["hoffmann", "epoch"]), 10 ** rng.uniform(17, 27))
    alpha, beta = rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.6)
    if abs(alpha - beta) < 0.02:  # swapped exponents must give different answers
        beta = alpha + 0.05
    return _optimal_case(
        10 ** rng.uniform(15, 27),
        rng.uniform(0.5, 3.0),
        10 ** rng.uniform(1, 4),
        10 ** rng.uniform(1, 4),
        alpha,
        beta,
    )


def _power_case(x: np.ndarray, y: np.ndarray) -> Case:
    return Case(
        (x, y), label=f"x={np.array2string(x, precision=4)}, y={np.array2string(y, precision=4)}"
    )


def _random_power(rng: random.Random) -> Case:
    n = rng.randint(4, 15)
    lo = rng.uniform(0, 6)
    x = np.sort(10 ** np.array([rng.uniform(lo, lo + rng.uniform(1.5, 4)) for _ in range(n)]))
    a = 10 ** rng.uniform(-1, 3)
    b = rng.uniform(0.03, 0.8) * (1 if rng.random() < 0.8 else -1)  # a few rising curves
    noise = np.array([rng.gauss(0.0, 0.1) for _ in range(n)])
    return _power_case(x, a * x ** (-b) * np.exp(noise))


# ------------------------------------------------------------------------ exercises

GPT_PARAMETERS = Exercise(
    name="gpt_parameters",
    reference=f"{_REF}:gpt_parameters",
    forbid=["llmkit.scaling", *_MODELS],
    fixed=[
        _config_case(_GPT2, True),  # GPT-2 small: 124,439,808
        _config_case(_GPT2, False),
        _config_case(
            {"vocab_size": 65, "block_size": 128, "n_layer": 4, "n_head": 4, "d_model": 128}, True
        ),
        _config_case(
            {
                "vocab_size": 100,
                "block_size": 32,
                "n_layer": 2,
                "n_head": 2,
                "d_model": 16,
                "bias": False,
            },
            True,
        ),
        _config_case(
            {"vocab_size": 7, "block_size": 5, "n_layer": 3, "n_head": 1, "d_model": 8}, False
        ),
    ],
    random=_random_config,
    cases=20,
    rtol=0.0,
    atol=0.0,
    hint="add up, for the config: wte (V, d), wpe (block_size, d); per block two LayerNorms, "
    "qkv (d, 3d), attention proj (d, d), fc (d, 4d), MLP proj (4d, d), with their biases when "
    "config.bias; ln_f; and a separate lm_head (V, d) only when tied=False",
    crash_hint="config is an llmkit.gpt.GPTConfig: read config.vocab_size, config.block_size, "
    "config.n_layer, config.d_model and config.bias; return an int",
    slips=[
        Slip(
            f"{_REF}:gpt_parameters_no_position",
            "you left out the position embeddings: wpe is a (block_size, d_model) table",
        ),
        Slip(
            f"{_REF}:gpt_parameters_no_final_ln",
            "you forgot the final LayerNorm ln_f, after the last block (d_model gains, plus "
            "d_model biases when config.bias)",
        ),
        Slip(
            f"{_REF}:gpt_parameters_no_linear_bias",
            "with config.bias every linear layer has a bias: 3d (qkv) + d (attention proj) "
            "+ 4d (fc) + d (MLP proj) per block",
        ),
        Slip(
            f"{_REF}:gpt_parameters_lm_head_flipped",
            "with tied=True the lm_head *is* wte (count that (vocab_size, d_model) matrix "
            "once); with tied=False it is a separate (vocab_size, d_model) matrix: add it",
        ),
    ],
)

TRAINING_COST = Exercise(
    name="training_cost",
    reference=f"{_REF}:training_cost",
    forbid=["llmkit.scaling"],
    fixed=[
        _cost_case(70e9, 1.4e12, 989e12, 0.4),  # Chinchilla on H100s at 40 % MFU
        _cost_case(124e6, 10e9, 312e12, 0.5),  # GPT-2 small on A100s
        _cost_case(175e9, 300e9, 125e12, 0.25),  # GPT-3 on V100s
        _cost_case(1e6, 1e6, 1e12, 1.0),  # perfect utilisation
    ],
    random=_random_cost,
    cases=12,
    rtol=1e-6,
    atol=0.0,
    hint="flops = 6 * n_params * n_tokens; gpu_hours = flops / (peak_flops * utilisation) "
    "/ 3600; return the pair (flops, gpu_hours)",
    slips=[
        Slip(
            f"{_REF}:training_cost_forward_only",
            "2 N D is the forward pass only; training also runs the backward pass, about "
            "twice the forward: 6 N D in all",
        ),
        Slip(f"{_REF}:training_cost_seconds", "you returned seconds: divide by 3600 for hours"),
        Slip(
            f"{_REF}:training_cost_peak",
            "the GPU delivers only utilisation * peak_flops FLOP/s: divide by "
            "peak_flops * utilisation, not by peak_flops alone",
        ),
        Slip(
            f"{_REF}:training_cost_times_utilisation",
            "a lower utilisation means *more* hours: divide by the utilisation, do not "
            "multiply by it",
        ),
    ],
)

COMPUTE_OPTIMAL = Exercise(
    name="compute_optimal",
    reference=f"{_REF}:compute_optimal",
    forbid=["llmkit.scaling"],
    fixed=[
        _published("hoffmann", 5.76e23),
        _published("epoch", 5.76e23),
        _published("epoch", 1e21),
    ],
    random=_random_optimal,
    cases=15,
    rtol=1e-6,
    atol=0.0,
    hint="N_opt = G (C/6)^(beta / (alpha + beta)) with G = (alpha A / (beta B))^(1 / "
    "(alpha + beta)), and D_opt = C / (6 N_opt): set the derivative of "
    "A N^-alpha + B (C / (6N))^-beta in N to zero",
    slips=[
        Slip(
            f"{_REF}:compute_optimal_no_6",
            "you forgot the 6: the constraint is 6 N D = C, so use C / 6 in N_opt and "
            "D_opt = C / (6 N_opt)",
        ),
        Slip(
            f"{_REF}:compute_optimal_swapped_exponents",
            "the exponents are swapped: N_opt grows like (C/6)^(beta / (alpha + beta)) "
            "(beta, the data exponent, on top), D_opt like (C/6)^(alpha / (alpha + beta))",
        ),
        Slip(
            f"{_REF}:compute_optimal_g_inverted",
            "G is upside down: G = (alpha A / (beta B))^(1 / (alpha + beta))",
        ),
        Slip(f"{_REF}:compute_optimal_order", "you returned (D_opt, N_opt): return (N_opt, D_opt)"),
    ],
)

FIT_POWER_LAW = Exercise(
    name="fit_power_law",
    reference=f"{_REF}:fit_power_law",
    forbid=["llmkit.scaling", *_LSTSQ],
    fixed=[
        _power_case(np.array([1.0, 10.0, 100.0]), np.array([8.0, 4.0, 2.0])),  # b = log10 2
        _power_case(
            np.array([1e6, 1e7, 1e8, 1e9]), 400.0 * np.array([1e6, 1e7, 1e8, 1e9]) ** -0.34
        ),
    ],
    random=_random_power,
    cases=12,
    rtol=1e-6,
    atol=0.0,
    hint="fit the line log y = log a - b log x by least squares: slope = sum((u - mean u) "
    "(v - mean v)) / sum((u - mean u)^2) for u = log x, v = log y; then a = exp(intercept), "
    "b = -slope",
    crash_hint="x and y are 1-d numpy arrays of positive floats (at least 3 points); "
    "return the pair (coefficient, exponent)",
    slips=[
        Slip(
            f"{_REF}:fit_power_law_sign",
            "the law is y = a x^(-b): the exponent is minus the slope of log y on log x",
        ),
        Slip(
            f"{_REF}:fit_power_law_log_a",
            "the coefficient is a = exp(intercept), not the intercept log a",
        ),
        Slip(
            f"{_REF}:fit_power_law_order",
            "you returned (exponent, coefficient): return (coefficient, exponent)",
        ),
        Slip(
            f"{_REF}:fit_power_law_bases",
            "take logs and exponentials in the same base: with np.log10 the coefficient is "
            "10**intercept",
        ),
    ],
)


def check_gpt_parameters(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``gpt_parameters(config, tied=True) -> int``; see the table above."""
    GPT_PARAMETERS.check(fn, cases=cases, seed=seed)


def check_training_cost(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``training_cost(n_params, n_tokens, peak_flops, utilisation)``."""
    TRAINING_COST.check(fn, cases=cases, seed=seed)


def check_compute_optimal(fn, cases: int = 15, seed: int | None = None) -> None:
    """Check ``compute_optimal(flops, E, A, B, alpha, beta) -> (N_opt, D_opt)``."""
    COMPUTE_OPTIMAL.check(fn, cases=cases, seed=seed)


def check_fit_power_law(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``fit_power_law(x, y) -> (coefficient, exponent)``."""
    FIT_POWER_LAW.check(fn, cases=cases, seed=seed)

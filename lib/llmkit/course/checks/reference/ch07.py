"""Reference answers and known slips for lab 07 (scale). See the package docstring."""

from __future__ import annotations

import math

import numpy as np
import torch

from llmkit.gpt import GPT, GPTConfig
from llmkit.scaling import fit_power_law as _library_fit

# ------------------------------------------------------------------------ references


def gpt_parameters(config: GPTConfig, tied: bool = True) -> int:
    """Every parameter of ``GPT(config)``, counted on a model built on the ``meta``
    device (no memory; the tied lm_head counted once), plus a separate ``(V, d)``
    lm_head when ``tied=False``. The tests compare it with
    :func:`llmkit.scaling.gpt_parameter_count`."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        built = sum(p.numel() for p in GPT(config).parameters())
    return built + (0 if tied else config.vocab_size * config.d_model)


def training_cost(
    n_params: float, n_tokens: float, peak_flops: float, utilisation: float
) -> tuple[float, float]:
    """``(6 N D, 6 N D / (peak_flops * utilisation) / 3600)``."""
    flops = 6.0 * n_params * n_tokens
    return flops, flops / (peak_flops * utilisation) / 3600.0


def compute_optimal(
    flops: float, E: float, A: float, B: float, alpha: float, beta: float
) -> tuple[float, float]:
    """The minimum of ``E + A / N**alpha + B / D**beta`` under ``6 N D = flops``, in
    closed form: ``N = G (C/6)**(beta / (alpha + beta))``,
    ``G = (alpha A / (beta B))**(1 / (alpha + beta))``, ``D = C / (6 N)``. The tests
    compare it with :func:`llmkit.scaling.compute_optimal` and with a root finder."""
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n_opt = g * (flops / 6.0) ** (beta / (alpha + beta))
    return n_opt, (flops / 6.0) / n_opt


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``llmkit.scaling.fit_power_law(x, y, n_bootstrap=0)``: least squares
    of ``log y = log a - b log x``."""
    fit = _library_fit(x, y, n_bootstrap=0)
    return fit.coefficient, fit.exponent


# ------------------------------------------------------------------- gpt_parameters


def _count(
    config: GPTConfig,
    tied: bool,
    *,
    position: bool = True,
    final_ln: bool = True,
    linear_bias: bool = True,
    lm_head: bool | None = None,
) -> int:
    d, v, b = config.d_model, config.vocab_size, int(config.bias)
    block = 12 * d * d + 2 * (d + b * d) + (9 * d * b if linear_bias else 0)
    total = v * d + (config.block_size * d if position else 0) + config.n_layer * block
    total += (d + b * d) if final_ln else 0
    return total + (v * d if (not tied if lm_head is None else lm_head) else 0)


def gpt_parameters_no_position(config: GPTConfig, tied: bool = True) -> int:
    return _count(config, tied, position=False)


def gpt_parameters_no_final_ln(config: GPTConfig, tied: bool = True) -> int:
    return _count(config, tied, final_ln=False)


def gpt_parameters_no_linear_bias(config: GPTConfig, tied: bool = True) -> int:
    return _count(config, tied, linear_bias=False)


def gpt_parameters_lm_head_flipped(config: GPTConfig, tied: bool = True) -> int:
    """The lm_head counted when tied (twice) and left out when untied."""
    return _count(config, tied, lm_head=tied)


# -------------------------------------------------------------------- training_cost


def training_cost_forward_only(n_params, n_tokens, peak_flops, utilisation):  # noqa: ANN001, ANN201
    flops = 2.0 * n_params * n_tokens
    return flops, flops / (peak_flops * utilisation) / 3600.0


def training_cost_seconds(n_params, n_tokens, peak_flops, utilisation):  # noqa: ANN001, ANN201
    flops, hours = training_cost(n_params, n_tokens, peak_flops, utilisation)
    return flops, hours * 3600.0


def training_cost_peak(n_params, n_tokens, peak_flops, utilisation):  # noqa: ANN001, ANN201
    """The utilisation forgotten: the hours at peak throughput."""
    return training_cost(n_params, n_tokens, peak_flops, 1.0)


def training_cost_times_utilisation(n_params, n_tokens, peak_flops, utilisation):  # noqa: ANN001, ANN201
    flops = 6.0 * n_params * n_tokens
    return flops, flops * utilisation / peak_flops / 3600.0


# ------------------------------------------------------------------ compute_optimal


def compute_optimal_no_6(flops, E, A, B, alpha, beta):  # noqa: ANN001, ANN201, N803
    n, _ = compute_optimal(6.0 * flops, E, A, B, alpha, beta)
    return n, flops / n


def compute_optimal_swapped_exponents(flops, E, A, B, alpha, beta):  # noqa: ANN001, ANN201, N803
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n = g * (flops / 6.0) ** (alpha / (alpha + beta))
    return n, flops / (6.0 * n)


def compute_optimal_g_inverted(flops, E, A, B, alpha, beta):  # noqa: ANN001, ANN201, N803
    g = (beta * B / (alpha * A)) ** (1.0 / (alpha + beta))
    n = g * (flops / 6.0) ** (beta / (alpha + beta))
    return n, flops / (6.0 * n)


def compute_optimal_order(flops, E, A, B, alpha, beta):  # noqa: ANN001, ANN201, N803
    n, d = compute_optimal(flops, E, A, B, alpha, beta)
    return d, n


# -------------------------------------------------------------------- fit_power_law


def fit_power_law_sign(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a, b = fit_power_law(x, y)
    return a, -b


def fit_power_law_log_a(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a, b = fit_power_law(x, y)
    return math.log(a), b


def fit_power_law_order(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a, b = fit_power_law(x, y)
    return b, a


def fit_power_law_bases(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fitted with log10, the coefficient taken as exp(intercept)."""
    a, b = fit_power_law(x, y)
    return math.exp(math.log10(a)), b

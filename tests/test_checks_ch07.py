"""Lab 07's checks, what tests/test_checks.py does not cover: the slips are named;
llmkit.scaling, building a GPT and least-squares solvers are off limits; the references
agree with the library, a built model and a root finder."""

from __future__ import annotations

import math
import random
from functools import partial as P

import numpy as np
import pytest
import torch

from llmkit import scaling
from llmkit.course.checks import ch07
from llmkit.gpt import GPT
from llmkit.nn import Block

PARAMS, COST = ch07.check_gpt_parameters, ch07.check_training_cost
OPTIMAL, FIT = ch07.check_compute_optimal, ch07.check_fit_power_law


def gpt_parameters(
    config, tied=True, *, position=True, final_ln=True, linear_bias=True, flip_head=False
):
    d, v, b = config.d_model, config.vocab_size, int(config.bias)
    block = 12 * d * d + 2 * (d + b * d) + (9 * d * b if linear_bias else 0)
    total = v * d + position * config.block_size * d + config.n_layer * block
    total += final_ln * (d + b * d)
    return total + (v * d if tied == flip_head else 0)


def training_cost(n, d, peak, util, *, k=6.0, per=3600.0, rate=None):
    flops = k * n * d
    return flops, flops / (rate(peak, util) if rate else peak * util) / per


def compute_optimal(flops, E, A, B, alpha, beta, *, c=None, swap=False, g_inv=False, order=False):
    c6 = flops / 6 if c is None else c
    g = (alpha * A / (beta * B)) ** ((-1 if g_inv else 1) / (alpha + beta))
    n = g * c6 ** ((alpha if swap else beta) / (alpha + beta))
    return (c6 / n, n) if order else (n, c6 / n)


def compute_optimal_numeric(flops, E, A, B, alpha, beta):
    """The zero of the loss's slope along 6 N D = C, by a root finder: also right."""
    from scipy.optimize import brentq

    c6 = flops / 6

    def slope(log_n):  # d/d(log N) of A N^-alpha + B (C / (6N))^-beta
        return -alpha * A * math.exp(-alpha * log_n) + beta * B * (c6 / math.exp(log_n)) ** -beta

    n = math.exp(brentq(slope, -50.0, math.log(c6) + 50.0, xtol=1e-14, rtol=1e-15))
    return n, c6 / n


def fit_power_law(x, y, *, log=np.log, out=lambda a, b: (a, b)):
    u, v = log(x), log(y)
    slope = ((u - u.mean()) * (v - v.mean())).sum() / ((u - u.mean()) ** 2).sum()
    return out(float(np.exp(v.mean() - slope * u.mean())), float(-slope))


@pytest.mark.parametrize(
    ("check", "wrong", "hint"),
    [
        (PARAMS, P(gpt_parameters, position=False), "position embeddings"),
        (PARAMS, P(gpt_parameters, final_ln=False), "final LayerNorm ln_f"),
        (PARAMS, P(gpt_parameters, linear_bias=False), "every linear layer"),
        (PARAMS, P(gpt_parameters, flip_head=True), "lm_head \\*is\\* wte"),
        (COST, P(training_cost, k=2.0), "forward pass only"),
        (COST, P(training_cost, per=1.0), "you returned seconds"),
        (COST, P(training_cost, rate=lambda p, u: p), "peak_flops alone"),
        (COST, P(training_cost, rate=lambda p, u: p / u), "do not multiply"),
        (OPTIMAL, lambda c, *a: compute_optimal(c, *a, c=c), "forgot the 6"),
        (OPTIMAL, P(compute_optimal, swap=True), "exponents are swapped"),
        (OPTIMAL, P(compute_optimal, g_inv=True), "G is upside down"),
        (OPTIMAL, P(compute_optimal, order=True), "returned \\(D_opt, N_opt\\)"),
        (FIT, P(fit_power_law, out=lambda a, b: (a, -b)), "minus the slope"),
        (FIT, P(fit_power_law, out=lambda a, b: (math.log(a), b)), "not the intercept"),
        (FIT, P(fit_power_law, out=lambda a, b: (b, a)), "returned \\(exponent"),
        (FIT, P(fit_power_law, log=np.log10), "10\\*\\*intercept"),
    ],
)
def test_each_slip_is_named(check, wrong, hint):
    with pytest.raises(AssertionError, match=f"(?s)expected: .*got: .*hint: .*{hint}"):
        check(wrong, seed=0)


def on_meta(config, tied=True):  # builds the lab's GPT
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(config).parameters())


def by_blocks(config, tied=True):  # builds llmkit's blocks and counts the rest
    with torch.device("meta"):
        block = Block(config.d_model, config.n_head, bias=config.bias)
    per_block = sum(p.numel() for p in block.parameters())
    return gpt_parameters(config, tied) - 12 * config.d_model**2 + per_block


def log_log(solver):  # a line fitted to (log x, log y) by a library solver
    return lambda x, y: solver(np.log(x), np.log(y))


@pytest.mark.parametrize(
    ("check", "shortcut", "name"),
    [
        (PARAMS, on_meta, "llmkit.gpt.GPT"),
        (PARAMS, by_blocks, "llmkit.nn.Block"),
        (PARAMS, lambda c, tied=True: scaling.gpt_parameter_count(c)["total"], "llmkit.scaling"),
        (COST, lambda n, d, p, u: (scaling.training_flops(n, d), 0.0), "llmkit.scaling"),
        (OPTIMAL, lambda c, *a: scaling.compute_optimal(c), "llmkit.scaling"),
        (FIT, lambda x, y: scaling.fit_power_law(x, y).coefficient, "llmkit.scaling"),
        (FIT, log_log(lambda u, v: np.polyfit(u, v, 1)), "numpy.polyfit"),
        (FIT, log_log(lambda u, v: np.linalg.lstsq(np.stack([u, u**0], 1), v)), "numpy.linalg"),
        (FIT, log_log(lambda u, v: __import__("scipy.stats").stats.linregress(u, v)), "linregr"),
    ],
)
def test_library_and_solvers_are_off_limits(check, shortcut, name):
    with pytest.raises(AssertionError, match=f"must be written without .*{name}"):
        check(shortcut, seed=0)


def test_references_agree_with_the_library_and_a_root_finder(capsys):
    from llmkit.course.checks.reference import ch07 as ref

    OPTIMAL(compute_optimal_numeric, seed=1)  # a root finder is allowed
    assert capsys.readouterr().out.startswith("✔ compute_optimal")
    rng = random.Random(0)
    for case in [*ch07.GPT_PARAMETERS.fixed, *(ch07._random_config(rng) for _ in range(30))]:
        config, tied = case.args[0], case.kwargs["tied"]
        expected = scaling.gpt_parameter_count(config, tied)["total"]
        assert ref.gpt_parameters(config, tied) == expected == gpt_parameters(config, tied)
    for fit, p in scaling.CHINCHILLA_FITS.items():
        for c in (1e19, 5.76e23, 1e26):
            got = ref.compute_optimal(c, p.E, p.A, p.B, p.alpha, p.beta)
            assert np.allclose(got, scaling.compute_optimal(c, fit=fit), rtol=1e-12)
            assert np.allclose(got, compute_optimal_numeric(c, p.E, p.A, p.B, p.alpha, p.beta))
    x = np.array([1.0, 10.0, 100.0])
    assert np.allclose(ref.fit_power_law(x, 8.0 * x**-0.5), (8.0, 0.5))

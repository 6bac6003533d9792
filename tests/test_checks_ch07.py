"""The chapter-07 lab checks pass on correct answers and fail, with the right hint, on
the usual mistakes."""

from __future__ import annotations

import functools
import math
import random

import numpy as np
import pytest
import torch

from llmkit import scaling
from llmkit.course.checks import ch07
from llmkit.gpt import GPT, GPTConfig

# ------------------------------------------------------------------ correct answers


def gpt_parameters(
    config,
    tied=True,
    *,
    position=True,
    layernorms=True,
    final_ln=True,
    ln_bias=True,
    linear_bias=True,
    bias_always=False,
    lm_head_twice=False,
    lm_head_bias=False,
    untied_head=True,
    mlp=4,
):
    d, n, v = config.d_model, config.n_layer, config.vocab_size
    total = v * d + (config.block_size * d if position else 0)
    bias = config.bias or bias_always
    per_block = 4 * d * d + 2 * mlp * d * d
    if layernorms:
        per_block += 2 * d * (2 if bias and ln_bias else 1)
    if bias and linear_bias:
        per_block += 3 * d + d + mlp * d + d
    total += n * per_block
    if final_ln:
        total += d * (2 if bias and ln_bias else 1)
    if (not tied and untied_head) or lm_head_twice:
        total += v * d
    if lm_head_bias:
        total += v
    return total


def gpt_parameters_by_building(config, tied=True):
    """Builds the model on the meta device and counts: also right."""
    with torch.device("meta"):
        model = GPT(config)
    n = sum(p.numel() for p in model.parameters())
    return n if tied else n + config.vocab_size * config.d_model


def training_cost(n_params, n_tokens, peak_flops, utilisation, *, k=6, per=3600, util="div"):
    flops = k * n_params * n_tokens
    rate = {"div": peak_flops * utilisation, "none": peak_flops, "mul": peak_flops / utilisation}
    return flops, flops / rate[util] / per


def compute_optimal(flops, E, A, B, alpha, beta, *, slip=None):
    s = alpha + beta
    g = (alpha * A / (beta * B)) ** (1 / s)
    c6 = flops / 6
    if slip == "no6":
        c6 = flops
    if slip == "swap":
        n = g * c6 ** (alpha / s)
    elif slip == "g_inverted":
        n = g**-1 * c6 ** (beta / s)
    elif slip == "ab_swapped":
        n = (alpha * B / (beta * A)) ** (1 / s) * c6 ** (beta / s)
    else:
        n = g * c6 ** (beta / s)
    if slip == "d_no6":
        return n, flops / n
    if slip == "d_times_n":
        return n, flops / 6 / n * 1.5
    if slip == "order":
        return flops / (6 * n), n
    return n, flops / (6 * n)


def compute_optimal_numeric(flops, E, A, B, alpha, beta):
    """Finds the zero of the loss's derivative along 6 N D = C numerically: also right."""
    from scipy.optimize import brentq

    c6 = flops / 6

    def slope(log_n):  # d/d(log N) of A N^-alpha + B (C / (6N))^-beta
        n = math.exp(log_n)
        return -alpha * A * n**-alpha + beta * B * (c6 / n) ** -beta

    n = math.exp(brentq(slope, -50.0, math.log(c6) + 50.0, xtol=1e-14, rtol=1e-15))
    return n, c6 / n


def fit_power_law(x, y, *, slip=None):
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    if slip == "sign":
        return math.exp(intercept), slope
    if slip == "log_a":
        return intercept, -slope
    if slip == "order":
        return -slope, math.exp(intercept)
    if slip == "linear":
        from scipy.optimize import curve_fit

        (a, b), _ = curve_fit(
            lambda t, a, b: a * t ** (-b), x, y, p0=(math.exp(intercept), -slope), maxfev=20_000
        )
        return a, b
    if slip == "log10":
        slope, intercept = np.polyfit(np.log10(x), np.log10(y), 1)
        return math.exp(intercept), -slope
    return math.exp(intercept), -slope


def fit_power_law_lstsq(x, y):
    design = np.stack([np.ones(len(x)), np.log(x)], axis=1)
    (log_a, slope), *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    return float(np.exp(log_a)), float(-slope)


# ------------------------------------------------------------------ passing


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_checks_pass_on_correct_answers(seed, capsys):
    ch07.check_gpt_parameters(gpt_parameters, seed=seed)
    ch07.check_gpt_parameters(gpt_parameters_by_building, cases=8, seed=seed)
    ch07.check_training_cost(training_cost, seed=seed)
    ch07.check_compute_optimal(compute_optimal, seed=seed)
    ch07.check_compute_optimal(compute_optimal_numeric, seed=seed)
    ch07.check_fit_power_law(fit_power_law, seed=seed)
    ch07.check_fit_power_law(fit_power_law_lstsq, seed=seed)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(line.startswith("✔ ") for line in lines)
    assert lines[0].startswith("✔ gpt_parameters: 20 configurations match")
    assert lines[2] == "✔ training_cost: 12 training runs match llmkit.scaling.training_flops"
    assert lines[3] == "✔ compute_optimal: 15 budgets match llmkit.scaling.compute_optimal"
    assert lines[5] == "✔ fit_power_law: 12 data sets match llmkit.scaling.fit_power_law"


def test_references_agree_with_the_library():
    config = GPTConfig(vocab_size=50_257, block_size=1024, n_layer=12, n_head=12, d_model=768)
    assert ch07.reference_gpt_parameters(config) == 124_439_808
    assert ch07._built_count(config) == 124_439_808
    for fit, p in scaling.CHINCHILLA_FITS.items():
        for c in (1e19, 5.76e23, 1e26):
            got = ch07.reference_compute_optimal(c, p.E, p.A, p.B, p.alpha, p.beta)
            assert np.allclose(got, scaling.compute_optimal(c, fit=fit), rtol=1e-12)
            assert np.allclose(got, compute_optimal_numeric(c, p.E, p.A, p.B, p.alpha, p.beta))
    flops, hours = ch07.reference_training_cost(70e9, 1.4e12, 989e12, 0.4)
    assert flops == pytest.approx(5.88e23)
    assert hours == pytest.approx(5.88e23 / (989e12 * 0.4) / 3600)
    x = np.array([1.0, 10.0, 100.0])
    assert np.allclose(ch07.reference_fit_power_law(x, 8.0 * x**-0.5), (8.0, 0.5))


def test_seed_from_environment_makes_inputs_repeat(monkeypatch):
    seen = []

    def spy(x, y):
        seen.append(float(y.sum()))
        return fit_power_law(x, y)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch07.check_fit_power_law(spy)
    first, seen[:] = list(seen), []
    ch07.check_fit_power_law(spy)
    assert seen == first
    seen.clear()
    ch07.check_fit_power_law(spy, seed=6)
    assert seen != first


def test_checks_leave_the_global_generators_alone():
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(3)
    states = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    ch07.check_gpt_parameters(gpt_parameters, seed=0)
    ch07.check_fit_power_law(fit_power_law, seed=0)
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_unfinished_stub_propagates():
    def stub(*args, **kwargs):
        raise NotImplementedError("stub")

    for check in (
        ch07.check_gpt_parameters,
        ch07.check_training_cost,
        ch07.check_compute_optimal,
        ch07.check_fit_power_law,
    ):
        with pytest.raises(NotImplementedError):
            check(stub, seed=0)


def test_checks_refuse_llmkit_functions():
    def total(config, tied=True):
        return scaling.gpt_parameter_count(config, tied)["total"]

    with pytest.raises(AssertionError, match="gpt_parameters: this is llmkit's own function"):
        ch07.check_gpt_parameters(ch07.reference_gpt_parameters, seed=0)
    with pytest.raises(AssertionError, match="training_cost: this is llmkit's own"):
        ch07.check_training_cost(scaling.training_flops, seed=0)
    with pytest.raises(AssertionError, match="compute_optimal: this is llmkit's own"):
        ch07.check_compute_optimal(functools.partial(scaling.compute_optimal), seed=0)
    with pytest.raises(AssertionError, match="fit_power_law: this is llmkit's own"):
        ch07.check_fit_power_law(scaling.fit_power_law, seed=0)
    ch07.check_gpt_parameters(total, seed=0)  # calls the library inside: not seen here


def test_cases_argument_is_validated():
    with pytest.raises(ValueError, match="cases must be an int >= 5"):
        ch07.check_gpt_parameters(gpt_parameters, cases=2, seed=0)
    with pytest.raises(ValueError, match="cases must be an int >= 3"):
        ch07.check_compute_optimal(compute_optimal, cases=1, seed=0)


def test_crash_becomes_a_hint():
    def crashes(config, tied=True):
        return config.n_embd

    with pytest.raises(AssertionError, match="(?s)your function raised.*hint: .*config.d_model"):
        ch07.check_gpt_parameters(crashes, seed=0)


# ------------------------------------------------------------------ failing: parameters


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"position": False}, "position embeddings"),
        ({"layernorms": False, "final_ln": False}, "left out the LayerNorms"),
        ({"final_ln": False}, "final LayerNorm ln_f"),
        ({"layernorms": False}, "two LayerNorms of every block"),
        ({"ln_bias": False}, "d_model gains and, when config.bias, d_model biases"),
        ({"linear_bias": False}, "every linear layer has a bias"),
        ({"linear_bias": False, "ln_bias": False}, "left out the biases"),
        ({"bias_always": True}, "no biases at all"),
        ({"lm_head_twice": True}, "count that \\(vocab_size, d_model\\) matrix once"),
        ({"untied_head": False}, "separate \\(vocab_size, d_model\\) matrix"),
        ({"lm_head_bias": True}, "lm_head has no bias"),
        ({"mlp": 2}, "4 \\* d_model wide"),
        ({"mlp": 1}, "4 \\* d_model wide"),
        ({"position": False, "final_ln": False}, "position embeddings.*; and .*ln_f"),
    ],
)
def test_gpt_parameters_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)gpt_parameters: .*hint: .*{match}"):
        ch07.check_gpt_parameters(functools.partial(gpt_parameters, **slip), seed=0)


def test_gpt_parameters_types():
    def as_dict(config, tied=True):
        return scaling.gpt_parameter_count(config, tied)

    with pytest.raises(AssertionError, match="returned a dict"):
        ch07.check_gpt_parameters(as_dict, seed=0)
    with pytest.raises(AssertionError, match="returned None"):
        ch07.check_gpt_parameters(lambda config, tied=True: None, seed=0)
    with pytest.raises(AssertionError, match="whole number"):
        ch07.check_gpt_parameters(lambda c, tied=True: gpt_parameters(c, tied) + 0.5, seed=0)
    # a float that is the right whole number passes
    ch07.check_gpt_parameters(lambda c, tied=True: float(gpt_parameters(c, tied)), seed=0)


# ------------------------------------------------------------------ failing: compute


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"k": 2}, "forward pass only"),
        ({"k": 4}, "backward pass alone"),
        ({"k": 3}, "6 N D, not 3 N D"),
        ({"per": 1}, "you returned seconds"),
        ({"per": 60}, "you returned minutes"),
        ({"per": 86400}, "you returned days"),
        ({"util": "none"}, "not by peak_flops alone"),
        ({"util": "mul"}, "do not multiply by it"),
    ],
)
def test_training_cost_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)training_cost: .*hint: .*{match}"):
        ch07.check_training_cost(functools.partial(training_cost, **slip), seed=0)


def test_training_cost_shapes():
    with pytest.raises(AssertionError, match="expected a pair"):
        ch07.check_training_cost(lambda n, d, p, u: 6 * n * d, seed=0)
    with pytest.raises(AssertionError, match="return \\(flops, gpu_hours\\)"):
        ch07.check_training_cost(lambda n, d, p, u: training_cost(n, d, p, u)[::-1], seed=0)
    with pytest.raises(AssertionError, match="not finite"):
        ch07.check_training_cost(lambda n, d, p, u: (6 * n * d, math.inf), seed=0)
    ch07.check_training_cost(  # numpy scalars are numbers
        lambda n, d, p, u: tuple(np.float64(v) for v in training_cost(n, d, p, u)), seed=0
    )


# ------------------------------------------------------------------ failing: optimum


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ("no6", "you forgot the 6"),
        ("d_no6", "the 6 of 6 N D = C belongs in D_opt too"),
        ("swap", "exponents are swapped"),
        ("g_inverted", "G is upside down"),
        ("ab_swapped", "A and B are swapped"),
        ("order", "you returned \\(D_opt, N_opt\\)"),
        ("d_times_n", "not the budget"),
    ],
)
def test_compute_optimal_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)compute_optimal: .*hint: .*{match}"):
        ch07.check_compute_optimal(functools.partial(compute_optimal, slip=slip), seed=0)


def test_compute_optimal_fails_on_the_published_fits_first():
    def only_hoffmann(flops, E, A, B, alpha, beta):
        return scaling.compute_optimal(flops, "hoffmann")

    with pytest.raises(AssertionError, match='the "epoch" fit'):
        ch07.check_compute_optimal(only_hoffmann, seed=0)


# ------------------------------------------------------------------ failing: power law


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ("sign", "minus the slope"),
        ("log_a", "not the intercept log a"),
        ("order", "you returned \\(exponent, coefficient\\)"),
        ("linear", "you fitted in linear space"),
        ("log10", "10\\*\\*intercept"),
    ],
)
def test_fit_power_law_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)fit_power_law: .*hint: .*{match}"):
        ch07.check_fit_power_law(functools.partial(fit_power_law, slip=slip), seed=0)


def test_fit_power_law_must_not_modify_inputs():
    def in_place(x, y):
        np.log(x, out=x)
        np.log(y, out=y)
        slope, intercept = np.polyfit(x, y, 1)
        return math.exp(intercept), -slope

    with pytest.raises(AssertionError, match="modified x or y"):
        ch07.check_fit_power_law(in_place, seed=0)

"""Tests of llmkit.scaling: parameter/FLOP counts, power-law fits, Chinchilla (chapter 07).

Models are built on the ``meta`` device, so even BERT-large costs no memory or time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from llmkit.bert import BertConfig, BertModel
from llmkit.gpt import GPT, GPTConfig
from llmkit.scaling import (
    CHINCHILLA_FITS,
    approx_parameters,
    approximation_error,
    bert_parameter_count,
    chinchilla_loss,
    compute_optimal,
    count_parameters,
    fit_power_law,
    forward_flops_per_token,
    gpt_parameter_count,
    tokens_per_parameter,
    training_flops,
)

GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768)
GPT_CONFIGS = [
    GPT2_SMALL,
    GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, d_model=1024),
    GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, d_model=32),
    GPTConfig(vocab_size=100, block_size=16, n_layer=3, n_head=2, d_model=48, bias=False),
]
BERT_CONFIGS = [
    (BertConfig.base(), True, 109_482_240),
    (BertConfig.large(), True, 335_141_888),
    (BertConfig.base(), False, 109_482_240 - (768 * 768 + 768)),
    (
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            n_layers=2,
            n_heads=4,
            intermediate_size=37,
            max_position=20,
            type_vocab_size=3,
        ),
        True,
        None,
    ),
]
COMPONENTS = ("token_embedding", "position_embedding", "attention", "mlp", "layernorm")


def meta_gpt(config: GPTConfig, tied: bool = True) -> GPT:
    with torch.device("meta"):
        model = GPT(config)
        if not tied:
            model.lm_head.weight = nn.Parameter(torch.empty(config.vocab_size, config.d_model))
    return model


@pytest.mark.parametrize("config", GPT_CONFIGS)
@pytest.mark.parametrize("tied", [True, False])
def test_gpt_count_matches_built_model(config, tied):
    counts = gpt_parameter_count(config, tied=tied)
    assert counts["total"] == count_parameters(meta_gpt(config, tied))
    parts = (*COMPONENTS, "biases", "lm_head")
    assert sum(counts[k] for k in parts) == counts["total"]
    assert counts["lm_head"] == (0 if tied else config.vocab_size * config.d_model)


def test_gpt2_small_numbers():
    counts = gpt_parameter_count(GPT2_SMALL)
    assert counts["total"] == 124_439_808
    assert counts["non_embedding"] == 85_056_000
    assert approx_parameters(12, 768) == 84_934_656
    # the approximation misses biases and LayerNorms: -0.14 % for GPT-2 small
    assert approximation_error(GPT2_SMALL) == pytest.approx(-0.001427, abs=1e-6)


def test_gpt_non_embedding_matches_model_blocks():
    model = meta_gpt(GPT2_SMALL)
    blocks = sum(p.numel() for p in model.blocks.parameters()) + sum(
        p.numel() for p in model.ln_f.parameters()
    )
    assert gpt_parameter_count(GPT2_SMALL)["non_embedding"] == blocks


@pytest.mark.parametrize(("config", "pooler", "expected"), BERT_CONFIGS)
def test_bert_count_matches_built_model(config, pooler, expected):
    counts = bert_parameter_count(config, pooler=pooler)
    with torch.device("meta"):
        model = BertModel(config, add_pooler=pooler)
    assert counts["total"] == count_parameters(model)
    if expected is not None:
        assert counts["total"] == expected
    parts = (*COMPONENTS, "token_type_embedding", "biases", "pooler")
    assert sum(counts[k] for k in parts) == counts["total"]


def test_count_parameters_trainable_only_and_errors():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 8
    assert count_parameters(model, trainable_only=True) == 6
    with pytest.raises(TypeError, match="model"):
        count_parameters("gpt")
    with pytest.raises(TypeError, match="config"):
        gpt_parameter_count(BertConfig.base())
    with pytest.raises(TypeError, match="config"):
        bert_parameter_count(GPT2_SMALL)


def test_flops():
    assert training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    n = gpt_parameter_count(GPT2_SMALL)["non_embedding"]
    assert forward_flops_per_token(n, 12, 1024, 768) == 2 * n + 2 * 12 * 1024 * 768
    with pytest.raises(ValueError, match="n_tokens"):
        training_flops(1e9, 0)
    with pytest.raises(ValueError, match="n_ctx"):
        forward_flops_per_token(n, 12, 0, 768)
    with pytest.raises(TypeError, match="d_model"):
        approx_parameters(12, 768.0)


# ------------------------------------------------------------------------------ power laws

X = np.logspace(6, 10, 12)


def test_fit_power_law_noiseless():
    fit = fit_power_law(X, 5.0 * X**-0.3, n_bootstrap=50)
    assert fit.coefficient == pytest.approx(5.0, rel=1e-9)
    assert fit.exponent == pytest.approx(0.3, rel=1e-9)
    assert fit.offset is None and fit.offset_ci is None
    assert fit.exponent_ci[0] <= 0.3 + 1e-9 and fit.exponent_ci[1] >= 0.3 - 1e-9
    assert fit.predict(1e8) == pytest.approx(5.0 * 1e8**-0.3)
    assert fit.predict([1e6, 1e7]).shape == (2,)


def test_fit_power_law_irreducible_noiseless():
    y = 400.0 * X**-0.34 + 1.69
    fit = fit_power_law(X, y, irreducible=True, n_bootstrap=20)
    assert fit.coefficient == pytest.approx(400.0, rel=1e-4)
    assert fit.exponent == pytest.approx(0.34, rel=1e-5)
    assert fit.offset == pytest.approx(1.69, rel=1e-5)


def test_fit_power_law_noisy_intervals_contain_truth():
    rng = np.random.default_rng(1)
    y = 5.0 * X**-0.3 * np.exp(rng.normal(0, 0.02, X.shape))
    fit = fit_power_law(X, y, n_bootstrap=500, seed=0)
    assert fit.coefficient_ci[0] < 5.0 < fit.coefficient_ci[1]
    assert fit.exponent_ci[0] < 0.3 < fit.exponent_ci[1]
    assert fit.exponent == pytest.approx(0.3, abs=0.01)

    y = (400.0 * X**-0.34 + 1.69) * np.exp(rng.normal(0, 0.002, X.shape))
    fit = fit_power_law(X, y, irreducible=True, n_bootstrap=200, seed=0)
    assert fit.exponent_ci[0] < 0.34 < fit.exponent_ci[1]
    assert fit.offset_ci[0] < 1.69 < fit.offset_ci[1]
    assert fit.coefficient_ci[0] < 400.0 < fit.coefficient_ci[1]
    # deterministic given the seed
    again = fit_power_law(X, y, irreducible=True, n_bootstrap=200, seed=0)
    assert again == fit


def test_fit_power_law_irreducible_matches_curve_fit():
    """The offset fit minimises the squared log residuals: scipy's curve_fit agrees."""
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(3)
    x = np.logspace(10, 13, 15)  # a compute range like chapter 7's sweep
    y = (30.0 * x**-0.12 + 1.4) * np.exp(rng.normal(0, 0.01, x.shape))
    fit = fit_power_law(x, y, irreducible=True, n_bootstrap=0)

    def log_model(lx, log_a, b, log_e):
        return np.logaddexp(log_a - b * lx, log_e)

    (log_a, b, log_e), _ = curve_fit(
        log_model, np.log(x), np.log(y), p0=(math.log(10.0), 0.1, math.log(1.0)), maxfev=20_000
    )
    assert fit.exponent == pytest.approx(b, rel=1e-4)
    assert fit.offset == pytest.approx(math.exp(log_e), rel=1e-4)
    assert fit.coefficient == pytest.approx(math.exp(log_a), rel=1e-3)
    assert fit.exponent_ci == (fit.exponent, fit.exponent)  # no resamples, no spread


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        ([1, 2], [1, 2], {}, "3"),
        ([1, 2, 3], [1, 2], {}, "x"),
        ([1, 0, 3], [1, 2, 3], {}, "x"),
        ([1, 2, 3], [1, -2, 3], {}, "y"),
        ([1, 2, 3], [1, 2, 3], {"ci": 1.5}, "ci"),
        ([1, 2, 3], [1, 2, 3], {"n_bootstrap": -1}, "n_bootstrap"),
        ([1, 1, 2], [1, 2, 3], {"irreducible": True}, "3"),
    ],
)
def test_fit_power_law_errors(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y, **kwargs)


# ------------------------------------------------------------------------------ Chinchilla


def test_chinchilla_loss_values():
    p = CHINCHILLA_FITS["hoffmann"]
    assert chinchilla_loss(70e9, 1.4e12) == pytest.approx(
        1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28
    )
    assert (p.E, p.A, p.B, p.alpha, p.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    e = CHINCHILLA_FITS["epoch"]
    assert (e.E, e.A, e.B, e.alpha, e.beta) == (1.8172, 482.01, 2085.43, 0.3478, 0.3658)
    arr = chinchilla_loss(np.array([1e8, 1e9]), 1e10, fit="epoch")
    assert arr.shape == (2,) and arr[0] > arr[1]
    with pytest.raises(ValueError, match="fit"):
        chinchilla_loss(1e9, 1e10, fit="kaplan")
    with pytest.raises(ValueError, match="n_params"):
        chinchilla_loss(0, 1e10)
    with pytest.raises(ValueError, match="flops"):
        compute_optimal(-1.0)


@pytest.mark.parametrize("fit", ["hoffmann", "epoch"])
@pytest.mark.parametrize("flops", [1e18, 1e21, 5.76e23, 1e26])
def test_compute_optimal_matches_numerical_minimum(fit, flops):
    n_opt, d_opt = compute_optimal(flops, fit)
    assert 6 * n_opt * d_opt == pytest.approx(flops)
    res = minimize_scalar(
        lambda log_n: chinchilla_loss(math.exp(log_n), flops / (6 * math.exp(log_n)), fit),
        bounds=(math.log(1e3), math.log(flops / 6 / 1e3)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert math.exp(res.x) == pytest.approx(n_opt, rel=1e-3)
    assert chinchilla_loss(n_opt, d_opt, fit) <= res.fun + 1e-12


def test_tokens_per_parameter_at_chinchilla_budget():
    # Chinchilla: 70B params x 1.4T tokens, C ~ 5.76e23 FLOPs, 20 tokens per parameter.
    # The Hoffmann parametric fit gives N = 32.2B, D = 2.98T, 92.6 tokens/param here;
    # the Epoch refit gives N = 72.2B, D = 1.33T, 18.4 tokens/param, close to the 20:1 rule.
    assert 80 < tokens_per_parameter(5.76e23, "hoffmann") < 110
    assert 15 < tokens_per_parameter(5.76e23, "epoch") < 22

"""Scaling: parameter and FLOP counts, power-law fits and the Chinchilla loss (chapter 07).

**Counting parameters.** :func:`gpt_parameter_count` and :func:`bert_parameter_count` give
exact, itemised counts for :class:`llmkit.gpt.GPT` and :class:`llmkit.bert.BertModel`
configurations, without building a model; :func:`count_parameters` counts a built model
(shared tensors, such as GPT's tied embedding, once). The tests check that both agree.
:func:`approx_parameters` is the usual shorthand ``12 * n_layer * d_model**2`` (attention
``4 d^2`` plus MLP ``8 d^2`` weights per block; no embeddings, biases or norms), and
:func:`approximation_error` shows how far it is from the exact non-embedding count.

**Counting FLOPs** (Kaplan et al. 2020, "Scaling Laws for Neural Language Models",
Table 1): a forward pass costs about ``2 N + 2 n_layer n_ctx d_model`` FLOPs per token,
where ``N`` is the number of non-embedding parameters (a multiply-add is 2 FLOPs) and the
second term is attention over the context; training (forward + backward, the backward
costing twice the forward) costs ``6 N D`` for ``D`` tokens (:func:`training_flops`).

**Power laws.** :func:`fit_power_law` fits ``y = a * x**(-b)`` (optionally ``+ E``) and
gives bootstrap confidence intervals.

**Chinchilla.** :func:`chinchilla_loss` is the parametric loss
``L(N, D) = E + A / N**alpha + B / D**beta`` of Hoffmann et al. 2022 ("Training
Compute-Optimal Large Language Models", approach 3: ``E=1.69, A=406.4, B=410.7,
alpha=0.34, beta=0.28``) or the refit of Besiroglu et al. 2024 ("Chinchilla Scaling: A
replication attempt": ``E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658``).
:func:`compute_optimal` minimises it under ``6 N D = C`` in closed form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from llmkit import validate

if TYPE_CHECKING:
    from torch import nn

    from llmkit.bert import BertConfig
    from llmkit.gpt import GPTConfig

__all__ = [
    "CHINCHILLA_FITS",
    "ChinchillaFit",
    "PowerLawFit",
    "approx_parameters",
    "approximation_error",
    "bert_parameter_count",
    "chinchilla_loss",
    "compute_optimal",
    "count_parameters",
    "fit_power_law",
    "forward_flops_per_token",
    "gpt_parameter_count",
    "tokens_per_parameter",
    "training_flops",
]


# ------------------------------------------------------------------------- parameter counts


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of a built model, each shared tensor counted once.

    Works on the ``meta`` device too (nothing is allocated), so GPT-2 XL can be counted
    for free: ``with torch.device("meta"): model = GPT(config)``.

    Args:
        model: any ``torch.nn.Module``.
        trainable_only: count only parameters with ``requires_grad``.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # model.parameters() already de-duplicates shared tensors (GPT's wte/lm_head).
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gpt_parameter_count(config: GPTConfig, tied: bool = True) -> dict[str, int]:
    """Exact parameter count of ``GPT(config)``, itemised.

    Per block (width ``d``, MLP hidden ``4d``): attention ``qkv (d, 3d)`` and ``proj (d, d)``
    = ``4 d^2`` weights; MLP ``fc (d, 4d)`` and ``proj (4d, d)`` = ``8 d^2`` weights; two
    LayerNorm gains ``2 d``; with ``bias=True`` the biases ``3d + d + 4d + d`` (linears) and
    ``2d`` (LayerNorms). Plus the final LayerNorm (``d`` gains, ``d`` biases).

    Args:
        config: a :class:`~llmkit.gpt.GPTConfig`.
        tied: the output projection shares the token embedding (as :class:`~llmkit.gpt.GPT`
            does); ``False`` counts a separate ``(V, d)`` ``lm_head`` (no bias).

    Returns:
        ``{"token_embedding", "position_embedding", "attention", "mlp", "layernorm",
        "biases", "lm_head", "total", "non_embedding"}``. ``attention`` and ``mlp`` count
        weight matrices only, ``layernorm`` the LayerNorm gains, ``biases`` every bias
        vector (linear layers and LayerNorms); ``lm_head`` is 0 when tied. ``total`` is the
        sum of those seven; ``non_embedding`` is ``total`` minus both embeddings and the
        lm_head (Kaplan et al.'s ``N``).
    """
    from llmkit.gpt import GPTConfig

    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    validate.boolean("tied", tied)
    d, n, v = config.d_model, config.n_layer, config.vocab_size
    parts = {
        "token_embedding": v * d,
        "position_embedding": config.block_size * d,
        "attention": n * 4 * d * d,
        "mlp": n * 8 * d * d,
        "layernorm": (2 * n + 1) * d,
        "biases": (n * (3 * d + d + 4 * d + d + 2 * d) + d) if config.bias else 0,
        "lm_head": 0 if tied else v * d,
    }
    parts["total"] = sum(parts.values())
    parts["non_embedding"] = (
        parts["total"] - parts["token_embedding"] - parts["position_embedding"] - parts["lm_head"]
    )
    return parts


def bert_parameter_count(config: BertConfig, pooler: bool = True) -> dict[str, int]:
    """Exact parameter count of ``BertModel(config, add_pooler=pooler)``, itemised.

    Embeddings: word ``(V, h)``, position ``(P, h)``, segment ``(S, h)``, then a LayerNorm.
    Per layer (width ``h``, MLP hidden ``I``): attention ``4 h^2`` weights and ``4h``
    biases; MLP ``2 h I`` weights and ``I + h`` biases; two LayerNorms. The pooler is a
    ``(h, h)`` dense layer with bias.

    Returns:
        ``{"token_embedding", "position_embedding", "token_type_embedding", "attention",
        "mlp", "layernorm", "biases", "pooler", "total", "non_embedding"}``:
        ``attention``/``mlp`` weights only, ``layernorm`` the LayerNorm gains, ``biases``
        every bias of the embeddings and encoder (linears and LayerNorms), ``pooler`` its
        weight and bias (0 without pooler). ``total`` sums those eight; ``non_embedding`` is
        ``total`` minus the three embedding tables. BERT-base: 109,482,240; BERT-large:
        335,141,888 (with pooler).
    """
    from llmkit.bert import BertConfig

    if not isinstance(config, BertConfig):
        raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
    validate.boolean("pooler", pooler)
    h, n, i = config.hidden_size, config.n_layers, config.intermediate_size
    parts = {
        "token_embedding": config.vocab_size * h,
        "position_embedding": config.max_position * h,
        "token_type_embedding": config.type_vocab_size * h,
        "attention": n * 4 * h * h,
        "mlp": n * 2 * h * i,
        "layernorm": (2 * n + 1) * h,
        "biases": n * (4 * h + i + h + 2 * h) + h,
        "pooler": (h * h + h) if pooler else 0,
    }
    parts["total"] = sum(parts.values())
    parts["non_embedding"] = (
        parts["total"]
        - parts["token_embedding"]
        - parts["position_embedding"]
        - parts["token_type_embedding"]
    )
    return parts


def approx_parameters(n_layer: int, d_model: int) -> int:
    """The standard approximation ``12 * n_layer * d_model**2`` of non-embedding parameters.

    Per block: ``4 d^2`` attention weights (Q, K, V, output) and ``8 d^2`` MLP weights (two
    ``d x 4d`` matrices). It ignores biases, LayerNorms and embeddings (Kaplan et al. 2020).
    """
    n_layer = validate.positive_int("n_layer", n_layer)
    d_model = validate.positive_int("d_model", d_model)
    return 12 * n_layer * d_model**2


def approximation_error(config: GPTConfig) -> float:
    """Relative error of :func:`approx_parameters` against the exact non-embedding count.

    ``(approx - exact) / exact``: negative, since the approximation leaves out biases and
    LayerNorms (``13 d + 2 d / n_layer`` per block, per ``d``), shrinking like ``1 / d``.
    GPT-2 small: about -0.14 %.
    """
    exact = gpt_parameter_count(config)["non_embedding"]
    return (approx_parameters(config.n_layer, config.d_model) - exact) / exact


def forward_flops_per_token(
    n_params_nonembedding: int, n_layer: int, n_ctx: int, d_model: int
) -> int:
    """Forward-pass FLOPs per token, ``2 N + 2 n_layer n_ctx d_model``.

    From Kaplan et al. 2020, Table 1 (``C_forward``, with ``d_attn = d_model``): each
    non-embedding weight is used in one multiply-add (2 FLOPs) per token, and attention
    scores and the weighted sum of values add ``2 n_layer n_ctx d_attn``. Embeddings,
    nonlinearities, norms and softmax are neglected.

    Args:
        n_params_nonembedding: ``N``, non-embedding parameters (``non_embedding`` of
            :func:`gpt_parameter_count`).
        n_layer: number of layers.
        n_ctx: context length (tokens attended to).
        d_model: width (the attention width ``d_attn``).
    """
    n = validate.positive_int("n_params_nonembedding", n_params_nonembedding)
    n_layer = validate.positive_int("n_layer", n_layer)
    n_ctx = validate.positive_int("n_ctx", n_ctx)
    d_model = validate.positive_int("d_model", d_model)
    return 2 * n + 2 * n_layer * n_ctx * d_model


def training_flops(n_params: float, n_tokens: float) -> float:
    """Training compute ``C = 6 N D`` FLOPs (forward ``2ND`` + backward ``4ND``).

    Kaplan et al. 2020, section 2.1; Hoffmann et al. 2022 use the same ``C ~ 6ND``.
    """
    n = validate.positive("n_params", n_params)
    d = validate.positive("n_tokens", n_tokens)
    return 6.0 * n * d


# ------------------------------------------------------------------------------ power laws


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """A fitted power law ``y = coefficient * x**(-exponent) [+ offset]``.

    Attributes:
        coefficient: ``a``.
        exponent: ``b`` (positive for a decreasing curve).
        offset: the irreducible term ``E``, or ``None`` when not fitted.
        coefficient_ci, exponent_ci, offset_ci: ``(low, high)`` percentile bootstrap
            intervals at level ``ci`` (``offset_ci`` is ``None`` without an offset).
        ci: the confidence level.
        n_points: how many points were fitted.
    """

    coefficient: float
    exponent: float
    offset: float | None
    coefficient_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    offset_ci: tuple[float, float] | None
    ci: float
    n_points: int

    def predict(self, x: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """``coefficient * x**(-exponent) [+ offset]``; a float for a float, else an array."""
        arr = np.asarray(x, dtype=float)
        y = self.coefficient * arr ** (-self.exponent) + (self.offset or 0.0)
        return float(y) if y.ndim == 0 else y


def _fit_plain(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """Least squares of ``log y = log a - b log x``: ``(a, b)``."""
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(math.exp(intercept)), float(-slope)


def _fit_offset(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares of ``log y - log(a x^-b + E)`` over ``(log a, b, log E)``: ``(a, b, E)``.

    Start: ``E0 = min(y) / 2``, then ``(a0, b0)`` from a log-log line through ``y - E0``.
    """
    from scipy.optimize import least_squares

    lx, ly = np.log(x), np.log(y)
    e0 = 0.5 * float(np.min(y))
    a0, b0 = _fit_plain(lx, np.log(y - e0))

    def residuals(p: np.ndarray) -> np.ndarray:
        log_a, b, log_e = p
        return np.logaddexp(log_a - b * lx, log_e) - ly

    sol = least_squares(
        residuals, x0=np.array([math.log(a0), b0, math.log(e0)]), method="lm", xtol=1e-12
    )
    log_a, b, log_e = sol.x
    return float(math.exp(log_a)), float(b), float(math.exp(log_e))


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    irreducible: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> PowerLawFit:
    """Fit ``y = a * x**(-b)`` (``irreducible=True``: ``y = a * x**(-b) + E``).

    Without ``E`` this is linear least squares of ``log y`` on ``log x``. With ``E`` it is
    non-linear least squares on the log residuals ``log y - log(a x^-b + E)`` (scipy's
    ``least_squares``, parameters ``log a, b, log E`` so ``a`` and ``E`` stay positive).
    Intervals: resample the points with replacement ``n_bootstrap`` times
    (``numpy.random.default_rng(seed)``), refit, and take percentiles; resamples with too
    few distinct ``x`` (2 without ``E``, 3 with) or where the fit fails are skipped.

    Args:
        x, y: positive values of equal length, at least 3 points.
        irreducible: also fit the offset ``E > 0``.
        n_bootstrap: bootstrap resamples (>= 0; 0 gives degenerate intervals at the fit).
        seed: seed of the bootstrap generator.
        ci: confidence level in (0, 1).
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 1 or ya.ndim != 1:
        raise ValueError(f"x and y must be 1-d, got shapes {xa.shape} and {ya.shape}")
    if len(xa) != len(ya):
        raise ValueError(f"x and y must have the same length, got {len(xa)} and {len(ya)}")
    if len(xa) < 3:
        raise ValueError(f"need at least 3 points to fit, got {len(xa)}")
    for name, arr in (("x", xa), ("y", ya)):
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must hold finite values > 0, got min {arr.min()}")
    validate.boolean("irreducible", irreducible)
    validate.integer("n_bootstrap", n_bootstrap, minimum=0)
    if not isinstance(ci, float | int) or not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    min_distinct = 3 if irreducible else 2
    if len(np.unique(xa)) < min_distinct:
        raise ValueError(f"x must hold at least {min_distinct} distinct values")

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, ...]:
        if irreducible:
            return _fit_offset(xs, ys)
        return _fit_plain(np.log(xs), np.log(ys))

    best = fit(xa, ya)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(xa), size=len(xa))
        if len(np.unique(xa[idx])) < min_distinct:
            continue
        try:
            params = fit(xa[idx], ya[idx])
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        if all(math.isfinite(p) for p in params):
            samples.append(params)
    if samples:
        arr = np.array(samples)
        lo, hi = np.percentile(arr, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        intervals = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
    else:
        intervals = [(p, p) for p in best]
    return PowerLawFit(
        coefficient=best[0],
        exponent=best[1],
        offset=best[2] if irreducible else None,
        coefficient_ci=intervals[0],
        exponent_ci=intervals[1],
        offset_ci=intervals[2] if irreducible else None,
        ci=float(ci),
        n_points=len(xa),
    )


# ------------------------------------------------------------------------------ Chinchilla


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
    """Parameters of ``L(N, D) = E + A / N**alpha + B / D**beta`` (loss in nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str


CHINCHILLA_FITS: dict[str, ChinchillaFit] = {
    "hoffmann": ChinchillaFit(
        1.69, 406.4, 410.7, 0.34, 0.28, "Hoffmann et al. 2022, approach 3 (eq. 10)"
    ),
    "epoch": ChinchillaFit(
        1.8172, 482.01, 2085.43, 0.3478, 0.3658, "Besiroglu et al. 2024 (Epoch AI) refit"
    ),
}


def _get_fit(fit: str) -> ChinchillaFit:
    if fit not in CHINCHILLA_FITS:
        raise ValueError(f"fit must be one of {sorted(CHINCHILLA_FITS)}, got {fit!r}")
    return CHINCHILLA_FITS[fit]


def _positive_array(value: float | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


def chinchilla_loss(
    n_params: float | np.ndarray, n_tokens: float | np.ndarray, fit: str = "hoffmann"
) -> float | np.ndarray:
    """The parametric loss ``E + A / N**alpha + B / D**beta``.

    Args:
        n_params: ``N``, parameters (> 0); a float or an array.
        n_tokens: ``D``, training tokens (> 0); broadcast against ``n_params``.
        fit: ``"hoffmann"`` (Hoffmann et al. 2022) or ``"epoch"`` (Besiroglu et al. 2024).
    Returns:
        a float for scalar inputs, else an array of the broadcast shape.
    """
    p = _get_fit(fit)
    n = _positive_array(n_params, "n_params")
    d = _positive_array(n_tokens, "n_tokens")
    loss = p.E + p.A / n**p.alpha + p.B / d**p.beta
    return float(loss) if loss.ndim == 0 else loss


def compute_optimal(flops: float, fit: str = "hoffmann") -> tuple[float, float]:
    """``(N_opt, D_opt)`` minimising :func:`chinchilla_loss` under ``6 N D = C``.

    Substituting ``D = C / (6N)`` and setting the derivative in ``N`` to zero gives
    ``N_opt = G (C/6)**(beta / (alpha + beta))`` with
    ``G = (alpha A / (beta B))**(1 / (alpha + beta))``, and ``D_opt = (C/6) / N_opt``
    (Hoffmann et al. 2022, appendix D.2).
    """
    p = _get_fit(fit)
    c = validate.positive("flops", flops)
    g = (p.alpha * p.A / (p.beta * p.B)) ** (1.0 / (p.alpha + p.beta))
    n_opt = g * (c / 6.0) ** (p.beta / (p.alpha + p.beta))
    return n_opt, (c / 6.0) / n_opt


def tokens_per_parameter(flops: float, fit: str = "hoffmann") -> float:
    """``D_opt / N_opt`` at compute ``flops`` (it varies with ``C`` unless alpha = beta)."""
    n_opt, d_opt = compute_optimal(flops, fit)
    return d_opt / n_opt

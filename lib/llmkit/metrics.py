"""Evaluation metrics used across the course.

Chapter 01 starts the module with the language-modelling numbers:

* :func:`perplexity` -- ``exp`` of the mean negative log-likelihood (in nats): the
  size of a uniform choice that would be equally surprised. A uniform model over ``V``
  tokens has loss ``log V`` and perplexity ``V``.
* :func:`bits_per_token` -- the same loss in bits (``nll / ln 2``).
* :func:`bytes_per_token` -- a tokenizer's compression ratio (UTF-8 bytes per token).

Losses measured with different tokenizers are not comparable per token; compare
per byte (``bits_per_token / bytes_per_token`` gives bits per byte).
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["perplexity", "bits_per_token", "bytes_per_token"]


def _as_nll(nll: float | torch.Tensor, name: str = "mean_nll") -> float:
    if isinstance(nll, torch.Tensor):
        if nll.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(nll.shape)}")
        nll = nll.detach().item()
    if isinstance(nll, bool) or not isinstance(nll, numbers.Real):
        raise TypeError(f"{name} must be a number or a scalar tensor, got {type(nll).__name__}")
    nll = float(nll)
    if math.isnan(nll) or nll < 0:
        raise ValueError(f"{name} must be a mean negative log-likelihood >= 0 (nats), got {nll}")
    return nll


def perplexity(mean_nll: float | torch.Tensor) -> float:
    """``exp(mean_nll)``, for a mean negative log-likelihood in nats per token.

    >>> round(perplexity(math.log(65)), 6)
    65.0

    An infinite loss (a token given probability 0) gives ``inf``.
    """
    nll = _as_nll(mean_nll)
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


def bits_per_token(mean_nll: float | torch.Tensor) -> float:
    """The loss in bits: ``mean_nll / ln 2`` (``mean_nll`` in nats per token).

    >>> bits_per_token(math.log(2))
    1.0
    """
    return _as_nll(mean_nll) / math.log(2)


def bytes_per_token(text: str, n_tokens: int) -> float:
    """Compression ratio of a tokenizer: UTF-8 bytes of ``text`` per token.

    Args:
        text: the encoded text.
        n_tokens: how many tokens it became, ``>= 1`` (e.g. ``len(tok.encode(text))``).

    >>> bytes_per_token("héllo", 2)
    3.0
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, numbers.Integral):
        raise TypeError(f"n_tokens must be an int, got {type(n_tokens).__name__}")
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    return len(text.encode("utf-8")) / n_tokens

"""Evaluation metrics used across the course.

Chapter 01 starts the module with the language-modelling numbers:

* :func:`perplexity` -- ``exp`` of the mean negative log-likelihood (in nats): the
  size of a uniform choice that would be equally surprised. A uniform model over ``V``
  tokens has loss ``log V`` and perplexity ``V``.
* :func:`bits_per_token` -- the same loss in bits (``nll / ln 2``).
* :func:`bytes_per_token` -- a tokenizer's compression ratio (UTF-8 bytes per token).

Losses measured with different tokenizers are not comparable per token; compare
per byte (``bits_per_token / bytes_per_token`` gives bits per byte).

Chapter 05 adds the tagging metrics:

* :func:`bio_spans` -- the entities of a BIO tag sequence, with the CoNLL rules;
* :func:`span_f1` -- entity-level precision, recall and F1 (an entity counts only if its
  type and both boundaries are right), as CoNLL's ``conlleval`` computes them;
* :func:`accuracy` -- the fraction of equal labels (e.g. UPOS tags).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "perplexity",
    "bits_per_token",
    "bytes_per_token",
    "bio_spans",
    "span_f1",
    "accuracy",
]


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


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not kind:
        raise ValueError(f"tags must be 'O', 'B-<type>' or 'I-<type>', got {tag!r}")
    return prefix, kind


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one BIO-tagged sentence, as ``conlleval`` reads them.

    An entity starts at ``B-X``, or at an ``I-X`` that does not continue an entity of type
    ``X`` (after ``O`` or another type: CoNLL's lenient reading of a missing ``B``). It
    extends over the following ``I-X`` tags.

    Args:
        tags: one tag per word: ``"O"``, ``"B-<type>"`` or ``"I-<type>"``.
    Returns:
        the set of ``(type, start, end)`` with ``end`` exclusive.

    >>> sorted(bio_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]))
    [('LOC', 3, 4), ('LOC', 4, 5), ('PER', 0, 2), ('PER', 5, 6)]
    """
    spans: set[tuple[str, int, int]] = set()
    kind, start = "", -1
    for i, tag in enumerate(tags):
        prefix, k = _split_tag(tag)
        continues = prefix == "I" and k == kind and start >= 0
        if not continues and start >= 0:
            spans.add((kind, start, i))
            kind, start = "", -1
        if prefix != "O" and not continues:
            kind, start = k, i
    if start >= 0:
        spans.add((kind, start, len(tags)))
    return spans


def span_f1(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level precision, recall and F1 over a corpus of BIO-tagged sentences.

    A predicted entity is correct only when an entity of the same type spans exactly the
    same words in the gold tags (CoNLL-2003 and WNUT-17 semantics, as ``conlleval`` and
    ``seqeval``'s default mode).

    Args:
        true_tags: gold tags, one list per sentence.
        pred_tags: predicted tags, the same lengths.
    Returns:
        ``{"precision", "recall", "f1", "n_true", "n_pred", "n_correct"}``; a ratio whose
        denominator is 0 is 0.0.

    >>> span_f1([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"]
    0.0
    """
    if isinstance(true_tags, str) or isinstance(pred_tags, str):
        raise TypeError("true_tags and pred_tags must be lists of tag lists")
    if len(true_tags) != len(pred_tags):
        raise ValueError(
            f"true_tags and pred_tags must hold the same number of sentences, got "
            f"{len(true_tags)} and {len(pred_tags)}"
        )
    n_true = n_pred = n_correct = 0
    for i, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if isinstance(t, str) or isinstance(p, str):
            raise TypeError(f"sentence {i}: tags must be a list of strings, not one string")
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted tags")
        gold, pred = bio_spans(t), bio_spans(p)
        n_true += len(gold)
        n_pred += len(pred)
        n_correct += len(gold & pred)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_true": n_true,
        "n_pred": n_pred,
        "n_correct": n_correct,
    }


def accuracy(true: Sequence[Any], pred: Sequence[Any]) -> float:
    """The fraction of positions where ``pred`` equals ``true`` (flat sequences).

    >>> accuracy(["NOUN", "VERB", "DET"], ["NOUN", "NOUN", "DET"])
    0.6666666666666666
    """
    if len(true) != len(pred):
        raise ValueError(
            f"true and pred must have the same length, got {len(true)} and {len(pred)}"
        )
    if not true:
        raise ValueError("true and pred are empty: accuracy is undefined")
    return sum(a == b for a, b in zip(true, pred, strict=True)) / len(true)

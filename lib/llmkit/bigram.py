"""The bigram language model: the simplest next-token predictor (chapter 01).

A bigram model predicts the next token from the current one only:
``p(x_{t+1} | x_1..x_t) = p(x_{t+1} | x_t)``. Its parameters are one
``(vocab, vocab)`` table of logits; row ``i`` is the distribution after token ``i``.

Two ways to get the table:

* count: :func:`bigram_counts` then :meth:`BigramLM.from_counts` (add-alpha smoothed
  maximum likelihood, in closed form);
* learn it with gradient descent on the cross-entropy (:meth:`BigramLM.loss`) -- the
  same loop that trains every later model; it converges to the counted answer.

:func:`evaluate` gives the exact mean negative log-likelihood of a token stream, the
number that :func:`llmkit.metrics.perplexity` turns into a perplexity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate

__all__ = ["bigram_counts", "BigramLM", "evaluate"]


def _check_vocab_size(vocab_size: int) -> None:
    validate.positive_int("vocab_size", vocab_size)


def _as_ids(ids: torch.Tensor | Sequence[int], name: str, vocab_size: int) -> torch.Tensor:
    """A 1D int64 tensor of ids in ``[0, vocab_size)``."""
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(list(ids), dtype=torch.long)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {ids.dtype}")
    if ids.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional (seq,), got shape {tuple(ids.shape)}")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0].item()
        raise ValueError(f"{name} must lie in [0, {vocab_size}), found {bad}")
    return ids


def bigram_counts(ids: torch.Tensor | Sequence[int], vocab_size: int) -> torch.Tensor:
    """Count which token follows which.

    Args:
        ids: token ids, ``(seq,)``.
        vocab_size: ``V``; every id must lie in ``[0, V)``.
    Returns:
        counts: ``(V, V)`` int64, ``counts[i, j]`` = number of times ``j`` directly follows
        ``i``. Sums to ``seq - 1`` (0 for fewer than two tokens).

    >>> bigram_counts([0, 1, 1, 0], 2)
    tensor([[0, 1],
            [1, 1]])
    """
    _check_vocab_size(vocab_size)
    ids = _as_ids(ids, "ids", vocab_size)
    flat = ids[:-1] * vocab_size + ids[1:]  # one index per (current, next) pair
    counts = torch.bincount(flat, minlength=vocab_size * vocab_size)
    return counts.view(vocab_size, vocab_size)


class BigramLM(nn.Module):
    """A bigram language model: a ``(vocab, vocab)`` table of logits.

    ``logits[i]`` are the (unnormalised) log-probabilities of the next token after
    token ``i``. A fresh model has all-zero logits: the uniform distribution, whose
    loss is ``log(vocab)``.
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        _check_vocab_size(vocab_size)
        self.vocab_size = vocab_size
        self.logits = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    @classmethod
    def from_counts(cls, counts: torch.Tensor, alpha: float = 1.0) -> BigramLM:
        """The add-alpha smoothed maximum-likelihood model.

        ``p(j | i) = (counts[i, j] + alpha) / (counts[i].sum() + alpha * V)``, stored as
        log-probabilities (so ``softmax(logits[i]) == p(. | i)``). ``alpha = 0`` is the
        plain maximum-likelihood estimate: unseen pairs get probability 0 (logit
        ``-inf``), and a row with no counts at all falls back to uniform.

        Args:
            counts: ``(V, V)`` non-negative counts, e.g. from :func:`bigram_counts`.
            alpha: pseudo-count added to every cell, ``>= 0``.
        """
        if not isinstance(counts, torch.Tensor):
            raise TypeError(f"counts must be a torch.Tensor, got {type(counts).__name__}")
        if counts.dim() != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 1:
            raise ValueError(f"counts must have shape (V, V), got {tuple(counts.shape)}")
        validate.number("alpha", alpha, low=0.0)
        c = counts.double()
        if bool((c < 0).any()) or not bool(torch.isfinite(c).all()):
            raise ValueError("counts must be finite and non-negative")
        vocab_size = counts.shape[0]
        c = c + alpha
        totals = c.sum(dim=1, keepdim=True)
        empty = totals.squeeze(1) == 0  # only possible with alpha == 0
        c[empty] = 1.0
        totals[empty] = vocab_size
        model = cls(vocab_size)
        with torch.no_grad():
            model.logits.copy_((c / totals).log().float())
        return model

    def _check_idx(self, idx: torch.Tensor, name: str) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(idx).__name__}")
        if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name} must be an integer tensor, got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, seq), got {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            raise ValueError(
                f"{name} must lie in [0, {self.vocab_size}), found values in "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position.

        Args:
            idx: ``(batch, seq)`` token ids.
        Returns:
            logits: ``(batch, seq, vocab)``; ``logits[b, t]`` scores the token after
            ``idx[b, t]``.
        """
        self._check_idx(idx, "idx")
        return self.logits[idx.long()]

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per token) of predicting ``targets`` from ``idx``.

        Args:
            idx: ``(batch, seq)`` inputs.
            targets: ``(batch, seq)`` the next tokens (``idx`` shifted by one).
        Returns:
            a scalar tensor.
        """
        self._check_idx(targets, "targets")
        if targets.shape != idx.shape:
            raise ValueError(
                f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}"
            )
        if idx.numel() == 0:
            raise ValueError("idx must hold at least one token")
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1).long())

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations, one token at a time.

        Args:
            idx: ``(batch, seq)`` prompt ids, ``seq >= 1``.
            max_new_tokens: how many tokens to append, ``>= 0``.
            generator: a seeded ``torch.Generator`` for reproducible samples.
        Returns:
            ``(batch, seq + max_new_tokens)`` ids, the prompt first.
        """
        self._check_idx(idx, "idx")
        if idx.shape[1] < 1:
            raise ValueError("idx must hold at least one token per row (a prompt)")
        validate.integer("max_new_tokens", max_new_tokens, minimum=0)
        out = torch.empty(
            idx.shape[0], idx.shape[1] + max_new_tokens, dtype=torch.long, device=idx.device
        )
        out[:, : idx.shape[1]] = idx
        last = idx[:, -1].long()
        for t in range(idx.shape[1], out.shape[1]):
            probs = F.softmax(self.logits[last].float(), dim=-1)  # (batch, vocab)
            last = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            out[:, t] = last
        return out


@torch.no_grad()
def evaluate(model: BigramLM, ids: torch.Tensor | Sequence[int], chunk_size: int = 65536) -> float:
    """Exact mean negative log-likelihood (nats/token) of a token stream under a bigram model.

    Averages ``-log p(ids[t+1] | ids[t])`` over all ``seq - 1`` consecutive pairs,
    in chunks of ``chunk_size`` pairs to bound memory. (A bigram model only looks at
    the current token, so there is no context window to worry about.)

    Args:
        model: a :class:`BigramLM`.
        ids: ``(seq,)`` token ids, ``seq >= 2``.
    """
    if not isinstance(model, BigramLM):
        raise TypeError(f"model must be a BigramLM, got {type(model).__name__}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    ids = _as_ids(ids, "ids", model.vocab_size).to(model.logits.device)
    n = ids.numel() - 1
    if n < 1:
        raise ValueError(f"ids must hold at least 2 tokens, got {ids.numel()}")
    total = 0.0
    for start in range(0, n, chunk_size):
        x = ids[start : start + chunk_size]
        y = ids[start + 1 : start + 1 + chunk_size]
        x = x[: y.numel()]
        logits = model(x.unsqueeze(0))[0].float()  # (chunk, vocab)
        total += F.cross_entropy(logits, y, reduction="sum").item()
    return total / n

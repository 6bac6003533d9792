"""Reference answers and known slips for lab 04 (decoding). See the package docstring."""

from __future__ import annotations

import math

import torch

from llmkit.decoding import apply_temperature, filter_logits, top_k_filter, top_p_filter

_NEG_INF = float("-inf")


# ------------------------------------------------------------------------ references


def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Temperature, then top-k, then top-p, then softmax (``transformers``' order)."""
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


def beam_search_step(
    sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pruning step of :func:`llmkit.decoding.beam_search`: every candidate
    ``sums[i] + logprobs[i, v]`` of all ``n`` beams together, the ``min(B, n * V)`` best
    kept, best first, as ``(scores, parents, tokens)``."""
    n, vocab = logprobs.shape
    candidates = (sums[:, None] + logprobs).reshape(-1)
    scores, idx = torch.topk(candidates, min(beam_width, n * vocab))
    return scores, idx // vocab, idx % vocab


# ------------------------------------------------------------------- apply_temperature


def temperature_multiplies(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits * temperature


def temperature_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


# ------------------------------------------------------------------------ top_k_filter


def _kth_largest(logits: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]


def top_k_strict(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``<=`` instead of ``<``: the k-th largest itself (and its ties) removed."""
    return logits.masked_fill(logits <= _kth_largest(logits, k), _NEG_INF)


def top_k_exactly_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly k tokens (topk's indices): ties with the k-th largest split."""
    idx = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, _NEG_INF)


def top_k_zero(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Removed logits set to 0 instead of -inf."""
    return logits.masked_fill(logits < _kth_largest(logits, k), 0.0)


# ------------------------------------------------------------------------ top_p_filter


def _top_p_sorted(
    logits: torch.Tensor, p: float, shift: int, scatter: bool = True, fill: float = _NEG_INF
) -> torch.Tensor:
    """Nucleus by the mass *before* each sorted token, the removal mask shifted by
    ``shift`` places (1 is right; 0 removes the crossing token; 2 keeps one too many)."""
    sorted_probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    remove = torch.zeros_like(cumulative, dtype=torch.bool)
    if shift == 0:
        remove = cumulative > p
    else:
        remove[..., shift:] = cumulative[..., : cumulative.shape[-1] - shift] >= p
    remove[..., 0] = False
    if scatter:
        remove = remove.scatter(-1, order, remove)
    return logits.masked_fill(remove, fill)


def top_p_drops_crossing(logits: torch.Tensor, p: float) -> torch.Tensor:
    return _top_p_sorted(logits, p, shift=0)


def top_p_one_too_many(logits: torch.Tensor, p: float) -> torch.Tensor:
    return _top_p_sorted(logits, p, shift=2)


def top_p_sorted_mask(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The mask of the sorted tokens applied to the original positions."""
    return _top_p_sorted(logits, p, shift=1, scatter=False)


def top_p_zero(logits: torch.Tensor, p: float) -> torch.Tensor:
    return _top_p_sorted(logits, p, shift=1, fill=0.0)


# ---------------------------------------------------------------------- sampling_probs


def _filters(logits, top_k, top_p, order=("k", "p")):  # noqa: ANN001, ANN202
    for step in order:
        if step == "k" and top_k is not None:
            logits = top_k_filter(logits, top_k)
        if step == "p" and top_p is not None and top_p < 1:
            logits = top_p_filter(logits, top_p)
    return logits


def sampling_temperature_last(logits, temperature=1.0, top_k=None, top_p=None):  # noqa: ANN001, ANN201
    return torch.softmax(apply_temperature(_filters(logits, top_k, top_p), temperature), dim=-1)


def sampling_top_p_first(logits, temperature=1.0, top_k=None, top_p=None):  # noqa: ANN001, ANN201
    scaled = apply_temperature(logits, temperature)
    return torch.softmax(_filters(scaled, top_k, top_p, order=("p", "k")), dim=-1)


def sampling_no_temperature(logits, temperature=1.0, top_k=None, top_p=None):  # noqa: ANN001, ANN201
    return torch.softmax(_filters(logits, top_k, top_p), dim=-1)


def sampling_returns_logits(logits, temperature=1.0, top_k=None, top_p=None):  # noqa: ANN001, ANN201
    return filter_logits(logits, temperature, top_k, top_p)


# -------------------------------------------------------------------- beam_search_step


def beam_forgets_sums(sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int):  # noqa: ANN201
    return beam_search_step(torch.zeros_like(sums), logprobs, beam_width)


def beam_swapped(sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int):  # noqa: ANN201
    scores, parents, tokens = beam_search_step(sums, logprobs, beam_width)
    return scores, tokens, parents


def beam_unsorted(sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int):  # noqa: ANN201
    """The right survivors, in the order of the candidates (beam, then token)."""
    scores, parents, tokens = beam_search_step(sums, logprobs, beam_width)
    order = torch.argsort(parents * logprobs.shape[1] + tokens)
    return scores[order], parents[order], tokens[order]


def beam_per_beam(sums: torch.Tensor, logprobs: torch.Tensor, beam_width: int):  # noqa: ANN201
    """Each beam given its share of the places, ceil(B / n), instead of ranking all."""
    n, vocab = logprobs.shape
    per = min(math.ceil(beam_width / n), vocab)
    cands = []
    for i in range(n):
        top = torch.topk(logprobs[i], per)
        cands += [
            (float(sums[i] + lp), i, v)
            for lp, v in zip(top.values, top.indices.tolist(), strict=True)
        ]
    cands.sort(key=lambda c: -c[0])
    best = cands[: min(beam_width, n * vocab)]
    return (
        torch.tensor([c[0] for c in best], dtype=logprobs.dtype),
        torch.tensor([c[1] for c in best]),
        torch.tensor([c[2] for c in best]),
    )

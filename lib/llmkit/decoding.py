"""Decoding strategies: turning next-token distributions into text (chapter 04).

A language model gives, for a prefix ``x_1..x_t``, logits over the next token. Decoding
chooses which tokens to append:

* :func:`greedy` -- always the most probable next token (deterministic). It maximises
  each step, not the whole sequence: :func:`exhaustive_search` finds the truly most
  probable continuation on a short horizon, and greedy can miss it.
* :func:`beam_search` -- keeps the ``B`` best partial sequences; each step scores the
  ``B x V`` one-token extensions and prunes back to ``B``. Finished hypotheses are
  ranked by the length-normalised score ``sum_logprobs / length**length_penalty``.
* :func:`sample` -- draws the next token from the (reshaped) distribution, reshaped by
  :func:`apply_temperature`, then :func:`top_k_filter`, then :func:`top_p_filter` (the
  order Hugging Face ``transformers`` uses).
* :func:`generate` -- one entry point composing all of them.
* :func:`generate_batch` -- greedy decoding or sampling for many prompts of different
  lengths at once: left-padded into one batch, with an attention mask (:mod:`llmkit.lm`).

**The model protocol.** A model is any callable ``model(ids) -> logits`` with ``ids`` of
shape ``(batch, seq)`` and logits ``(batch, seq, vocab)``. If it also has ``new_cache()``
and ``forward_with_cache(ids, cache) -> (logits, cache)``, decoding with
``use_cache=True`` (the default) feeds the prompt once and then only the new tokens; beam
search then calls ``cache.reorder(indices)`` (``index_select`` on the batch dimension) to
follow the surviving beams. Without those methods every step recomputes the whole
sequence. The functions run under ``torch.no_grad()`` and never change the model's mode:
call ``model.eval()`` first if it has dropout.

The filters set removed entries to ``-inf`` and follow ``transformers``'
``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and ``TopPLogitsWarper`` exactly,
including how ties are treated (the tests compare them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from llmkit import validate

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "filter_logits",
    "greedy",
    "sample",
    "beam_search",
    "Hypothesis",
    "generate",
    "generate_batch",
    "sequence_logprob",
    "exhaustive_search",
    "STRATEGIES",
]

STRATEGIES = ("greedy", "sample", "beam")
_DEFAULT_BEAM_WIDTH = 4

Model = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- validation


def _check_logits(logits: Any) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(
            f"logits must have shape (..., vocab) with vocab >= 1, got {tuple(logits.shape)}"
        )


def _check_ids(ids: Any, name: str, dims: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    return validate.int_ids(name, ids, dims=dims).long()


def _check_top_p(p: Any, name: str = "p") -> float:
    p = validate.number(name, p, high=1.0)
    if not p > 0:
        raise ValueError(f"{name} must lie in (0, 1], got {p}")
    return p


def _check_eos(eos_token_id: Any) -> int | None:
    if eos_token_id is None:
        return None
    return validate.integer("eos_token_id", eos_token_id, minimum=0)


# --------------------------------------------------------------------------- filters


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by the temperature: ``softmax(logits / T)``.

    ``T < 1`` sharpens the distribution (``T -> 0`` approaches greedy, all mass on the
    argmax), ``T = 1`` leaves it unchanged, ``T > 1`` flattens it (``T -> inf``
    approaches uniform over the tokens that are not ``-inf``).

    Args:
        logits: ``(..., vocab)`` floating point.
        temperature: a finite number ``> 0``.
    Returns:
        ``(..., vocab)``, a new tensor ``logits / temperature``.

    >>> apply_temperature(torch.tensor([2.0, -1.0]), 0.5)
    tensor([ 4., -2.])
    """
    _check_logits(logits)
    t = validate.positive("temperature", temperature)
    return logits / t


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf``.

    As Hugging Face's ``TopKLogitsWarper``: every logit strictly smaller than the
    ``k``-th largest is removed, so values tied with the ``k``-th largest are all kept
    (a row can keep more than ``k`` tokens). ``k >= vocab`` keeps everything.

    Args:
        logits: ``(..., vocab)`` floating point.
        k: an int ``>= 1``.
    Returns:
        ``(..., vocab)``, a new tensor.

    >>> top_k_filter(torch.tensor([1.0, 3.0, 2.0, 3.0]), 1)
    tensor([-inf, 3., -inf, 3.])
    """
    _check_logits(logits)
    k = validate.positive_int("k", k)
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most probable tokens whose total
    probability reaches ``p``; set the others to ``-inf``.

    The algorithm is Hugging Face's ``TopPLogitsWarper``, step for step: sort each row
    in *ascending* order, take the cumulative probabilities of the sorted tokens, and
    remove those whose cumulative probability is ``<= 1 - p`` (the improbable tail whose
    mass is at most ``1 - p``). So the token whose probability crosses the ``p``
    threshold is kept. When tied logits straddle the threshold, some of them may be removed
    and others kept: ``torch.sort``'s order (not guaranteed stable) decides, exactly as in
    ``transformers`` (unlike :func:`top_k_filter`, which keeps whole tie groups). The
    ``min_tokens_to_keep`` most probable tokens are never removed. With ``p = 1`` only
    tokens whose probability underflows to exactly 0 are removed.

    Args:
        logits: ``(..., vocab)`` floating point.
        p: the probability mass to keep, in ``(0, 1]``.
        min_tokens_to_keep: an int ``>= 1``.
    Returns:
        ``(..., vocab)``, a new tensor.

    >>> probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    >>> top_p_filter(probs.log(), 0.7).exp()  # 0.5 < 0.7 <= 0.5 + 0.3: two tokens
    tensor([0.5000, 0.3000, 0.0000, 0.0000])
    """
    _check_logits(logits)
    p = _check_top_p(p)
    min_tokens_to_keep = validate.positive_int("min_tokens_to_keep", min_tokens_to_keep)
    # the same (not necessarily stable) sort call as transformers, so ties split alike
    sorted_logits, sorted_indices = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1 - p)
    sorted_remove[..., -min_tokens_to_keep:] = False
    remove = sorted_remove.scatter(-1, sorted_indices, sorted_remove)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The sampling pipeline of one step: temperature, then top-k, then top-p.

    This is the order of Hugging Face ``generate``. ``top_k=None`` and ``top_p=None``
    (or ``top_p=1``, as in ``transformers``) skip that filter.

    Args:
        logits: ``(..., vocab)`` floating point.
        temperature: ``> 0``.
        top_k: ``None`` or an int ``>= 1``.
        top_p: ``None`` or a float in ``(0, 1]``.
    Returns:
        ``(..., vocab)`` processed logits; ``softmax`` of them is the sampling
        distribution.
    """
    out = apply_temperature(logits, temperature)
    if top_k is not None:
        out = top_k_filter(out, top_k)
    if top_p is not None and _check_top_p(top_p, "top_p") < 1.0:
        out = top_p_filter(out, top_p)
    return out


# --------------------------------------------------------------------------- model access


class _NextToken:
    """Next-token logits for a growing batch of sequences, with or without a KV cache."""

    def __init__(self, model: Model, use_cache: bool) -> None:
        validate.boolean("use_cache", use_cache)
        if not callable(model):
            raise TypeError(f"model must be callable (ids -> logits), got {type(model).__name__}")
        self.model = model
        self.cached = (
            use_cache and hasattr(model, "forward_with_cache") and hasattr(model, "new_cache")
        )
        self.cache: Any = None
        self.fed = 0  # how many positions of each sequence the cache holds

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``: ``(b, t)`` full sequences so far -> float32 logits ``(b, vocab)``."""
        if self.cached:
            if self.cache is None:
                self.cache = self.model.new_cache()
            new = ids[:, self.fed :]
            logits, self.cache = self.model.forward_with_cache(new, self.cache)
            self.fed = ids.shape[1]
        else:
            logits = self.model(ids)
        if (
            not isinstance(logits, torch.Tensor)
            or logits.dim() != 3
            or logits.shape[0] != ids.shape[0]
        ):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape (batch, seq, vocab), got {got}")
        return logits[:, -1, :].float()

    def reorder(self, indices: torch.Tensor) -> None:
        """Follow beam ``indices`` (new row ``i`` continues old row ``indices[i]``)."""
        if not self.cached or self.cache is None:
            return
        if not hasattr(self.cache, "reorder"):
            raise TypeError(
                "beam search with use_cache=True needs cache.reorder(indices); "
                f"{type(self.cache).__name__} has none (pass use_cache=False)"
            )
        result = self.cache.reorder(indices)
        if result is not None:  # accept both in-place and functional reorder
            self.cache = result


def _decode(
    model: Model,
    ids: torch.Tensor,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor], torch.Tensor],
    eos_token_id: int | None,
    use_cache: bool,
) -> torch.Tensor:
    """The token-by-token loop shared by greedy decoding and sampling."""
    ids = _check_ids(ids, "ids")
    max_new_tokens = validate.integer("max_new_tokens", max_new_tokens, minimum=0)
    eos = _check_eos(eos_token_id)
    squeeze = ids.dim() == 1
    seqs = ids[None] if squeeze else ids
    step = _NextToken(model, use_cache)
    finished = torch.zeros(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    for _ in range(max_new_tokens):
        nxt = choose(step(seqs))  # (b,)
        if eos is not None:
            nxt = nxt.masked_fill(finished, eos)  # finished rows are padded with eos
            finished |= nxt == eos
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        if eos is not None and bool(finished.all()):
            break
    return seqs[0] if squeeze else seqs


@torch.no_grad()
def greedy(
    model: Model,
    ids: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Greedy decoding: append the most probable next token, ``max_new_tokens`` times.

    Ties go to the lowest token id (``argmax``). With ``eos_token_id``, a row that has
    produced it is padded with ``eos_token_id`` and decoding stops once every row has.

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)`` (see the module docstring).
        ids: prompt, ``(t,)`` or ``(b, t)``, ``t >= 1``.
        max_new_tokens: ``>= 0``.
        eos_token_id: optional end-of-sequence id.
        use_cache: feed only new tokens when the model supports a cache.
    Returns:
        ``(t + n,)`` or ``(b, t + n)``, the prompt followed by ``n <= max_new_tokens``
        tokens (``n < max_new_tokens`` only when every row has produced the EOS token).
    """
    return _decode(
        model, ids, max_new_tokens, lambda lg: lg.argmax(dim=-1), eos_token_id, use_cache
    )


@torch.no_grad()
def sample(
    model: Model,
    ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Sampling: draw each next token from ``softmax(filter_logits(logits, ...))``.

    Per step: temperature, then top-k, then top-p (:func:`filter_logits`), then one
    ``torch.multinomial`` draw per row. The same ``generator`` state gives the same
    tokens; ``generator=None`` uses torch's global RNG (then ``torch.manual_seed`` gives
    the same draws as ``transformers``' ``generate(do_sample=True)``). EOS handling as
    :func:`greedy`.

    Args:
        model, ids, max_new_tokens, eos_token_id, use_cache: as :func:`greedy`.
        temperature: ``> 0``.
        top_k: ``None`` or an int ``>= 1``.
        top_p: ``None`` or a float in ``(0, 1]``.
        generator: an optional seeded ``torch.Generator`` on the logits' device.
    Returns:
        ``(t + n,)`` or ``(b, t + n)`` ids, the prompt first.
    """
    validate.positive("temperature", temperature)
    if top_k is not None:
        validate.positive_int("top_k", top_k)
    if top_p is not None:
        _check_top_p(top_p, "top_p")

    def choose(logits: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)

    return _decode(model, ids, max_new_tokens, choose, eos_token_id, use_cache)


# --------------------------------------------------------------------------- beam search


@dataclass(frozen=True, eq=False)
class Hypothesis:
    """A finished beam-search hypothesis.

    Attributes:
        ids: ``(t + length,)`` the prompt followed by the generated tokens (ending with
            the EOS token if it finished that way).
        logprob: sum of the log-probabilities of the generated tokens.
        length: number of generated tokens.
        score: ``logprob / length**length_penalty`` (``0.0`` when ``length == 0``).
    """

    ids: torch.Tensor
    logprob: float
    length: int
    score: float


@torch.no_grad()
def beam_search(
    model: Model,
    prompt_ids: torch.Tensor,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    eos_token_id: int | None = None,
    return_all: bool = False,
    use_cache: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, list[Hypothesis]]:
    """Beam search for one prompt.

    Start from the prompt alone. Each step scores every one-token extension of the live
    beams (``B x V`` candidates, each with the running sum of log-probabilities), ranks
    them and keeps the best ``2B`` (as ``transformers`` does):

    * a candidate that ends with ``eos_token_id`` and ranks among the first ``B`` becomes
      a finished hypothesis; at step ``max_new_tokens`` the first ``B`` candidates all
      finish;
    * the best ``B`` candidates that did not end with EOS are the next live beams.

    Only a beam's own best extensions can survive the ranking, so ranking all ``B x V``
    is the same as ranking each beam's top ``B`` (the textbook ``B**2`` candidates; top
    ``2B`` with an EOS token). Zero-probability candidates are dropped.

    A finished hypothesis with ``length`` generated tokens (EOS included) is ranked by
    ``score = sum_logprobs / length**length_penalty``, Hugging Face's formula with the
    length of the generated part. ``length_penalty > 0`` favours longer hypotheses,
    ``0`` ranks by the raw sum (which favours short ones), ``< 0`` favours shorter ones.
    Without an EOS token every hypothesis has ``max_new_tokens`` tokens, so the result is
    the beam with the largest sum of log-probabilities, whatever the length penalty.

    Search stops early when ``B`` hypotheses have finished and no live beam can still
    beat the worst of the best ``B`` (bounding its best possible score by assuming no
    further loss: ``s / max_new_tokens**lp`` for ``lp > 0``, ``s / (length + 1)**lp``
    otherwise). The bound never underestimates, so stopping never changes the best ``B``;
    this is the behaviour of ``transformers`` with ``early_stopping="never"`` (its default
    ``early_stopping=False`` uses a heuristic bound and can stop sooner).

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)``; with ``use_cache`` and a cached
            model, its cache must have ``reorder(indices)``.
        prompt_ids: ``(t,)``, ``t >= 1``.
        beam_width: ``B >= 1``; ``B = 1`` is greedy decoding.
        max_new_tokens: ``>= 0``.
        length_penalty: the exponent ``lp`` above.
        eos_token_id: optional end-of-sequence id.
        return_all: also return every finished hypothesis.
        use_cache: feed only new tokens when the model supports a cache.
    Returns:
        the best sequence ``(t + n,)`` (prompt followed by the generated tokens), or with
        ``return_all=True`` a pair ``(best, hypotheses)``: all finished hypotheses, best
        score first (ties keep the order in which they finished). With
        ``max_new_tokens == 0`` the single hypothesis is the prompt, score ``0.0``.
    """
    prompt = _check_ids(prompt_ids, "prompt_ids", dims=(1,))
    beam_width = validate.positive_int("beam_width", beam_width)
    max_new_tokens = validate.integer("max_new_tokens", max_new_tokens, minimum=0)
    lp = validate.number("length_penalty", length_penalty)
    eos = _check_eos(eos_token_id)
    validate.boolean("return_all", return_all)

    finished: list[Hypothesis] = []
    if max_new_tokens == 0:
        finished.append(Hypothesis(prompt.clone(), 0.0, 0, 0.0))
    step = _NextToken(model, use_cache)
    seqs = prompt[None]  # (live, t): live beams
    sums = torch.zeros(1, device=prompt.device)  # (live,) summed log-probs, float32
    for i in range(max_new_tokens):
        length = i + 1
        logp = F.log_softmax(step(seqs), dim=-1)  # (live, V)
        vocab = logp.shape[-1]
        candidates = (sums[:, None] + logp).reshape(-1)  # (live * V,)
        n_keep = min(2 * beam_width, candidates.numel())
        top_sums, top_idx = torch.topk(candidates, n_keep)
        parents = (top_idx // vocab).tolist()
        tokens = (top_idx % vocab).tolist()
        last = length == max_new_tokens
        keep: list[int] = []
        for rank, s in enumerate(top_sums.tolist()):
            if s == -math.inf:  # probability 0: neither a hypothesis nor a beam
                break
            if last or tokens[rank] == eos:
                if rank < beam_width:
                    ids = torch.cat([seqs[parents[rank]], top_idx.new_tensor([tokens[rank]])])
                    finished.append(Hypothesis(ids, s, length, s / length**lp))
            elif len(keep) < beam_width:
                keep.append(rank)
        if last or not keep:
            break
        keep_t = torch.tensor(keep, device=top_idx.device)
        parent_t = torch.tensor([parents[r] for r in keep], device=top_idx.device)
        token_t = torch.tensor([tokens[r] for r in keep], device=top_idx.device)
        seqs = torch.cat([seqs[parent_t], token_t[:, None]], dim=1)
        sums = top_sums[keep_t]
        step.reorder(parent_t)
        if len(finished) >= beam_width:
            worst_kept = sorted((h.score for h in finished), reverse=True)[beam_width - 1]
            best_sum = float(sums[0])
            bound_len = max_new_tokens if lp > 0 else length + 1
            if best_sum / bound_len**lp <= worst_kept:
                break
    finished.sort(key=lambda h: h.score, reverse=True)  # stable
    best = finished[0].ids
    return (best, finished) if return_all else best


# --------------------------------------------------------------------------- entry point


@torch.no_grad()
def generate(
    model: Model,
    ids: torch.Tensor,
    max_new_tokens: int,
    strategy: str = "greedy",
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    beam_width: int | None = None,
    length_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Generate continuations with one of :data:`STRATEGIES`.

    * ``"greedy"``: :func:`greedy`.
    * ``"sample"``: :func:`sample` with ``temperature``, ``top_k``, ``top_p``,
      ``generator``.
    * ``"beam"``: :func:`beam_search` with ``beam_width`` (default 4) and
      ``length_penalty``, row by row for a batch.

    Options that belong to another strategy raise a ``ValueError`` instead of being
    silently ignored.

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)`` (see the module docstring).
        ids: prompt ``(t,)`` or ``(b, t)``.
        max_new_tokens: ``>= 0``.
    Returns:
        ``(t + n,)`` or ``(b, t + n)`` ids, the prompt first. With ``eos_token_id``,
        rows that finished early are padded with ``eos_token_id``.
    """
    validate.one_of("strategy", strategy, STRATEGIES)
    sampling = {
        "temperature": temperature != 1.0,
        "top_k": top_k is not None,
        "top_p": top_p is not None,
        "generator": generator is not None,
    }
    beam = {"beam_width": beam_width is not None, "length_penalty": length_penalty != 1.0}
    for options, owner in ((sampling, "sample"), (beam, "beam")):
        if strategy != owner:
            used = [name for name, set_ in options.items() if set_]
            if used:
                raise ValueError(
                    f"{', '.join(used)} can only be used with strategy={owner!r}, "
                    f"got strategy={strategy!r}"
                )
    if strategy == "greedy":
        return greedy(model, ids, max_new_tokens, eos_token_id=eos_token_id, use_cache=use_cache)
    if strategy == "sample":
        return sample(
            model,
            ids,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            eos_token_id=eos_token_id,
            use_cache=use_cache,
        )
    ids = _check_ids(ids, "ids")
    width = _DEFAULT_BEAM_WIDTH if beam_width is None else beam_width
    rows = ids[None] if ids.dim() == 1 else ids
    outs = [
        beam_search(
            model,
            row,
            width,
            max_new_tokens,
            length_penalty=length_penalty,
            eos_token_id=eos_token_id,
            use_cache=use_cache,
        )
        for row in rows
    ]
    if ids.dim() == 1:
        return outs[0]
    longest = max(o.shape[0] for o in outs)
    pad = 0 if eos_token_id is None else eos_token_id  # unequal lengths only come from EOS
    return torch.stack([F.pad(o, (0, longest - o.shape[0]), value=pad) for o in outs])


@torch.no_grad()
def generate_batch(
    model: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    strategy: str = "greedy",
    *,
    eos_token_id: int | None = None,
    pad_id: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Continue many prompts of different lengths in one batch (greedy or sampling).

    The prompts are *left*-padded with ``pad_id`` to the longest one, so that every row's
    last token sits in the last column, and an attention mask marks the padding
    (``[pad, pad, a, b]`` -> ``[0, 0, 1, 1]``). The model never attends to padding and counts
    positions over real tokens only (:mod:`llmkit.lm`), so each row is decoded as it would be
    alone. The prompt goes through the model once; then each step feeds one token per row
    through the KV cache and appends one column to the mask. A row stops when it produces
    ``eos_token_id``; it then leaves the batch (its cache rows are dropped), and decoding
    stops when every row has stopped.

    **Greedy** (``strategy="greedy"``) gives each row the tokens that
    :func:`generate` gives that prompt alone, up to floating-point rounding (the batched
    matrix products add in another order; in float32 a near-tie between two tokens can
    rarely flip; in float64 the tests find them equal).

    **Sampling** (``strategy="sample"``): each step filters the logits as :func:`sample`
    does (:func:`filter_logits`: temperature, top-k, top-p) and makes *one*
    ``torch.multinomial`` call over the rows still running, in prompt order, from
    ``generator`` (``None``: torch's global generator). What is reproducible: the same
    model, prompts (same order), options and generator state give the same tokens; and a
    batch of one prompt gives the tokens of :func:`generate` with ``strategy="sample"`` and
    the same generator state. What is not: a row's tokens depend on the other prompts of the
    batch through the shared generator (which rows are still running at each step decides
    which random numbers each row receives), so the same prompt sampled in another batch,
    or at another place in the batch, gets other tokens.

    **The context window.** The model sees the longest prompt followed by the new tokens
    fed back (the last token is never fed), ``max(len(p)) + max_new_tokens - 1`` positions:
    more than ``model.config.block_size`` raises a ``ValueError`` (a padded batch is not
    cropped, unlike :func:`generate`).

    The model is put in evaluation mode for the call (and restored afterwards).

    Args:
        model: a :class:`llmkit.lm.CausalLM` (:class:`~llmkit.gpt.GPT`,
            :class:`~llmkit.llama.Llama`): ``forward_with_cache(ids, cache,
            attention_mask)``.
        prompts: a non-empty list of prompts, each a non-empty list of token ids.
        max_new_tokens: ``>= 0`` tokens per row at most.
        strategy: ``"greedy"`` or ``"sample"``.
        eos_token_id: optional end-of-sequence id: a row stops after producing it.
        pad_id: the id written into padding positions, in ``[0, vocab_size)`` (masked: any
            value gives the same result).
        temperature, top_k, top_p, generator: sampling options, as :func:`sample` (an error
            with ``strategy="greedy"``).
    Returns:
        one list per prompt, in order: its new tokens only, ``max_new_tokens`` of them, or
        fewer when the row produced ``eos_token_id`` (which is then its last token).
    """
    # a CausalLM, checked by its interface (llmkit.lm imports this module: no import back)
    if not (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "forward_with_cache")
        and hasattr(model, "new_cache")
        and hasattr(model, "config")
    ):
        raise TypeError(
            f"model must be a llmkit.lm.CausalLM (GPT, Llama), got {type(model).__name__}"
        )
    validate.one_of("strategy", strategy, ("greedy", "sample"))
    max_new_tokens = validate.integer("max_new_tokens", max_new_tokens, minimum=0)
    eos = _check_eos(eos_token_id)
    vocab = model.config.vocab_size
    pad_id = validate.integer("pad_id", pad_id, minimum=0)
    if pad_id >= vocab:
        raise ValueError(f"pad_id must lie in [0, {vocab}) (vocab_size), got {pad_id}")
    if strategy == "sample":
        validate.positive("temperature", temperature)
        if top_k is not None:
            validate.positive_int("top_k", top_k)
        if top_p is not None:
            _check_top_p(top_p, "top_p")
    else:
        used = [
            name
            for name, set_ in (
                ("temperature", temperature != 1.0),
                ("top_k", top_k is not None),
                ("top_p", top_p is not None),
                ("generator", generator is not None),
            )
            if set_
        ]
        if used:
            raise ValueError(
                f"{', '.join(used)} can only be used with strategy='sample', "
                f"got strategy={strategy!r}"
            )
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of token-id lists, got {prompts!r}")
    for i, p in enumerate(prompts):
        if not isinstance(p, list | tuple) or not p:
            raise ValueError(f"prompts[{i}] must be a non-empty list of token ids, got {p!r}")
        if not all(isinstance(tok, int) and 0 <= tok < vocab for tok in p):
            raise ValueError(f"prompts[{i}] must hold ints in [0, {vocab}) (vocab_size), got {p}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens - 1 > model.config.block_size:
        raise ValueError(
            f"the longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) - 1 "
            f"exceeds block_size={model.config.block_size}; a padded batch is not cropped "
            "(shorten the prompts or generate fewer tokens)"
        )
    new: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return new

    device = next(model.parameters()).device
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for i, p in enumerate(prompts):  # left padding: the prompt ends in the last column
        ids[i, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, longest - len(p) :] = True
    ids, mask = ids.to(device), mask.to(device)

    def choose(logits: torch.Tensor) -> torch.Tensor:  # (rows, V) float32 -> (rows,)
        if strategy == "greedy":
            return logits.argmax(dim=-1)
        probs = F.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)

    rows = list(range(len(prompts)))  # the prompts still running, in order
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache()
        feed = ids  # what goes through the model next: the prompts, then one token per row
        for step in range(max_new_tokens):
            logits, cache = model.forward_with_cache(feed, cache, attention_mask=mask)
            tokens = choose(logits[:, -1, :].float()).tolist()
            for row, token in zip(rows, tokens, strict=True):
                new[row].append(token)
            if step == max_new_tokens - 1:
                break
            running = [j for j, token in enumerate(tokens) if token != eos]
            if not running:
                break
            if len(running) < len(rows):  # drop the rows that stopped, from cache and mask
                keep = torch.tensor(running, device=device)
                cache.reorder(keep)
                mask = mask.index_select(0, keep)
                rows = [rows[j] for j in running]
                tokens = [tokens[j] for j in running]
            feed = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]  # (rows, 1)
            mask = F.pad(mask, (0, 1), value=True)  # the new tokens are real
    finally:
        model.train(was_training)
    return new


# --------------------------------------------------------------------------- analysis helpers


@torch.no_grad()
def sequence_logprob(model: Model, ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Log-probability of the continuation ``ids[prompt_len:]`` given ``ids[:prompt_len]``.

    ``sum_{t >= prompt_len} log p(ids[t] | ids[:t])``, from one forward pass.

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)``.
        ids: ``(t,)`` or ``(b, t)``.
        prompt_len: ``1 <= prompt_len <= t``.
    Returns:
        float32, shape ``()`` for 1-D ``ids`` or ``(b,)``; ``0`` for an empty continuation.

    >>> table = torch.tensor([[0.0, 0.0], [0.0, 0.0]])  # uniform over 2 tokens
    >>> model = lambda ids: table[ids]
    >>> round(float(sequence_logprob(model, torch.tensor([0, 1, 1]), 1)), 4)  # 2 * log 0.5
    -1.3863
    """
    ids = _check_ids(ids, "ids")
    squeeze = ids.dim() == 1
    seqs = ids[None] if squeeze else ids
    prompt_len = validate.positive_int("prompt_len", prompt_len)
    if prompt_len > seqs.shape[1]:
        raise ValueError(
            f"prompt_len must be <= the sequence length {seqs.shape[1]}, got {prompt_len}"
        )
    if prompt_len == seqs.shape[1]:
        out = torch.zeros(seqs.shape[0], device=seqs.device)
    else:
        logits = model(seqs[:, :-1]).float()  # (b, t - 1, V): position i predicts i + 1
        logp = F.log_softmax(logits[:, prompt_len - 1 :], dim=-1)
        targets = seqs[:, prompt_len:]
        out = logp.gather(-1, targets[..., None]).squeeze(-1).sum(dim=-1)
    return out[0] if squeeze else out


@torch.no_grad()
def exhaustive_search(
    model: Model,
    prompt_ids: torch.Tensor,
    num_tokens: int,
    max_sequences: int = 1_000_000,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, float]:
    """The most probable continuation of exactly ``num_tokens`` tokens, by brute force.

    Scores all ``V**num_tokens`` continuations (level by level, so the model runs on
    ``1 + V + ... + V**(num_tokens - 1)`` prefixes) and returns the best: the answer
    greedy decoding and beam search approximate. Ties go to the lexicographically
    smallest continuation.

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)``.
        prompt_ids: ``(t,)``, ``t >= 1``.
        num_tokens: ``>= 0``.
        max_sequences: refuse (``ValueError``) when ``V**num_tokens`` exceeds this.
        batch_size: prefixes per forward pass.
    Returns:
        ``(best_ids, logprob)``: ``(t + num_tokens,)`` ids, the prompt first, and the
        continuation's total log-probability.
    """
    prompt = _check_ids(prompt_ids, "prompt_ids", dims=(1,))
    num_tokens = validate.integer("num_tokens", num_tokens, minimum=0)
    max_sequences = validate.positive_int("max_sequences", max_sequences)
    batch_size = validate.positive_int("batch_size", batch_size)
    prefixes = prompt[None]  # (n, t + level)
    sums = torch.zeros(1, device=prompt.device)  # (n,)
    for level in range(num_tokens):
        parts = [
            model(prefixes[j : j + batch_size])[:, -1, :].float()
            for j in range(0, prefixes.shape[0], batch_size)
        ]
        logp = F.log_softmax(torch.cat(parts), dim=-1)  # (n, V)
        vocab = logp.shape[-1]
        if level == 0 and vocab**num_tokens > max_sequences:
            raise ValueError(
                f"exhaustive search over {vocab}**{num_tokens} = {vocab**num_tokens} sequences "
                f"exceeds max_sequences={max_sequences}"
            )
        sums = (sums[:, None] + logp).reshape(-1)  # (n * V,), row-major: prefix, then token
        if level == num_tokens - 1:  # the last level: pick the best without building it
            best = int(sums.argmax())
            token = prefixes.new_tensor([best % vocab])
            return torch.cat([prefixes[best // vocab], token]), float(sums[best])
        tokens = torch.arange(vocab, device=prompt.device).repeat(prefixes.shape[0])
        prefixes = torch.cat([prefixes.repeat_interleave(vocab, dim=0), tokens[:, None]], dim=1)
    return prompt.clone(), 0.0

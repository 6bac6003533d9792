"""Check functions for the chapter-06 lab ("Encoder-decoder and translation").

One function per exercise. Each calls the student's function on fixed edge cases and
seeded random inputs, compares with :mod:`llmkit.seq2seq` (and
:class:`llmkit.nn.CrossAttention`), prints one verdict line via
:func:`~llmkit.course.checks.passed` on success and raises ``AssertionError`` on failure:
its first line says what is wrong, then the input, and a ``hint:`` line what to look at.
When the wrong answer matches a common mistake (the padding mask forgotten or inverted,
keys and values taken from ``x``, no ``1/sqrt(head_dim)``, a causal mask where none
belongs, decoding that does not stop at ``<eos>``, one token too many or too few), the
hint names it. A ``NotImplementedError`` from an unfinished stub is let through (the
grader counts it as a failure).

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it, so
  regrading gives the same score), else fresh inputs on every run; see
  :mod:`llmkit.course.checks`. The random models are built under
  :func:`torch.random.fork_rng`, so a check leaves torch's global generator as it was.
- **The library is not an answer**: each check refuses ``llmkit``'s own function.
- Tensors are ``float64``; values are compared with ``rtol = atol = 1e-5``, so an answer
  computed in ``float32`` also passes.

==============================  =======================================================
check                           student's function
==============================  =======================================================
``check_pad_sequences``         ``pad_sequences(seqs: list[list[int]], pad_id)``
                                ``-> (ids (n, L) long, mask (n, L) bool)``
``check_cross_attention``       ``cross_attention(x (b, t, D), memory (b, s, D),``
                                ``memory_mask (b, s) | None, params, n_heads)``
                                ``-> (b, t, D)``, compared with
                                :class:`llmkit.nn.CrossAttention` holding ``params``
``check_greedy_translate``      ``greedy_translate(model, src_ids, bos_id, eos_id,``
                                ``max_new_tokens, src_mask=None) -> list[list[int]]``
                                (``list[int]`` for one source), compared with
                                ``llmkit.seq2seq.translate(strategy="greedy")``
==============================  =======================================================

``check_greedy_translate`` hands the student's function a wrapped
:class:`~llmkit.seq2seq.Seq2Seq` that counts the calls of ``encode`` and ``decode``: the
encoder must run once, and the decoder at most once per generated token, so a loop that
re-encodes the source at every step, or goes on after every row has produced ``<eos>``,
is caught even though its tokens are right.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import nn

from llmkit import decoding
from llmkit.course.checks import call_student, check_cases, check_rng, passed, reject_library
from llmkit.course.checks import failure as _fail
from llmkit.course.checks import require_result as _require_result
from llmkit.nn import CrossAttention
from llmkit.seq2seq import Seq2Seq, Seq2SeqConfig
from llmkit.seq2seq import pad_sequences as _ref_pad_sequences
from llmkit.seq2seq import translate as _ref_translate

__all__ = [
    "check_pad_sequences",
    "check_cross_attention",
    "check_greedy_translate",
    "reference_cross_attention",
    "reference_greedy_translate",
]

RTOL = 1e-5
ATOL = 1e-5


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


_CRASH_HINTS = {
    "pad_sequences": "seqs is a list of n lists of ints of different lengths; build an "
    "(n, longest) tensor filled with pad_id and copy each list into the start of its row",
    "cross_attention": "q comes from x (b, t, D) through q_proj; k and v from memory "
    "(b, s, D) through kv_proj; memory_mask (b, s) becomes (b, 1, 1, s) to broadcast over "
    "the heads and the queries of the scores (b, h, t, s)",
    "greedy_translate": "model.encode(src_ids (b, s), src_mask) -> memory (b, s, D) once; "
    "then model.decode(tgt (b, t), memory, src_mask) -> logits (b, t, V) per step; a "
    "single source (s,) becomes a batch of one with src_ids[None]; the decoder takes at "
    "most max_len positions, so do not call it again after the last new token",
}


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args, hint=_CRASH_HINTS[name], **kwargs)


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    return bool(
        torch.allclose(a.detach().double(), b.double(), rtol=RTOL, atol=ATOL, equal_nan=True)
    )


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.detach().double() - b.double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def _short(x: Any, n: int = 200) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 5] + " ...]"


# --------------------------------------------------------------------------------------
# exercise 1: padding a batch of sources, and its mask
# --------------------------------------------------------------------------------------


def _pad_cases(rng: random.Random, cases: int) -> list[tuple[list[list[int]], int]]:
    fixed = [
        ([[5, 6, 7], [8]], 0),  # the docstring's example
        ([[4]], 0),  # one sequence of one token
        ([[3, 4], [5, 6]], 9),  # no padding at all; pad_id is not 0
        ([[7], [3, 4, 5, 6], [8, 9]], 2),
    ]
    check_cases(cases, len(fixed))
    out = list(fixed)
    while len(out) < cases:
        pad = rng.randint(0, 20)
        lengths = [rng.randint(1, 8) for _ in range(rng.randint(1, 6))]
        tokens = [v for v in range(31) if v != pad]  # pad_id never occurs in a sequence
        out.append(([[rng.choice(tokens) for _ in range(n)] for n in lengths], pad))
    return out


def check_pad_sequences(
    fn: Callable[[list[list[int]], int], Any], cases: int = 20, seed: int | None = None
) -> None:
    """Check ``fn(seqs, pad_id) -> (ids, mask)`` against
    :func:`llmkit.seq2seq.pad_sequences`: ``ids (n, longest)`` long, right-padded with
    ``pad_id``; ``mask (n, longest)`` bool, ``True`` = real token."""
    name = "pad_sequences"
    reject_library(name, fn, _ref_pad_sequences)
    rng = check_rng(seed)
    inputs = _pad_cases(rng, cases)
    for seqs, pad in inputs:
        exp_ids, exp_mask = _ref_pad_sequences(seqs, pad)
        shown = f"seqs={seqs}, pad_id={pad}"
        given = [list(s) for s in seqs]
        got = _call(fn, name, shown, given, pad)
        if given != seqs:
            raise _fail(
                name,
                shown,
                "your function modified the input lists",
                "build new rows (e.g. s + [pad_id] * k, or a tensor filled with pad_id) "
                "instead of appending to the caller's lists",
            )
        _require_result(got, name, shown)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise _fail(
                name,
                shown,
                f"expected a pair (ids, mask), got {type(got).__name__}",
                "return both tensors: `return ids, mask`",
            )
        ids, mask = got
        if not isinstance(ids, torch.Tensor) or not isinstance(mask, torch.Tensor):
            raise _fail(
                name,
                shown,
                f"expected two tensors, got ({type(ids).__name__}, {type(mask).__name__})",
                "return torch tensors: ids for the embedding, mask for the attention",
            )
        n, longest = exp_ids.shape
        if tuple(ids.shape) != (n, longest) or tuple(mask.shape) != (n, longest):
            hint = "one row per sequence, as long as the longest sequence in the batch"
            if ids.dim() == 2 and ids.shape[0] == n and ids.shape[1] > longest:
                hint = (
                    "pad to the longest sequence of *this* batch, not to a fixed length: "
                    "every column of padding costs attention work for nothing"
                )
            elif ids.dim() == 2 and tuple(ids.shape) == (longest, n):
                hint = "rows are sequences: the shape is (number of sequences, longest)"
            raise _fail(
                name,
                shown,
                f"ids have shape {tuple(ids.shape)} and mask {tuple(mask.shape)}, expected "
                f"{(n, longest)} for both",
                hint,
            )
        if ids.dtype != torch.long:
            raise _fail(
                name,
                shown,
                f"ids have dtype {ids.dtype}",
                "token ids index the embedding: make them torch.long (int64)",
            )
        if mask.dtype != torch.bool:
            raise _fail(
                name,
                shown,
                f"the mask has dtype {mask.dtype}",
                "return a bool mask (True = real token, False = padding); attention uses it "
                "with masked_fill(~mask, -inf), and ~ of an integer tensor is not 'not'",
            )
        if not torch.equal(ids, exp_ids):
            left = torch.stack(
                [torch.cat([torch.full((longest - len(s),), pad), torch.tensor(s)]) for s in seqs]
            )
            if torch.equal(ids, left):
                hint = (
                    "pad on the right (the tokens first, then pad_id): the encoder's positions "
                    "count from the first token, so a right-padded source is encoded exactly "
                    "like the same source alone"
                )
            elif torch.equal(ids[exp_mask], exp_ids[exp_mask]):
                hint = f"fill the padding with pad_id (= {pad}), not with another value"
            else:
                hint = "row i holds seqs[i] from column 0 on, then pad_id up to the longest"
            raise _fail(name, shown, f"wrong ids {ids.tolist()}, expected {exp_ids.tolist()}", hint)
        if not torch.equal(mask, exp_mask):
            if torch.equal(mask, ~exp_mask):
                hint = (
                    "True marks a real token and False the padding, llmkit's convention "
                    "(like SDPA's: True = may attend); PyTorch's nn.MultiheadAttention "
                    "key_padding_mask is the opposite"
                )
            else:
                hint = "mask[i, j] is True exactly when j < len(seqs[i])"
            raise _fail(
                name,
                shown,
                f"wrong mask {mask.int().tolist()}, expected {exp_mask.int().tolist()}",
                hint,
            )
    passed(name, f"{len(inputs)} batches match llmkit.seq2seq.pad_sequences")


# --------------------------------------------------------------------------------------
# exercise 2: cross-attention
# --------------------------------------------------------------------------------------


def _module_with(params: dict[str, torch.Tensor], n_heads: int) -> CrossAttention:
    d_model = params["proj.weight"].shape[0]
    module = CrossAttention(d_model, n_heads, impl="manual").to(params["proj.weight"].dtype)
    module.load_state_dict(params)
    return module.eval()


@torch.no_grad()
def reference_cross_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    memory_mask: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    n_heads: int,
) -> torch.Tensor:
    """Multi-head cross-attention with the weights ``params`` (a
    :class:`llmkit.nn.CrossAttention` state dict), computed by that module:
    ``x (b, t, D)``, ``memory (b, s, D)``, ``memory_mask (b, s)`` -> ``(b, t, D)``."""
    return _module_with(params, n_heads)(x, memory, memory_mask)


def _cross_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    mask: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    n_heads: int,
    *,
    queries: str = "x",
    keys: str = "memory",
    scale: str = "head",
    masking: str = "keys",
    causal: bool = False,
    layout: str = "two h d",
    swap_kv: bool = False,
    heads: str = "h d",
    proj: bool = True,
    softmax_dim: int = -1,
) -> torch.Tensor:
    """Cross-attention written out; the keyword arguments switch on the usual mistakes."""
    source = {"x": x, "memory": memory}
    q = source[queries] @ params["q_proj.weight"].T + params["q_proj.bias"]
    kv = source[keys] @ params["kv_proj.weight"].T + params["kv_proj.bias"]
    k, v = rearrange(kv, f"b s ({layout}) -> two b h s d", two=2, h=n_heads)
    if swap_kv:
        k, v = v, k
    q = rearrange(q, f"b t ({heads}) -> b h t d", h=n_heads)
    scores = q @ k.transpose(-2, -1)  # (b, h, t, s)
    width = {"head": q.shape[-1], "model": x.shape[-1], "none": 1}[scale]
    scores = scores / math.sqrt(width)
    t, s = scores.shape[-2:]
    if causal:
        scores = scores.masked_fill(~torch.ones(t, s, dtype=torch.bool).tril(), float("-inf"))
    weights = None
    if mask is not None and masking != "ignore":
        m = mask.bool()
        m4 = {
            "keys": m[:, None, None, :],
            "inverted": ~m[:, None, None, :],
            "queries": m[:, None, :, None],
            "after": m[:, None, None, :],
        }[masking]
        if masking == "after":
            weights = torch.softmax(scores, dim=softmax_dim) * m4
        else:
            scores = scores.masked_fill(~m4, float("-inf"))
    if weights is None:
        weights = torch.softmax(scores, dim=softmax_dim)
    y = rearrange(weights @ v, f"b h t d -> b t ({heads})")
    return y @ params["proj.weight"].T + params["proj.bias"] if proj else y


_CROSS_SLIPS: list[tuple[dict[str, Any], str]] = [
    (
        {"masking": "ignore"},
        "you ignored memory_mask: padded source positions must get weight 0; set their "
        "scores to -inf before the softmax, with the mask reshaped to (b, 1, 1, s)",
    ),
    (
        {"masking": "inverted"},
        "True in memory_mask marks a real source token: mask out the positions where it "
        "is False (masked_fill(~mask, float('-inf')))",
    ),
    (
        {"masking": "queries"},
        "the mask is over the keys (the source positions, the last dimension of the "
        "scores (b, h, t, s)): reshape it to (b, 1, 1, s), not (b, 1, s, 1)",
    ),
    (
        {"masking": "after"},
        "apply the mask *before* the softmax: set the masked scores to -inf, so that the "
        "other weights still sum to 1",
    ),
    (
        {"keys": "x"},
        "the keys and values come from memory (the encoder's output), only the queries "
        "from x: k, v = split(memory @ kv_proj.weight.T + kv_proj.bias)",
    ),
    (
        {"queries": "memory", "keys": "x"},
        "you swapped the roles: the queries come from x (the decoder's tokens), the keys "
        "and values from memory",
    ),
    ({"scale": "none"}, "divide the scores q @ k^T by sqrt(head_dim) before the softmax"),
    (
        {"scale": "model"},
        "scale by sqrt(head_dim) = sqrt(D // n_heads), the width of one head's queries, "
        "not by sqrt(D)",
    ),
    (
        {"causal": True},
        "cross-attention has no causal mask: every target position may read the whole "
        "source; only the padding is masked",
    ),
    (
        {"swap_kv": True},
        "the first D outputs of kv_proj are the keys, the next D the values",
    ),
    (
        {"layout": "h two d"},
        "kv_proj's 2D outputs are laid out (two, heads, head_dim): split them into k and v "
        "first (D each), then each into heads",
    ),
    (
        {"heads": "d h", "layout": "two d h"},
        "head i owns the contiguous columns i*head_dim .. (i+1)*head_dim - 1: split with "
        "rearrange(z, 'b t (h d) -> b h t d', h=n_heads), or view(b, t, h, d).transpose(1, 2)",
    ),
    ({"proj": False}, "apply the output projection proj to the merged heads at the end"),
    (
        {"softmax_dim": -2},
        "take the softmax over the keys (the last dimension): each query's weights over "
        "the source must sum to 1",
    ),
]


def _cross_case(
    rng: random.Random, g: torch.Generator, b: int, t: int, s: int, h: int, hd: int, masked: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
    d = h * hd
    x = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    memory = torch.randn(b, s, d, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        lengths = [rng.randint(1, s) for _ in range(b)]
        if s > 1 and min(lengths) == s:
            lengths[rng.randrange(b)] = rng.randint(1, s - 1)  # some padding, always
        mask = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    params = {
        "q_proj.weight": torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d),
        "q_proj.bias": torch.randn(d, generator=g, dtype=torch.float64) * 0.3,
        "kv_proj.weight": torch.randn(2 * d, d, generator=g, dtype=torch.float64) / math.sqrt(d),
        "kv_proj.bias": torch.randn(2 * d, generator=g, dtype=torch.float64) * 0.3,
        "proj.weight": torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d),
        "proj.bias": torch.randn(d, generator=g, dtype=torch.float64) * 0.3,
    }
    return x, memory, mask, params


def check_cross_attention(fn: Callable[..., Any], cases: int = 12, seed: int | None = None) -> None:
    """Check ``fn(x, memory, memory_mask, params, n_heads) -> (b, t, D)`` against
    :class:`llmkit.nn.CrossAttention` holding ``params`` (its ``state_dict()``:
    ``q_proj``, ``kv_proj`` and ``proj`` weights and biases, float64). ``memory_mask`` is
    ``None`` or a ``(b, s)`` bool tensor, ``True`` = real source token, right-padded."""
    name = "cross_attention"
    reject_library(name, fn, CrossAttention, CrossAttention.forward)
    # (b, t, s, heads, head_dim, masked): one position each; t == s; t < s; t > s
    fixed = [
        (1, 1, 1, 1, 4, False),
        (2, 3, 5, 2, 3, True),
        (2, 4, 4, 2, 4, True),
        (3, 5, 2, 3, 2, True),
        (2, 2, 6, 1, 6, False),
    ]
    check_cases(cases, len(fixed))
    rng = check_rng(seed)
    shapes = list(fixed)
    while len(shapes) < cases:
        shapes.append(
            (
                rng.randint(1, 3),
                rng.randint(1, 6),
                rng.randint(2, 7),
                rng.randint(1, 3),
                rng.choice([2, 4, 6]),
                rng.random() < 0.8,
            )
        )
    g = _generator(rng)
    for b, t, s, h, hd, masked in shapes:
        x, memory, mask, params = _cross_case(rng, g, b, t, s, h, hd, masked)
        expected = reference_cross_attention(x, memory, mask, params, h)
        lengths = None if mask is None else mask.sum(-1).tolist()
        shown = (
            f"x {tuple(x.shape)}, memory {tuple(memory.shape)}, n_heads={h} (head_dim "
            f"{hd}), " + ("memory_mask=None" if mask is None else f"source lengths {lengths}")
        )
        args = [x.clone(), memory.clone(), None if mask is None else mask.clone()]
        p = {k: v.clone() for k, v in params.items()}
        got = _call(fn, name, shown, *args, p, h)
        if any(
            not torch.equal(a, o)
            for a, o in zip(args, (x, memory, mask), strict=True)
            if o is not None
        ) or any(not torch.equal(p[k], params[k]) for k in params):
            raise _fail(
                name,
                shown,
                "your function modified its inputs",
                "compute new tensors instead of changing x, memory, the mask or the weights "
                "in place",
            )
        if isinstance(got, tuple) and got and isinstance(got[0], torch.Tensor):
            got = got[0]  # (out, weights) is fine too
        _require_result(got, name, shown)
        if not isinstance(got, torch.Tensor):
            raise _fail(
                name,
                shown,
                f"expected a tensor, got {type(got).__name__}",
                f"return a torch.Tensor of shape {tuple(expected.shape)}",
            )
        if tuple(got.shape) != tuple(expected.shape):
            raise _fail(
                name,
                shown,
                f"your result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                "one output per query, (b, t, D): the queries come from x, and the heads "
                "are merged back into D columns before the output projection",
            )
        if _close(got, expected):
            continue
        if got.isnan().any() and not expected.isnan().any():
            problem = "your result contains NaN where the reference has none"
        else:
            problem = f"wrong values (max abs difference {_max_diff(got, expected):.3g})"
        hint = (
            "q = x @ q_proj.weight.T + q_proj.bias and [k | v] = memory @ kv_proj.weight.T + "
            "kv_proj.bias, each split into heads (b, h, ., head_dim); softmax(q k^T / "
            "sqrt(head_dim), padded keys -inf) @ v; merge the heads; apply proj"
        )
        for slip, why in _CROSS_SLIPS:
            try:
                wrong = _cross_attention(x, memory, mask, params, h, **slip)
            except Exception:  # noqa: BLE001 - a slip that cannot be formed is no match
                continue
            if _close(got, wrong):
                hint = why
                break
        raise _fail(name, shown, problem, hint)
    passed(name, f"{len(shapes)} random cases match llmkit.nn.CrossAttention")


# --------------------------------------------------------------------------------------
# exercise 3: greedy translation
# --------------------------------------------------------------------------------------


class _SpyModel:
    """A :class:`Seq2Seq` that counts its encoder and decoder runs; other attributes
    (``config``, ``parameters()``, ...) are the model's own."""

    def __init__(self, model: Seq2Seq) -> None:
        self._model = model
        self.config = model.config
        self.encodes = 0
        self.decodes = 0

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.encodes += 1
        return self._model.encode(src_ids, src_mask)

    def decode(
        self, tgt_ids: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.decodes += 1
        return self._model.decode(tgt_ids, memory, src_mask)

    def __call__(
        self, src_ids: torch.Tensor, tgt_in: torch.Tensor, src_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.encodes += 1  # model(...) encodes the source again
        self.decodes += 1
        return self._model(src_ids, tgt_in, src_mask)

    forward = __call__

    def conditioned(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(
            "greedy_translate: do not use model.conditioned (llmkit's translate does); "
            "write the loop with model.encode and model.decode"
        )

    def eval(self) -> _SpyModel:
        return self

    def train(self, mode: bool = True) -> _SpyModel:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _cut(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


@torch.no_grad()
def reference_greedy_translate(
    model: Seq2Seq,
    src_ids: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int,
    src_mask: torch.Tensor | None = None,
) -> list[list[int]] | list[int]:
    """``llmkit.seq2seq.translate(model, src_ids, bos_id, eos_id, max_new_tokens,
    "greedy", src_mask=src_mask)``, the reference of the exercise."""
    return _ref_translate(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=src_mask)


@torch.no_grad()
def _greedy_loop(
    model: Seq2Seq,
    src: torch.Tensor,
    mask: torch.Tensor | None,
    bos: int,
    eos: int,
    max_new: int,
    *,
    enc_mask: bool = True,
    dec_mask: bool = True,
    position: int = -1,
    extra: int = 0,
    stop: str = "all",
    whole_target: bool = True,
) -> list[list[int]] | list[int]:
    """Greedy translation written out; the keyword arguments switch on the usual mistakes."""
    single = src.dim() == 1
    if single:
        src, mask = src[None], None if mask is None else mask[None]
    memory = model.encode(src, mask if enc_mask else None)
    b = src.shape[0]
    tgt = torch.full((b, 1), bos, dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    for _ in range(max_new + extra):
        logits = model.decode(
            tgt if whole_target else tgt[:, -1:], memory, mask if dec_mask else None
        )
        nxt = logits[:, position].argmax(dim=-1).masked_fill(finished, eos)
        finished |= nxt == eos
        tgt = torch.cat([tgt, nxt[:, None]], dim=1)
        if bool(finished.all() if stop == "all" else finished.any()):
            break
    out = [_cut(row[1:].tolist(), eos) for row in tgt]
    return out[0] if single else out


_GREEDY_SLIPS: list[tuple[dict[str, Any], str]] = [
    (
        {"enc_mask": False, "dec_mask": False},
        "the padding changes your translations: pass src_mask to model.encode *and* to "
        "model.decode, so that neither the encoder nor the cross-attention reads the padded "
        "source positions",
    ),
    (
        {"dec_mask": False},
        "pass src_mask to model.decode too: its cross-attention must not read the padded "
        "source positions",
    ),
    (
        {"enc_mask": False},
        "pass src_mask to model.encode too: the encoder's self-attention must not read the padding",
    ),
    (
        {"position": 0},
        "the next token is the argmax of the *last* position's logits, logits[:, -1]",
    ),
    (
        {"whole_target": False},
        "model.decode has no cache: give it <bos> and every token generated so far, "
        "(b, 1 + n), at every step",
    ),
    (
        {"stop": "any"},
        "stop when *every* row has produced eos_id, not the first one; a finished row "
        "just keeps eos_id while the others go on",
    ),
    ({"extra": -1}, "off by one: generate up to max_new_tokens tokens, not one fewer"),
    ({"extra": 1}, "off by one: generate at most max_new_tokens tokens, not one more"),
]


def _random_seq2seq(rng: random.Random) -> Seq2Seq:
    n_head = rng.randint(1, 2)
    config = Seq2SeqConfig(
        vocab_size=rng.randint(8, 16),
        max_len=rng.randint(6, 12),
        n_encoder_layer=rng.randint(1, 2),
        n_decoder_layer=rng.randint(1, 2),
        n_head=n_head,
        d_model=n_head * rng.choice([4, 8]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.randrange(2**31))
        model = Seq2Seq(config).double().eval()
        with torch.no_grad():  # peaked, varied next-token distributions
            for p in model.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.5)
    return model


def _sources(
    rng: random.Random, g: torch.Generator, b: int, max_len: int, vocab: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [rng.randint(1, max_len) for _ in range(b)]
    if b > 1 and len(set(lengths)) == 1:
        lengths[0] = rng.randint(1, max_len - 1) if max_len > 1 else 1
    seqs = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    return _ref_pad_sequences(seqs, pad)


def _choose_eos(
    rng: random.Random, free: torch.Tensor, vocab: int, bos: int, mode: str
) -> int | None:
    """An eos id other than ``bos`` for ``mode``: ``"all"``: every row produces it before
    its last step; ``"some"``: some rows produce it, not all; ``"none"``: no row does.
    ``free`` is the greedy continuation without eos, ``(b, max_new)``."""
    n = free.shape[1]
    rows = [r.tolist() for r in free]
    found = []
    for v in (v for v in range(vocab) if v != bos):
        has = [v in r[: n - 1] for r in rows]
        anywhere = [v in r for r in rows]
        if mode == "all" and all(has):
            found.append(v)
        elif mode == "some" and any(anywhere) and not all(anywhere):
            found.append(v)
        elif mode == "none" and not any(anywhere):
            found.append(v)
    return rng.choice(found) if found else None


def _translation_case(
    rng: random.Random, g: torch.Generator, kind: str
) -> tuple[Seq2Seq, torch.Tensor, torch.Tensor | None, int, int, int]:
    """A random model, sources, bos, eos and max_new_tokens for one kind of case."""
    for _ in range(50):
        model = _random_seq2seq(rng)
        c = model.config
        pad, bos = 0, rng.randrange(c.vocab_size)
        b = 1 if kind == "single" else rng.randint(2, 4)
        src, mask = _sources(rng, g, b, c.max_len, c.vocab_size, pad)
        if kind == "zero":
            eos = (bos + rng.randint(1, c.vocab_size - 1)) % c.vocab_size
            return model, src, mask, bos, eos, 0
        max_new = c.max_len if kind == "full" else rng.randint(3, c.max_len)
        start = torch.full((b, 1), bos, dtype=torch.long)
        with torch.no_grad():
            free = decoding.greedy(model.conditioned(src, mask), start, max_new)[:, 1:]
        mode = {"single": "all", "full": "none", "all": "all", "some": "some"}.get(kind, "none")
        eos = _choose_eos(rng, free, c.vocab_size, bos, mode)
        if eos is None:
            continue
        if kind == "single":
            src, mask = src[0], (None if rng.random() < 0.5 else mask[0])
        return model, src, mask, bos, eos, max_new
    raise RuntimeError(f"no random model gave a {kind!r} case")  # pragma: no cover


def _as_ids(got: Any) -> list[int] | None:
    try:
        return [operator.index(i) for i in got]
    except TypeError:
        return None


def check_greedy_translate(
    fn: Callable[..., Any], cases: int = 10, seed: int | None = None
) -> None:
    """Check ``fn(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None)`` against
    ``llmkit.seq2seq.translate(strategy="greedy")`` on small random
    :class:`~llmkit.seq2seq.Seq2Seq` models (float64).

    ``src_ids`` is ``(b, s)`` right-padded (``src_mask (b, s)`` bool) or one source
    ``(s,)`` (``src_mask`` ``None`` or ``(s,)``). The result is one list of ids per source,
    without ``<bos>`` and cut before the first ``<eos>`` (one list for one source). The
    model counts its runs: the encoder must run once, the decoder at most once per
    generated token (stopping when every row has produced ``<eos>``).
    """
    name = "greedy_translate"
    reject_library(name, fn, _ref_translate)
    fixed = ["single", "zero", "full", "all"]
    check_cases(cases, len(fixed))
    rng = check_rng(seed)
    kinds = list(fixed)
    cycle = ["some", "all", "none"]
    while len(kinds) < cases:
        kinds.append(cycle[(len(kinds) - len(fixed)) % len(cycle)])
    g = _generator(rng)
    for kind in kinds:
        model, src, mask, bos, eos, max_new = _translation_case(rng, g, kind)
        c = model.config
        expected = reference_greedy_translate(model, src, bos, eos, max_new, src_mask=mask)
        with torch.no_grad():  # how many tokens greedy decoding needs, eos included
            single_src = src[None] if src.dim() == 1 else src
            single_mask = None if mask is None else (mask[None] if mask.dim() == 1 else mask)
            start = torch.full((single_src.shape[0], 1), bos, dtype=torch.long)
            steps = (
                decoding.greedy(
                    model.conditioned(single_src, single_mask), start, max_new, eos_token_id=eos
                ).shape[1]
                - 1
            )
        shown = (
            f"src_ids={src.tolist()}, "
            + ("src_mask=None" if mask is None else f"src_mask={mask.int().tolist()}")
            + f", bos_id={bos}, eos_id={eos}, max_new_tokens={max_new} (a random Seq2Seq "
            f"with vocab_size={c.vocab_size}, max_len={c.max_len})"
        )
        spy = _SpyModel(model)
        args = (src.clone(), None if mask is None else mask.clone())
        got = _call(fn, name, shown, spy, args[0], bos, eos, max_new, src_mask=args[1])
        if not torch.equal(args[0], src) or (mask is not None and not torch.equal(args[1], mask)):
            raise _fail(
                name,
                shown,
                "your function modified src_ids or src_mask",
                "build new tensors for the target instead of writing into the inputs",
            )
        _require_result(got, name, shown)
        if isinstance(got, torch.Tensor):
            raise _fail(
                name,
                shown,
                "your function returned a tensor",
                "return Python lists of ints (row.tolist()): after cutting at eos_id the "
                "translations have different lengths",
            )
        single = src.dim() == 1
        if single:
            if isinstance(got, list | tuple) and len(got) == 1 and isinstance(got[0], list):
                raise _fail(
                    name,
                    shown,
                    "for one source (src_ids of shape (s,)) you returned a list of lists",
                    "translate it as a batch of one, then return that batch's only list",
                )
            rows = [got]
            want = [expected]
        else:
            if not isinstance(got, list | tuple) or len(got) != len(expected):
                raise _fail(
                    name,
                    shown,
                    f"expected a list of {len(expected)} translations, got {_short(got)}",
                    "one list of ids per source, in the order of the sources",
                )
            rows = list(got)
            want = list(expected)
        ids = [_as_ids(r) if isinstance(r, list | tuple | torch.Tensor) else None for r in rows]
        if any(r is None for r in ids):
            raise _fail(
                name,
                shown,
                f"expected lists of ints, got {_short(got)}",
                "each translation is a list of token ids (ints), e.g. row.tolist()",
            )
        if ids != want:
            shown_got = ids[0] if single else ids
            problem = f"wrong translation: got {_short(shown_got)}, expected {_short(expected)}"
            hint = (
                "start the target with bos_id; at each step append the argmax of the last "
                "position's logits; stop after max_new_tokens tokens or when every row has "
                "produced eos_id; return each row without bos_id, cut before its first eos_id"
            )
            # the first matching slip of each family; two families may give the same
            # tokens on a small random model, and then both hints are shown
            found: dict[str, str] = {}
            for slip, why in _GREEDY_SLIPS:
                family = "mask" if "enc_mask" in slip or "dec_mask" in slip else str(slip)
                if family in found:
                    continue
                try:
                    wrong = _greedy_loop(model, src, mask, bos, eos, max_new, **slip)
                except Exception:  # noqa: BLE001 - a slip that cannot be formed is no match
                    continue
                if (wrong if not single else [wrong]) == ids:
                    found[family] = why
            matched = bool(found)
            if found:
                hint = "; or: ".join(list(found.values())[:2])
            if not matched:
                i = next(k for k, (a, e) in enumerate(zip(ids, want, strict=True)) if a != e)
                a, e = ids[i], want[i]
                if a[:1] == [bos] and a[1:] == e:
                    hint = "leave bos_id out of the result: return only the generated tokens"
                elif len(a) > len(e) and a[: len(e)] == e and a[len(e)] == eos:
                    hint = (
                        "cut each translation before its first eos_id: leave eos_id out, and "
                        "whatever the row generated after it"
                    )
                elif a[:1] == [bos] and a[1:] == e + [eos]:
                    hint = "leave bos_id and the final eos_id out of the result"
            raise _fail(name, shown, problem, hint)
        if spy.encodes > 1:
            raise _fail(
                name,
                shown,
                f"the encoder ran {spy.encodes} times for one batch",
                "run model.encode once, before the loop, and reuse its memory in every "
                "model.decode call (model(src, tgt, mask) encodes the source again each time)",
            )
        if spy.decodes > steps:
            if steps < max_new:
                hint = (
                    f"every row had produced eos_id after {steps} token{'s' * (steps != 1)}: "
                    "stop the loop as soon as every row has finished, not only after "
                    "max_new_tokens steps"
                )
            else:
                hint = (
                    "one decoder call per generated token: the last token needs no further "
                    "call (check that your loop does not run once more than it appends)"
                )
            raise _fail(
                name,
                shown,
                f"model.decode was called {spy.decodes} times, {steps} "
                + ("is" if steps == 1 else "are")
                + " enough",
                hint,
            )
    passed(name, f"{len(kinds)} random translations match llmkit.seq2seq.translate")

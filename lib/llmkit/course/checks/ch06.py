"""Checks of lab 06 (encoder-decoder and translation): one :class:`Exercise` per exercise.

================  ===============================================  ==============================
exercise          the student's function                           off limits
================  ===============================================  ==============================
pad_sequences     ``(seqs, pad_id) -> (ids (n, L) long,``          ``llmkit.seq2seq``'s padding
                  ``mask (n, L) bool)``, right-padded              and collate functions,
                                                                   ``torch.nn.utils.rnn``
cross_attention   ``(x (b, t, D), memory (b, s, D), memory_mask``  ``llmkit.nn``, PyTorch's
                  ``(b, s) | None, params, n_heads) -> (b, t, D)`` attention functions
greedy_translate  ``(model, src_ids, bos_id, eos_id,``             ``llmkit.seq2seq.translate``,
                  ``max_new_tokens, src_mask=None) -> ids lists``  ``model.conditioned``,
                                                                   ``llmkit.decoding``
================  ===============================================  ==============================

References: :func:`llmkit.seq2seq.pad_sequences`, :class:`llmkit.nn.CrossAttention`
holding ``params`` (float64), ``llmkit.seq2seq.translate(strategy="greedy")`` on small
random :class:`~llmkit.seq2seq.Seq2Seq` models.

The model ``greedy_translate`` gets is a copy of the case's model whose two final
LayerNorms (``ln_enc``, run once per encoder pass, and ``ln_dec``, once per decoder
pass) are instances of a class made for that case, which counts their runs. Every way
of running the model goes through them (``encode``, ``decode``, ``model(...)``, and the
same methods called on the class, ``Seq2Seq.encode(model, ...)``), and the copy holds
no other model: the encoder must run once, the decoder at most once per generated
token.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .runner import Case, Exercise, Slip

__all__ = ["check_pad_sequences", "check_cross_attention", "check_greedy_translate"]

_REF = "llmkit.course.checks.reference.ch06"


class _Fresh(Sequence):
    """Fixed cases built anew each time they are read (fresh tensors and models)."""

    def __init__(self, make: Callable[[Any], Case], specs: Sequence[Any]) -> None:
        self.make, self.specs = make, list(specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> Case:  # type: ignore[override]
        return self.make(self.specs[i])


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


# ------------------------------------------------------------------------- pad_sequences


def _pad_case(rng: random.Random) -> Case:
    pad = rng.randint(0, 20)
    tokens = [v for v in range(31) if v != pad]  # pad_id never occurs in a sequence
    seqs = [
        [rng.choice(tokens) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 6))
    ]
    return Case((seqs, pad))


PAD_SEQUENCES = Exercise(
    name="pad_sequences",
    reference="llmkit.seq2seq:pad_sequences",
    forbid=[
        "llmkit.seq2seq:collate",
        "llmkit.seq2seq:pair_batch_fn",
        "llmkit.seq2seq:translate_sentences",
        "llmkit.bert_tasks:_pad",
        "llmkit.bert_tasks:_collate",
        "torch.nn.utils.rnn",
        "torch._C._nn:pad_sequence",
        # nested tensors pad too (``to_padded_tensor``)
        "torch.nested",
        "torch.nested:to_padded_tensor",
        "torch:Tensor.to_padded_tensor",
        "torch:_nested_tensor_from_tensor_list",
    ],
    fixed=[
        ([[5, 6, 7], [8]], 0),  # the lab's example
        ([[4]], 0),
        ([[3, 4], [5, 6]], 9),  # no padding at all; pad_id is not 0
        ([[7], [3, 4, 5, 6], [8, 9]], 2),
    ],
    random=_pad_case,
    hint="ids (n, longest) long: row i holds seqs[i] from column 0 on, then pad_id; "
    "mask (n, longest) bool: True exactly at the real tokens",
    slips=[
        Slip(
            f"{_REF}:pad_sequences_left",
            "pad on the right (the tokens first, then pad_id): positions count from the "
            "first token, so a right-padded source is encoded like the same source alone",
        ),
        Slip(
            f"{_REF}:pad_sequences_inverted_mask",
            "True marks a real token and False the padding (llmkit's and SDPA's convention; "
            "nn.MultiheadAttention's key_padding_mask is the opposite)",
        ),
        Slip(f"{_REF}:pad_sequences_zeros", "fill the padding with pad_id, not with 0"),
    ],
)


# ----------------------------------------------------------------------- cross_attention


def _cross_case(spec: tuple[int, ...], rng: random.Random | None = None) -> Case:
    b, t, s, h, hd, masked = spec
    rng = rng or random.Random(hash(spec) & 0xFFFF)
    g = _generator(rng)
    d = h * hd

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    x, memory = randn(b, t, d), randn(b, s, d)
    mask, lengths = None, None
    if masked:
        lengths = [rng.randint(1, s) for _ in range(b)]
        if s > 1 and min(lengths) == s:
            lengths[rng.randrange(b)] = rng.randint(1, s - 1)  # some padding, always
        mask = torch.arange(s)[None, :] < torch.tensor(lengths)[:, None]
    w = 1 / math.sqrt(d)
    params = {
        "q_proj.weight": randn(d, d, scale=w),
        "q_proj.bias": randn(d, scale=0.3),
        "kv_proj.weight": randn(2 * d, d, scale=w),
        "kv_proj.bias": randn(2 * d, scale=0.3),
        "proj.weight": randn(d, d, scale=w),
        "proj.bias": randn(d, scale=0.3),
    }
    label = (
        f"x {(b, t, d)}, memory {(b, s, d)}, "
        + ("memory_mask=None" if mask is None else f"memory_mask with source lengths {lengths}")
        + f", params of a CrossAttention, n_heads={h} (head_dim {hd}), float64"
    )
    return Case((x, memory, mask, params, h), label=label)


def _random_cross_case(rng: random.Random) -> Case:
    spec = (
        rng.randint(1, 3),
        rng.randint(1, 6),
        rng.randint(2, 7),
        rng.randint(1, 3),
        rng.choice([2, 4, 6]),
        rng.random() < 0.8,
    )
    return _cross_case(spec, rng)


CROSS_ATTENTION = Exercise(
    name="cross_attention",
    reference=f"{_REF}:cross_attention",
    forbid=[
        "llmkit.nn",
        "llmkit.seq2seq:DecoderBlock",
        "torch.nn.functional:scaled_dot_product_attention",
        "torch.nn.functional:multi_head_attention_forward",
        "torch.nn:MultiheadAttention",
        "torch:_native_multi_head_attention",
    ],
    # (b, t, s, heads, head_dim, masked): one position each; t < s; t == s; t > s
    fixed=_Fresh(
        _cross_case,
        [
            (1, 1, 1, 1, 4, False),
            (2, 3, 5, 2, 3, True),
            (2, 4, 4, 2, 4, True),
            (3, 5, 2, 3, 2, True),
            (2, 2, 6, 1, 6, False),
        ],
    ),
    random=_random_cross_case,
    cases=12,
    rtol=1e-5,
    atol=1e-5,
    dtype=False,
    hint="q = x @ q_proj.weight.T + q_proj.bias, [k | v] = memory @ kv_proj.weight.T + "
    "kv_proj.bias, each split into heads (b, h, ., head_dim); softmax(q k^T / sqrt(head_dim), "
    "padded keys -inf) @ v; merge the heads; apply proj",
    crash_hint="memory_mask (b, s) becomes (b, 1, 1, s) to broadcast over the heads and the "
    "queries of the scores (b, h, t, s)",
    slips=[
        Slip(
            f"{_REF}:cross_attention_ignores_mask",
            "padded source positions must get weight 0: set their scores to -inf before the "
            "softmax, with memory_mask reshaped to (b, 1, 1, s)",
        ),
        Slip(
            f"{_REF}:cross_attention_kv_from_x",
            "the keys and values come from memory (the encoder's output), only the queries from x",
        ),
        Slip(
            f"{_REF}:cross_attention_unscaled",
            "divide the scores q @ k^T by sqrt(head_dim) before the softmax",
        ),
        Slip(
            f"{_REF}:cross_attention_causal",
            "cross-attention has no causal mask: every target position may read the whole "
            "source; only the padding is masked",
        ),
    ],
)


# ---------------------------------------------------------------------- greedy_translate


@dataclass
class _Translation(Case):
    """A greedy_translate case; ``steps``: the decoder calls greedy decoding needs."""

    steps: int = 0


def _counting_layer_norm() -> type[nn.LayerNorm]:
    class LayerNorm(nn.LayerNorm):
        """A LayerNorm that counts its runs in its class (one class per case)."""

        runs = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            type(self).runs += 1
            return super().forward(x)

    return LayerNorm


def _counting_copy(model: nn.Module) -> nn.Module:
    spy = copy.deepcopy(model)
    spy.ln_enc.__class__ = _counting_layer_norm()
    spy.ln_dec.__class__ = _counting_layer_norm()
    return spy


def _random_seq2seq(rng: random.Random) -> nn.Module:
    from llmkit.seq2seq import Seq2Seq, Seq2SeqConfig

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


def _greedy_ids(model: Any, src: torch.Tensor, mask: Any, bos: int, n: int, eos: int | None):
    from llmkit import decoding

    start = torch.full((src.shape[0], 1), bos, dtype=torch.long)
    with torch.no_grad():
        return decoding.greedy(model.conditioned(src, mask), start, n, eos_token_id=eos)[:, 1:]


def _translation_case(kind: str, rng: random.Random | None = None) -> _Translation:
    """A random model and sources: ``"single"`` (one source, every row ends in eos),
    ``"zero"`` (max_new_tokens=0), ``"full"`` (no row produces eos), ``"all"`` (every row
    does), ``"some"`` (some rows do), ``"none"`` (none does, within max_new_tokens)."""
    from llmkit.seq2seq import pad_sequences

    rng = rng or random.Random(kind)
    g = _generator(rng)
    for _ in range(50):
        model = _random_seq2seq(rng)
        c = model.config
        bos = rng.randrange(c.vocab_size)
        b = 1 if kind == "single" else rng.randint(2, 4)
        lengths = [rng.randint(1, c.max_len) for _ in range(b)]
        if b > 1 and len(set(lengths)) == 1:
            lengths[0] = rng.randint(1, c.max_len - 1)
        src, mask = pad_sequences(
            [torch.randint(3, c.vocab_size, (n,), generator=g).tolist() for n in lengths], 0
        )
        max_new = {"zero": 0, "full": c.max_len}.get(kind, rng.randint(3, c.max_len))
        free = _greedy_ids(model, src, mask, bos, max_new, None).tolist() if max_new else [[]] * b
        candidates = []
        for v in (v for v in range(c.vocab_size) if v != bos):
            early, anywhere = [v in r[: max_new - 1] for r in free], [v in r for r in free]
            if (
                kind in ("single", "all")
                and all(early)
                or kind == "some"
                and any(anywhere)
                and not all(anywhere)
                or kind in ("none", "full", "zero")
                and not any(anywhere)
            ):
                candidates.append(v)
        if not candidates:
            continue
        eos = rng.choice(candidates)
        steps = _greedy_ids(model, src, mask, bos, max_new, eos).shape[1] if max_new else 0
        if kind == "single":
            src, mask = src[0], None if rng.random() < 0.5 else mask[0]
        label = (
            f"src_ids={src.tolist()}, "
            + ("src_mask=None" if mask is None else f"src_mask={mask.int().tolist()}")
            + f", bos_id={bos}, eos_id={eos}, max_new_tokens={max_new} (a random Seq2Seq "
            f"with vocab_size={c.vocab_size}, max_len={c.max_len})"
        )
        return _Translation((_counting_copy(model), src, bos, eos, max_new, mask), {}, label, steps)
    raise RuntimeError(f"no random model gave a {kind!r} case")  # pragma: no cover


def _count_runs(case: Case, got: Any) -> str | None:
    model = case.args[0]
    encodes, decodes = type(model.ln_enc).runs, type(model.ln_dec).runs
    if encodes > 1:
        return (
            f"the encoder ran {encodes} times for one batch: run model.encode once, before "
            "the loop, and reuse its memory (model(src, tgt, mask) encodes the source again)"
        )
    steps = case.steps
    if decodes > steps:
        why = (
            "stop the loop as soon as every row has produced eos_id"
            if steps < case.args[4]
            else "the last token you append needs no decoder call"
        )
        return f"the decoder ran {decodes} times where {steps} are enough: {why}"
    return None


GREEDY_TRANSLATE = Exercise(
    name="greedy_translate",
    reference=f"{_REF}:greedy_translate",
    forbid=[
        "llmkit.seq2seq:translate",
        "llmkit.seq2seq:translate_sentences",
        "llmkit.seq2seq:Seq2Seq.conditioned",
        "llmkit.seq2seq:ConditionedDecoder",
        "llmkit.seq2seq:Seq2SeqCache",
        "llmkit.decoding",
    ],
    fixed=_Fresh(_translation_case, ["single", "zero", "full", "all"]),
    random=lambda rng: _translation_case(rng.choice(["some", "all", "none"]), rng),
    cases=10,
    after=_count_runs,
    hint="encode once; start every row with bos_id; append the argmax of the last position's "
    "logits (eos_id once a row has finished) until every row has finished or after "
    "max_new_tokens tokens; return each row without bos_id, cut before its first eos_id "
    "(one list for one source)",
    crash_hint="model.encode(src_ids (b, s), src_mask) -> memory (b, s, D); "
    "model.decode(tgt (b, t), memory, src_mask) -> logits (b, t, V); one source (s,) is a "
    "batch of one, src_ids[None]",
    slips=[
        Slip(
            f"{_REF}:greedy_translate_no_mask",
            "pass src_mask to model.encode and to model.decode, so that neither reads the "
            "padded source positions",
        ),
        Slip(
            f"{_REF}:greedy_translate_stops_early",
            "stop when every row has produced eos_id, not the first one; a finished row "
            "keeps appending eos_id while the others go on",
        ),
        Slip(
            f"{_REF}:greedy_translate_keeps_eos",
            "cut each row before its first eos_id: leave eos_id out of the result",
        ),
        Slip(
            f"{_REF}:greedy_translate_first_position",
            "the next token is the argmax of the last position's logits, logits[:, -1]",
        ),
    ],
)


def check_pad_sequences(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``pad_sequences(seqs, pad_id)``; see the table above."""
    PAD_SEQUENCES.check(fn, cases=cases, seed=seed)


def check_cross_attention(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``cross_attention(x, memory, memory_mask, params, n_heads)``."""
    CROSS_ATTENTION.check(fn, cases=cases, seed=seed)


def check_greedy_translate(fn, cases: int = 10, seed: int | None = None) -> None:
    """Check ``greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask)``."""
    GREEDY_TRANSLATE.check(fn, cases=cases, seed=seed)

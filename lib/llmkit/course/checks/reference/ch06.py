"""Reference answers and known slips for lab 06 (encoder-decoder). See the package docstring."""

from __future__ import annotations

import math

import torch

from llmkit.nn import CrossAttention
from llmkit.seq2seq import Seq2Seq, translate

# ------------------------------------------------------------------------- pad_sequences


def _pad(seqs: list[list[int]], pad_id: int, *, left: bool = False) -> tuple[torch.Tensor, ...]:
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        cols = slice(longest - len(s), longest) if left else slice(0, len(s))
        ids[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = True
    return ids, mask


def pad_sequences_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Padded on the left: the padding first, then the tokens."""
    return _pad(seqs, pad_id, left=True)


def pad_sequences_inverted_mask(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """The mask marks the padding (``nn.MultiheadAttention``'s ``key_padding_mask``)."""
    ids, mask = _pad(seqs, pad_id)
    return ids, ~mask


def pad_sequences_zeros(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Padded with 0 instead of ``pad_id``."""
    ids, mask = _pad(seqs, pad_id)
    return ids.masked_fill(~mask, 0), mask


# ----------------------------------------------------------------------- cross_attention


def cross_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    memory_mask: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    n_heads: int,
) -> torch.Tensor:
    """:class:`llmkit.nn.CrossAttention` holding ``params`` (its ``state_dict()``)."""
    module = CrossAttention(x.shape[-1], n_heads, impl="manual").to(x.dtype)
    module.load_state_dict(params)
    with torch.no_grad():
        return module.eval()(x, memory, memory_mask)


def _attend(
    x: torch.Tensor,
    memory: torch.Tensor,
    mask: torch.Tensor | None,
    params: dict[str, torch.Tensor],
    n_heads: int,
    *,
    kv_from: str = "memory",
    scale: bool = True,
    use_mask: bool = True,
    causal: bool = False,
) -> torch.Tensor:
    """Cross-attention written out; the keyword arguments switch on one mistake each."""
    b, t, d = x.shape
    hd = d // n_heads
    q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
    source = x if kv_from == "x" else memory
    k, v = (source @ params["kv_proj.weight"].T + params["kv_proj.bias"]).split(d, dim=-1)
    q, k, v = (z.reshape(b, -1, n_heads, hd).transpose(1, 2) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(hd)
    if causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if use_mask and mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    return y @ params["proj.weight"].T + params["proj.bias"]


def cross_attention_ignores_mask(x, memory, memory_mask, params, n_heads):
    """The padding mask left out."""
    return _attend(x, memory, memory_mask, params, n_heads, use_mask=False)


def cross_attention_kv_from_x(x, memory, memory_mask, params, n_heads):
    """Keys and values projected from ``x`` (self-attention) instead of ``memory``."""
    return _attend(x, memory, memory_mask, params, n_heads, kv_from="x")


def cross_attention_unscaled(x, memory, memory_mask, params, n_heads):
    """The scores not divided by ``sqrt(head_dim)``."""
    return _attend(x, memory, memory_mask, params, n_heads, scale=False)


def cross_attention_causal(x, memory, memory_mask, params, n_heads):
    """A causal mask, copied from self-attention, where none belongs."""
    return _attend(x, memory, memory_mask, params, n_heads, causal=True)


# ---------------------------------------------------------------------- greedy_translate


def greedy_translate(
    model: Seq2Seq,
    src_ids: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int,
    src_mask: torch.Tensor | None = None,
) -> list[list[int]] | list[int]:
    """``llmkit.seq2seq.translate(..., strategy="greedy")``."""
    return translate(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=src_mask)


def _greedy(
    model: Seq2Seq,
    src: torch.Tensor,
    bos: int,
    eos: int,
    max_new: int,
    mask: torch.Tensor | None,
    *,
    use_mask: bool = True,
    stop: str = "all",
    position: int = -1,
    keep_eos: bool = False,
) -> list[list[int]] | list[int]:
    """Greedy translation written out; the keyword arguments switch on one mistake each."""
    with torch.no_grad():
        return _greedy_loop(model, src, bos, eos, max_new, mask, use_mask, stop, position, keep_eos)


def _greedy_loop(model, src, bos, eos, max_new, mask, use_mask, stop, position, keep_eos):
    single = src.dim() == 1
    if single:
        src, mask = src[None], None if mask is None else mask[None]
    if not use_mask:
        mask = None
    memory = model.encode(src, mask)
    tgt = torch.full((src.shape[0], 1), bos, dtype=torch.long)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_new):
        nxt = model.decode(tgt, memory, mask)[:, position].argmax(-1).masked_fill(done, eos)
        done |= nxt == eos
        tgt = torch.cat([tgt, nxt[:, None]], dim=1)
        if bool(done.all() if stop == "all" else done.any()):
            break
    rows = tgt[:, 1:].tolist()
    rows = [r[: r.index(eos) + keep_eos] if eos in r else r for r in rows]
    return rows[0] if single else rows


def greedy_translate_no_mask(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
    """``src_mask`` passed to neither ``encode`` nor ``decode``."""
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask, use_mask=False)


def greedy_translate_stops_early(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
    """The loop stops when the first row, not every row, has produced ``eos_id``."""
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask, stop="any")


def greedy_translate_keeps_eos(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
    """Each row cut after its first ``eos_id`` instead of before it."""
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask, keep_eos=True)


def greedy_translate_first_position(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
    """The next token taken from the first position's logits instead of the last's."""
    return _greedy(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask, position=0)

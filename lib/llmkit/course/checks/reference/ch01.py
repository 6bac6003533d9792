"""Reference answers and known slips for lab 01 (tokens). See the package docstring."""

from __future__ import annotations

import re

import torch

from llmkit.tokenizers import GPT2_SPLIT_PATTERN


def _count(ids: list[int]) -> dict[tuple[int, int], int]:
    """Adjacent pairs and their counts (the slips' own, so they use no llmkit code)."""
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bigram_counts_transposed(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Rows and columns swapped: counts[next, current]."""
    flat = torch.bincount(ids[1:] * vocab_size + ids[:-1], minlength=vocab_size * vocab_size)
    return flat.reshape(vocab_size, vocab_size)


def bigram_counts_wrapped(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The last token counted as followed by the first (torch.roll)."""
    flat = torch.bincount(ids * vocab_size + ids.roll(-1), minlength=vocab_size * vocab_size)
    return flat.reshape(vocab_size, vocab_size)


def pair_counts_no_overlap(ids: list[int]) -> dict[tuple[int, int], int]:
    """Pairs counted in steps of two: (ids[0], ids[1]), (ids[2], ids[3]), ..."""
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids[::2], ids[1::2], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_overlapping(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Each position tested on its own, so (7, 7) in [7, 7, 7] is merged twice."""
    out = []
    for i, x in enumerate(ids):
        if i + 1 < len(ids) and (x, ids[i + 1]) == pair:
            out.append(new_id)
        elif not (i > 0 and (ids[i - 1], x) == pair):
            out.append(x)
    return out


def merge_drops_last(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """The loop stops one early and loses a lone last id."""
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def encode_by_frequency(data: bytes, merges: dict[tuple[int, int], int]) -> list[int]:
    """Merges the most frequent known pair first instead of the earliest learned one."""
    ids = list(data)
    while True:
        counts: dict[tuple[int, int], int] = {}
        for p in zip(ids, ids[1:], strict=False):
            if p in merges:
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            return ids
        pair = max(counts, key=lambda p: (counts[p], -merges[p]))
        ids = _merge(ids, pair, merges[pair])


def encode_in_dict_order(data: bytes, merges: dict[tuple[int, int], int]) -> list[int]:
    """Applies the merges once each, in the dict's order."""
    ids = list(data)
    for pair, new_id in merges.items():
        ids = _merge(ids, pair, new_id)
    return ids


def decode_as_text(ids: list[int], vocab: dict[int, bytes]) -> bytes:
    """Each token decoded to text on its own, then re-encoded (breaks split characters)."""
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids).encode()


def _chunks(text: str) -> list[list[int]]:
    return [list(c.encode("utf-8")) for c in re.findall(GPT2_SPLIT_PATTERN, text)]


def _train(text: str, vocab_size: int, tie, min_count: int, chunked: bool = True):
    chunks = _chunks(text) if chunked else [list(text.encode("utf-8"))]
    merges: list[tuple[int, int]] = []
    for k in range(vocab_size - 256):
        counts: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair, c in _count(ids).items():
                counts[pair] = counts.get(pair, 0) + c
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], tie(p)))
        if counts[pair] < min_count:
            break
        merges.append(pair)
        chunks = [_merge(ids, pair, 256 + k) for ids in chunks]
    return merges


def train_bpe_largest_tie(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Ties broken towards the largest pair instead of the smallest."""
    return _train(text, vocab_size, lambda p: (-p[0], -p[1]), 2)


def train_bpe_keeps_singletons(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Does not stop when the best pair occurs only once."""
    return _train(text, vocab_size, lambda p: p, 1)


def train_bpe_across_chunks(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Counts pairs over the whole text, across the pre-tokenizer's chunk boundaries."""
    return _train(text, vocab_size, lambda p: p, 2, chunked=False)

"""Sequence pairs for translation (chapter 06): split, tokenize, pad and batch.

The data side of :mod:`llmkit.seq2seq`: :func:`select_pairs` (a deterministic subset and
split), :func:`train_tokenizer` (one BPE for both languages, with the
:data:`SPECIAL_TOKENS`), :func:`encode_pairs`, :func:`pad_sequences`, :func:`collate` (a
teacher-forcing batch) and :func:`pair_batch_fn` (random batches for
:func:`llmkit.train.train`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import torch

from llmkit import validate
from llmkit.tokenizers import BPETokenizer

__all__ = [
    "select_pairs",
    "train_tokenizer",
    "special_ids",
    "encode_pairs",
    "pad_sequences",
    "collate",
    "pair_batch_fn",
    "SPECIAL_TOKENS",
    "IGNORE_INDEX",
]

#: Target labels equal to this are ignored by the loss (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

#: The special tokens of the translation tokenizer, in id order after the merges.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


def select_pairs(
    pairs: Sequence[tuple[str, str]],
    max_words: int = 8,
    n_test: int = 1000,
    n_val: int = 1000,
    seed: int = 0,
) -> dict[str, list[tuple[str, str]]]:
    """A deterministic subset and split of translation pairs.

    1. keep the pairs whose source (first element) has at most ``max_words``
       whitespace-separated words;
    2. keep one pair per source sentence, the first in ``pairs``' order (Tatoeba lists
       several translations of many English sentences; deduplicating keeps a source out of
       two splits);
    3. shuffle with ``random.Random(seed)``; the first ``n_test`` pairs are the test set,
       the next ``n_val`` the validation set, the rest the training set.

    Args:
        pairs: ``(source, target)`` strings, e.g. :func:`llmkit.data.load_tatoeba_fra_eng`
            (English, French).
        max_words: >= 1.
        n_test, n_val: >= 0; together smaller than the number of pairs kept.
        seed: the shuffle's seed.
    Returns:
        ``{"train", "val", "test"}`` lists of pairs.
    """
    validate.positive_int("max_words", max_words)
    validate.integer("n_test", n_test, minimum=0)
    validate.integer("n_val", n_val, minimum=0)
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise TypeError(f"pairs[{i}] must be a (source, target) pair of strings, got {pair!r}")
        src, tgt = pair
        if len(src.split()) <= max_words and src not in seen:
            seen.add(src)
            kept.append((src, tgt))
    if n_test + n_val >= len(kept):
        raise ValueError(
            f"n_test + n_val = {n_test + n_val} must be smaller than the {len(kept)} pairs kept "
            f"(sources of at most max_words={max_words} words, deduplicated)"
        )
    random.Random(seed).shuffle(kept)
    return {
        "train": kept[n_test + n_val :],
        "val": kept[n_test : n_test + n_val],
        "test": kept[:n_test],
    }


def train_tokenizer(
    pairs: Sequence[tuple[str, str]], vocab_size: int, progress: bool = False
) -> BPETokenizer:
    """One byte-level BPE for both languages, trained on both sides of ``pairs``.

    The training text is every source and every target sentence, one per line. The special
    tokens :data:`SPECIAL_TOKENS` (``<pad>``, ``<bos>``, ``<eos>``) take the last ids.

    Args:
        pairs: ``(source, target)`` training pairs (never the test pairs).
        vocab_size: 256 bytes + merges + 3 special tokens (>= 259).
        progress: show a progress bar over the merges.
    Returns:
        a :class:`~llmkit.tokenizers.BPETokenizer`.
    """
    text = "\n".join(f"{s}\n{t}" for s, t in pairs)
    return BPETokenizer.train(text, vocab_size, special_tokens=SPECIAL_TOKENS, progress=progress)


def special_ids(tokenizer: BPETokenizer) -> tuple[int, int, int]:
    """``(pad_id, bos_id, eos_id)`` of a tokenizer with the :data:`SPECIAL_TOKENS`."""
    specials = getattr(tokenizer, "special_tokens", None)
    if not isinstance(specials, Mapping) or not all(s in specials for s in SPECIAL_TOKENS):
        raise ValueError(
            f"the tokenizer must have the special tokens {SPECIAL_TOKENS} (train_tokenizer adds "
            f"them), got {None if specials is None else sorted(specials)}"
        )
    pad, bos, eos = (specials[s] for s in SPECIAL_TOKENS)
    return pad, bos, eos


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizer: BPETokenizer
) -> list[tuple[list[int], list[int]]]:
    """Token ids of each ``(source, target)`` pair (special-token text is encoded as text)."""
    return [
        (tokenizer.encode(s, allowed_special="none"), tokenizer.encode(t, allowed_special="none"))
        for s, t in pairs
    ]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into one tensor.

    Args:
        seqs: ``n >= 1`` lists of ids, each non-empty.
        pad_id: the padding value.
    Returns:
        ``ids: (n, longest)`` long and ``mask: (n, longest)`` bool, ``True`` = real token.

    >>> ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), mask.int().tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    if isinstance(seqs, torch.Tensor) or not len(seqs):
        raise ValueError("seqs must be a non-empty list of id lists")
    lengths = [len(s) for s in seqs]
    if min(lengths) < 1:
        raise ValueError(
            f"every sequence needs at least one id; sequence {lengths.index(0)} is empty"
        )
    ids = torch.full((len(seqs), max(lengths)), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max(lengths)), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


def collate(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> dict[str, torch.Tensor]:
    """A teacher-forcing batch from ``(source ids, target ids)`` pairs.

    For a target ``y``: ``tgt_in = [bos] + y`` and ``tgt_out = y + [eos]`` (position ``i`` of
    ``tgt_in`` predicts position ``i`` of ``tgt_out``).

    Args:
        examples: ``n >= 1`` pairs of id lists (sources non-empty).
        pad_id, bos_id, eos_id: special ids (:func:`special_ids`).
    Returns:
        ``{"src": (n, S), "src_mask": (n, S) bool, "tgt_in": (n, T), "tgt_out": (n, T)}``,
        right-padded: ``src`` and ``tgt_in`` with ``pad_id``, ``tgt_out`` with
        :data:`IGNORE_INDEX` (ignored by the loss); ``T`` is the longest target + 1.

    >>> b = collate([([5, 6], [7]), ([5], [8, 9])], pad_id=0, bos_id=1, eos_id=2)
    >>> b["tgt_in"].tolist(), b["tgt_out"].tolist()
    ([[1, 7, 0], [1, 8, 9]], [[7, 2, -100], [8, 9, 2]])
    """
    if isinstance(examples, torch.Tensor) or not len(examples):
        raise ValueError("examples must be a non-empty list of (source ids, target ids)")
    src, src_mask = pad_sequences([s for s, _ in examples], pad_id)
    tgt_in, _ = pad_sequences([[bos_id, *t] for _, t in examples], pad_id)
    tgt_out, _ = pad_sequences([[*t, eos_id] for _, t in examples], IGNORE_INDEX)
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out}


def pair_batch_fn(
    data: Mapping[str, Sequence[tuple[Sequence[int], Sequence[int]]]],
    batch_size: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """A ``get_batch(split, generator)`` for :func:`llmkit.train.train` over encoded pairs.

    Each call draws ``batch_size`` pairs of the split uniformly at random (with
    replacement, from ``generator``) and :func:`collate`\\ s them.

    Args:
        data: split name -> encoded pairs (:func:`encode_pairs`), e.g. ``{"train", "val"}``.
        batch_size: >= 1.
        pad_id, bos_id, eos_id: special ids.
    Returns:
        ``get_batch(split, generator) -> dict`` as :func:`collate` returns it.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty mapping of split name -> encoded pairs")
    for name, examples in data.items():
        if not len(examples):
            raise ValueError(f"split {name!r} holds no pairs")
    validate.positive_int("batch_size", batch_size)

    def get_batch(split: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        validate.one_of("split", split, sorted(data))
        examples = data[split]
        rows = torch.randint(0, len(examples), (batch_size,), generator=generator).tolist()
        return collate([examples[i] for i in rows], pad_id, bos_id, eos_id)

    return get_batch

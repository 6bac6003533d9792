"""Checks of lab 01 (language models and tokens): one :class:`Exercise` per exercise.

==================  ==================================================  ======================
exercise            the student's function                              off limits
==================  ==================================================  ======================
bigram_counts       ``(ids: (seq,) long, vocab_size) -> (V, V) counts``  ``llmkit.bigram``
get_pair_counts     ``(ids: list[int]) -> {pair: count}``                ``llmkit.tokenizers``
merge               ``(ids, pair, new_id) -> list[int]``                 ``llmkit.tokenizers``
train_bpe           ``(text, vocab_size) -> [pair, ...]`` (merge order)  ``llmkit.tokenizers``
                                                                         but ``pretokenize``
bpe_encode_chunk    ``(data: bytes, merges: {pair: id}) -> list[int]``   ``llmkit.tokenizers``
bpe_decode_bytes    ``(ids, vocab: {id: bytes}) -> bytes``               ``llmkit.tokenizers``
==================  ==================================================  ======================

Each exercise is graded on its own: while ``train_bpe`` and ``bpe_encode_chunk`` run,
the student's ``get_pair_counts`` and ``merge`` are replaced by the reference ones.
"""

from __future__ import annotations

import random

import torch

from .runner import Case, Exercise, Slip

__all__ = [
    "check_bigram_counts",
    "check_get_pair_counts",
    "check_merge",
    "check_train_bpe",
    "check_encode",
    "check_decode",
]

_REF = "llmkit.course.checks.reference.ch01"
#: Everything in llmkit.tokenizers that computes an exercise (``pretokenize`` is a given).
_TOKENIZERS = [
    f"llmkit.tokenizers:{name}"
    for name in (
        "get_pair_counts",
        "merge",
        "bpe_encode_chunk",
        "bpe_decode_bytes",
        "train_bpe_naive",
        "_train_incremental",
        "_best_pair",
        "_chunk_table",
        "BPETokenizer",
    )
]
_ALPHABETS = [b"ab", b"abc ", b"aaab", "héllo wörld".encode(), "日本語".encode()]


def _random_bytes(rng: random.Random, n: int) -> bytes:
    alphabet = rng.choice([*_ALPHABETS, bytes(rng.sample(range(256), rng.randint(2, 6)))])
    return bytes(rng.choice(alphabet) for _ in range(n))


def _ids_case(rng: random.Random) -> Case:
    v = rng.randint(1, 9)
    ids = torch.tensor([rng.randrange(v) for _ in range(rng.randint(0, 50))], dtype=torch.long)
    return Case((ids, v))


def _merges_for(rng: random.Random, data: bytes) -> dict[tuple[int, int], int]:
    """Merges learned greedily from ``data`` (so some, not all, apply to a related text)."""
    from llmkit.tokenizers import get_pair_counts, merge

    ids, merges = list(data), {}
    for k in range(rng.randint(1, 12)):
        counts = get_pair_counts(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = 256 + k
        ids = merge(ids, pair, 256 + k)
    return merges


def _encode_case(rng: random.Random) -> Case:
    train = _random_bytes(rng, rng.randint(2, 60))
    merges = _merges_for(rng, train)
    data = _random_bytes(rng, rng.randint(0, 40)) if rng.random() < 0.6 else train
    if rng.random() < 0.3:  # not in rank order: the dict's order must not matter
        items = list(merges.items())
        rng.shuffle(items)
        merges = dict(items)
    return Case((data, merges))


def _vocab(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[new_id] = vocab[a] + vocab[b]
    return vocab


def _decode_case(rng: random.Random) -> Case:
    merges = _merges_for(rng, _random_bytes(rng, rng.randint(2, 40)))
    vocab = _vocab(merges)
    return Case(([rng.choice(list(vocab)) for _ in range(rng.randint(0, 20))], vocab))


def _text_case(rng: random.Random) -> Case:
    words = ["a", "ab", "ba", "abc", "the", "then", "hé", "日本", "x1", "!!"]
    text = "".join(
        rng.choice([" ", "", "  ", ", "]) + rng.choice(words) for _ in range(rng.randint(0, 25))
    )
    return Case((text, 256 + rng.randint(0, 20)))


BIGRAM_COUNTS = Exercise(
    name="bigram_counts",
    reference="llmkit.bigram:bigram_counts",
    forbid=["llmkit.bigram"],
    fixed=[
        Case((torch.tensor([], dtype=torch.long), 3)),
        Case((torch.tensor([2]), 3)),
        Case((torch.tensor([0, 0, 0]), 1)),
        Case((torch.tensor([0, 1, 2, 0, 1]), 4)),
    ],
    random=_ids_case,
    hint="counts[i, j] counts how often token j directly follows token i",
    slips=[
        Slip(
            f"{_REF}:bigram_counts_transposed",
            "your table is transposed: row = current token, column = next token",
        ),
        Slip(
            f"{_REF}:bigram_counts_wrapped",
            "the last token is followed by nothing: do not wrap around (torch.roll)",
        ),
    ],
)

GET_PAIR_COUNTS = Exercise(
    name="get_pair_counts",
    reference="llmkit.tokenizers:get_pair_counts",
    forbid=_TOKENIZERS,
    fixed=[([],), ([5],), ([1, 1, 1],), ([1, 2, 1, 2, 1],), ([3, 3, 3, 3],)],
    random=lambda rng: ([rng.randrange(rng.randint(1, 5)) for _ in range(rng.randint(0, 30))],),
    hint="count every adjacent pair (ids[i], ids[i + 1]); leave out pairs that never occur",
    slips=[
        Slip(
            f"{_REF}:pair_counts_no_overlap",
            "pairs overlap: [1, 1, 1] holds (1, 1) twice; step through ids one at a time",
        )
    ],
)

MERGE = Exercise(
    name="merge",
    reference="llmkit.tokenizers:merge",
    forbid=_TOKENIZERS,
    fixed=[
        ([], (1, 2), 256),
        ([1], (1, 2), 256),
        ([1, 1, 1], (1, 1), 256),
        ([1, 1, 1, 1], (1, 1), 256),
        ([1, 2, 3], (2, 1), 256),
        ([1, 2, 1, 2], (1, 2), 256),
    ],
    random=lambda rng: _merge_case(rng),
    hint="replace each occurrence of the pair, scanning left to right",
    slips=[
        Slip(
            f"{_REF}:merge_overlapping",
            "occurrences must not overlap: after merging two ids, continue after both "
            "(merge([7, 7, 7], (7, 7), 9) == [9, 7])",
        ),
        Slip(f"{_REF}:merge_drops_last", "look at the end of the list: a lone last id is lost"),
    ],
)


def _merge_case(rng: random.Random) -> tuple:
    k = rng.randint(1, 4)
    ids = [rng.randrange(k) for _ in range(rng.randint(0, 30))]
    pairs = list(zip(ids, ids[1:], strict=False))
    pair = rng.choice(pairs) if pairs and rng.random() < 0.85 else (rng.randrange(k + 1),) * 2
    return (ids, pair, rng.randint(256, 300))


TRAIN_BPE = Exercise(
    name="train_bpe",
    reference="llmkit.tokenizers:train_bpe_naive",
    forbid=_TOKENIZERS,
    substitute={
        "get_pair_counts": "llmkit.tokenizers:get_pair_counts",
        "merge": "llmkit.tokenizers:merge",
    },
    fixed=[
        ("", 300),
        ("aaaa", 260),
        ("ab ab ab", 256),
        ("ab ab ab ba ba ba", 300),  # a tie between (a, b) and (b, a) and spaces
        ("hello hello world", 270),
        ("日本 日本 日本", 262),
    ],
    random=_text_case,
    cases=16,
    hint="pre-tokenize; then repeat: count pairs inside every chunk, take the most frequent "
    "(ties: the smallest pair), stop if it occurs fewer than 2 times, merge it everywhere",
    slips=[
        Slip(
            f"{_REF}:train_bpe_largest_tie",
            "among pairs with the same count, take the smallest pair (min of the tuples)",
        ),
        Slip(
            f"{_REF}:train_bpe_keeps_singletons",
            "stop as soon as the most frequent pair occurs fewer than 2 times",
        ),
        Slip(
            f"{_REF}:train_bpe_across_chunks",
            "merges never cross chunks: split with pretokenize and count inside each chunk",
        ),
    ],
)

BPE_ENCODE_CHUNK = Exercise(
    name="bpe_encode_chunk",
    reference="llmkit.tokenizers:bpe_encode_chunk",
    forbid=_TOKENIZERS,
    substitute={"merge": "llmkit.tokenizers:merge"},
    fixed=[
        (b"", {(97, 98): 256}),
        (b"a", {(97, 98): 256}),
        (b"hello", {}),
        (b"aaa", {(97, 97): 256}),
        (b"aaaa", {(97, 97): 256, (256, 256): 257}),
        # rank beats frequency: (1, 2) has the smaller new id, (2, 3) is more frequent
        (bytes([2, 3, 1, 2, 3, 2, 3]), {(2, 3): 257, (1, 2): 256}),
    ],
    random=_encode_case,
    hint="start from list(data); while a pair of neighbours has a merge, apply the one with "
    "the smallest new id (the earliest learned) everywhere",
    slips=[
        Slip(
            f"{_REF}:encode_by_frequency",
            "merge the pair learned first (smallest new id), not the most frequent one",
        ),
        Slip(
            f"{_REF}:encode_in_dict_order",
            "do not rely on the dict's order; and a merge can apply again after later ones",
        ),
    ],
)

BPE_DECODE_BYTES = Exercise(
    name="bpe_decode_bytes",
    reference="llmkit.tokenizers:bpe_decode_bytes",
    forbid=_TOKENIZERS,
    fixed=[
        ([], _vocab({})),
        ([104, 105], _vocab({})),
        ([256, 172], _vocab({(226, 130): 256})),  # "€" split in the middle of a character
    ],
    random=_decode_case,
    hint="join the bytes of each id: b''.join(vocab[i] for i in ids)",
    slips=[
        Slip(
            f"{_REF}:decode_as_text",
            "stay in bytes: a token can end in the middle of a UTF-8 character",
        )
    ],
)


def check_bigram_counts(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``bigram_counts(ids, vocab_size)``; see the table above."""
    BIGRAM_COUNTS.check(fn, cases=cases, seed=seed)


def check_get_pair_counts(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``get_pair_counts(ids)``."""
    GET_PAIR_COUNTS.check(fn, cases=cases, seed=seed)


def check_merge(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``merge(ids, pair, new_id)``."""
    MERGE.check(fn, cases=cases, seed=seed)


def check_train_bpe(fn, cases: int = 16, seed: int | None = None) -> None:
    """Check ``train_bpe(text, vocab_size)`` against ``llmkit.tokenizers.train_bpe_naive``."""
    TRAIN_BPE.check(fn, cases=cases, seed=seed)


def check_encode(fn, cases: int = 25, seed: int | None = None) -> None:
    """Check ``bpe_encode_chunk(data, merges)``."""
    BPE_ENCODE_CHUNK.check(fn, cases=cases, seed=seed)


def check_decode(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``bpe_decode_bytes(ids, vocab)``."""
    BPE_DECODE_BYTES.check(fn, cases=cases, seed=seed)

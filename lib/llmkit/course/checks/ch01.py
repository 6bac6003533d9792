"""Check functions for the chapter-01 lab ("Language models and tokens").

One function per exercise. Each calls the student's function on random inputs
(plus fixed edge cases), compares with the library's version, prints one line on
success and raises ``AssertionError`` with the first failing input, the expected and
the actual result on failure (its first line says what is wrong, a ``hint:`` line
says what to look at). A ``NotImplementedError`` from an unfinished stub is let
through (the grader counts it as a failure).

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it, so
  regrading gives the same score), else fresh inputs on every run; see
  :mod:`llmkit.course.checks`.
- **The library is not an answer**: each check refuses ``llmkit``'s own function
  (``from llmkit.tokenizers import merge``) with
  ``AssertionError: merge: this is llmkit's own function; ...``.
- **Each exercise on its own**: a student's ``bpe_encode_chunk`` usually calls their
  own ``merge``; while :func:`check_encode` runs, a callable named ``merge`` in the
  encoder's globals is temporarily replaced by :func:`llmkit.tokenizers.merge`
  (restored afterwards), so a wrong ``merge`` costs the ``merge`` points only.

=========================  ====================================================
check                      student's function
=========================  ====================================================
``check_bigram_counts``    ``bigram_counts(ids: (seq,) long tensor, vocab_size)``
``check_get_pair_counts``  ``get_pair_counts(ids: list[int]) -> dict``
``check_merge``            ``merge(ids, pair, new_id) -> list[int]``
``check_encode``           ``bpe_encode_chunk(data: bytes, merges: dict) -> list[int]``
``check_decode``           ``bpe_decode_bytes(ids, vocab: dict[int, bytes]) -> bytes``
``check_round_trip``       the two above together: ``decode(encode(data)) == data``
=========================  ====================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from llmkit.bigram import bigram_counts as _ref_bigram_counts
from llmkit.course.checks import _unwrap, call_student, check_cases, check_rng, reject_library
from llmkit.tokenizers import bpe_decode_bytes as _ref_decode
from llmkit.tokenizers import bpe_encode_chunk as _ref_encode
from llmkit.tokenizers import get_pair_counts as _ref_pair_counts
from llmkit.tokenizers import merge as _ref_merge

__all__ = [
    "check_bigram_counts",
    "check_get_pair_counts",
    "check_merge",
    "check_encode",
    "check_decode",
    "check_round_trip",
]

DEFAULT_CASES = 25


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _short(x: Any, limit: int = 300) -> str:
    s = repr(x)
    return s if len(s) <= limit else s[: limit - 5] + " ...)"


def _rng(seed: int | None) -> random.Random:
    # seed=None: $LLMKIT_CHECK_SEED if set, else fresh inputs on every run
    return check_rng(seed)


@contextmanager
def _reference_merge(fn: Any) -> Iterator[None]:
    """While the block runs, ``merge`` in ``fn``'s globals (the student's own ``merge``,
    if it is callable) is :func:`llmkit.tokenizers.merge`; restored afterwards.

    Calls with other arguments than ``(ids, pair, new_id)`` still reach the student's
    function, in case their encoder relies on an extended signature.
    """
    g = getattr(_unwrap(fn), "__globals__", None)
    if not isinstance(g, dict) or not callable(g.get("merge")):
        yield
        return
    own = g["merge"]

    def merge(ids, pair, new_id, *args, **kwargs):
        if args or kwargs:
            return own(ids, pair, new_id, *args, **kwargs)
        return _ref_merge(ids, pair, new_id)

    g["merge"] = merge
    try:
        yield
    finally:
        g["merge"] = own


_check_cases = check_cases


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args)


def _fail(name: str, inputs: str, expected: Any, got: Any, hint: str = "") -> AssertionError:
    msg = (
        f"{name}: wrong result\n  input:    {inputs}\n  expected: {_short(expected)}\n"
        f"  got:      {_short(got)}"
    )
    if got is None:
        hint = "your function returned None -- did you forget `return`?"
    if hint:
        msg += f"\n  hint: {hint}"
    return AssertionError(msg)


def _ok(name: str, n: int, ref: str) -> None:
    print(f"✔ {name}: {n} random cases match {ref}")


def _train_merges(data: bytes, n_merges: int) -> dict[tuple[int, int], int]:
    """Greedy BPE on one byte string: ``{pair: new_id}`` in rank order."""
    ids = list(data)
    merges: dict[tuple[int, int], int] = {}
    for k in range(n_merges):
        counts = _ref_pair_counts(ids)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = 256 + k
        ids = _ref_merge(ids, pair, 256 + k)
    return merges


def _random_bytes(rng: random.Random, alphabet: bytes, n: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(n))


def _random_alphabet(rng: random.Random) -> bytes:
    pools = [
        b"ab",
        b"abc ",
        b"aaab",
        "héllo wörld".encode(),
        "日本語".encode(),
        bytes(rng.sample(range(256), rng.randint(2, 6))),
    ]
    return rng.choice(pools)


def _merge_case(rng: random.Random, shuffle: bool) -> tuple[bytes, dict[tuple[int, int], int]]:
    """A byte string and merges learned from a related string (so some, not all, apply)."""
    alphabet = _random_alphabet(rng)
    train = _random_bytes(rng, alphabet, rng.randint(2, 60))
    merges = _train_merges(train, rng.randint(1, 12))
    data = _random_bytes(rng, alphabet, rng.randint(0, 40)) if rng.random() < 0.6 else train
    if shuffle:
        items = list(merges.items())
        rng.shuffle(items)
        merges = dict(items)
    return data, merges


def _vocab_of(merges: dict[tuple[int, int], int]) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), new_id in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[new_id] = vocab[a] + vocab[b]
    return vocab


# --------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------


def check_bigram_counts(
    fn: Callable[[torch.Tensor, int], Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(ids, vocab_size) -> (vocab_size, vocab_size)`` counts against
    :func:`llmkit.bigram.bigram_counts`. ``ids`` is a 1D int64 tensor."""
    name = "bigram_counts"
    reject_library(name, fn, _ref_bigram_counts)
    fixed: list[tuple[list[int], int]] = [
        ([], 3),
        ([2], 3),
        ([0, 0, 0], 1),
        ([1, 1, 1], 2),
        ([0, 1, 2, 0, 1], 4),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        v = rng.randint(1, 9)
        inputs.append(([rng.randrange(v) for _ in range(rng.randint(0, 50))], v))
    for ids_list, v in inputs:
        ids = torch.tensor(ids_list, dtype=torch.long)
        expected = _ref_bigram_counts(ids.clone(), v)
        shown = f"ids=torch.tensor({ids_list}), vocab_size={v}"
        got = _call(fn, name, shown, ids, v)
        if got is None:
            raise _fail(name, shown, expected, got)
        try:
            got_t = torch.as_tensor(got)
        except Exception:  # noqa: BLE001
            raise _fail(name, shown, expected, got, "return a torch.Tensor") from None
        if tuple(got_t.shape) != (v, v):
            raise _fail(
                name,
                shown,
                expected,
                got,
                f"the result must have shape (vocab_size, vocab_size) = ({v}, {v}), "
                f"got {tuple(got_t.shape)}",
            )
        if not torch.equal(got_t.double(), expected.double()):
            hint = "counts[i, j] counts how often token j directly follows token i"
            if torch.equal(got_t.double(), expected.T.double()):
                hint = "your table is transposed: row = current token, column = next token"
            elif len(ids_list) < 2:
                hint = "with fewer than 2 tokens there are no pairs: all counts are 0"
            raise _fail(name, shown, expected, got, hint)
        if not torch.equal(ids, torch.tensor(ids_list, dtype=torch.long)):
            raise AssertionError(f"{name}: your function modified its input ids ({shown})")
    _ok(name, len(inputs), "llmkit.bigram.bigram_counts")


def check_get_pair_counts(
    fn: Callable[[list[int]], Any], cases: int = DEFAULT_CASES, seed: int | None = None
) -> None:
    """Check ``fn(ids) -> {(a, b): count}`` against :func:`llmkit.tokenizers.get_pair_counts`."""
    name = "get_pair_counts"
    reject_library(name, fn, _ref_pair_counts)
    fixed: list[list[int]] = [[], [5], [1, 1, 1], [1, 2, 1, 2, 1], [3, 3, 3, 3]]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        k = rng.randint(1, 5)
        inputs.append([rng.randrange(k) for _ in range(rng.randint(0, 30))])
    for ids in inputs:
        expected = _ref_pair_counts(list(ids))
        shown = f"ids={ids}"
        arg = list(ids)
        got = _call(fn, name, shown, arg)
        try:
            got_d = dict(got)  # a Counter or defaultdict is fine
        except Exception:  # noqa: BLE001
            raise _fail(name, shown, expected, got, "return a dict {(a, b): count}") from None
        if got_d != expected:
            hint = "count every adjacent pair (ids[i], ids[i+1]); overlapping pairs all count"
            if any(v == 0 for v in got_d.values()):
                hint = "leave out pairs that never occur (no zero counts)"
            raise _fail(name, shown, expected, got_d, hint)
        if arg != ids:
            raise AssertionError(f"{name}: your function modified its input ({shown})")
    _ok(name, len(inputs), "llmkit.tokenizers.get_pair_counts")


def check_merge(
    fn: Callable[[list[int], tuple[int, int], int], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(ids, pair, new_id) -> list[int]`` against :func:`llmkit.tokenizers.merge`."""
    name = "merge"
    reject_library(name, fn, _ref_merge)
    fixed: list[tuple[list[int], tuple[int, int], int]] = [
        ([], (1, 2), 256),
        ([1], (1, 2), 256),
        ([1, 1, 1], (1, 1), 256),
        ([1, 1, 1, 1], (1, 1), 256),
        ([1, 2, 3], (2, 1), 256),
        ([1, 2, 1, 2], (1, 2), 256),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        k = rng.randint(1, 4)
        ids = [rng.randrange(k) for _ in range(rng.randint(0, 30))]
        pairs = list(zip(ids, ids[1:], strict=False))
        if pairs and rng.random() < 0.85:
            pair = rng.choice(pairs)
        else:
            pair = (rng.randrange(k + 1), rng.randrange(k + 1))
        inputs.append((ids, pair, rng.randint(256, 300)))
    for ids, pair, new_id in inputs:
        expected = _ref_merge(list(ids), pair, new_id)
        shown = f"ids={ids}, pair={pair}, new_id={new_id}"
        arg = list(ids)
        got = _call(fn, name, shown, arg, pair, new_id)
        try:
            got_l = list(got)
        except Exception:  # noqa: BLE001
            raise _fail(name, shown, expected, got, "return a list of ids") from None
        if got_l != expected:
            hint = "replace each occurrence of the pair, scanning left to right"
            if pair[0] == pair[1]:
                hint = (
                    "occurrences must not overlap: after merging two ids, continue after "
                    "both of them (merge([7, 7, 7], (7, 7), 9) == [9, 7])"
                )
            elif ids[-1:] == [pair[0]] or ids[-2:] == list(pair):
                hint = "look at the end of the list: the last pair, and a lone last id"
            raise _fail(name, shown, expected, got_l, hint)
        if arg != ids:
            raise AssertionError(
                f"{name}: your function modified its input list ({shown}); build a new list"
            )
    _ok(name, len(inputs), "llmkit.tokenizers.merge")


def check_encode(
    fn: Callable[[bytes, dict[tuple[int, int], int]], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(data, merges) -> list[int]`` against
    :func:`llmkit.tokenizers.bpe_encode_chunk`. In some cases the ``merges`` dict is
    not in rank order: the pair with the smallest new id must still be applied first.

    While it runs, a callable ``merge`` in ``fn``'s globals (the student's own) is
    replaced by :func:`llmkit.tokenizers.merge` and restored afterwards, so the encoder
    is graded on its own, not on the student's ``merge``."""
    name = "bpe_encode_chunk"
    reject_library(name, fn, _ref_encode)
    fixed: list[tuple[bytes, dict[tuple[int, int], int], bool]] = [
        (b"", {(97, 98): 256}, False),
        (b"a", {(97, 98): 256}, False),
        (b"hello", {}, False),
        (b"aaa", {(97, 97): 256}, False),
        (b"aaaa", {(97, 97): 256, (256, 256): 257}, False),
        # rank beats frequency: (1, 2) has the smaller new id, (2, 3) is more frequent
        (bytes([2, 3, 1, 2, 3, 2, 3]), {(2, 3): 257, (1, 2): 256}, True),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        shuffle = rng.random() < 0.3
        data, merges = _merge_case(rng, shuffle)
        inputs.append((data, merges, shuffle))
    with _reference_merge(fn):
        for data, merges, shuffled in inputs:
            expected = _ref_encode(data, dict(merges))
            shown = f"data={data!r}, merges={merges}"
            got = _call(fn, name, shown, data, dict(merges))
            try:
                got_l = list(got)
            except Exception:  # noqa: BLE001
                raise _fail(name, shown, expected, got, "return a list of ids") from None
            if got_l != expected:
                hint = (
                    "start from list(data); while a pair of neighbours has a merge, apply the "
                    "merge with the smallest new id (the earliest learned) everywhere"
                )
                if shuffled:
                    hint += "; this merges dict is not in rank order, so do not rely on its order"
                raise _fail(name, shown, expected, got_l, hint)
    _ok(name, len(inputs), "llmkit.tokenizers.bpe_encode_chunk")


def check_decode(
    fn: Callable[[list[int], dict[int, bytes]], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``fn(ids, vocab) -> bytes`` against :func:`llmkit.tokenizers.bpe_decode_bytes`."""
    name = "bpe_decode_bytes"
    reject_library(name, fn, _ref_decode)
    euro = _vocab_of({(226, 130): 256})  # "€" is b"\xe2\x82\xac": a token ends mid-character
    fixed: list[tuple[list[int], dict[int, bytes]]] = [
        ([], _vocab_of({})),
        ([104], _vocab_of({})),
        ([256, 172], euro),
        ([256], euro),
    ]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        data, merges = _merge_case(rng, shuffle=False)
        vocab = _vocab_of(merges)
        if rng.random() < 0.5:
            ids = _ref_encode(data, merges)
        else:
            keys = sorted(set(merges.values()) | set(data) | {0, 255})
            ids = [rng.choice(keys) for _ in range(rng.randint(0, 20))]
        inputs.append((ids, vocab))
    for ids, vocab in inputs:
        expected = _ref_decode(list(ids), vocab)
        learned = {i: vocab[i] for i in sorted(vocab) if i >= 256}
        shown = f"ids={ids}, vocab={{0..255: single bytes, **{learned}}}"
        got = _call(fn, name, shown, list(ids), dict(vocab))
        if isinstance(got, str):
            raise _fail(
                name,
                shown,
                expected,
                got,
                "return bytes, not str: a token can end in the middle of a UTF-8 character, "
                "so decode to text only at the very end",
            )
        if not isinstance(got, (bytes, bytearray)) or bytes(got) != expected:
            raise _fail(name, shown, expected, got, "join vocab[i] for every id, in order")
    _ok(name, len(inputs), "llmkit.tokenizers.bpe_decode_bytes")


def check_round_trip(
    encode_fn: Callable[[bytes, dict[tuple[int, int], int]], Any],
    decode_fn: Callable[[list[int], dict[int, bytes]], Any],
    cases: int = DEFAULT_CASES,
    seed: int | None = None,
) -> None:
    """Check ``decode_fn(encode_fn(data, merges), vocab) == data`` on random byte strings
    (all 256 byte values, UTF-8 text, bytes that never occurred in training)."""
    name = "round trip"
    reject_library("round trip (encode)", encode_fn, _ref_encode)
    reject_library("round trip (decode)", decode_fn, _ref_decode)
    fixed: list[bytes] = [b"", b"x", bytes(range(256)), "naïve café, 日本語 🙂".encode()]
    _check_cases(cases, len(fixed))
    rng = _rng(seed)
    inputs: list[tuple[bytes, dict[tuple[int, int], int]]] = []
    for data in fixed:
        inputs.append((data, _train_merges(data + data, 10)))
    while len(inputs) < cases:
        data, merges = _merge_case(rng, shuffle=False)
        if rng.random() < 0.3:  # bytes the merges never saw
            data = data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        inputs.append((data, merges))
    for data, merges in inputs:
        vocab = _vocab_of(merges)
        shown = f"data={data!r}, merges={merges}"
        ids = _call(encode_fn, "round trip (encode)", shown, data, dict(merges))
        if ids is None:
            raise _fail(name, shown, _ref_encode(data, merges), ids)
        ids = list(ids)
        back = _call(decode_fn, "round trip (decode)", f"ids={_short(ids)}", ids, vocab)
        if back != data:
            raise _fail(
                name,
                shown,
                data,
                back,
                f"decode(encode(data)) must give data back; encode gave {_short(ids)}",
            )
    print(f"✔ {name}: decode(encode(data)) == data on {len(inputs)} random byte strings")

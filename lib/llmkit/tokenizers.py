"""Tokenizers from scratch: characters and byte-level BPE (chapter 01).

A language model reads a sequence of integer *token ids*. A tokenizer turns text into
ids (``encode``) and back (``decode``). This module holds the two tokenizers of the
course:

* :class:`CharTokenizer` -- one id per distinct character of a training text. Tiny
  vocabulary, long sequences, and it cannot encode a character it has never seen.
* :class:`BPETokenizer` -- byte-level byte-pair encoding, as in GPT-2. It starts from
  the 256 possible bytes (so *every* string can be encoded) and learns ``merges``:
  each merge replaces the most frequent adjacent pair of ids by one new id.

The BPE building blocks are free functions, because the chapter-01 lab asks students to
write them and the check functions compare against these:

* :func:`get_pair_counts` -- how often each adjacent pair occurs,
* :func:`merge` -- replace every occurrence of a pair by a new id,
* :func:`bpe_encode_chunk` -- apply learned merges to the bytes of one chunk,
* :func:`bpe_decode_bytes` -- map ids back to bytes.

Training splits the text into chunks with a GPT-2 style regular expression
(:data:`GPT2_SPLIT_PATTERN`), so merges never cross a word/space/punctuation boundary,
and counts each *distinct* chunk once with its frequency. :meth:`BPETokenizer.train`
updates the pair counts incrementally after each merge (only chunks that contain the
merged pair are touched); :func:`train_bpe_naive` recounts everything after every merge
and is kept as the readable reference -- both give identical merges.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmkit import validate

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "CharTokenizer",
    "BPETokenizer",
    "get_pair_counts",
    "merge",
    "bpe_encode_chunk",
    "bpe_decode_bytes",
    "pretokenize",
    "train_bpe_naive",
]

#: GPT-2's pre-tokenisation pattern, written for Python's standard ``re`` module.
#:
#: GPT-2 uses ``\p{L}`` (letters) and ``\p{N}`` (numbers) from the third-party ``regex``
#: package. Here ``[^\W\d_]`` stands for "a letter": a word character that is neither a
#: decimal digit nor ``_``. It differs from ``\p{L}`` only on the rare characters that
#: are numeric but not decimal digits (``²``, ``½``, ``Ⅻ``), which it counts as letters,
#: so ``"x²"`` is one chunk here and two for GPT-2. ``\d`` stands for "a digit". The
#: alternatives, tried left to right:
#:
#: 1. English contractions: ``'s 't 're 've 'm 'll 'd``;
#: 2. a run of letters, with at most one leading space (``" hello"``);
#: 3. a run of digits, with at most one leading space;
#: 4. a run of other symbols (punctuation, ``_``, emoji, ...), with at most one leading
#:    space;
#: 5. a run of whitespace not followed by a non-space (so ``"  x"`` gives ``" "`` and
#:    ``" x"``: the last space sticks to the next word);
#: 6. any remaining whitespace.
#:
#: Every character falls in one of these classes, so the chunks always concatenate back
#: to the input text.
GPT2_SPLIT_PATTERN = r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"

_N_BYTES = 256
_FORMAT_BPE = "llmkit.BPETokenizer"
_FORMAT_CHAR = "llmkit.CharTokenizer"
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _as_id_list(ids: Any, name: str = "ids") -> list[int]:
    """Turn a sequence of ints (or a 1D tensor/array) into a list of Python ints."""
    if hasattr(ids, "tolist") and not isinstance(ids, list):
        ndim = getattr(ids, "ndim", 1)
        if ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got {ndim} dimensions")
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of ints, got {type(ids).__name__}")
    out = []
    for i in ids:
        try:
            out.append(operator.index(i))  # int, numpy integer, ...
        except TypeError:
            raise TypeError(f"{name} must hold ints, got {type(i).__name__} ({i!r})") from None
    return out


def _check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    if isinstance(special_tokens, str):
        raise TypeError(
            "special_tokens must be a sequence of strings, got a single string "
            f"{special_tokens!r}; wrap it in a list"
        )
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
    dupes = sorted({s for s in specials if specials.count(s) > 1})
    if dupes:
        raise ValueError(f"special_tokens must be distinct, got duplicates {dupes}")
    return specials


def _special_splitter(specials: Iterable[str]) -> re.Pattern[str]:
    """A pattern whose ``split`` keeps the specials (longest first, so prefixes lose)."""
    alternatives = sorted(specials, key=lambda s: (-len(s), s))
    return re.compile("(" + "|".join(re.escape(s) for s in alternatives) + ")")


def _write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{os.fspath(path)!r} is not a saved {fmt} (format is {found!r})")
    if obj.get("version") != _FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {obj.get('version')!r}; "
            f"this llmkit reads version {_FORMAT_VERSION}"
        )
    return obj


# --------------------------------------------------------------------------------------
# Character tokenizer
# --------------------------------------------------------------------------------------


class CharTokenizer:
    """One token per character: the vocabulary is the sorted distinct characters of a
    training text, followed by optional special tokens.

    >>> tok = CharTokenizer.train("hello")
    >>> tok.vocab
    ['e', 'h', 'l', 'o']
    >>> tok.encode("hole")
    [1, 3, 2, 0]
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'

    Special tokens (e.g. ``"<|endoftext|>"``) get the ids after the characters; in
    :meth:`encode` they are matched first, as whole strings.
    """

    def __init__(self, chars: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        specials = _check_special_tokens(special_tokens)
        clash = sorted(set(specials) & set(chars))
        if clash:
            raise ValueError(f"special tokens {clash} are already characters of the vocab")
        self.vocab: list[str] = chars + specials
        self.special_tokens: dict[str, int] = {s: len(chars) + i for i, s in enumerate(specials)}
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.vocab)}
        self._splitter = _special_splitter(specials) if specials else None

    @classmethod
    def train(cls, text: str, special_tokens: Sequence[str] = ()) -> CharTokenizer:
        """Build the vocabulary from ``text``: sorted distinct characters, then specials."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)), special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids: distinct characters plus special tokens."""
        return len(self.vocab)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"CharTokenizer(vocab_size={self.vocab_size}, "
            f"special_tokens={list(self.special_tokens)})"
        )

    def _encode_plain(self, text: str, offset: int, out: list[int]) -> None:
        stoi = self.stoi
        try:
            out.extend([stoi[c] for c in text])
        except KeyError:
            for pos, c in enumerate(text):
                if c not in stoi or c in self.special_tokens:
                    raise ValueError(
                        f"character {c!r} (U+{ord(c):04X}) at position {offset + pos} is not "
                        f"in the vocabulary of {self.vocab_size} tokens"
                    ) from None
            raise

    def encode(self, text: str) -> list[int]:
        """Text to ids, one per character (special tokens as whole strings).

        Raises:
            ValueError: naming the first character that is not in the vocabulary.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[int] = []
        if self._splitter is None:
            self._encode_plain(text, 0, out)
            return out
        offset = 0
        for i, part in enumerate(self._splitter.split(text)):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                self._encode_plain(part, offset, out)
            offset += len(part)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (a list or a 1D tensor) back to text.

        Raises:
            ValueError: for an id outside ``[0, vocab_size)``.
        """
        ids = _as_id_list(ids)
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is out of range [0, {n})")
        return "".join(self.vocab[i] for i in ids)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the vocabulary as human-readable JSON."""
        n_chars = self.vocab_size - len(self.special_tokens)
        _write_json_atomic(
            path,
            {
                "format": _FORMAT_CHAR,
                "version": _FORMAT_VERSION,
                "chars": self.vocab[:n_chars],
                "special_tokens": list(self.special_tokens),
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        obj = _read_json(path, _FORMAT_CHAR)
        return cls(obj["chars"], obj.get("special_tokens", []))


# --------------------------------------------------------------------------------------
# Byte-pair encoding: the building blocks (the lab's exercises)
# --------------------------------------------------------------------------------------


def get_pair_counts(
    ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None
) -> dict[tuple[int, int], int]:
    """Count adjacent pairs: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}``.

    Overlapping pairs all count: ``[7, 7, 7]`` has ``(7, 7)`` twice.

    Args:
        ids: a sequence of token ids, ``(seq,)``.
        counts: an existing dict to add to (updated in place and returned); a new one
            if ``None``. Lets you count over many chunks without merging them.
    """
    if counts is None:
        counts = {}
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right.

    Occurrences do not overlap: once two ids are merged, the scan continues after them,
    so ``merge([7, 7, 7], (7, 7), 9) == [9, 7]`` and
    ``merge([7, 7, 7, 7], (7, 7), 9) == [9, 9]``. The input is not modified.

    Args:
        ids: token ids, ``(seq,)``.
        pair: the two adjacent ids to replace.
        new_id: the id that replaces them.
    Returns:
        a new list, ``(seq',)`` with ``seq' <= seq``.
    """
    if len(pair) != 2:
        raise ValueError(f"pair must hold exactly 2 ids, got {pair!r}")
    a, b = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bpe_encode_chunk(data: bytes, merges: Mapping[tuple[int, int], int]) -> list[int]:
    """Encode the bytes of one chunk with learned merges.

    Start from the raw bytes (ids 0..255). While some adjacent pair has a merge, apply
    the one with the lowest rank -- the smallest new id, i.e. the merge learned first --
    everywhere (with :func:`merge`). Applying merges in the order they were learned
    reproduces exactly what training did to the same chunk.

    Args:
        data: the UTF-8 bytes of one pre-tokenised chunk.
        merges: ``{(id_a, id_b): new_id}``; lower ``new_id`` means higher priority. The
            order of the dict does not matter.
    Returns:
        token ids, ``(seq,)``.
    """
    ids = list(data)
    inf = float("inf")
    while len(ids) >= 2:
        pairs = set(zip(ids, ids[1:], strict=False))
        best = min(pairs, key=lambda p: merges.get(p, inf))
        if best not in merges:
            break
        ids = merge(ids, best, merges[best])
    return ids


def bpe_decode_bytes(ids: Sequence[int], vocab: Mapping[int, bytes]) -> bytes:
    """Concatenate the bytes of each token: ``vocab[id]`` for id in ``ids``.

    The result can end in the middle of a multi-byte UTF-8 character (a token boundary
    need not be a character boundary), so it is returned as ``bytes``.

    Raises:
        ValueError: for an id that is not in ``vocab``.
    """
    try:
        return b"".join([vocab[i] for i in ids])
    except KeyError as e:
        raise ValueError(f"token id {e.args[0]!r} is not in the vocabulary") from None


def pretokenize(text: str, pattern: str | re.Pattern[str] = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split ``text`` into the chunks that BPE works on (merges never cross chunks).

    >>> pretokenize("Hello, world!  It's 2024.")
    ['Hello', ',', ' world', '!', ' ', ' It', "'s", ' 2024', '.']
    """
    pat = re.compile(pattern) if isinstance(pattern, str) else pattern
    return pat.findall(text)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _check_vocab_size(vocab_size: int, n_special: int) -> int:
    validate.integer("vocab_size", vocab_size)
    minimum = _N_BYTES + n_special
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be at least {minimum} (256 byte tokens + {n_special} special "
            f"tokens), got {vocab_size}"
        )
    return vocab_size - minimum


def _utf8(text: str, name: str) -> bytes:
    """``text`` as UTF-8, or a ValueError naming ``name`` if it holds a lone surrogate."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start]
        raise ValueError(
            f"{name} must be valid Unicode: it holds the lone surrogate U+{ord(bad):04X} "
            f"at position {e.start}, which has no UTF-8 encoding"
        ) from None


def _chunk_table(
    text: str, specials: Sequence[str], pattern: re.Pattern[str]
) -> list[tuple[list[int], int]]:
    """Distinct chunks of ``text`` (special tokens removed) as ``(byte ids, frequency)``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    parts = _special_splitter(specials).split(text)[::2] if specials else [text]
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(pattern.findall(part))
    # Sorted so that the table (and everything built from it) does not depend on the
    # order of the text; the merges would be the same anyway, as ties are broken by pair.
    return [(list(_utf8(chunk, "text")), freq) for chunk, freq in sorted(counts.items())]


def _best_pair(counts: Mapping[tuple[int, int], int]) -> tuple[tuple[int, int], int] | None:
    """Highest count; among equal counts the smallest pair. ``None`` if no pairs."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def train_bpe_naive(
    text: str,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    pattern: str = GPT2_SPLIT_PATTERN,
) -> list[tuple[int, int]]:
    """The straightforward BPE trainer: recount every pair after every merge.

    Same rules and result as :meth:`BPETokenizer.train` (which should be used in
    practice): pre-tokenise, count the distinct chunks, then repeat ``vocab_size - 256 -
    len(special_tokens)`` times: count all adjacent pairs over the chunk table (weighted
    by chunk frequency), pick the most frequent (ties: the smallest pair), give it the
    next id, and merge it in every chunk. Stops early if no pair occurs at least twice.

    Returns:
        the merges, in the order learned; merge ``k`` creates id ``256 + k``.
    """
    specials = _check_special_tokens(special_tokens)
    n_merges = _check_vocab_size(vocab_size, len(specials))
    words = _chunk_table(text, specials, re.compile(pattern))
    merges: list[tuple[int, int]] = []
    for k in range(n_merges):
        counts: dict[tuple[int, int], int] = {}
        for ids, freq in words:
            for pair in zip(ids, ids[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + freq
        best = _best_pair(counts)
        if best is None or best[1] < 2:
            break
        pair = best[0]
        new_id = _N_BYTES + k
        words = [(merge(ids, pair, new_id), freq) for ids, freq in words]
        merges.append(pair)
    return merges


def _train_incremental(
    words: list[tuple[list[int], int]], n_merges: int, progress: bool = False
) -> tuple[list[tuple[int, int]], list[int]]:
    """BPE training with incremental pair counts.

    Returns the merges in the order learned and, for each, how often its pair occurred
    (overlapping occurrences included) in the training chunks when it was merged.

    State: ``counts[pair]`` (weighted by chunk frequency), ``where[pair]`` (the set of
    chunks containing the pair) and a max-heap of ``(-count, pair)`` with lazy deletion
    (an entry is stale when its count differs from ``counts``). A merge only re-reads the
    chunks in ``where[pair]``: it subtracts their old pairs and adds their new ones.
    """
    seqs = [ids for ids, _ in words]
    freqs = [freq for _, freq in words]
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (ids, freq) in enumerate(words):
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] += freq
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")

    merges: list[tuple[int, int]] = []
    merge_counts: list[int] = []
    while len(merges) < n_merges:
        # Pop stale entries until the top of the heap is the true best pair.
        while heap and counts.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap or -heap[0][0] < 2:
            break
        negative_count, pair = heapq.heappop(heap)
        new_id = _N_BYTES + len(merges)
        merges.append(pair)
        merge_counts.append(-negative_count)

        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in where.pop(pair):
            old = seqs[w]
            new = merge(old, pair, new_id)
            seqs[w] = new
            freq = freqs[w]
            old_pairs = list(zip(old, old[1:], strict=False))
            new_pairs = list(zip(new, new[1:], strict=False))
            for p in old_pairs:
                delta[p] -= freq
            for p in new_pairs:
                delta[p] += freq
            old_set, new_set = set(old_pairs), set(new_pairs)
            for p in old_set - new_set:
                if p != pair:
                    where[p].discard(w)
            for p in new_set - old_set:
                where[p].add(w)
        for p, d in delta.items():
            if d == 0:
                continue
            c = counts[p] + d
            if c > 0:
                counts[p] = c
                heapq.heappush(heap, (-c, p))
            else:
                del counts[p]
                where.pop(p, None)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges, merge_counts


# --------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE tokenizer (GPT-2 style).

    Ids ``0..255`` are the bytes, ids ``256 .. 256+len(merges)-1`` the merges in the
    order learned, and the special tokens come last.

    Attributes:
        merges: ``list[(id_a, id_b)]``; merge ``k`` creates id ``256 + k``.
        vocab: ``{id: bytes}`` for every id, special tokens included (as their UTF-8).
        special_tokens: ``{text: id}``.
        pattern: the pre-tokenisation regular expression (Python ``re`` syntax).
        merge_counts: after :meth:`train`, how often each merged pair occurred in the
            training text when it was merged (non-increasing); empty for a tokenizer
            built from a list of merges or loaded from a file.

    >>> tok = BPETokenizer.train("low lower lowest " * 50, vocab_size=260)
    >>> [tok.token_bytes(i) for i in range(256, 260)]
    [b'lo', b'low', b' low', b' lowe']
    >>> tok.decode(tok.encode("slowest!"))
    'slowest!'
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        special_tokens: Sequence[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> None:
        specials = _check_special_tokens(special_tokens)
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        self.pattern = pattern
        self._pat = re.compile(pattern)
        self.merges: list[tuple[int, int]] = []
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(_N_BYTES)}
        for k, pair in enumerate(merges):
            if len(pair) != 2:
                raise ValueError(f"merge {k} must be a pair of ids, got {pair!r}")
            a, b = int(pair[0]), int(pair[1])
            new_id = _N_BYTES + k
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(
                    f"merge {k} {pair!r} uses an id outside [0, {new_id}): a merge may only "
                    "combine bytes and earlier merges"
                )
            self.merges.append((a, b))
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        self._ranks: dict[tuple[int, int], int] = {
            pair: _N_BYTES + k for k, pair in enumerate(self.merges)
        }
        if len(self._ranks) != len(self.merges):
            raise ValueError("merges must be distinct")
        base = _N_BYTES + len(self.merges)
        self.special_tokens: dict[str, int] = {s: base + i for i, s in enumerate(specials)}
        for s, i in self.special_tokens.items():
            self.vocab[i] = s.encode("utf-8")
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}
        self._splitters: dict[frozenset[str], re.Pattern[str]] = {}
        self._cache: dict[str, list[int]] = {}
        self.merge_counts: list[int] = []

    # -- training --------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        progress: bool = False,
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        The text is split around the special tokens (which are not learned from), then
        pre-tokenised with ``pattern``; each distinct chunk is counted once with its
        frequency. Each step merges the most frequent adjacent pair (ties: the smallest
        pair, so training is deterministic) and updates the pair counts of the affected
        chunks only.

        Training stops early -- with fewer merges, so a smaller :attr:`vocab_size` than
        asked -- only when no pair occurs at least twice (merging a pair seen once saves
        one token in the training text and only memorises it).

        Args:
            text: the training text.
            vocab_size: 256 byte tokens + merges + special tokens.
            special_tokens: e.g. ``["<|endoftext|>"]``, given the last ids.
            progress: show a tqdm progress bar over the merges.
            pattern: the pre-tokenisation regex (default :data:`GPT2_SPLIT_PATTERN`).

        Raises:
            ValueError: if ``vocab_size < 256 + len(special_tokens)``.
        """
        specials = _check_special_tokens(special_tokens)
        n_merges = _check_vocab_size(vocab_size, len(specials))
        words = _chunk_table(text, specials, re.compile(pattern))
        merges, merge_counts = _train_incremental(words, n_merges, progress=progress)
        tokenizer = cls(merges, specials, pattern)
        tokenizer.merge_counts = merge_counts
        return tokenizer

    # -- properties ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids: 256 bytes + merges + special tokens."""
        return _N_BYTES + len(self.merges) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one token (a special token: its UTF-8 text)."""
        validate.integer("id", id)
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"token id {id} is out of range [0, {self.vocab_size})")
        return self.vocab[id]

    # -- encoding --------------------------------------------------------------------

    def _allowed(self, allowed_special: str | Iterable[str]) -> frozenset[str]:
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return frozenset(self.special_tokens)
            if allowed_special == "none":
                return frozenset()
            raise ValueError(
                f'allowed_special must be "all", "none" or a set of special tokens, '
                f"got {allowed_special!r}"
            )
        allowed = frozenset(allowed_special)
        unknown = sorted(s for s in allowed if s not in self.special_tokens)
        if unknown:
            raise ValueError(
                f"unknown special token(s) {unknown} in allowed_special; "
                f"this tokenizer knows {sorted(self.special_tokens)}"
            )
        return allowed

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._cache
        ranks = self._ranks
        for chunk in self._pat.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = bpe_encode_chunk(_utf8(chunk, "text"), ranks)
                if len(cache) >= 200_000:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)

    def encode(self, text: str, allowed_special: str | Iterable[str] = "all") -> list[int]:
        """Text to ids, ``(seq,)``.

        Args:
            text: any string (without lone surrogates: it must be UTF-8 encodable).
            allowed_special: which special tokens are recognised in ``text``: ``"all"``
                (default), ``"none"`` (they are encoded as ordinary text), or a set of
                special-token strings.

        Raises:
            ValueError: for an unknown name in ``allowed_special``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        out: list[int] = []
        if not allowed:
            self._encode_ordinary(text, out)
            return out
        splitter = self._splitters.get(allowed)
        if splitter is None:
            splitter = self._splitters[allowed] = _special_splitter(allowed)
        for i, part in enumerate(splitter.split(text)):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                self._encode_ordinary(part, out)
        return out

    # -- decoding --------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Ids to the raw bytes they stand for (no UTF-8 decoding)."""
        ids = _as_id_list(ids)
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is out of range [0, {n})")
        return bpe_decode_bytes(ids, self.vocab)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (a list or a 1D tensor) to text.

        Invalid UTF-8 (e.g. a slice of ids that cuts a character in two) becomes
        U+FFFD ("replace"), as in GPT-2.

        Raises:
            ValueError: for an id outside ``[0, vocab_size)``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- persistence -----------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tokenizer as human-readable JSON.

        The file holds the format name and version, the pattern, the merges (as id
        pairs, with the resulting token shown for reading) and the special tokens.
        """

        def show(i: int) -> str:
            return self.vocab[i].decode("utf-8", errors="backslashreplace")

        _write_json_atomic(
            path,
            {
                "format": _FORMAT_BPE,
                "version": _FORMAT_VERSION,
                "pattern": self.pattern,
                "vocab_size": self.vocab_size,
                "special_tokens": self.special_tokens,
                "merges": [[a, b] for a, b in self.merges],
                "merged_tokens": [show(_N_BYTES + k) for k in range(len(self.merges))],
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save` (``merged_tokens`` is ignored)."""
        obj = _read_json(path, _FORMAT_BPE)
        merges = [(int(a), int(b)) for a, b in obj["merges"]]
        specials: Mapping[str, int] = obj.get("special_tokens", {})
        ordered = sorted(specials, key=lambda s: specials[s])
        tok = cls(merges, ordered, obj.get("pattern", GPT2_SPLIT_PATTERN))
        if tok.special_tokens != dict(specials):
            raise ValueError(
                f"special token ids {dict(specials)} in {os.fspath(path)!r} do not follow "
                f"the {len(merges)} merges; expected {tok.special_tokens}"
            )
        return tok

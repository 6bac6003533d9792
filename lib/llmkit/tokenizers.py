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

The same class also holds *pretrained* byte-level BPE tokenizers (GPT-2, SmolLM2, ...),
whose ids need not follow the merge order: :meth:`BPETokenizer.from_vocab_merges` reads
GPT-2-style ``vocab.json`` + ``merges.txt``, :meth:`BPETokenizer.from_gguf_metadata` the
tokenizer fields of a GGUF file. Their pre-tokenisation rules are written with Unicode
properties (:data:`GPT2_PATTERN`, :data:`SMOLLM_PATTERN`), which :func:`compile_pattern`
translates for Python's ``re``, and they encode exactly like Hugging Face ``tokenizers``
(the tests compare every text of the data mirror).
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from llmkit import validate

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "GPT2_PATTERN",
    "SMOLLM_PATTERN",
    "PRETOKENIZER_PATTERNS",
    "compile_pattern",
    "bytes_to_unicode",
    "CharTokenizer",
    "BPETokenizer",
    "get_pair_counts",
    "merge",
    "bpe_encode_chunk",
    "bpe_decode_bytes",
    "pretokenize",
    "train_bpe_naive",
    "train_bpe_merges",
    "TIE_BREAKS",
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

#: GPT-2's pre-tokenisation rule exactly as Hugging Face ``tokenizers`` (``ByteLevel``
#: with ``use_regex=True``) and the ``regex`` package read it: ``\p{L}`` is any letter,
#: ``\p{N}`` any number (decimal digits, ``²``, ``½``, ``Ⅻ``...), ``\s`` the Unicode
#: ``White_Space`` property. Give it to :func:`compile_pattern` (the tokenizer does).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

#: SmolLM2's pre-tokenisation rule (GGUF ``tokenizer.ggml.pre = "smollm"``): every number
#: character is a chunk of its own, and the rest is split by GPT-2's rule. Hugging Face
#: writes it as ``Sequence([Digits(individual_digits=True), ByteLevel(use_regex=True)])``,
#: llama.cpp as the two regexes ``\p{N}`` then GPT-2's. As one regex: ``\p{N}`` first, no
#: `` ?\p{N}+`` (a space before a digit is not glued to it), and a whitespace run may end
#: before a number as it may end before the end of the text: ``"a  12"`` is ``a``,
#: ``"  "``, ``1``, ``2`` (GPT-2's rule gives ``a``, ``" "``, ``" 12"``).
SMOLLM_PATTERN = r"\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"

#: The pre-tokenisation rules known by name, as GGUF's ``tokenizer.ggml.pre`` names them.
PRETOKENIZER_PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "smollm": SMOLLM_PATTERN}

_N_BYTES = 256
_FORMAT_VERSION_GENERAL = 2
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


def _read_json(
    path: str | os.PathLike[str], fmt: str, versions: tuple[int, ...] = (_FORMAT_VERSION,)
) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{os.fspath(path)!r} is not a saved {fmt} (format is {found!r})")
    if obj.get("version") not in versions:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {obj.get('version')!r}; "
            f"this llmkit reads version {' or '.join(map(str, versions))}"
        )
    return obj


# --------------------------------------------------------------------------------------
# Pre-tokenisation patterns with Unicode properties, and GPT-2's byte <-> character map
# --------------------------------------------------------------------------------------

#: The Unicode ``White_Space`` property (what ``\s`` means in Hugging Face's Oniguruma and
#: in the ``regex`` package). Python's ``\s`` also matches U+001C..U+001F.
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_CLASS_CACHE: dict[str, str] = {}


def _class_body(chars_or_ranges: Iterable[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in chars_or_ranges:
        a = f"\\U{lo:08x}"
        parts.append(a if lo == hi else f"{a}-\\U{hi:08x}")
    return "".join(parts)


def _property_class(name: str) -> str:
    """The body of a ``re`` character class for ``\\p{name}`` (a general category or its
    first letter, e.g. ``L``, ``N``, ``Lu``), from :mod:`unicodedata`."""
    body = _CLASS_CACHE.get(name)
    if body is None:
        cat = unicodedata.category
        ranges: list[tuple[int, int]] = []
        for cp in range(0x110000):
            if cat(chr(cp)).startswith(name):
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1] = (ranges[-1][0], cp)
                else:
                    ranges.append((cp, cp))
        if not ranges:
            raise ValueError(f"unknown Unicode property \\p{{{name}}}")
        body = _CLASS_CACHE[name] = _class_body(ranges)
    return body


def compile_pattern(pattern: str) -> re.Pattern[str]:
    r"""Compile a pre-tokenisation pattern for Python's ``re``.

    A pattern without ``\p{...}`` is compiled as it is (the course's
    :data:`GPT2_SPLIT_PATTERN`). A pattern with ``\p{...}`` is read as Hugging Face's
    ``tokenizers`` (Oniguruma) and the ``regex`` package read it: ``\p{X}`` is the Unicode
    general category ``X`` (``L``, ``N``, ``Lu``...), ``\s``/``\S`` the ``White_Space``
    property and its complement. They are rewritten as explicit character classes (the
    categories from :mod:`unicodedata`), inside ``[...]`` as well as outside.
    """
    if "\\p{" not in pattern:
        return re.compile(pattern)
    ws = "".join(f"\\U{ord(c):08x}" for c in _WHITE_SPACE)
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            e = pattern[i + 1]
            if e == "p" and pattern.startswith("{", i + 2):
                end = pattern.index("}", i + 3)
                body = _property_class(pattern[i + 3 : end])
                out.append(body if in_class else f"[{body}]")
                i = end + 1
                continue
            if e == "P":
                raise ValueError(r"\P{...} is not supported; write [^\p{...}]")
            if e == "s":
                out.append(ws if in_class else f"[{ws}]")
            elif e == "S":
                if in_class:
                    raise ValueError(r"\S inside [...] is not supported in a \p{...} pattern")
                out.append(f"[^{ws}]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            if pattern.startswith("^", i + 1):  # a "]" right after "[" or "[^" is literal
                out.append("^")
                i += 1
            if pattern.startswith("]", i + 1):
                out.append("\\]")
                i += 1
        elif c == "]" and in_class:
            in_class = False
            out.append(c)
        else:
            out.append(c)
        i += 1
    return re.compile("".join(out))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (``vocab.json``, GGUF tokens).

    The 188 bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``,
    ``®``..``ÿ``) stand for themselves; the other 68 (space, control characters...) get
    the characters U+0100 onwards in byte order, so a space is ``Ġ`` and ``\\n`` is ``Ċ``.
    """
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {b: chr(b) for b in keep}
    n = 0
    for b in range(_N_BYTES):
        if b not in out:
            out[b] = chr(_N_BYTES + n)
            n += 1
    return dict(sorted(out.items()))


def _bpe_merge_hf(ids: list[int], ranks: Mapping[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Apply merges to one chunk exactly as Hugging Face ``tokenizers`` does.

    ``ranks[(a, b)] = (rank, new_id)``. A heap holds the mergeable adjacent pairs by
    (rank, position); the lowest rank is merged first, the leftmost among equal ranks,
    and the pairs it forms with its neighbours are pushed. For merges learned in order
    this is what :func:`bpe_encode_chunk` computes; it also gives Hugging Face's answer
    for merge lists in any order.
    """
    n = len(ids)
    if n < 2:
        return ids
    get = ranks.get
    heap = []
    for i in range(n - 1):
        m = get((ids[i], ids[i + 1]))
        if m is not None:
            heap.append((m[0], i, m[1]))
    if not heap:
        return ids
    sym = list(ids)
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, pos, new_id = pop(heap)
        if not alive[pos]:
            continue
        j = nxt[pos]
        if j < 0:
            continue
        m = get((sym[pos], sym[j]))
        if m is None or m[1] != new_id:  # a stale entry
            continue
        sym[pos] = new_id
        alive[j] = False
        k = nxt[j]
        nxt[pos] = k
        if k >= 0:
            prv[k] = pos
            m = get((new_id, sym[k]))
            if m is not None:
                push(heap, (m[0], pos, m[1]))
        p = prv[pos]
        if p >= 0:
            m = get((sym[p], new_id))
            if m is not None:
                push(heap, (m[0], p, m[1]))
    return [s for s, a in zip(sym, alive, strict=True) if a]


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
    pat = compile_pattern(pattern) if isinstance(pattern, str) else pattern
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


#: How training breaks ties between equally frequent pairs: ``"smallest"`` (the pair of
#: smallest ids, comparing ``(id_a, id_b)``; the course's default) or
#: ``"greatest_bytes"`` (the lexicographically greatest pair of byte strings, comparing
#: ``(bytes_a, bytes_b)``; the convention of, e.g., Stanford CS336's BPE assignment).
TIE_BREAKS = ("smallest", "greatest_bytes")


def _check_tie_break(tie_break: str) -> str:
    validate.one_of("tie_break", tie_break, TIE_BREAKS)
    return tie_break


class _Desc:
    """Wraps a value so that ``heapq`` (a min-heap) pops the greatest first."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return self.v > other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v


def _best_pair(
    counts: Mapping[tuple[int, int], int],
    tie_break: str = "smallest",
    vocab: Mapping[int, bytes] | None = None,
) -> tuple[tuple[int, int], int] | None:
    """Highest count; among equal counts the smallest pair (or, with
    ``tie_break="greatest_bytes"``, the greatest ``(vocab[a], vocab[b])``). ``None`` if
    no pairs."""
    if not counts:
        return None
    if tie_break == "smallest":
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert vocab is not None
    top = max(counts.values())
    best = max((p for p, c in counts.items() if c == top), key=lambda p: (vocab[p[0]], vocab[p[1]]))
    return best, top


def train_bpe_naive(
    text: str,
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    pattern: str = GPT2_SPLIT_PATTERN,
    tie_break: str = "smallest",
) -> list[tuple[int, int]]:
    """The straightforward BPE trainer: recount every pair after every merge.

    Same rules and result as :meth:`BPETokenizer.train` (which should be used in
    practice): pre-tokenise, count the distinct chunks, then repeat ``vocab_size - 256 -
    len(special_tokens)`` times: count all adjacent pairs over the chunk table (weighted
    by chunk frequency), pick the most frequent (ties: see :data:`TIE_BREAKS`), give it
    the next id, and merge it in every chunk. Stops early if no pair occurs at least twice.

    Returns:
        the merges, in the order learned; merge ``k`` creates id ``256 + k``.
    """
    specials = _check_special_tokens(special_tokens)
    n_merges = _check_vocab_size(vocab_size, len(specials))
    tie_break = _check_tie_break(tie_break)
    words = _chunk_table(text, specials, compile_pattern(pattern))
    vocab = {i: bytes([i]) for i in range(_N_BYTES)}
    merges: list[tuple[int, int]] = []
    for k in range(n_merges):
        counts: dict[tuple[int, int], int] = {}
        for ids, freq in words:
            for pair in zip(ids, ids[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + freq
        best = _best_pair(counts, tie_break, vocab)
        if best is None or best[1] < 2:
            break
        pair = best[0]
        new_id = _N_BYTES + k
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        words = [(merge(ids, pair, new_id), freq) for ids, freq in words]
        merges.append(pair)
    return merges


def _train_incremental(
    words: list[tuple[list[int], int]],
    n_merges: int,
    progress: bool = False,
    tie_break: str = "smallest",
) -> tuple[list[tuple[int, int]], list[int]]:
    """BPE training with incremental pair counts.

    Returns the merges in the order learned and, for each, how often its pair occurred
    (overlapping occurrences included) in the training chunks when it was merged.

    State: ``counts[pair]`` (weighted by chunk frequency), ``where[pair]`` (the set of
    chunks containing the pair) and a max-heap of ``(-count, tie key, pair)`` with lazy
    deletion (an entry is stale when its count differs from ``counts``). A merge only
    re-reads the chunks in ``where[pair]``: it subtracts their old pairs and adds their
    new ones. The tie key is the pair itself (``tie_break="smallest"``) or its byte strings
    in reverse order (``"greatest_bytes"``).
    """
    vocab = {i: bytes([i]) for i in range(_N_BYTES)}
    if tie_break == "smallest":

        def entry(c: int, pair: tuple[int, int]) -> tuple[Any, ...]:
            return (-c, pair, pair)
    else:

        def entry(c: int, pair: tuple[int, int]) -> tuple[Any, ...]:
            return (-c, _Desc((vocab[pair[0]], vocab[pair[1]])), pair)

    seqs = [ids for ids, _ in words]
    freqs = [freq for _, freq in words]
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (ids, freq) in enumerate(words):
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] += freq
            where[pair].add(w)
    heap = [entry(c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")

    merges: list[tuple[int, int]] = []
    merge_counts: list[int] = []
    while len(merges) < n_merges:
        # Pop stale entries until the top of the heap is the true best pair.
        while heap and counts.get(heap[0][2], 0) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap or -heap[0][0] < 2:
            break
        negative_count, _, pair = heapq.heappop(heap)
        new_id = _N_BYTES + len(merges)
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
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
                heapq.heappush(heap, entry(c, p))
            else:
                del counts[p]
                where.pop(p, None)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges, merge_counts


def train_bpe_merges(
    words: Sequence[tuple[Sequence[int], int]], n_merges: int, tie_break: str = "smallest"
) -> tuple[list[tuple[int, int]], list[int]]:
    """BPE merges over a table of symbol sequences, with :meth:`BPETokenizer.train`'s rules.

    For vocabularies that are not byte-level, such as :func:`llmkit.bert.train_wordpiece`:
    ``words`` holds ``(symbol ids, frequency)`` rows with ids below 256; merge ``k``
    creates id ``256 + k``. Ties between equally frequent pairs are broken as
    :data:`TIE_BREAKS` says (``"greatest_bytes"`` reads ids as bytes), so the result
    depends only on the table. Stops early when no pair occurs at least twice.

    Returns:
        ``(merges, counts)``: the merged pairs in the order learned, and how often each
        pair occurred when it was merged.
    """
    validate.integer("n_merges", n_merges, minimum=0)
    tie_break = _check_tie_break(tie_break)
    table: list[tuple[list[int], int]] = []
    for ids, freq in words:
        ids = list(ids)
        if any(not 0 <= i < _N_BYTES for i in ids):
            raise ValueError(f"words must hold symbol ids in [0, {_N_BYTES}), got {ids}")
        table.append((ids, int(freq)))
    return _train_incremental(table, n_merges, tie_break=tie_break)


# --------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------


class BPETokenizer:
    """Byte-level BPE tokenizer (GPT-2 style), trained here or pretrained.

    A tokenizer trained by :meth:`train` (or built from a list of merges) has ids
    ``0..255`` for the bytes, ids ``256 .. 256+len(merges)-1`` for the merges in the order
    learned, and the special tokens last. A pretrained one (:meth:`from_vocab_merges`,
    :meth:`from_gguf_metadata`) keeps its own ids, which need not follow that order, and
    may lack some byte tokens (a byte without a token is dropped from the input, as
    Hugging Face ``tokenizers`` drops it when there is no unknown token).

    Attributes:
        merges: ``list[(id_a, id_b)]`` in rank order (the first is applied first).
        merge_ids: the id each merge creates; ``256 + k`` for a trained tokenizer.
        vocab: ``{id: bytes}`` for every id, special tokens included (as their UTF-8).
        special_tokens: ``{text: id}``.
        pattern: the pre-tokenisation regular expression (see :func:`compile_pattern`).
        bos_token_id, eos_token_id, pad_token_id: ``None`` unless the source gives them.
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
        vocab: dict[int, bytes] = {i: bytes([i]) for i in range(_N_BYTES)}
        table: list[tuple[int, int, int]] = []
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
            vocab[new_id] = vocab[a] + vocab[b]
            table.append((a, b, new_id))
        base = _N_BYTES + len(table)
        self._setup(vocab, table, {s: base + i for i, s in enumerate(specials)}, pattern)

    def _setup(
        self,
        vocab: Mapping[int, bytes],
        table: Sequence[tuple[int, int, int]],
        special_tokens: Mapping[str, int],
        pattern: str,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        """Set every attribute from ordinary tokens ``{id: bytes}``, merges
        ``(id_a, id_b, new_id)`` in rank order and special tokens ``{text: id}``."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__}")
        self.pattern = pattern
        self._pat = compile_pattern(pattern)
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[int, int]] = [(a, b) for a, b, _ in table]
        self.merge_ids: list[int] = [c for _, _, c in table]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b, c) in enumerate(table):
            if (a, b) in self._ranks:
                raise ValueError(f"merges must be distinct: {(a, b)!r} occurs twice")
            self._ranks[(a, b)] = (rank, c)
        byte_ids = [-1] * _N_BYTES
        for i, tb in self.vocab.items():
            if len(tb) == 1 and byte_ids[tb[0]] < 0:
                byte_ids[tb[0]] = i
        self._byte_ids = byte_ids
        self._bytes_are_ids = byte_ids == list(range(_N_BYTES))
        self.special_tokens: dict[str, int] = {}
        for text, i in special_tokens.items():
            if i in self.vocab:
                raise ValueError(f"special token {text!r} has id {i}, already an ordinary token")
            self.special_tokens[text] = i
            self.vocab[i] = text.encode("utf-8")
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError("special tokens must have distinct ids")
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}
        self._vocab_size = max(self.vocab) + 1 if self.vocab else 0
        for name, value in (
            ("bos_token_id", bos_token_id),
            ("eos_token_id", eos_token_id),
            ("pad_token_id", pad_token_id),
        ):
            if value is not None and value not in self.vocab:
                raise ValueError(f"{name} {value} is not an id of the vocabulary")
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self._splitters: dict[frozenset[str], re.Pattern[str]] = {}
        self._cache: dict[str, list[int]] = {}
        self.merge_counts: list[int] = []

    def _is_canonical(self) -> bool:
        """Ids are bytes, then merges in order, then specials: the version-1 file format."""
        n = len(self.merges)
        return (
            self._bytes_are_ids
            and self.merge_ids == list(range(_N_BYTES, _N_BYTES + n))
            and sorted(self.special_tokens.values())
            == list(range(_N_BYTES + n, _N_BYTES + n + len(self.special_tokens)))
            and self.bos_token_id is None
            and self.eos_token_id is None
            and self.pad_token_id is None
        )

    # -- pretrained tokenizers -------------------------------------------------------

    @classmethod
    def from_tokens(
        cls,
        tokens: Mapping[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Mapping[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> BPETokenizer:
        """A byte-level BPE tokenizer with any ids.

        Args:
            tokens: ``{id: bytes}`` of the ordinary tokens (no special tokens).
            merges: ``(bytes_a, bytes_b)`` in rank order; both parts and their
                concatenation must be tokens.
            special_tokens: ``{text: id}``, matched as whole strings before
                pre-tokenisation (ids distinct from the ordinary tokens').
            pattern: the pre-tokenisation rule (default :data:`GPT2_PATTERN`).
            bos_token_id, eos_token_id, pad_token_id: optional, recorded as attributes.
        """
        by_bytes: dict[bytes, int] = {}
        for i, tb in tokens.items():
            i = operator.index(i)
            if not isinstance(tb, bytes):
                raise TypeError(f"token {i} must be bytes, got {type(tb).__name__}")
            if tb in by_bytes:
                raise ValueError(f"tokens {by_bytes[tb]} and {i} are both {tb!r}")
            by_bytes[tb] = i
        table = []
        for k, (x, y) in enumerate(merges):
            try:
                table.append((by_bytes[x], by_bytes[y], by_bytes[x + y]))
            except KeyError as e:
                raise ValueError(
                    f"merge {k} ({x!r}, {y!r}) needs the token {e.args[0]!r}, which is not "
                    "in the vocabulary"
                ) from None
        tok = cls.__new__(cls)
        tok._setup(
            {operator.index(i): tb for i, tb in tokens.items()},
            table,
            dict(special_tokens or {}),
            pattern,
            bos_token_id,
            eos_token_id,
            pad_token_id,
        )
        return tok

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: str | os.PathLike[str] | Mapping[str, int],
        merges: str | os.PathLike[str] | Sequence[str] | Sequence[tuple[str, str]],
        special_tokens: Sequence[str] | Mapping[str, int] = (),
        pattern: str = GPT2_PATTERN,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> BPETokenizer:
        """From GPT-2-style files: ``vocab.json`` (``{token: id}``) and ``merges.txt``.

        Tokens are written with :func:`bytes_to_unicode` (``"Ġthe"`` is ``b" the"``).

        Args:
            vocab: the path of ``vocab.json`` or its dict.
            merges: the path of ``merges.txt`` (one ``"a b"`` per line; a first line
                starting with ``#version`` is skipped) or its lines, or ``(a, b)`` pairs.
            special_tokens: texts (their ids taken from ``vocab`` when there, else the
                next free ids, in order) or ``{text: id}``. A special token found in
                ``vocab`` is taken out of the ordinary tokens.
            pattern: the pre-tokenisation rule (default :data:`GPT2_PATTERN`, GPT-2's).
            bos_token_id, eos_token_id, pad_token_id: optional, recorded as attributes.
        """
        if isinstance(vocab, (str, os.PathLike)):
            with open(vocab, encoding="utf-8") as f:
                vocab = json.load(f)
        if not isinstance(vocab, Mapping):
            raise TypeError(f"vocab must be a mapping token -> id, got {type(vocab).__name__}")
        if isinstance(merges, (str, os.PathLike)):
            with open(merges, encoding="utf-8") as f:
                merges = f.read().split("\n")
        pairs: list[tuple[str, str]] = []
        for k, m in enumerate(merges):
            if isinstance(m, str):
                if (k == 0 and m.startswith("#version")) or not m.strip():
                    continue
                parts = m.split(" ")
                if len(parts) != 2:
                    raise ValueError(f"merge line {k} {m!r} must hold two tokens")
                pairs.append((parts[0], parts[1]))
            else:
                a, b = m
                pairs.append((a, b))
        if isinstance(special_tokens, Mapping):
            specials = dict(special_tokens)
        else:
            specials = {}
            nxt = max(vocab.values(), default=-1) + 1
            for text in _check_special_tokens(special_tokens):
                if text in vocab:
                    specials[text] = vocab[text]
                else:
                    specials[text] = nxt
                    nxt += 1
        decoder = {c: b for b, c in bytes_to_unicode().items()}

        def to_bytes(token: str) -> bytes:
            try:
                return bytes([decoder[c] for c in token])
            except KeyError:
                raise ValueError(
                    f"token {token!r} is not written with GPT-2's byte-to-unicode map"
                ) from None

        special_texts = set(specials)
        tokens = {i: to_bytes(t) for t, i in vocab.items() if t not in special_texts}
        return cls.from_tokens(
            tokens,
            [(to_bytes(a), to_bytes(b)) for a, b in pairs],
            specials,
            pattern,
            bos_token_id,
            eos_token_id,
            pad_token_id,
        )

    @classmethod
    def from_gguf_metadata(
        cls, metadata: Mapping[str, Any], pattern: str | None = None
    ) -> BPETokenizer:
        """From the tokenizer fields of a GGUF file, as plain Python values.

        Reads ``tokenizer.ggml.model`` (must be ``"gpt2"``, byte-level BPE),
        ``.tokens``, ``.merges`` (``"a b"`` strings), ``.token_type`` (1 normal, 6 byte:
        ordinary tokens; 2 unknown, 3 control, 4 user-defined, 5 unused: special tokens,
        matched as whole strings), ``.bos_token_id``, ``.eos_token_id``,
        ``.padding_token_id`` and ``.pre``, the name of the pre-tokenisation rule
        (:data:`PRETOKENIZER_PATTERNS`; SmolLM2's is ``"smollm"``).

        Args:
            metadata: ``{field name: value}``, e.g. from ``llmkit.gguf.read_metadata``.
            pattern: overrides the rule named by ``tokenizer.ggml.pre``.
        """
        model = metadata.get("tokenizer.ggml.model", "gpt2")
        if model != "gpt2":
            raise ValueError(
                f"tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported"
            )
        try:
            tokens = list(metadata["tokenizer.ggml.tokens"])
            merges = list(metadata["tokenizer.ggml.merges"])
        except KeyError as e:
            raise ValueError(f"the GGUF metadata has no {e.args[0]!r}") from None
        types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
        if len(types) != len(tokens):
            raise ValueError(f"{len(types)} token types for {len(tokens)} tokens")
        if pattern is None:
            pre = metadata.get("tokenizer.ggml.pre")
            if pre not in PRETOKENIZER_PATTERNS:
                raise ValueError(
                    f"unknown pre-tokenizer tokenizer.ggml.pre={pre!r}; known: "
                    f"{sorted(PRETOKENIZER_PATTERNS)} (or pass pattern=)"
                )
            pattern = PRETOKENIZER_PATTERNS[pre]
        vocab = {t: i for i, (t, ty) in enumerate(zip(tokens, types, strict=True)) if ty in (1, 6)}
        specials = {
            t: i for i, (t, ty) in enumerate(zip(tokens, types, strict=True)) if ty not in (1, 6)
        }

        def opt(key: str) -> int | None:
            v = metadata.get(key)
            return None if v is None else int(v)

        return cls.from_vocab_merges(
            vocab,
            merges,
            specials,
            pattern,
            opt("tokenizer.ggml.bos_token_id"),
            opt("tokenizer.ggml.eos_token_id"),
            opt("tokenizer.ggml.padding_token_id"),
        )

    # -- training --------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (),
        progress: bool = False,
        pattern: str = GPT2_SPLIT_PATTERN,
        tie_break: str = "smallest",
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        The text is split around the special tokens (which are not learned from), then
        pre-tokenised with ``pattern``; each distinct chunk is counted once with its
        frequency. Each step merges the most frequent adjacent pair (ties: the smallest
        pair, so training is deterministic; or see ``tie_break``) and updates the pair
        counts of the affected chunks only.

        Training stops early -- with fewer merges, so a smaller :attr:`vocab_size` than
        asked -- only when no pair occurs at least twice (merging a pair seen once saves
        one token in the training text and only memorises it).

        Args:
            text: the training text.
            vocab_size: 256 byte tokens + merges + special tokens.
            special_tokens: e.g. ``["<|endoftext|>"]``, given the last ids.
            progress: show a tqdm progress bar over the merges.
            pattern: the pre-tokenisation regex (default :data:`GPT2_SPLIT_PATTERN`).
            tie_break: among equally frequent pairs, ``"smallest"`` (the pair of
                smallest ids, the default) or ``"greatest_bytes"`` (the lexicographically
                greatest pair of byte strings); see :data:`TIE_BREAKS`.

        Raises:
            ValueError: if ``vocab_size < 256 + len(special_tokens)``.
        """
        specials = _check_special_tokens(special_tokens)
        n_merges = _check_vocab_size(vocab_size, len(specials))
        tie_break = _check_tie_break(tie_break)
        words = _chunk_table(text, specials, compile_pattern(pattern))
        merges, merge_counts = _train_incremental(
            words, n_merges, progress=progress, tie_break=tie_break
        )
        tokenizer = cls(merges, specials, pattern)
        tokenizer.merge_counts = merge_counts
        return tokenizer

    # -- properties ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids (the largest id + 1): for a trained tokenizer, 256 bytes +
        merges + special tokens."""
        return self._vocab_size

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
        if id not in self.vocab:
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

    def _splitter(self, allowed: frozenset[str]) -> re.Pattern[str]:
        splitter = self._splitters.get(allowed)
        if splitter is None:
            splitter = self._splitters[allowed] = _special_splitter(allowed)
        return splitter

    def _encode_chunk(self, chunk: str) -> list[int]:
        data = _utf8(chunk, "text")
        if self._bytes_are_ids:
            ids = list(data)
        else:
            byte_ids = self._byte_ids
            ids = [i for i in (byte_ids[b] for b in data) if i >= 0]
        return _bpe_merge_hf(ids, self._ranks)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        self._encode_chunks(self._pat.findall(text), out)

    def _encode_chunks(self, chunks: Iterable[str], out: list[int]) -> None:
        cache = self._cache
        for chunk in chunks:
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(cache) >= 200_000:
                    cache.clear()
                cache[chunk] = ids
            out.extend(ids)

    def _encode(self, text: str, allowed: frozenset[str], out: list[int]) -> None:
        if not allowed:
            self._encode_ordinary(text, out)
            return
        for i, part in enumerate(self._splitter(allowed).split(text)):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                self._encode_ordinary(part, out)

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
        out: list[int] = []
        self._encode(text, self._allowed(allowed_special), out)
        return out

    def _stream_step(
        self, buf: str, allowed: frozenset[str], longest_special: int, out: list[int]
    ) -> int:
        """Encode the part of ``buf`` whose ids cannot change whatever text follows;
        return where the rest (to be kept for the next line) begins.

        Held back: a tail that may start a special token, and the last chunk of the last
        ordinary text (more text may extend it: a run of letters or of spaces). The
        chunks before it are those of ``buf`` itself, not of the truncated text (a run
        of spaces splits differently at the end of a text).
        """
        n = len(buf)
        cut = n
        has_special = False
        if allowed:
            lo = max(0, n - longest_special + 1)
            firsts = {s[0] for s in allowed}
            candidates = [j for j in range(lo, n) if buf[j] in firsts]
            if candidates:
                inside = set()  # positions inside a special token matched across them
                for m in self._splitter(allowed).finditer(buf, max(0, lo - longest_special)):
                    inside.update(range(m.start() + 1, m.end()))
                for j in candidates:
                    tail = buf[j:]
                    if j not in inside and any(s.startswith(tail) for s in allowed):
                        cut = j
                        break
            has_special = any(s in buf for s in allowed)
        pos = 0
        if has_special:
            for m in self._splitter(allowed).finditer(buf, 0, cut):
                if m.start() > pos:
                    self._encode_ordinary(buf[pos : m.start()], out)
                out.append(self.special_tokens[m.group()])
                pos = m.end()
        chunks = [m.group() for m in self._pat.finditer(buf, pos, cut)]
        if not chunks:
            return pos
        self._encode_chunks(chunks[:-1], out)
        return cut - len(chunks[-1])

    def encode_iterable(
        self, lines: Iterable[str], allowed_special: str | Iterable[str] = "all"
    ) -> Iterator[int]:
        """Yield the ids of ``"".join(lines)`` one by one, in bounded memory.

        Meant for the lines of a large file (``with open(path) as f:
        tok.encode_iterable(f)``). The ids are exactly those of :meth:`encode` on the
        whole text: the end of what has been read (the last chunk, and a tail that may
        begin a special token) is held back until more text shows how it continues. The
        memory used is that of one line plus that tail (a single very long chunk, such
        as a million spaces, is held whole).
        """
        if isinstance(lines, str):
            lines = [lines]
        allowed = self._allowed(allowed_special)
        longest = max((len(s) for s in allowed), default=0)
        buf = ""
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"lines must hold str, got {type(line).__name__}")
            buf += line
            out: list[int] = []
            rest = self._stream_step(buf, allowed, longest, out)
            buf = buf[rest:]
            yield from out
        out = []
        self._encode(buf, allowed, out)
        yield from out

    # -- decoding --------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Ids to the raw bytes they stand for (no UTF-8 decoding)."""
        ids = _as_id_list(ids)
        vocab = self.vocab
        for i in ids:
            if i not in vocab:
                raise ValueError(f"token id {i} is out of range [0, {self.vocab_size})")
        return bpe_decode_bytes(ids, vocab)

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

        A trained tokenizer (ids: bytes, merges in order, specials) is written in format
        version 1: the format name and version, the pattern, the merges (as id pairs,
        with the resulting token shown for reading) and the special tokens. Any other
        (a pretrained one) is written in version 2, which also lists every ordinary
        token with its id (written with :func:`bytes_to_unicode`) and the BOS, EOS and
        padding ids.
        """

        def show(i: int) -> str:
            return self.vocab[i].decode("utf-8", errors="backslashreplace")

        if self._is_canonical():
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
            return
        enc = bytes_to_unicode()
        specials = set(self._special_by_id)
        _write_json_atomic(
            path,
            {
                "format": _FORMAT_BPE,
                "version": _FORMAT_VERSION_GENERAL,
                "pattern": self.pattern,
                "vocab_size": self.vocab_size,
                "special_tokens": self.special_tokens,
                "bos_token_id": self.bos_token_id,
                "eos_token_id": self.eos_token_id,
                "pad_token_id": self.pad_token_id,
                "tokens": {
                    "".join(enc[b] for b in tb): i
                    for i, tb in sorted(self.vocab.items())
                    if i not in specials
                },
                "merges": [[a, b] for a, b in self.merges],
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save` (``merged_tokens`` is ignored)."""
        obj = _read_json(path, _FORMAT_BPE, (_FORMAT_VERSION, _FORMAT_VERSION_GENERAL))
        merges = [(int(a), int(b)) for a, b in obj["merges"]]
        specials: Mapping[str, int] = obj.get("special_tokens", {})
        if obj["version"] == _FORMAT_VERSION_GENERAL:
            dec = {c: b for b, c in bytes_to_unicode().items()}
            tokens = {int(i): bytes([dec[c] for c in t]) for t, i in obj["tokens"].items()}
            return cls.from_tokens(
                tokens,
                [(tokens[a], tokens[b]) for a, b in merges],
                specials,
                obj["pattern"],
                obj.get("bos_token_id"),
                obj.get("eos_token_id"),
                obj.get("pad_token_id"),
            )
        ordered = sorted(specials, key=lambda s: specials[s])
        tok = cls(merges, ordered, obj.get("pattern", GPT2_SPLIT_PATTERN))
        if tok.special_tokens != dict(specials):
            raise ValueError(
                f"special token ids {dict(specials)} in {os.fspath(path)!r} do not follow "
                f"the {len(merges)} merges; expected {tok.special_tokens}"
            )
        return tok

"""Reference answers and known slips for lab 08 (training data). See the package docstring."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from llmkit.datafilter import BadWordsMatcher, C4Config, c4_clean, normalize_text

# ------------------------------------------------------------------------ find_bad_words


def find_bad_words(text: str, words: Sequence[str]) -> list[str]:
    """``BadWordsMatcher(words).find_all(text)``."""
    return BadWordsMatcher(words).find_all(text)


def _find(
    text: str, words: Sequence[str], *, boundary: str = "word", escape: bool = True,
    longest_first: bool = True,
) -> list[str]:  # fmt: skip
    """The matcher written out; the keyword arguments switch on one mistake each."""
    entries = list(dict.fromkeys(w.strip().lower() for w in words if w.strip()))
    if longest_first:
        entries.sort(key=lambda w: (-len(w), w))
    body = "|".join(r"\s+".join(re.escape(p) if escape else p for p in w.split()) for w in entries)
    before, after = {"word": (r"(?<!\w)", r"(?!\w)"), "none": ("", ""), "b": (r"\b", r"\b")}[
        boundary
    ]
    return [m.group(1) for m in re.finditer(f"{before}({body}){after}", text, re.IGNORECASE)]


def find_bad_words_substrings(text: str, words: Sequence[str]) -> list[str]:
    """Entries found inside longer words (the Scunthorpe problem)."""
    return _find(text, words, boundary="none")


def find_bad_words_b(text: str, words: Sequence[str]) -> list[str]:
    r"""``\b`` as the boundary: wrong next to entries that begin or end with punctuation."""
    return _find(text, words, boundary="b")


def find_bad_words_unescaped(text: str, words: Sequence[str]) -> list[str]:
    """Entries used as regular expressions (``.`` matches any character)."""
    return _find(text, words, escape=False)


def find_bad_words_given_order(text: str, words: Sequence[str]) -> list[str]:
    """The alternatives in the given order, so ``dang`` may win over ``dang it``."""
    return _find(text, words, longest_first=False)


# ----------------------------------------------------------------------------- keep_line

_ONLY_LINE_RULES = C4Config(
    max_word_length=None,
    citations=False,
    terminal_punctuation=True,
    min_words_per_line=5,
    lorem_ipsum=False,
    javascript=False,
    curly_bracket=False,
    policy=False,
    badwords=None,
    min_sentences=None,
)


def keep_line(line: str) -> bool:
    """Whether ``c4_clean``, with only the terminal-punctuation and five-words rules on,
    keeps ``line`` (a blank line is not kept)."""
    text, _ = c4_clean(line, _ONLY_LINE_RULES)
    return bool(text)


def _keep(
    line: str, *, strip: bool = True, marks: str = '.?!"', ellipsis: bool = True,
    min_words: int = 5,
) -> bool:  # fmt: skip
    """C4's two line rules written out; the keyword arguments switch on one mistake each."""
    if strip:
        line = line.strip()
    if not line.strip() or not line.endswith(tuple(marks)):
        return False
    return not (ellipsis and line.endswith("...")) and len(line.split()) >= min_words


def keep_line_ellipsis(line: str) -> bool:
    """A line ending in ``...`` kept (it ends in ``.``)."""
    return _keep(line, ellipsis=False)


def keep_line_unstripped(line: str) -> bool:
    """The line not stripped before its last character is tested."""
    return _keep(line, strip=False)


def keep_line_six_words(line: str) -> bool:
    """More than five words required (``> 5`` instead of ``>= 5``)."""
    return _keep(line, min_words=6)


def keep_line_no_quote(line: str) -> bool:
    """A closing double quote not counted as terminal punctuation."""
    return _keep(line, marks=".?!")


# ------------------------------------------------------------------------------ shingles


def _shingles(text: str, n: int, *, unit: str = "words", last: bool = True,
              short: bool = True) -> set[str]:  # fmt: skip
    """Shingles written out; the keyword arguments switch on one mistake each."""
    if unit == "chars":
        t = normalize_text(text)
        return {t[i : i + n] for i in range(len(t) - n + 1)} or ({t} if t else set())
    words = normalize_text(text).split() if unit == "words" else text.split()
    if len(words) <= n:
        return {" ".join(words)} if words and short else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + last)}


def shingles_of_characters(text: str, n: int) -> set[str]:
    """Character n-grams instead of word n-grams."""
    return _shingles(text, n, unit="chars")


def shingles_not_normalised(text: str, n: int) -> set[str]:
    """Words of ``text.split()``, without ``normalize_text``."""
    return _shingles(text, n, unit="raw")


def shingles_without_the_last(text: str, n: int) -> set[str]:
    """``range(len(words) - n)``: the last shingle missing."""
    return _shingles(text, n, last=False)


def shingles_none_when_short(text: str, n: int) -> set[str]:
    """No shingle at all for a text of fewer than ``n`` words."""
    return _shingles(text, n, short=False)


# ------------------------------------------------------------------------------- jaccard


def jaccard_by_smaller(a: set[str], b: set[str]) -> float:
    """The overlap coefficient: the intersection over the smaller set."""
    return len(a & b) / min(len(a), len(b))


def jaccard_by_sum(a: set[str], b: set[str]) -> float:
    """The intersection over ``|a| + |b|`` (shared elements counted twice)."""
    return len(a & b) / (len(a) + len(b))


def jaccard_dice(a: set[str], b: set[str]) -> float:
    """The Dice coefficient ``2 |a & b| / (|a| + |b|)``."""
    return 2 * len(a & b) / (len(a) + len(b))


def jaccard_empty_zero(a: set[str], b: set[str]) -> float:
    """0 instead of 1 for two empty sets."""
    return len(a & b) / len(a | b) if a | b else 0.0


# ------------------------------------------------------------------------------- minhash


def minhash(items: set[str], hash_funcs: Sequence[Callable[[str], int]]) -> list[int]:
    """``[min(h(s) for s in items) for h in hash_funcs]``; for the hash functions of
    ``MinHash.hash_functions()`` this is ``MinHash.signature_of_set(items)``."""
    return [min(h(s) for s in items) for h in hash_funcs]


def minhash_max(items: set[str], hash_funcs: Sequence[Callable[[str], int]]) -> list[int]:
    """The maximum of each hash function instead of the minimum."""
    return [max(h(s) for s in items) for h in hash_funcs]


def minhash_sorted(items: set[str], hash_funcs: Sequence[Callable[[str], int]]) -> list[int]:
    """The minima sorted, so entry k no longer belongs to ``hash_funcs[k]``."""
    return sorted(minhash(items, hash_funcs))

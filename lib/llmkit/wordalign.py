"""Word alignment with IBM Model 1, and the word-for-word translation baseline built on it.

Chapter 06 needs a baseline on its own test set: what does translation score if every
English word is replaced by the French word it most often corresponds to? "Corresponds
to" is learned from the training pairs alone, with no dictionary, by IBM Model 1
(Brown et al., 1993; Koehn, *Statistical Machine Translation*, 2010, chapter 4):

* the model: each target word ``f`` of a pair was produced by one source word ``e`` of the
  same pair (or by an empty ``NULL`` word), chosen uniformly, through a word translation
  table ``t(f | e)``; word order plays no part;
* the training: expectation-maximisation. The E-step shares each target word among the
  source words of its sentence in proportion to ``t(f | e)``; the M-step sets ``t(f | e)`` to
  the shared counts, normalised over ``f``. A uniform start and a few iterations suffice.

:func:`word_for_word` then translates a sentence by replacing each source word by its most
probable target word, keeping unknown words (names, numbers) as they are.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from llmkit.validate import positive_int

__all__ = ["NULL", "words", "ibm_model1", "best_translations", "word_for_word"]

#: The empty source word of IBM Model 1, which target words with no counterpart align to.
NULL = "<null>"

# a word with its elisions and hyphens ("n'es", "l'homme", "Préfères-tu", "don't"), or one
# character of punctuation
_WORD = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")


def words(text: str, *, lowercase: bool = True) -> list[str]:
    """Split ``text`` into words and punctuation marks (elisions and hyphens stay inside words).

    >>> words("Don't show off, Tom!")
    ["don't", 'show', 'off', ',', 'tom', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower() if lowercase else text)


def ibm_model1(
    pairs: Iterable[tuple[Sequence[str], Sequence[str]]],
    *,
    iterations: int = 5,
    null: bool = True,
) -> dict[str, dict[str, float]]:
    """Train IBM Model 1's word translation table ``t(f | e)`` by EM.

    Args:
        pairs: ``(source words, target words)`` per sentence pair (lists of strings, e.g.
            from :func:`words`).
        iterations: EM iterations (each one pass over the pairs), at least 1.
        null: add the empty word :data:`NULL` to every source sentence.
    Returns:
        ``t[e][f]``: for every source word ``e`` (and :data:`NULL`), the probabilities of the
        target words it co-occurred with; each ``t[e]`` sums to 1.
    """
    iterations = positive_int("iterations", iterations)
    if not isinstance(null, bool):
        raise TypeError(f"null must be a bool, got {null!r}")
    data: list[tuple[list[str], list[str]]] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be a (source words, target words) pair")
        src, tgt = pair
        if isinstance(src, str) or isinstance(tgt, str):
            raise TypeError(f"pairs[{i}] must hold lists of words, not strings (use words())")
        data.append(([*src, NULL] if null else list(src), list(tgt)))
    if not data:
        raise ValueError("pairs must hold at least one sentence pair")

    # uniform start: every target word equally likely from every co-occurring source word
    t: dict[str, dict[str, float]] = defaultdict(dict)
    for src, tgt in data:
        for e in src:
            row = t[e]
            for f in tgt:
                row[f] = 1.0
    for _ in range(iterations):
        counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for src, tgt in data:
            rows = [t[e] for e in src]
            for f in tgt:
                z = sum(row[f] for row in rows)  # E-step: share f among the source words
                for e, row in zip(src, rows, strict=True):
                    counts[e][f] += row[f] / z
        t = defaultdict(dict)
        for e, row in counts.items():  # M-step: normalise over the target words
            total = sum(row.values())
            t[e] = {f: c / total for f, c in row.items()}
    return dict(t)


def best_translations(table: dict[str, dict[str, float]]) -> dict[str, str]:
    """The most probable target word of every source word (ties: the alphabetically first).

    :data:`NULL` is left out.
    """
    if not isinstance(table, dict):
        raise TypeError(f"table must be a dict from ibm_model1, got {type(table).__name__}")
    return {
        e: min(row, key=lambda f: (-row[f], f)) for e, row in table.items() if e != NULL and row
    }


def word_for_word(sentence: str, dictionary: dict[str, str]) -> str:
    """Translate ``sentence`` one word at a time with ``dictionary`` (from
    :func:`best_translations`).

    Words missing from the dictionary are copied (names and numbers often survive
    translation unchanged). The output is joined with spaces, with no space before ``.``
    and ``,``, and starts with a capital letter.

    >>> word_for_word("The cat.", {"the": "le", "cat": "chat", ".": "."})
    'Le chat.'
    """
    if not isinstance(dictionary, dict):
        raise TypeError(f"dictionary must be a dict, got {type(dictionary).__name__}")
    out = [dictionary.get(w.lower(), w) for w in words(sentence, lowercase=False)]
    text = ""
    for w in out:
        text += w if (not text or w in {".", ","}) else " " + w
    return text[:1].upper() + text[1:]

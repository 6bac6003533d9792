"""Cleaning web text: C4's rules, bad words, quality heuristics, deduplication (chapter 08).

**C4** (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", section 2.2). :func:`c4_clean` applies the rules to one page,
each switchable in :class:`C4Config` and reported by name; :func:`filter_report` runs a
corpus and counts what every rule removed, with examples. The order of the rules and their
details follow the reference implementation, ``clean_page`` in TensorFlow Datasets'
``c4_utils.py`` (read in the copy Hugging Face ``nlp`` made of it), which the paper only
summarises:

1. every line is stripped; lines with a word longer than 1000 characters are dropped
   (``long_word``; in the code, not in the paper);
2. citation markers ``[1]``, ``[]``, ``[edit]``, ``[citation needed]`` are deleted
   (``citation``);
3. a line must end in ``.``, ``?``, ``!`` or ``"`` and not in ``...``
   (``terminal_punctuation``);
4. a line needs at least 5 whitespace-separated words (``min_words``);
5. a line containing ``lorem ipsum`` drops the page (``lorem_ipsum``);
6. a line containing ``javascript`` is dropped (``javascript``);
7. a line containing ``{`` drops the page (``curly_bracket``);
8. a line containing a policy phrase (``terms of use``, ``privacy policy``, ``cookie
   policy``, ``uses cookies``, ``use of cookies``, ``use cookies``) is dropped (``policy``);
9. a line containing a bad word drops the page (``badwords``);
10. a page with fewer than 3 sentences among its kept lines is dropped (``min_sentences``).

Page rules therefore only look at lines that survived the line rules before them (a ``{``
in a line without terminal punctuation does not drop the page), exactly as in C4. The
case-insensitive substring tests are C4's. Two differences: sentences are counted with a
simple regular expression (C4 uses NLTK's punkt tokenizer), and blank lines are skipped
without being counted as removed.

**Bad words.** :func:`load_badwords` reads either LDNOOBW English list: ``"c4"`` is the
commit C4 pinned (``ldnoobw/c4-25e679f/en``, 377 terms), ``"current"`` the list's latest
version (``ldnoobw/en``, 403 terms). :class:`BadWordsMatcher` matches whole words only
(see its docstring for how this differs from C4's regular expression).

**Quality heuristics.** :func:`gopher_quality` (Rae et al. 2021, appendix A) and
:func:`fineweb_quality` (Penedo et al. 2024) compute each signal separately with its
threshold and verdict.

**Deduplication.** :func:`exact_duplicates` groups documents whose normalised text is
identical; :func:`near_duplicates` finds pairs whose word 5-gram sets have Jaccard
similarity above a threshold, with :class:`MinHash` signatures and an :class:`LSHIndex`
proposing candidates and the exact Jaccard similarity confirming them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from llmkit import validate

__all__ = [
    "C4_POLICY_SUBSTRINGS",
    "C4_RULES",
    "BadWordsMatcher",
    "C4Config",
    "FilterReport",
    "LSHIndex",
    "MinHash",
    "QualitySignal",
    "Removal",
    "c4_clean",
    "estimated_jaccard",
    "exact_duplicates",
    "filter_report",
    "fineweb_quality",
    "gopher_quality",
    "jaccard",
    "load_badwords",
    "minhash_signature",
    "near_duplicates",
    "normalize_text",
    "shingles",
]

# ------------------------------------------------------------------------------- bad words

_BADWORDS_VERSIONS = {"c4": "c4", "current": "current"}


def load_badwords(version: str = "c4") -> list[str]:
    """The English LDNOOBW list: ``"c4"`` (the commit C4 pinned) or ``"current"``.

    Reads through :func:`llmkit.data.load_ldnoobw` (mirror, cache or download). The lists
    contain slurs and obscene terms by design.
    """
    if version not in _BADWORDS_VERSIONS:
        raise ValueError(f"version must be one of {sorted(_BADWORDS_VERSIONS)}, got {version!r}")
    from llmkit.data import load_ldnoobw

    return load_ldnoobw(_BADWORDS_VERSIONS[version])


class BadWordsMatcher:
    """Find bad-word entries in text, as whole words, case-insensitively.

    An entry matches only when neither neighbour is a word character (``\\w``: a letter,
    digit or underscore, in any script): the entry ``ass`` does not match ``assassin`` or
    ``class``, but matches ``ass.`` or ``(ass)``. Entries are literal text (``s&m``,
    ``g-spot`` and emoji work); whitespace inside a multi-word entry matches any run of
    whitespace (``"ball  gag"`` and ``"ball\\ngag"`` match ``ball gag``).

    **C4's matcher, verified in TFDS' ``c4_utils.py``:** it is *not* token membership but
    the regular expression ``[^a-z](w1|w2|...)[^a-z]`` searched in each lower-cased line,
    with the entries unescaped. Multi-word entries therefore match across exactly one
    space. Differences from this class: (a) only ``a-z`` counts as a word character, so
    digits, underscores and accented letters are boundaries (C4 finds ``ass`` in
    ``ass2``, this class does not); (b) an entry needs a character on *both* sides, so one
    at the very start (or end) of a line is missed by C4; (c) it only checks lines that
    survived C4's line rules. ``c4_compatible=True`` reproduces C4's expression (with the
    entries escaped, which changes nothing for the two English lists).

    Args:
        words: the entries (e.g. :func:`load_badwords`); blank ones are ignored.
        c4_compatible: use C4's expression (searched in the lower-cased text) instead.
    """

    def __init__(self, words: Iterable[str], c4_compatible: bool = False) -> None:
        if isinstance(words, str):
            raise TypeError("words must be an iterable of strings, not one string")
        entries = sorted(
            {w.strip().lower() for w in words if isinstance(w, str) and w.strip()},
            key=lambda w: (-len(w), w),
        )
        if not entries:
            raise ValueError("words must contain at least one non-blank entry")
        self.words: list[str] = entries
        self.c4_compatible = bool(c4_compatible)
        if self.c4_compatible:
            alternatives = "|".join(re.escape(w) for w in entries)
            self._regex = re.compile(f"[^a-z]({alternatives})[^a-z]")
        else:
            alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in entries)
            self._regex = re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)

    def search(self, text: str) -> str | None:
        """The first entry found in ``text`` (as written there), or ``None``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        haystack = text.lower() if self.c4_compatible else text
        m = self._regex.search(haystack)
        return m.group(1) if m else None

    def find_all(self, text: str) -> list[str]:
        """All non-overlapping matches in ``text``, in order."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        haystack = text.lower() if self.c4_compatible else text
        return [m.group(1) for m in self._regex.finditer(haystack)]

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.search(text) is not None

    def __repr__(self) -> str:
        return f"BadWordsMatcher({len(self.words)} entries, c4_compatible={self.c4_compatible})"


# -------------------------------------------------------------------------------------- C4

C4_POLICY_SUBSTRINGS: tuple[str, ...] = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
C4_RULES: tuple[str, ...] = (
    "long_word",
    "citation",
    "terminal_punctuation",
    "min_words",
    "lorem_ipsum",
    "javascript",
    "curly_bracket",
    "policy",
    "badwords",
    "min_sentences",
)
_PAGE_RULES = frozenset({"lorem_ipsum", "curly_bracket", "badwords", "min_sentences"})
_END_MARKS = (".", "?", "!", '"')
_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_SENTENCE_END_RE = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


def _off_or_count(name: str, value: object) -> int | None:
    """``None`` (the rule is off) or an int >= 0."""
    return None if value is None else validate.integer(name, value, minimum=0)


@dataclasses.dataclass
class C4Config:
    """Which C4 rules :func:`c4_clean` applies (defaults: all, with C4's values).

    Args:
        max_word_length: drop lines with a longer word; ``None`` disables (C4: 1000).
        citations: delete citation markers.
        terminal_punctuation: keep only lines ending in ``. ? ! "`` (not ``...``).
        min_words_per_line: drop shorter lines; ``None`` or 0 disables (C4: 5).
        lorem_ipsum: drop pages containing "lorem ipsum".
        javascript: drop lines containing "javascript".
        curly_bracket: drop pages containing ``{``.
        policy: drop lines containing a policy phrase (:data:`C4_POLICY_SUBSTRINGS`).
        badwords: drop pages with a bad word: ``"c4"`` or ``"current"`` (an LDNOOBW list,
            loaded on first use), a :class:`BadWordsMatcher`, or ``None`` (off).
        min_sentences: drop pages with fewer sentences; ``None`` or 0 disables (C4: 3).
    """

    max_word_length: int | None = validate.checked(_off_or_count, default=1000)
    citations: bool = True
    terminal_punctuation: bool = True
    min_words_per_line: int | None = validate.checked(_off_or_count, default=5)
    lorem_ipsum: bool = True
    javascript: bool = True
    curly_bracket: bool = True
    policy: bool = True
    badwords: str | BadWordsMatcher | None = "c4"
    min_sentences: int | None = validate.checked(_off_or_count, default=3)

    def __post_init__(self) -> None:
        validate.config_fields(self)
        if isinstance(self.badwords, str) and self.badwords not in _BADWORDS_VERSIONS:
            raise ValueError(
                f"badwords must be None, a BadWordsMatcher or one of "
                f"{sorted(_BADWORDS_VERSIONS)}, got {self.badwords!r}"
            )
        if self.badwords is not None and not isinstance(self.badwords, str | BadWordsMatcher):
            raise TypeError(
                f"badwords must be None, a str or a BadWordsMatcher, got "
                f"{type(self.badwords).__name__}"
            )
        self._matcher: BadWordsMatcher | None = None

    def matcher(self) -> BadWordsMatcher | None:
        """The bad-words matcher (loading the list on first use), or ``None``."""
        if self.badwords is None:
            return None
        if isinstance(self.badwords, BadWordsMatcher):
            return self.badwords
        if self._matcher is None:
            self._matcher = BadWordsMatcher(load_badwords(self.badwords))
        return self._matcher


@dataclasses.dataclass(frozen=True)
class Removal:
    """One thing a rule removed.

    Attributes:
        rule: one of :data:`C4_RULES`.
        scope: ``"line"`` (the line was dropped), ``"page"`` (the page was dropped; ``text``
            is the line that triggered it, empty for ``min_sentences``) or ``"marker"``
            (a citation marker deleted from a line).
        text: what was removed or what triggered the removal.
    """

    rule: str
    scope: str
    text: str


def _count_sentences(text: str) -> int:
    return len(_SENTENCE_END_RE.findall(text))


def c4_clean(page: str, config: C4Config | None = None) -> tuple[str | None, list[Removal]]:
    """Clean one page with C4's rules (see the module docstring for order and details).

    Args:
        page: the page text, lines separated by newlines.
        config: the switches; default :class:`C4Config()` (all rules, C4's bad words).
    Returns:
        ``(text, removals)``: the kept lines joined by ``"\\n"`` (``None`` when the page is
        dropped) and every :class:`Removal`, in order.
    """
    text, removals, _ = _c4_clean(page, config)
    return text, removals


def _c4_clean(page: str, config: C4Config | None) -> tuple[str | None, list[Removal], int]:
    """:func:`c4_clean`, also returning how many non-blank lines were examined."""
    if not isinstance(page, str):
        raise TypeError(f"page must be a str, got {type(page).__name__}")
    config = C4Config() if config is None else config
    if not isinstance(config, C4Config):
        raise TypeError(f"config must be a C4Config, got {type(config).__name__}")
    matcher = config.matcher()
    removals: list[Removal] = []
    kept: list[str] = []
    n_sentences = 0
    examined = 0
    for raw in page.splitlines():
        line = raw.strip()
        if not line:
            continue
        examined += 1
        if config.max_word_length is not None and any(
            len(w) > config.max_word_length for w in line.split()
        ):
            removals.append(Removal("long_word", "line", line))
            continue
        if config.citations:
            for marker in _CITATION_RE.findall(line):
                removals.append(Removal("citation", "marker", marker))
            line = _CITATION_RE.sub("", line)
        if config.terminal_punctuation and (not line.endswith(_END_MARKS) or line.endswith("...")):
            removals.append(Removal("terminal_punctuation", "line", line))
            continue
        if config.min_words_per_line and len(line.split()) < config.min_words_per_line:
            removals.append(Removal("min_words", "line", line))
            continue
        lower = line.lower()
        if config.lorem_ipsum and "lorem ipsum" in lower:
            removals.append(Removal("lorem_ipsum", "page", line))
            return None, removals, examined
        if config.javascript and "javascript" in lower:
            removals.append(Removal("javascript", "line", line))
            continue
        if config.curly_bracket and "{" in line:
            removals.append(Removal("curly_bracket", "page", line))
            return None, removals, examined
        if config.policy and any(p in lower for p in C4_POLICY_SUBSTRINGS):
            removals.append(Removal("policy", "line", line))
            continue
        if matcher is not None and matcher.search(line) is not None:
            removals.append(Removal("badwords", "page", line))
            return None, removals, examined
        n_sentences += _count_sentences(line)
        kept.append(line)
    if config.min_sentences and n_sentences < config.min_sentences:
        removals.append(Removal("min_sentences", "page", ""))
        return None, removals, examined
    return "\n".join(kept), removals, examined


@dataclasses.dataclass
class FilterReport:
    """What :func:`filter_report` removed from a corpus.

    Attributes:
        n_pages, n_pages_kept: pages in and out.
        n_lines: non-blank lines examined (lines after a page-dropping line are not).
        n_lines_kept: lines in the kept pages.
        lines_removed: per line rule, lines dropped.
        pages_removed: per page rule, pages dropped.
        markers_removed: citation markers deleted.
        examples: per rule, up to ``k`` removed texts (lines, or the triggering lines).
    """

    n_pages: int = 0
    n_pages_kept: int = 0
    n_lines: int = 0
    n_lines_kept: int = 0
    lines_removed: dict[str, int] = dataclasses.field(default_factory=dict)
    pages_removed: dict[str, int] = dataclasses.field(default_factory=dict)
    markers_removed: int = 0
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def to_text(self) -> str:
        """A plain-text table: one row per rule with its count and first example."""
        rows = [
            f"pages: {self.n_pages} in, {self.n_pages_kept} kept; "
            f"lines: {self.n_lines} examined, {self.n_lines_kept} kept; "
            f"citation markers removed: {self.markers_removed}",
            f"{'rule':<22}{'scope':<7}{'removed':>8}  example",
        ]
        for rule in C4_RULES:
            if rule == "citation":
                continue
            scope = "page" if rule in _PAGE_RULES else "line"
            count = (self.pages_removed if scope == "page" else self.lines_removed).get(rule, 0)
            example = (self.examples.get(rule) or [""])[0]
            example = example if len(example) <= 50 else example[:47] + "..."
            rows.append(f"{rule:<22}{scope:<7}{count:>8}  {example}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.to_text()


def filter_report(pages: Iterable[str], config: C4Config | None = None, k: int = 3) -> FilterReport:
    """Run :func:`c4_clean` on every page and count what each rule removed.

    Args:
        pages: page texts.
        config: the switches (default: all rules).
        k: examples kept per rule (>= 0).
    """
    validate.integer("k", k, minimum=0)
    if isinstance(pages, str):
        raise TypeError("pages must be an iterable of page strings, not one string")
    config = C4Config() if config is None else config
    report = FilterReport()
    for page in pages:
        text, removals, examined = _c4_clean(page, config)
        report.n_pages += 1
        for r in removals:
            if r.scope == "line":
                report.lines_removed[r.rule] = report.lines_removed.get(r.rule, 0) + 1
            elif r.scope == "page":
                report.pages_removed[r.rule] = report.pages_removed.get(r.rule, 0) + 1
            else:
                report.markers_removed += 1
            examples = report.examples.setdefault(r.rule, [])
            if len(examples) < k and r.text:
                examples.append(r.text)
        report.n_lines += examined
        if text is not None:
            report.n_pages_kept += 1
            report.n_lines_kept += len(text.splitlines())
    return report


# ------------------------------------------------------------------------- quality signals


@dataclasses.dataclass(frozen=True)
class QualitySignal:
    """One heuristic: its ``value``, the ``threshold`` text, and whether the text ``passes``."""

    value: float
    threshold: str
    passes: bool


_WORD_RE = re.compile(r"\S+")
_BULLETS = ("•", "●", "○", "▪", "■", "◦", "‣", "⁃", "-", "*", "–", "—")
_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _duplicate_stats(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of their characters)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        seen.add(item)
    return dup_items / len(items), dup_chars / max(1, sum(len(i) for i in items))


def _top_ngram_char_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram (counted per occurrence)."""
    if len(words) < n:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, count * sum(len(w) for w in gram) / max(1, sum(len(w) for w in words)))


def gopher_quality(text: str) -> dict[str, QualitySignal]:
    """Gopher's quality and repetition heuristics, each computed and judged separately.

    Thresholds from Rae et al. 2021 ("Scaling Language Models: Methods, Analysis & Insights
    from Training Gopher"), appendix A.1.1 and its repetition table, as also used as
    defaults by datatrove's ``GopherQualityFilter``/``GopherRepetitionFilter``:

    - ``n_words``: between 50 and 100,000 words;
    - ``mean_word_length``: between 3 and 10 characters;
    - ``hash_to_word_ratio`` and ``ellipsis_to_word_ratio``: ``#`` and ``...``/``…``
      per word at most 0.1;
    - ``bullet_lines_fraction``: at most 90 % of lines start with a bullet;
    - ``ellipsis_lines_fraction``: at most 30 % of lines end with an ellipsis;
    - ``alpha_words_fraction``: at least 80 % of words contain an alphabetic character;
    - ``stop_words``: at least 2 of *the, be, to, of, and, that, have, with*;
    - ``duplicate_lines_fraction``: at most 30 % of lines repeat an earlier line;
    - ``duplicate_line_chars_fraction``: at most 20 % of characters in repeated lines;
    - ``top_2gram_chars_fraction``, ``top_3gram…``, ``top_4gram…``: the most frequent
      word 2/3/4-gram covers at most 20 %, 18 %, 16 % of the characters.

    Words are whitespace-separated tokens; lines are non-blank lines.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = _WORD_RE.findall(text)
    n = len(words)
    lines = _lines(text)
    n_lines = max(1, len(lines))
    mean_len = sum(len(w) for w in words) / n if n else 0.0
    hashes = text.count("#") / n if n else 0.0
    ellipses = (text.count("...") + text.count("…")) / n if n else 0.0
    bullets = sum(line.startswith(_BULLETS) for line in lines) / n_lines
    ellipsis_lines = sum(line.endswith(("...", "…")) for line in lines) / n_lines
    alpha = sum(any(c.isalpha() for c in w) for w in words) / n if n else 0.0
    stop = len({w.lower().strip(".,;:!?\"'()") for w in words} & _STOP_WORDS)
    dup_lines, dup_line_chars = _duplicate_stats(lines)
    signals = {
        "n_words": QualitySignal(n, "50 <= n_words <= 100000", 50 <= n <= 100_000),
        "mean_word_length": QualitySignal(mean_len, "3 <= mean <= 10", 3 <= mean_len <= 10),
        "hash_to_word_ratio": QualitySignal(hashes, "<= 0.1", hashes <= 0.1),
        "ellipsis_to_word_ratio": QualitySignal(ellipses, "<= 0.1", ellipses <= 0.1),
        "bullet_lines_fraction": QualitySignal(bullets, "<= 0.9", bullets <= 0.9),
        "ellipsis_lines_fraction": QualitySignal(ellipsis_lines, "<= 0.3", ellipsis_lines <= 0.3),
        "alpha_words_fraction": QualitySignal(alpha, ">= 0.8", alpha >= 0.8),
        "stop_words": QualitySignal(stop, ">= 2 distinct", stop >= 2),
        "duplicate_lines_fraction": QualitySignal(dup_lines, "<= 0.3", dup_lines <= 0.3),
        "duplicate_line_chars_fraction": QualitySignal(
            dup_line_chars, "<= 0.2", dup_line_chars <= 0.2
        ),
    }
    lowered = [w.lower() for w in words]
    for k, limit in ((2, 0.20), (3, 0.18), (4, 0.16)):
        frac = _top_ngram_char_fraction(lowered, k)
        signals[f"top_{k}gram_chars_fraction"] = QualitySignal(frac, f"<= {limit}", frac <= limit)
    return signals


def fineweb_quality(text: str) -> dict[str, QualitySignal]:
    """FineWeb's own line-level heuristics (Penedo et al. 2024), defaults of datatrove's
    ``FineWebQualityFilter``:

    - ``line_punct_fraction``: at least 12 % of lines end in terminal punctuation
      (``. ? ! "`` and similar);
    - ``short_lines_fraction``: at most 67 % of lines are shorter than 30 characters;
    - ``duplicate_line_chars_fraction``: at most 1 % of characters in repeated lines
      (FineWeb's ``char_duplicates_ratio`` 0.01).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    lines = _lines(text)
    n_lines = max(1, len(lines))
    punct = sum(line.endswith((".", "?", "!", '"', "'", "…")) for line in lines) / n_lines
    short = sum(len(line) < 30 for line in lines) / n_lines
    _, dup_chars = _duplicate_stats(lines)
    return {
        "line_punct_fraction": QualitySignal(punct, ">= 0.12", punct >= 0.12),
        "short_lines_fraction": QualitySignal(short, "<= 0.67", short <= 0.67),
        "duplicate_line_chars_fraction": QualitySignal(dup_chars, "<= 0.01", dup_chars <= 0.01),
    }


# --------------------------------------------------------------------------- deduplication


def normalize_text(text: str) -> str:
    """Normalisation for exact deduplication and shingling.

    NFKC, lower case, every punctuation character (Unicode category ``P*``) removed,
    whitespace runs collapsed to one space, ends stripped: ``"Hello,  World!"`` and
    ``"hello world"`` normalise alike.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if not unicodedata.category(c).startswith("P"))
    return " ".join(text.split())


def exact_duplicates(docs: Sequence[str]) -> list[list[int]]:
    """Groups (of 2 or more) of indices whose :func:`normalize_text` is identical.

    Compared by SHA-1 of the normalised text; groups and their members are in order of
    first occurrence.
    """
    if isinstance(docs, str):
        raise TypeError("docs must be a sequence of strings, not one string")
    groups: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        digest = hashlib.sha1(normalize_text(doc).encode("utf-8")).hexdigest()
        groups.setdefault(digest, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def shingles(text: str, ngram: int = 5) -> set[str]:
    """The set of word ``ngram``-grams of :func:`normalize_text` (``text`` if shorter).

    Word shingles (rather than characters) make similarity a matter of shared phrases;
    5-grams are long enough that unrelated English rarely shares them.
    """
    validate.positive_int("ngram", ngram)
    words = normalize_text(text).split()
    if len(words) <= ngram:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity ``|a & b| / |a | b|`` (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_MERSENNE = (1 << 61) - 1
_MAX_HASH = (1 << 32) - 1


def _affine(a: int, b: int, x: int) -> int:
    """``((a x + b) mod p) & (2^32 - 1)`` with ``p = 2^61 - 1``, exactly in Python ints."""
    return ((a * x + b) % _MERSENNE) & _MAX_HASH


class MinHash:
    """MinHash signatures of shingle sets (Broder 1997).

    Each shingle is hashed to 32 bits (BLAKE2b, so signatures do not depend on Python's
    randomised ``hash``), then ``num_perm`` random affine maps ``(a x + b) mod p`` with
    ``p = 2^61 - 1``, truncated to 32 bits, stand in for permutations; the signature is
    the per-map minimum. ``P(sig_a[k] == sig_b[k]) ~ J(a, b)``, so the fraction of equal
    entries estimates Jaccard similarity with standard error ``sqrt(J(1-J)/num_perm)``.

    Args:
        num_perm: signature length (>= 1).
        ngram: word shingle size for :meth:`signature` of a text.
        seed: seed of the affine maps (same seed, same signatures).
    """

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 0) -> None:
        validate.positive_int("num_perm", num_perm)
        validate.positive_int("ngram", ngram)
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)

    @staticmethod
    def _hash(shingle: str) -> int:
        return int.from_bytes(hashlib.blake2b(shingle.encode("utf-8"), digest_size=4).digest())

    def signature_of_set(self, items: Iterable[str]) -> np.ndarray:
        """Signature ``(num_perm,)`` (uint64) of a set of shingles; all-max for an empty set."""
        hashes = np.array(sorted({self._hash(s) for s in items}), dtype=np.uint64)
        if hashes.size == 0:
            return np.full(self.num_perm, _MAX_HASH, dtype=np.uint64)
        xs = [int(x) for x in hashes]
        sig = [min(_affine(a, b, x) for x in xs) for a, b in self._maps()]
        return np.array(sig, dtype=np.uint64)

    def _maps(self) -> list[tuple[int, int]]:
        """The ``(a_k, b_k)`` of the affine maps, as Python ints."""
        return [(int(a), int(b)) for a, b in zip(self._a, self._b, strict=True)]

    def hash_functions(self) -> list[Callable[[str], int]]:
        """The ``num_perm`` hash functions as Python callables, shingle -> int in
        ``[0, 2^32)``: ``h_k(s) = ((a_k x + b_k) mod p) & (2^32 - 1)`` with ``x`` the 32-bit
        BLAKE2b hash of ``s``. ``signature_of_set(items)[k] == min(h_k(s) for s in items)``
        for a non-empty set (the lab of chapter 08 builds signatures from them)."""

        def make(a: int, b: int) -> Callable[[str], int]:
            return lambda shingle: _affine(a, b, self._hash(shingle))

        return [make(a, b) for a, b in self._maps()]

    def signature(self, text: str) -> np.ndarray:
        """Signature ``(num_perm,)`` of ``text``'s word ``ngram`` shingles."""
        return self.signature_of_set(shingles(text, self.ngram))


def minhash_signature(text: str, num_perm: int = 128, ngram: int = 5, seed: int = 0) -> np.ndarray:
    """``MinHash(num_perm, ngram, seed).signature(text)``: ``(num_perm,)`` uint64."""
    return MinHash(num_perm, ngram, seed).signature(text)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal entries of two signatures of the same length."""
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"signatures must be 1-d and of equal length, got {a.shape}, {b.shape}")
    return float(np.mean(a == b))


def _lsh_params(threshold: float, num_perm: int, false_negative_weight: float) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the weighted areas of
    false positives (below ``threshold``) and false negatives (above) under the S-curve
    ``P(candidate | J = s) = 1 - (1 - s^rows)^bands`` (datasketch's criterion; datasketch
    weighs both 0.5)."""
    best, best_err = (1, 1), math.inf
    s_lo = np.linspace(0.0, threshold, 201)
    s_hi = np.linspace(threshold, 1.0, 201)
    w_fn = false_negative_weight
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - s_lo**rows) ** bands, s_lo)
            fn = np.trapezoid((1 - s_hi**rows) ** bands, s_hi)
            err = (1 - w_fn) * fp + w_fn * fn
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


class LSHIndex:
    """Locality-sensitive hashing over MinHash signatures (banding).

    The signature is cut into ``bands`` bands of ``rows`` entries; two documents become
    candidates when any band is identical, which happens with probability
    ``1 - (1 - J^rows)^bands``, an S-curve whose steep part sits near ``threshold``.

    ``bands`` and ``rows`` minimise a weighted sum of the false-positive and false-negative
    areas under that curve. The default weight 0.9 on false negatives suits
    :func:`near_duplicates`, which checks every candidate with the exact Jaccard
    similarity, so a false positive only costs one comparison: at ``threshold=0.8`` with
    128 permutations it picks 14 bands of 9 rows (a pair with ``J = 0.9`` is proposed with
    probability 0.999, ``J = 0.5`` with 0.027); equal weights (datasketch's default) give
    9 bands of 13 rows, which misses 7 % of pairs at ``J = 0.9``.

    Args:
        threshold: the Jaccard similarity to separate, in (0, 1).
        num_perm: signature length (>= 2).
        false_negative_weight: weight of false negatives in [0, 1] (false positives get
            the rest).
    """

    def __init__(
        self, threshold: float = 0.8, num_perm: int = 128, false_negative_weight: float = 0.9
    ) -> None:
        if not 0 < validate.number("threshold", threshold) < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        validate.integer("num_perm", num_perm, minimum=2)
        if not isinstance(false_negative_weight, int | float) or not (
            0 <= false_negative_weight <= 1
        ):
            raise ValueError(
                f"false_negative_weight must be in [0, 1], got {false_negative_weight!r}"
            )
        self.threshold, self.num_perm = float(threshold), num_perm
        self.bands, self.rows = _lsh_params(self.threshold, num_perm, false_negative_weight)
        self._buckets: list[dict[bytes, list[object]]] = [{} for _ in range(self.bands)]
        self._keys: set[object] = set()

    def candidate_probability(self, similarity: float) -> float:
        """``1 - (1 - s^rows)^bands``: chance that a pair with Jaccard ``s`` is proposed."""
        return 1 - (1 - similarity**self.rows) ** self.bands

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        sig = np.asarray(signature, dtype=np.uint64)
        if sig.shape != (self.num_perm,):
            raise ValueError(f"signature must have shape ({self.num_perm},), got {sig.shape}")
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def insert(self, key: object, signature: np.ndarray) -> None:
        """Add a document under ``key`` (each key once)."""
        if key in self._keys:
            raise ValueError(f"key {key!r} is already in the index")
        self._keys.add(key)
        for bucket, band in zip(self._buckets, self._band_keys(signature), strict=True):
            bucket.setdefault(band, []).append(key)

    def query(self, signature: np.ndarray) -> set[object]:
        """Keys sharing at least one band with ``signature``."""
        found: set[object] = set()
        for bucket, band in zip(self._buckets, self._band_keys(signature), strict=True):
            found.update(bucket.get(band, ()))
        return found

    def candidate_pairs(self) -> set[tuple[object, object]]:
        """All pairs of inserted keys sharing a band (each pair sorted, once)."""
        pairs: set[tuple[object, object]] = set()
        for bucket in self._buckets:
            for keys in bucket.values():
                for i, a in enumerate(keys):
                    for b in keys[i + 1 :]:
                        pairs.add((a, b) if repr(a) <= repr(b) else (b, a))
        return pairs


def near_duplicates(
    docs: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, estimated_jaccard)``, ``i < j``, of near-duplicate documents.

    MinHash signatures of word ``ngram`` shingles go into an :class:`LSHIndex`; each
    candidate pair is kept only if the *exact* Jaccard similarity of the shingle sets is at
    least ``threshold`` (so there are no false positives; false negatives are pairs LSH
    never proposed). Sorted by ``(i, j)``.
    """
    if isinstance(docs, str):
        raise TypeError("docs must be a sequence of strings, not one string")
    minhash = MinHash(num_perm, ngram, seed)
    index = LSHIndex(threshold, num_perm)
    sets = [shingles(d, ngram) for d in docs]
    sigs = [minhash.signature_of_set(s) for s in sets]
    for i, sig in enumerate(sigs):
        index.insert(i, sig)
    out = []
    for i, j in sorted((min(p), max(p)) for p in index.candidate_pairs()):
        if jaccard(sets[i], sets[j]) >= threshold:
            out.append((i, j, estimated_jaccard(sigs[i], sigs[j])))
    return out

"""Check functions for the chapter-08 lab ("Training data").

One function per exercise. Each calls the student's function on fixed edge cases and
seeded random inputs, compares with :mod:`llmkit.datafilter`, prints one verdict line via
:func:`~llmkit.course.checks.passed` on success and raises ``AssertionError`` on failure:
its first line says what is wrong, then the input, and a ``hint:`` line what to look at.
When the wrong answer matches a common mistake (matching substrings instead of whole
words, the Scunthorpe problem; ignoring case or punctuation next to a word; counting
``...`` as an end of sentence; character instead of word shingles; the intersection
divided by the smaller set; the maximum instead of the minimum hash), the hint names it.
A ``NotImplementedError`` from an unfinished stub is let through (the grader counts it
as a failure).

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it, so
  regrading gives the same score), else fresh inputs on every run; see
  :mod:`llmkit.course.checks`.
- **The library is not an answer**: each check refuses ``llmkit``'s own function.
- **Harmless words**: the bad-words checks use a made-up list (:data:`TOY_WORDS`) and
  invented words, never the LDNOOBW list.
- **Data**: :func:`check_keep_line` also draws lines from Tiny Shakespeare
  (:func:`llmkit.data.load_tinyshakespeare`, read from the data mirror); pass ``lines``
  to give it other lines instead.

==============================  =======================================================
check                           student's function
==============================  =======================================================
``check_find_bad_words``        ``find_bad_words(text, words) -> list[str]``, compared
                                with ``BadWordsMatcher(words).find_all(text)``
``check_keep_line``             ``keep_line(line) -> bool``: C4's terminal-punctuation
                                and five-words rules, compared with
                                :func:`~llmkit.datafilter.c4_clean` with only those
                                two rules on
``check_shingles``              ``shingles(text, n) -> set[str]``, compared with
                                :func:`llmkit.datafilter.shingles`
``check_jaccard``               ``jaccard(a, b) -> float``, compared with
                                :func:`llmkit.datafilter.jaccard`
``check_minhash``               ``minhash(items, hash_funcs) -> list[int]``, compared
                                with ``MinHash.signature_of_set(items)`` when
                                ``hash_funcs = MinHash(...).hash_functions()``, and
                                with the minima of other hash functions
==============================  =======================================================

Every check runs the student's function on all its inputs before it judges. To name a
mistake it runs versions of the reference with one mistake each (:func:`_find`,
``_keep_slip``, ``_shingles_slip``, ``_jaccard_slip``) on the same inputs: the one that
reproduces the first wrong answer and agrees with most of the others gives the hint
(:func:`_best_slip`). The MinHash check compares exact values, which is deterministic
because the student's function uses the hash functions it is given.
"""

from __future__ import annotations

import functools
import math
import operator
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from llmkit.course.checks import call_student, check_cases, check_rng, passed, reject_library
from llmkit.course.checks import failure as _fail
from llmkit.course.checks import require_result as _require_result
from llmkit.datafilter import BadWordsMatcher, C4Config, MinHash, c4_clean, normalize_text
from llmkit.datafilter import jaccard as _ref_jaccard
from llmkit.datafilter import shingles as _ref_shingles

__all__ = [
    "TOY_WORDS",
    "check_find_bad_words",
    "check_keep_line",
    "check_shingles",
    "check_jaccard",
    "check_minhash",
    "reference_find_bad_words",
    "reference_keep_line",
    "reference_minhash",
]

#: The lab's made-up bad-words list: short words that hide inside longer harmless ones
#: ("ass" in "class", "hell" in "hello"), a two-word entry that shares its start with
#: another, and two entries with punctuation ("s.o.b." and the grawlix "@#$%").
TOY_WORDS: tuple[str, ...] = ("ass", "hell", "darn", "heck", "dang", "dang it", "s.o.b.", "@#$%")

_CRASH_HINTS = {
    "find_bad_words": "text is a str and words a list of lower-case entries; return the "
    "list of matches, each as it is written in text (a list of str, empty if none)",
    "keep_line": "line is one str without a newline; return True or False",
    "shingles": "text is a str and n an int >= 1; normalise the text with normalize_text, "
    "split it into words, and return a set of strings of n words joined by one space",
    "jaccard": "a and b are sets of strings, possibly empty; return a float",
    "minhash": "items is a non-empty set of strings and hash_funcs a list of functions, "
    "each taking one string and returning an int; return one int per hash function",
}


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args, hint=_CRASH_HINTS[name])


def _short(x: Any, n: int = 200) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 4] + " ..."


def _best_slip(
    answers: Sequence[tuple[tuple[Any, ...], Any, Any]],
    slips: Sequence[tuple[Callable[..., Any], str]],
    otherwise: str,
    same: Callable[[Any, Any], bool] = operator.eq,
) -> str:
    """The hint of the mistake that best explains the student's answers.

    ``answers`` holds ``(args, got, expected)`` for every input, ``slips`` pairs a
    function of ``args`` (the reference with one mistake) with its hint. A slip must give
    the student's answer on the first wrong input; among those, the one that agrees with
    the most answers wins (the first in ``slips`` on a tie). ``otherwise`` (the general
    hint) if no slip fits.
    """
    wrong = next(x for x in answers if not same(x[1], x[2]))
    best: str | None = None
    best_score = -1
    for make, why in slips:
        score = 0
        for args, got, _ in [wrong, *answers]:
            try:
                agrees = same(make(*args), got)
            except Exception:  # noqa: BLE001 - a slip that cannot be formed is no match
                agrees = False
            if not agrees and score == 0:
                break  # not even the first wrong answer
            score += agrees
        if score > best_score and score > 0:
            best, best_score = why, score
    return otherwise if best is None else best


# --------------------------------------------------------------------------------------
# exercise 1: a bad-words filter that matches whole words
# --------------------------------------------------------------------------------------


def reference_find_bad_words(text: str, words: Sequence[str]) -> list[str]:
    """``BadWordsMatcher(words).find_all(text)``, the reference of the exercise."""
    return BadWordsMatcher(words).find_all(text)


def _find(
    text: str,
    words: Sequence[str],
    *,
    boundary: str = "word",
    ignore_case: bool = True,
    escape: bool = True,
    whitespace: str = r"\s+",
    order: str = "longest",
    overlap: bool = False,
    as_written: bool = True,
) -> list[str]:
    """The matcher written out; the keyword arguments switch on the usual mistakes.

    ``boundary``: ``"word"`` (no ``\\w`` on either side), ``"none"`` (substrings),
    ``"b"`` (``\\b``), ``"ascii"`` (only ``a-z`` count as letters) or ``"tokens"``
    (whitespace-separated tokens compared whole).
    """
    entries = list(dict.fromkeys(w.strip().lower() for w in words if w.strip()))
    if order == "longest":
        entries.sort(key=lambda w: (-len(w), w))
    elif order == "shortest":
        entries.sort(key=lambda w: (len(w), w))
    if boundary == "tokens":
        wanted = set(entries) if ignore_case else set(words)
        return [t for t in text.split() if (t.lower() if ignore_case else t) in wanted]

    def body(w: str) -> str:
        parts = [re.escape(p) if escape else p for p in w.split()]
        return whitespace.join(parts)

    before, after = {
        "word": (r"(?<!\w)", r"(?!\w)"),
        "none": ("", ""),
        "b": (r"\b", r"\b"),
        "ascii": (r"(?<![a-zA-Z])", r"(?![a-zA-Z])"),
    }[boundary]
    flags = re.IGNORECASE if ignore_case else 0
    if overlap:
        found = []
        for w in entries:
            pattern = re.compile(f"{before}(?=({body(w)}){after})", flags)
            found += [(m.start(), m.group(1)) for m in pattern.finditer(text)]
        out = [s for _, s in sorted(found, key=lambda p: p[0])]
    else:
        pattern = re.compile(f"{before}({'|'.join(body(w) for w in entries)}){after}", flags)
        out = [m.group(1) for m in pattern.finditer(text)]
    return out if as_written else [s.lower() for s in out]


_BAD_WORD_SLIPS: list[tuple[dict[str, Any], str]] = [
    (
        {"boundary": "none"},
        "you match substrings: 'ass' is found inside 'class' and 'hell' inside 'hello' "
        "(the Scunthorpe problem). An entry counts only as a whole word: the characters "
        "just before and after it must not be word characters (\\w); use (?<!\\w) and "
        "(?!\\w) around the entries",
    ),
    (
        {"ignore_case": False},
        "ignore case: 'HELL' and 'Hell' contain the entry 'hell' (re.IGNORECASE)",
    ),
    (
        {"boundary": "tokens"},
        "splitting the text on whitespace misses words next to punctuation ('hell,' or "
        "'(darn)') and every two-word entry; search the text itself, with a regular "
        "expression and boundaries on both sides",
    ),
    (
        {"boundary": "ascii"},
        "digits, underscores and letters of any script are word characters too: 'hell2', "
        "'hell_' and 'hellé' do not contain the word 'hell'; use \\w, which knows them all",
    ),
    (
        {"boundary": "b"},
        "\\b is a boundary between a word character and a non-word character, so it fails "
        "for entries that begin or end with punctuation ('@#$%' after a space, 's.o.b.' "
        "followed by a letter); use the lookarounds (?<!\\w) and (?!\\w) instead",
    ),
    (
        {"escape": False},
        "entries are literal text: escape them (re.escape), or the '.' of 's.o.b.' matches "
        "any character and '$' is an end-of-text anchor",
    ),
    (
        {"whitespace": " "},
        "the space in a two-word entry matches any run of whitespace ('dang   it', "
        "'dang\\nit'): join the escaped words of an entry with \\s+",
    ),
    (
        {"order": "given"},
        "when several entries match at the same place, the longest wins: 'dang it' before "
        "'dang' (sort the entries longest first before joining them with |)",
    ),
    (
        {"order": "shortest"},
        "when several entries match at the same place, the longest wins: 'dang it' before "
        "'dang' (sort the entries longest first before joining them with |)",
    ),
    (
        {"overlap": True},
        "matches do not overlap: scan the text once from left to right (one regular "
        "expression with all entries, re.finditer), not each entry separately",
    ),
    (
        {"as_written": False},
        "return each match as it is written in the text ('HELL', 'Dang\\nit'), not in "
        "lower case or as the entry",
    ),
]

# invented words (a random list is drawn from them) and what goes around an entry
_SYLLABLES = ["bl", "zo", "rk", "qu", "ix", "fen", "dr", "op", "ul", "ma", "ge", "sn", "y"]
_WORD_CHARS = ["s", "x", "er", "2", "_", "é", "ω", "ß", "7"]
_PUNCT_BEFORE = ["(", '"', "'", "-", "[", "¡", "*"]
_PUNCT_AFTER = [")", '"', "'", ",", ".", "!", "?", ":", "-", ";", "…"]
_SPACES = [" ", "  ", "\t", "\n", " \n "]
_ODD_ENTRIES = ["z.q", "@#!", "b-rk", "q&a", "op+", "ma$"]


def _invented(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))


def _random_words(rng: random.Random) -> list[str]:
    words = {_invented(rng) for _ in range(rng.randint(2, 5))}
    if rng.random() < 0.6:  # a multi-word entry, sometimes extending another entry
        first = rng.choice(sorted(words)) if rng.random() < 0.5 else _invented(rng)
        words.add(f"{first} {_invented(rng)}")
    if rng.random() < 0.5:
        words.add(rng.choice(_ODD_ENTRIES))
    return sorted(words, key=lambda _: rng.random())


def _variant(rng: random.Random, entry: str) -> str:
    """``entry`` as it may be written: other case, other whitespace between its words."""
    case = rng.choice([str.lower, str.lower, str.upper, str.title])
    parts = case(entry).split()
    out = parts[0]
    for p in parts[1:]:
        out += (" " if rng.random() < 0.5 else rng.choice(_SPACES)) + p
    return out


def _random_text(rng: random.Random, words: Sequence[str]) -> str:
    pieces = []
    for _ in range(rng.randint(3, 10)):
        r = rng.random()
        if r < 0.35:
            piece = _invented(rng)
        elif r < 0.5:  # an entry inside a longer word
            piece = _variant(rng, rng.choice(words))
            if rng.random() < 0.5:
                piece = rng.choice(_WORD_CHARS) + piece
            if rng.random() < 0.7 or not piece[0].isalnum():
                piece += rng.choice(_WORD_CHARS)
        else:  # an entry as a word, maybe next to punctuation
            piece = _variant(rng, rng.choice(words))
            if rng.random() < 0.4:
                piece = rng.choice(_PUNCT_BEFORE) + piece
            if rng.random() < 0.5:
                piece += rng.choice(_PUNCT_AFTER)
        pieces.append(piece)
    text = pieces[0]
    for p in pieces[1:]:
        text += rng.choice([" ", " ", " ", "", "\n", ", "]) + p
    return text


_FIXED_TEXTS = [
    "What the hell?",
    "Hello, shell users: a hellish day.",
    "The class assassin rode an ass.",
    "HELL no! Hell yes.",
    "(heck) 'darn' heck-ish darn_it darn2",
    "Dang   it, dang\nit, dangit!",
    "dang it all, dang",
    "s.o.b. sxoxbx s.o.b.s",
    "He said @#$% twice: x@#$% and @#$%.",
    "hellé hell2 hell_ ωhell hell",
    "",
    "Nothing to see here.",
]


def check_find_bad_words(
    fn: Callable[[str, list[str]], Any], cases: int = 40, seed: int | None = None
) -> None:
    """Check ``fn(text, words) -> list[str]`` against
    ``llmkit.datafilter.BadWordsMatcher(words).find_all(text)``: every non-overlapping
    whole-word match of an entry, case-insensitively, left to right, as written in
    ``text``. ``words`` are lower-case, non-blank entries; the fixed cases use
    :data:`TOY_WORDS`, the random ones invented words."""
    name = "find_bad_words"
    reject_library(name, fn, reference_find_bad_words, BadWordsMatcher.find_all)
    check_cases(cases, len(_FIXED_TEXTS))
    rng = check_rng(seed)
    inputs: list[tuple[str, list[str]]] = [(t, list(TOY_WORDS)) for t in _FIXED_TEXTS]
    while len(inputs) < cases:
        words = _random_words(rng)
        inputs.append((_random_text(rng, words), words))
    answers: list[tuple[tuple[str, list[str]], list[str], list[str]]] = []
    for text, words in inputs:
        expected = reference_find_bad_words(text, words)
        shown = f"text={text!r}, words={words!r}"
        given = list(words)
        got = _call(fn, name, shown, text, given)
        if given != words:
            raise _fail(
                name, shown, "your function modified the list of words", "leave words as it is"
            )
        _require_result(got, name, shown)
        if not isinstance(got, list | tuple) or not all(isinstance(s, str) for s in got):
            raise _fail(
                name,
                shown,
                f"expected a list of str, got {_short(got)}",
                "return the matched pieces of text in a list (re.finditer's m.group())",
            )
        answers.append(((text, words), list(got), expected))
    wrong = [x for x in answers if x[1] != x[2]]
    if wrong:
        (text, words), got, expected = wrong[0]
        slips = [(functools.partial(_find, **slip), why) for slip, why in _BAD_WORD_SLIPS]
        if len(got) > len(expected) and any(_find(text, [s], boundary="word") == [] for s in got):
            general = (
                "some of your matches are not whole words (the Scunthorpe problem): "
                "the characters around an entry must not be word characters (\\w)"
            )
        else:
            general = (
                "an entry matches where neither neighbour is a word character (\\w), "
                "ignoring case; whitespace in an entry matches any run of whitespace; the "
                "longest entry wins at one place; return the matches left to right, as "
                "written, without overlaps"
            )
        hint = _best_slip(answers, slips, otherwise=general)
        shown = f"text={text!r}, words={words!r}"
        raise _fail(name, shown, f"got {_short(got)}, expected {_short(expected)}", hint)
    passed(name, f"{len(inputs)} texts match llmkit.datafilter.BadWordsMatcher")


# --------------------------------------------------------------------------------------
# exercise 2: C4's line rules
# --------------------------------------------------------------------------------------

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


def reference_keep_line(line: str) -> bool:
    """Whether :func:`~llmkit.datafilter.c4_clean`, with only the terminal-punctuation and
    five-words rules on, keeps ``line`` (a blank line is not kept)."""
    text, _ = c4_clean(line, _ONLY_LINE_RULES)
    return bool(text)


def _keep_slip(
    line: str,
    *,
    strip: bool = True,
    marks: tuple[str, ...] = (".", "?", "!", '"'),
    ellipsis: str = "...",
    min_words: int | None = 5,
    punctuation: bool = True,
    split: str | None = None,
    quote_after_ellipsis: bool = True,
) -> bool:
    """C4's two line rules written out; the keyword arguments switch on the usual
    mistakes."""
    if strip:
        line = line.strip()
    if not line.strip():
        return False
    if punctuation and (not line.endswith(marks) or (ellipsis and line.endswith(ellipsis))):
        return False
    if not quote_after_ellipsis and line.endswith('..."'):
        return False
    return not (min_words is not None and len(line.split(split)) < min_words)


_KEEP_SLIPS: list[tuple[dict[str, Any], str]] = [
    (
        {"quote_after_ellipsis": False},
        "a line ending in '...\"' ends in a closing quote and is kept: only a line whose "
        "very last characters are '...' is dropped",
    ),
    (
        {"ellipsis": ""},
        "a line ending in '...' is dropped although it ends in '.': an ellipsis marks an "
        "unfinished sentence (line.endswith('...'))",
    ),
    (
        {"ellipsis": ".."},
        "only an ellipsis of three dots drops the line: 'Wait..' ends in '.' and is kept "
        "(test line.endswith('...'), not '..')",
    ),
    (
        {"marks": (".", "?", "!")},
        "a closing double quote counts as terminal punctuation: the four marks are "
        "'.', '?', '!' and '\"'",
    ),
    (
        {"marks": (".", "?", "!", '"', "'", "…", ":", ")")},
        "only '.', '?', '!' and '\"' count as terminal punctuation, not \"'\", '…', ':' or ')'",
    ),
    (
        {"strip": False},
        "strip the line first (line.strip()): C4 ignores the whitespace at both ends, so "
        "'A line of five words.  ' is kept",
    ),
    (
        {"min_words": 6},
        "off by one: a line needs at least 5 words (>= 5), so five words are enough",
    ),
    (
        {"min_words": 4},
        "off by one: a line needs at least 5 words, four are not enough",
    ),
    (
        {"split": " "},
        "count words with line.split() (runs of any whitespace), not line.split(' '), "
        "which counts the empty strings between two spaces as words",
    ),
    (
        {"min_words": None},
        "a line also needs at least 5 words (whitespace-separated), besides its "
        "terminal punctuation",
    ),
    (
        {"punctuation": False},
        "a line must also end in terminal punctuation ('.', '?', '!' or '\"', but not '...')",
    ),
]


@functools.cache
def _shakespeare_lines() -> tuple[str, ...]:
    from llmkit.data import load_tinyshakespeare

    parts = load_tinyshakespeare()
    return tuple((parts["train"] + parts["val"]).split("\n"))


_FIXED_LINES = [
    "This line has exactly five words.",
    "Four words are here.",
    "Is this a line with six words?",
    "What a line of many words!",
    'She said: "it is all fine."',
    'He whispered "and then it stopped..."',
    "And then it stopped and went on...",
    "It ends with two dots, like this..",
    "A line of five words.   ",
    "\t  Indented line with five words.",
    "A  line   with  odd    spacing.",
    "Only  four   words  here.",
    "Five\twords\tand\ttabs\there.",
    "A line that has no end mark",
    "Ending with a closing bracket (like this)",
    "Ending in a colon, like a speaker:",
    "It ends with an ellipsis character…",
    "It ends with a single quote '",
    "",
    "   ",
    ". . . . .",
]


def _random_line(rng: random.Random) -> str:
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 7)))
        for _ in range(rng.randint(1, 8))
    ]
    line = words[0]
    for w in words[1:]:
        line += rng.choice([" ", " ", " ", "  ", "\t"]) + w
    line += rng.choice(
        [".", ".", "?", "!", '"', "...", "..", "…", ":", ",", "'", ")", '."', '..."', "!)", ""]
    )
    return rng.choice(["", "", " ", "\t"]) + line + rng.choice(["", "", "", " ", "  ", "\t"])


def check_keep_line(
    fn: Callable[[str], Any],
    cases: int = 60,
    seed: int | None = None,
    lines: Sequence[str] | None = None,
) -> None:
    """Check ``fn(line) -> bool`` against :func:`reference_keep_line`: C4 keeps a stripped
    line when it ends in ``. ? ! "`` but not ``...`` and has at least 5
    whitespace-separated words.

    Fixed edge cases, random lines, and half of the random cases drawn from ``lines``
    (default: the lines of Tiny Shakespeare)."""
    name = "keep_line"
    reject_library(name, fn, reference_keep_line, c4_clean)
    check_cases(cases, len(_FIXED_LINES))
    rng = check_rng(seed)
    pool = list(lines) if lines is not None else list(_shakespeare_lines())
    inputs = list(_FIXED_LINES)
    while len(inputs) < cases:
        inputs.append(rng.choice(pool) if pool and len(inputs) % 2 else _random_line(rng))
    answers: list[tuple[str, bool, bool]] = []
    for line in inputs:
        shown = f"line={line!r}"
        got = _call(fn, name, shown, line)
        _require_result(got, name, shown)
        if not isinstance(got, bool):
            raise _fail(
                name,
                shown,
                f"expected True or False, got {_short(got)}",
                "return a bool (a comparison or `and` of comparisons, or bool(...))",
            )
        answers.append((line, got, reference_keep_line(line)))
    wrong = [(line, got, exp) for line, got, exp in answers if got != exp]
    if wrong:
        line, got, expected = wrong[0]
        slips = [(functools.partial(_keep_slip, **slip), why) for slip, why in _KEEP_SLIPS]
        hint = _best_slip(
            [((x,), g, e) for x, g, e in answers],
            slips,
            otherwise=(
                "strip the line; keep it when it ends in '.', '?', '!' or '\"' but not "
                "in '...', and has at least 5 words (line.split())"
            ),
        )
        verdict = "kept" if expected else "dropped"
        raise _fail(name, f"line={line!r}", f"you returned {got}, but C4 {verdict} this line", hint)
    passed(name, f"{len(inputs)} lines (fixed, random and Shakespeare) agree with c4_clean")


# --------------------------------------------------------------------------------------
# exercise 3: shingles and Jaccard similarity
# --------------------------------------------------------------------------------------


def _shingles_slip(
    text: str, n: int, *, unit: str = "words", short: str = "whole", last: bool = True
) -> set[str]:
    """Shingles written out; the keyword arguments switch on the usual mistakes."""
    if unit == "chars":
        t = normalize_text(text)
        k = len(t) - n + 1 if last else len(t) - n
        return {t[i : i + n] for i in range(max(k, 0))} or ({t} if t else set())
    words = normalize_text(text).split() if unit == "words" else text.split()
    if len(words) <= n:
        return {" ".join(words)} if (words and short == "whole") else set()
    k = len(words) - n + 1 if last else len(words) - n
    return {" ".join(words[i : i + n]) for i in range(k)}


_SHINGLE_SLIPS: list[tuple[dict[str, Any], str]] = [
    (
        {"unit": "chars"},
        "these are character n-grams: a shingle is n consecutive *words* (the words of "
        "normalize_text(text).split()), joined by one space",
    ),
    (
        {"unit": "raw"},
        "normalise the text first: normalize_text(text) lower-cases it and removes the "
        "punctuation, so 'Hello,' and 'hello' are the same word",
    ),
    (
        {"last": False},
        "off by one: a text of m >= n words has m - n + 1 shingles; the last one ends "
        "with the last word (range(len(words) - n + 1))",
    ),
    (
        {"short": "empty"},
        "a text with fewer than n words (but at least one) has one shingle: all its "
        "words joined by spaces; only an empty text has no shingles",
    ),
]

_FIXED_SHINGLES = [
    ("the cat sat on the mat", 2),
    ("The cat sat on the mat.", 3),
    ("To be, or not to be: that is the question.", 5),
    ("one two three", 3),
    ("one two", 3),
    ("Hello,   World!\nHello world.", 2),
    ("", 2),
    ("-- ... !!", 1),
    ("a a a a a", 2),
    ("word", 1),
]

_VOCAB = ["the", "The", "cat", "dog", "sat", "on", "mat", "and", "a", "to", "be", "or", "not"]


def _random_shingle_text(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(0, 14)):
        w = rng.choice(_VOCAB)
        if rng.random() < 0.2:
            w += rng.choice([",", ".", "!", "?", ";", "'s", ":"])
        if rng.random() < 0.05:
            w = rng.choice(["--", "...", "(", '"'])
        out.append(w)
    text = ""
    for w in out:
        text += (rng.choice([" ", " ", " ", "  ", "\n", "\t"]) if text else "") + w
    return text


def check_shingles(fn: Callable[[str, int], Any], cases: int = 30, seed: int | None = None) -> None:
    """Check ``fn(text, n) -> set[str]`` against :func:`llmkit.datafilter.shingles`: the
    set of word ``n``-grams of ``normalize_text(text)``, words joined by one space; a
    text of fewer than ``n`` words is one shingle, an empty one none."""
    name = "shingles"
    reject_library(name, fn, _ref_shingles)
    check_cases(cases, len(_FIXED_SHINGLES))
    rng = check_rng(seed)
    inputs = list(_FIXED_SHINGLES)
    while len(inputs) < cases:
        inputs.append((_random_shingle_text(rng), rng.randint(1, 6)))
    answers: list[tuple[tuple[str, int], set[str], set[str]]] = []
    for text, n in inputs:
        expected = _ref_shingles(text, n)
        shown = f"text={text!r}, n={n}"
        got = _call(fn, name, shown, text, n)
        _require_result(got, name, shown)
        if not isinstance(got, set | frozenset):
            hint = "return a set: a shingle that occurs twice counts once"
            if isinstance(got, list | tuple) and set(map(str, got)) == expected:
                hint = "return a set, not a list: a shingle that occurs twice counts once"
            raise _fail(name, shown, f"expected a set, got {type(got).__name__}", hint)
        if any(not isinstance(s, str) for s in got):
            other = next(s for s in got if not isinstance(s, str))
            hint = "each shingle is one string: the n words joined by one space"
            if isinstance(other, tuple | list):
                hint = "make each shingle a string, ' '.join(words[i : i + n]), not a tuple"
            raise _fail(name, shown, f"a shingle is {_short(other)}, not a str", hint)
        answers.append(((text, n), set(got), expected))
    wrong = [x for x in answers if x[1] != x[2]]
    if wrong:
        (text, n), got, expected = wrong[0]
        slips = [(functools.partial(_shingles_slip, **slip), why) for slip, why in _SHINGLE_SLIPS]
        hint = _best_slip(
            answers,
            slips,
            otherwise=(
                "words = normalize_text(text).split(); one shingle per start i, "
                "' '.join(words[i : i + n]); fewer than n words: one shingle of them all"
            ),
        )
        missing = sorted(expected - got)[:3]
        extra = sorted(got - expected)[:3]
        raise _fail(
            name,
            f"text={text!r}, n={n}",
            f"wrong shingles (missing {_short(missing, 80)}, unexpected {_short(extra, 80)})",
            hint,
        )
    passed(name, f"{len(inputs)} texts match llmkit.datafilter.shingles")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _jaccard_slip(a: set[str], b: set[str], kind: str) -> float:
    inter = len(a & b)
    if kind == "min":
        return inter / min(len(a), len(b))
    if kind == "max":
        return inter / max(len(a), len(b))
    if kind == "sum":
        return inter / (len(a) + len(b))
    if kind == "dice":
        return 2 * inter / (len(a) + len(b))
    if kind == "empty0":
        return inter / len(a | b) if a | b else 0.0
    raise ValueError(kind)  # pragma: no cover


_JACCARD_SLIPS = [
    (
        "min",
        "you divided by the smaller set (the overlap coefficient): Jaccard divides the "
        "intersection by the union, |a & b| / |a | b|, so a small set inside a large one "
        "is not a duplicate",
    ),
    ("max", "divide the intersection by the size of the union, |a | b|, not of the larger set"),
    (
        "sum",
        "divide by the size of the union, |a | b| = |a| + |b| - |a & b|: |a| + |b| counts "
        "the shared shingles twice",
    ),
    ("dice", "this is the Dice coefficient 2|a & b| / (|a| + |b|); Jaccard is |a & b| / |a | b|"),
    ("empty0", "two empty sets are identical: their Jaccard similarity is 1.0 by convention"),
]


def _random_set(rng: random.Random, pool: Sequence[str]) -> set[str]:
    return set(rng.sample(list(pool), rng.randint(0, len(pool))))


def check_jaccard(
    fn: Callable[[set[str], set[str]], Any], cases: int = 30, seed: int | None = None
) -> None:
    """Check ``fn(a, b) -> float`` against :func:`llmkit.datafilter.jaccard`:
    ``|a & b| / |a | b|``, 1.0 for two empty sets."""
    name = "jaccard"
    reject_library(name, fn, _ref_jaccard)
    fixed = [
        ({"a b", "b c", "c d"}, {"b c", "c d", "d e"}),
        ({"x"}, {"x", "y", "z", "w"}),
        ({"x", "y"}, {"x", "y"}),
        ({"x"}, {"y"}),
        (set(), {"y"}),
        (set(), set()),
    ]
    check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        pool = [f"s{i}" for i in range(rng.randint(1, 12))]
        inputs.append((_random_set(rng, pool), _random_set(rng, pool)))
    answers: list[tuple[tuple[set[str], set[str]], float, float]] = []
    for a, b in inputs:
        expected = _ref_jaccard(a, b)
        shown = f"a={sorted(a)}, b={sorted(b)}"
        ca, cb = set(a), set(b)
        got = _call(fn, name, shown, ca, cb)
        if ca != a or cb != b:
            raise _fail(
                name,
                shown,
                "your function modified its arguments",
                "use a & b and a | b, which make new sets, not a.update or a &= b",
            )
        _require_result(got, name, shown)
        if isinstance(got, bool) or not isinstance(got, int | float):
            raise _fail(name, shown, f"expected a float, got {_short(got)}", "return a number")
        answers.append(((a, b), float(got), expected))
    wrong = [x for x in answers if not _close(x[1], x[2])]
    if wrong:
        (a, b), got, expected = wrong[0]
        slips = [(functools.partial(_jaccard_slip, kind=k), why) for k, why in _JACCARD_SLIPS]
        hint = _best_slip(
            answers,
            slips,
            otherwise="the size of the intersection over the size of the union: |a & b| / |a | b|",
            same=_close,
        )
        raise _fail(
            name, f"a={sorted(a)}, b={sorted(b)}", f"got {got!r}, expected {expected!r}", hint
        )
    passed(name, f"{len(inputs)} pairs of sets match llmkit.datafilter.jaccard")


# --------------------------------------------------------------------------------------
# exercise 4: MinHash signatures
# --------------------------------------------------------------------------------------


def reference_minhash(items: set[str], hash_funcs: Sequence[Callable[[str], int]]) -> list[int]:
    """``[min(h(s) for s in items) for h in hash_funcs]``: for the hash functions of
    :meth:`MinHash.hash_functions` this is :meth:`MinHash.signature_of_set`."""
    return [min(h(s) for s in items) for h in hash_funcs]


def _max_signature(items: set[str], hash_funcs: Sequence[Callable[[str], int]]) -> list[int]:
    return [max(h(s) for s in items) for h in hash_funcs]


def _toy_hash_functions(rng: random.Random, k: int) -> list[Callable[[str], int]]:
    """``k`` simple hash functions unlike the library's (polynomial string hashes)."""

    def make(base: int, mod: int) -> Callable[[str], int]:
        def h(s: str) -> int:
            value = 0
            for c in s:
                value = (value * base + ord(c)) % mod
            return value

        return h

    return [make(rng.randrange(31, 10_000), rng.choice([1009, 65_521, 999_983])) for _ in range(k)]


def _random_items(rng: random.Random) -> set[str]:
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    return {
        " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        for _ in range(rng.randint(1, 25))
    }


def check_minhash(
    fn: Callable[[set[str], list[Callable[[str], int]]], Any],
    cases: int = 12,
    seed: int | None = None,
) -> None:
    """Check ``fn(items, hash_funcs) -> list[int]``: entry ``k`` is the minimum of
    ``hash_funcs[k]`` over the non-empty set ``items``. Most cases use the hash functions
    of a random :class:`llmkit.datafilter.MinHash` (``mh.hash_functions()``) and compare
    with ``mh.signature_of_set(items)``; the others use hash functions unlike the
    library's, so an answer must use the functions it is given."""
    name = "minhash"
    reject_library(name, fn, reference_minhash, MinHash.signature_of_set)
    check_cases(cases, 2)
    rng = check_rng(seed)
    answers: list[
        tuple[tuple[set[str], list[Callable[[str], int]]], list[int], list[int], str]
    ] = []
    for case in range(cases):
        items = {"a b c"} if case == 0 else _random_items(rng)
        if case % 4 == 1:
            funcs = _toy_hash_functions(rng, rng.randint(1, 8))
            expected = reference_minhash(items, funcs)
            source = "simple polynomial string hashes"
        else:
            mh = MinHash(num_perm=rng.randint(1, 32), seed=rng.randrange(2**31))
            funcs = mh.hash_functions()
            expected = mh.signature_of_set(items).tolist()
            source = f"MinHash(num_perm={mh.num_perm}, seed={mh.seed}).hash_functions()"
        shown = f"items={_short(sorted(items), 120)}, hash_funcs={source} ({len(funcs)} functions)"
        given, given_funcs = set(items), list(funcs)
        got = _call(fn, name, shown, given, given_funcs)
        if given != items:
            raise _fail(
                name,
                shown,
                "your function modified the set of items",
                "only read items: take the minimum of each hash function over it",
            )
        _require_result(got, name, shown)
        if isinstance(got, int) or not hasattr(got, "__len__"):
            raise _fail(
                name,
                shown,
                f"expected a list of {len(funcs)} ints, got {_short(got)}",
                "the signature has one entry per hash function: "
                "[min(h(s) for s in items) for h in hash_funcs]",
            )
        try:
            values = [int(v) for v in got]
        except (TypeError, ValueError):
            raise _fail(
                name,
                shown,
                f"expected a list of ints, got {_short(got)}",
                "each entry is the smallest *hash value* h(s), not the shingle s that has it",
            ) from None
        if len(values) != len(expected):
            raise _fail(
                name,
                shown,
                f"your signature has {len(values)} entries, expected {len(expected)}",
                "one entry per hash function (len(hash_funcs)), not one per item",
            )
        answers.append(((items, funcs), values, expected, shown))
    wrong = [x for x in answers if x[1] != x[2]]
    if wrong:
        _, values, expected, shown = wrong[0]
        slips = [
            (
                _max_signature,
                "take the minimum of each hash function over the items, not the maximum (the "
                "maximum estimates Jaccard as well, but the convention, and llmkit, use the "
                "minimum)",
            ),
            (
                lambda items, funcs: sorted(reference_minhash(items, funcs)),
                "keep the entries in the order of hash_funcs: entry k belongs to "
                "hash_funcs[k], and two signatures are compared position by position",
            ),
        ]
        hint = _best_slip(
            [x[:3] for x in answers],
            slips,
            otherwise=(
                "entry k is min(hash_funcs[k](s) for s in items); use the hash functions "
                "you are given (not Python's hash), and no others"
            ),
        )
        k = next(i for i, (a, e) in enumerate(zip(values, expected, strict=True)) if a != e)
        raise _fail(name, shown, f"entry {k} is {values[k]}, expected {expected[k]}", hint)
    passed(name, f"{cases} signatures match llmkit.datafilter.MinHash")

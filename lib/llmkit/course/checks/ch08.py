"""Checks of lab 08 (training data): one :class:`Exercise` per exercise.

==============  ===============================================  ===========================
exercise        the student's function                           reference
==============  ===============================================  ===========================
find_bad_words  ``(text, words) -> list[str]``: whole-word,      ``BadWordsMatcher(words)``
                case-insensitive matches, as written             ``.find_all(text)``
keep_line       ``(line) -> bool``: C4's terminal-punctuation    ``c4_clean`` with only
                and five-words rules                             those two rules on
shingles        ``(text, n) -> set[str]``                        ``datafilter.shingles``
jaccard         ``(a, b) -> float``                              ``datafilter.jaccard``
minhash         ``(items, hash_funcs) -> list[int]``             the minima of the given
                                                                 functions (for
                                                                 ``MinHash.hash_functions()``:
                                                                 ``signature_of_set``)
==============  ===============================================  ===========================

Off limits in every exercise: what in :mod:`llmkit.datafilter` computes an exercise
(``BadWordsMatcher``, ``c4_clean``, ``shingles``, ``jaccard``, the MinHash signatures);
``normalize_text`` and the hash functions the check hands over are allowed.

The bad-words checks use a made-up list (:data:`TOY_WORDS`) and invented words, never
the LDNOOBW list. ``keep_line`` also draws lines from Tiny Shakespeare (read from the
data mirror); ``check_keep_line(..., lines=...)`` draws them from other lines instead.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from .runner import Case, Exercise, Slip, show

__all__ = [
    "TOY_WORDS",
    "check_find_bad_words",
    "check_keep_line",
    "check_shingles",
    "check_jaccard",
    "check_minhash",
]

_REF = "llmkit.course.checks.reference.ch08"
_DATAFILTER = [
    f"llmkit.datafilter:{name}"
    for name in (
        "BadWordsMatcher",
        "c4_clean",
        "_c4_clean",
        "filter_report",
        "shingles",
        "jaccard",
        "MinHash.signature_of_set",
        "MinHash.signature",
        "minhash_signature",
        "estimated_jaccard",
        "near_duplicates",
    )
]

#: The lab's made-up bad-words list: short words that hide inside longer harmless ones
#: ("ass" in "class", "hell" in "hello"), a two-word entry that shares its start with
#: another, and two entries with punctuation ("s.o.b." and the grawlix "@#$%").
TOY_WORDS: tuple[str, ...] = ("ass", "hell", "darn", "heck", "dang", "dang it", "s.o.b.", "@#$%")

# ------------------------------------------------------------------------ find_bad_words

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
    parts = rng.choice([str.lower, str.lower, str.upper, str.title])(entry).split()
    return parts[0] + "".join(
        (" " if rng.random() < 0.5 else rng.choice(_SPACES)) + p for p in parts[1:]
    )


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


def _bad_words_case(rng: random.Random) -> Case:
    words = _random_words(rng)
    return Case((_random_text(rng, words), words))


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

FIND_BAD_WORDS = Exercise(
    name="find_bad_words",
    reference=f"{_REF}:find_bad_words",
    forbid=_DATAFILTER,
    fixed=[Case((text, list(TOY_WORDS))) for text in _FIXED_TEXTS],
    random=_bad_words_case,
    cases=40,
    hint="an entry matches where neither neighbour is a word character (\\w), ignoring case; "
    "whitespace in an entry matches any run of whitespace; the longest entry wins at one "
    "place; return the matches left to right, as written, without overlaps",
    slips=[
        Slip(
            f"{_REF}:find_bad_words_substrings",
            "you match substrings: 'ass' inside 'class', 'hell' inside 'hello' (the Scunthorpe "
            "problem); put (?<!\\w) and (?!\\w) around the entries",
        ),
        Slip(
            f"{_REF}:find_bad_words_b",
            "\\b fails next to entries that begin or end with punctuation ('@#$%', 's.o.b.'); "
            "use the lookarounds (?<!\\w) and (?!\\w) instead",
        ),
        Slip(
            f"{_REF}:find_bad_words_unescaped",
            "entries are literal text: re.escape them, or the '.' of 's.o.b.' matches any "
            "character",
        ),
        Slip(
            f"{_REF}:find_bad_words_given_order",
            "where several entries match at one place the longest wins: sort the entries "
            "longest first before joining them with |",
        ),
    ],
)

# ----------------------------------------------------------------------------- keep_line


@functools.cache
def _shakespeare_lines() -> tuple[str, ...]:
    from llmkit.data import load_tinyshakespeare

    parts = load_tinyshakespeare()
    return tuple((parts["train"] + parts["val"]).split("\n"))


def _random_line(rng: random.Random, pool: Sequence[str] | None = None) -> Case:
    pool = _shakespeare_lines() if pool is None else pool
    if pool and rng.random() < 0.5:
        return Case((rng.choice(pool),))
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(8)]
    line = words[0] + "".join(
        rng.choice([" ", " ", " ", "  ", "\t"]) + w for w in words[1 : rng.randint(1, 8)]
    )
    line += rng.choice(
        [".", ".", "?", "!", '"', "...", "..", "…", ":", ",", "'", ")", '."', '..."', "!)", ""]
    )
    return Case((rng.choice(["", "", " ", "\t"]) + line + rng.choice(["", "", " ", "\t"]),))


def _is_bool(got: Any, expected: bool, case: Case) -> str | None:
    if not isinstance(got, bool):
        return f"the result should be True or False, not {show(got)}"
    return None if got == expected else f"the result is {got}, expected {expected}"


_FIXED_LINES = [
    "This line has five words.",
    "Four words are here.",
    "Is this a line with six words?",
    'She said: "it is all fine."',
    'He whispered "and then it stopped..."',
    "And then it stopped and went on...",
    "It ends with two dots, like this..",
    "A line of five words.   ",
    "\t  Indented line with five words.",
    "A  line   with  odd    spacing.",
    "Five\twords\tand\ttabs\there.",
    "A line that has no end mark",
    "Ending in a colon, like a speaker:",
    "It ends with an ellipsis character…",
    "",
    "   ",
    ". . . . .",
]

KEEP_LINE = Exercise(
    name="keep_line",
    reference=f"{_REF}:keep_line",
    forbid=_DATAFILTER,
    fixed=[(line,) for line in _FIXED_LINES],
    random=_random_line,
    cases=60,
    compare=_is_bool,
    hint="strip the line; keep it when it ends in '.', '?', '!' or '\"' but not in '...', "
    "and has at least 5 words (line.split())",
    slips=[
        Slip(
            f"{_REF}:keep_line_ellipsis",
            "a line ending in '...' is dropped although it ends in '.': an ellipsis marks an "
            "unfinished sentence",
        ),
        Slip(
            f"{_REF}:keep_line_unstripped",
            "strip the line first (line.strip()): C4 ignores the whitespace at both ends",
        ),
        Slip(f"{_REF}:keep_line_six_words", "a line needs at least 5 words: five are enough"),
        Slip(
            f"{_REF}:keep_line_no_quote",
            "a closing double quote counts as terminal punctuation: the marks are '.', '?', "
            "'!' and '\"'",
        ),
    ],
)

# ------------------------------------------------------------------------------ shingles

_VOCAB = ["the", "The", "cat", "dog", "sat", "on", "mat", "and", "a", "to", "be", "or", "not"]


def _shingles_case(rng: random.Random) -> Case:
    text = ""
    for _ in range(rng.randint(0, 14)):
        w = rng.choice(_VOCAB)
        if rng.random() < 0.2:
            w += rng.choice([",", ".", "!", "?", ";", "'s", ":"])
        if rng.random() < 0.05:
            w = rng.choice(["--", "...", "(", '"'])
        text += (rng.choice([" ", " ", " ", "  ", "\n", "\t"]) if text else "") + w
    return Case((text, rng.randint(1, 6)))


def _same_set(got: Any, expected: set[str], case: Case) -> str | None:
    if not isinstance(got, set | frozenset):
        return f"the result should be a set of strings, not {type(got).__name__}"
    if got == expected:
        return None
    missing, extra = sorted(expected - got)[:3], sorted(got - expected)[:3]
    return f"the shingles differ (missing: {show(missing, 80)}; unexpected: {show(extra, 80)})"


SHINGLES = Exercise(
    name="shingles",
    reference="llmkit.datafilter:shingles",
    forbid=_DATAFILTER,
    fixed=[
        ("the cat sat on the mat", 2),
        ("The cat sat on the mat.", 3),
        ("To be, or not to be: that is the question.", 5),
        ("one two three", 3),
        ("one two", 3),
        ("Hello,   World!\nHello world.", 2),
        ("", 2),
        ("-- ... !!", 1),
        ("a a a a a", 2),
    ],
    random=_shingles_case,
    cases=30,
    compare=_same_set,
    hint="words = normalize_text(text).split(); one shingle per start i, "
    "' '.join(words[i : i + n]); fewer than n words: one shingle of them all",
    slips=[
        Slip(
            f"{_REF}:shingles_of_characters",
            "these are character n-grams: a shingle is n consecutive words, joined by a space",
        ),
        Slip(
            f"{_REF}:shingles_not_normalised",
            "normalise the text first: normalize_text(text) lower-cases it and removes the "
            "punctuation",
        ),
        Slip(
            f"{_REF}:shingles_without_the_last",
            "off by one: m >= n words have m - n + 1 shingles (range(len(words) - n + 1))",
        ),
        Slip(
            f"{_REF}:shingles_none_when_short",
            "a text of fewer than n words (but at least one) is one shingle of all its words",
        ),
    ],
)

# ------------------------------------------------------------------------------- jaccard


def _jaccard_case(rng: random.Random) -> Case:
    pool = [f"s{i}" for i in range(rng.randint(1, 12))]
    a, b = (set(rng.sample(pool, rng.randint(0, len(pool)))) for _ in range(2))
    return Case((a, b))


JACCARD = Exercise(
    name="jaccard",
    reference="llmkit.datafilter:jaccard",
    forbid=_DATAFILTER,
    fixed=[
        ({"x"}, {"x", "y", "z", "w"}),  # first: every slip gives another value here
        ({"a b", "b c", "c d"}, {"b c", "c d", "d e"}),
        ({"x", "y"}, {"x", "y"}),
        ({"x"}, {"y"}),
        (set(), {"y"}),
        (set(), set()),
    ],
    random=_jaccard_case,
    cases=30,
    rtol=1e-9,
    atol=1e-12,
    hint="the size of the intersection over the size of the union: |a & b| / |a | b|",
    slips=[
        Slip(
            f"{_REF}:jaccard_by_smaller",
            "you divided by the smaller set (the overlap coefficient): Jaccard divides by the "
            "union, |a | b|",
        ),
        Slip(
            f"{_REF}:jaccard_by_sum",
            "divide by the size of the union, |a | b| = |a| + |b| - |a & b|",
        ),
        Slip(
            f"{_REF}:jaccard_dice",
            "this is the Dice coefficient 2|a & b| / (|a| + |b|); Jaccard is |a & b| / |a | b|",
        ),
        Slip(f"{_REF}:jaccard_empty_zero", "two empty sets are identical: their Jaccard is 1.0"),
    ],
)

# ------------------------------------------------------------------------------- minhash


def _toy_hash_functions(rng: random.Random, k: int) -> list[Callable[[str], int]]:
    """``k`` polynomial string hashes, unlike the library's."""

    def make(base: int, mod: int) -> Callable[[str], int]:
        def h(s: str) -> int:
            value = 0
            for c in s:
                value = (value * base + ord(c)) % mod
            return value

        return h

    return [make(rng.randrange(31, 10_000), rng.choice([1009, 65_521, 999_983])) for _ in range(k)]


def _minhash_case(rng: random.Random, toy: bool | None = None, items: set[str] | None = None):
    from llmkit.datafilter import MinHash

    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    if items is None:
        items = {
            " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(1, 25))
        }
    if toy if toy is not None else rng.random() < 0.25:
        funcs = _toy_hash_functions(rng, rng.randint(1, 8))
        source = "polynomial string hashes"
    else:
        mh = MinHash(num_perm=rng.randint(1, 32), seed=rng.randrange(2**31))
        funcs = mh.hash_functions()
        source = f"MinHash(num_perm={mh.num_perm}, seed={mh.seed}).hash_functions()"
    label = f"items={show(sorted(items), 120)}, hash_funcs={len(funcs)} {source}"
    return Case((items, funcs), label=label)


MINHASH = Exercise(
    name="minhash",
    reference=f"{_REF}:minhash",
    forbid=_DATAFILTER,
    fixed=[
        _minhash_case(random.Random(0), toy=False, items={"a b c"}),
        _minhash_case(random.Random(1), toy=True),
    ],
    random=_minhash_case,
    cases=12,
    hint="entry k is min(hash_funcs[k](s) for s in items); use the hash functions you are "
    "given (not Python's hash), and no others",
    slips=[
        Slip(f"{_REF}:minhash_max", "take the minimum of each hash function, not the maximum"),
        Slip(
            f"{_REF}:minhash_sorted",
            "keep the entries in the order of hash_funcs: entry k belongs to hash_funcs[k]",
        ),
    ],
)


def check_find_bad_words(fn, cases: int = 40, seed: int | None = None) -> None:
    """Check ``find_bad_words(text, words)``; see the table above."""
    FIND_BAD_WORDS.check(fn, cases=cases, seed=seed)


def check_keep_line(
    fn, cases: int = 60, seed: int | None = None, lines: Sequence[str] | None = None
) -> None:
    """Check ``keep_line(line)``; half the random lines come from ``lines`` (default:
    Tiny Shakespeare's)."""
    if lines is None:
        KEEP_LINE.check(fn, cases=cases, seed=seed)
        return
    KEEP_LINE.random = functools.partial(_random_line, pool=list(lines))
    try:
        KEEP_LINE.check(fn, cases=cases, seed=seed)
    finally:
        KEEP_LINE.random = _random_line


def check_shingles(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``shingles(text, n)``."""
    SHINGLES.check(fn, cases=cases, seed=seed)


def check_jaccard(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``jaccard(a, b)``."""
    JACCARD.check(fn, cases=cases, seed=seed)


def check_minhash(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``minhash(items, hash_funcs)``."""
    MINHASH.check(fn, cases=cases, seed=seed)

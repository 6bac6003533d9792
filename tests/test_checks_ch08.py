"""The chapter-08 lab checks pass on correct answers and fail, with the right hint, on
the usual mistakes.

``check_keep_line`` draws lines from Tiny Shakespeare by default; without a data mirror
those tests pass their own lines instead, so this module runs offline everywhere.
"""

from __future__ import annotations

import functools
import os
import re
import string
from pathlib import Path

import pytest

from llmkit.course.checks import ch08
from llmkit.datafilter import MinHash, normalize_text

_MIRROR = os.environ.get("LLMKIT_DATA_MIRROR", "").strip()
HAVE_MIRROR = bool(_MIRROR) and Path(_MIRROR).is_dir()
#: lines for check_keep_line when there is no mirror (verse, prose, speakers, blanks)
LINES = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "",
    "You are all resolved rather to die than to famish?",
    "Speak, speak.",
    "Let us kill him, and we'll have corn at our own price.",
    "Is't a verdict?",
    "No more talking on't; let it be done: away, away!",
    "We are accounted poor citizens, the patricians good.",
    "What authority surfeits on would relieve us: if they",
]


def keep_line_check(fn, **kwargs):
    if not HAVE_MIRROR:
        kwargs.setdefault("lines", LINES)
    ch08.check_keep_line(fn, **kwargs)


# ------------------------------------------------------------------ correct answers


def find_bad_words(text, words):
    entries = sorted(set(words), key=lambda w: (-len(w), w))
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in entries)
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return [m.group() for m in pattern.finditer(text)]


def find_bad_words_by_hand(text, words):
    """No regular expressions: try the entries, longest first, at every position."""

    def is_word(c):
        return c.isalnum() or c == "_"

    entries = sorted(set(words), key=len, reverse=True)
    out, i = [], 0
    while i < len(text):
        for w in entries:
            j, ok = i, True
            for k, part in enumerate(w.split()):
                if k:  # a run of whitespace between the words of an entry
                    start = j
                    while j < len(text) and text[j].isspace():
                        j += 1
                    if j == start:
                        ok = False
                        break
                if text[j : j + len(part)].lower() != part:
                    ok = False
                    break
                j += len(part)
            if (
                ok
                and not (i > 0 and is_word(text[i - 1]))
                and not (j < len(text) and is_word(text[j]))
            ):
                out.append(text[i:j])
                i = j
                break
        else:
            i += 1
    return out


def keep_line(line):
    line = line.strip()
    ends = line.endswith((".", "?", "!", '"')) and not line.endswith("...")
    return ends and len(line.split()) >= 5


def shingles(text, n):
    words = normalize_text(text).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a, b):
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def minhash(items, hash_funcs):
    return [min(h(s) for s in items) for h in hash_funcs]


def minhash_numpy(items, hash_funcs):
    import numpy as np

    table = np.array([[h(s) for s in sorted(items)] for h in hash_funcs], dtype=np.uint64)
    return table.min(axis=1)


# ------------------------------------------------------------------ passing


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_checks_pass_on_correct_answers(seed, capsys):
    ch08.check_find_bad_words(find_bad_words, seed=seed)
    ch08.check_find_bad_words(find_bad_words_by_hand, seed=seed)
    keep_line_check(keep_line, seed=seed)
    ch08.check_shingles(shingles, seed=seed)
    ch08.check_jaccard(jaccard, seed=seed)
    ch08.check_minhash(minhash, seed=seed)
    ch08.check_minhash(minhash_numpy, seed=seed)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(line.startswith("✔ ") for line in lines)
    assert lines[0] == "✔ find_bad_words: 40 texts match llmkit.datafilter.BadWordsMatcher"
    assert lines[2].startswith("✔ keep_line: 60 lines")
    assert lines[3] == "✔ shingles: 30 texts match llmkit.datafilter.shingles"
    assert lines[4] == "✔ jaccard: 30 pairs of sets match llmkit.datafilter.jaccard"
    assert lines[5] == "✔ minhash: 12 signatures match llmkit.datafilter.MinHash"


@pytest.mark.skipif(not HAVE_MIRROR, reason="needs the data mirror (LLMKIT_DATA_MIRROR)")
def test_keep_line_reads_shakespeare_by_default(capsys):
    ch08.check_keep_line(keep_line, seed=0)
    assert "Shakespeare" in capsys.readouterr().out
    assert len(ch08._shakespeare_lines()) == 40_001  # 40,000 lines and the final newline


def test_references_agree_with_the_slip_functions_unslipped():
    import random

    rng = random.Random(0)
    for _ in range(200):
        words = ch08._random_words(rng)
        text = ch08._random_text(rng, words)
        assert ch08._find(text, words) == ch08.reference_find_bad_words(text, words)
        line = ch08._random_line(rng)
        assert ch08._keep_slip(line) == ch08.reference_keep_line(line)
        text = ch08._random_shingle_text(rng)
        n = rng.randint(1, 6)
        assert ch08._shingles_slip(text, n) == shingles(text, n)
    mh = MinHash(num_perm=8, seed=1)
    items = {"a b", "c d", "e f"}
    assert ch08.reference_minhash(items, mh.hash_functions()) == (
        mh.signature_of_set(items).tolist()
    )


def test_seed_from_environment_makes_inputs_repeat(monkeypatch):
    seen = []

    def spy(text, words):
        seen.append((text, tuple(words)))
        return find_bad_words(text, words)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch08.check_find_bad_words(spy)
    first, seen[:] = list(seen), []
    ch08.check_find_bad_words(spy)
    assert seen == first
    seen.clear()
    ch08.check_find_bad_words(spy, seed=6)
    assert seen != first


def test_unfinished_stub_propagates():
    def stub(*args, **kwargs):
        raise NotImplementedError("stub")

    for check in (
        ch08.check_find_bad_words,
        functools.partial(ch08.check_keep_line, lines=LINES),
        ch08.check_shingles,
        ch08.check_jaccard,
        ch08.check_minhash,
    ):
        with pytest.raises(NotImplementedError):
            check(stub, seed=0)


def test_checks_refuse_llmkit_functions():
    from llmkit.datafilter import BadWordsMatcher
    from llmkit.datafilter import jaccard as library_jaccard
    from llmkit.datafilter import shingles as library_shingles

    with pytest.raises(AssertionError, match="find_bad_words: this is llmkit's own"):
        ch08.check_find_bad_words(ch08.reference_find_bad_words, seed=0)
    with pytest.raises(AssertionError, match="find_bad_words: this is llmkit's own"):
        ch08.check_find_bad_words(BadWordsMatcher(["x"]).find_all, seed=0)
    with pytest.raises(AssertionError, match="keep_line: this is llmkit's own"):
        ch08.check_keep_line(ch08.reference_keep_line, seed=0, lines=LINES)
    with pytest.raises(AssertionError, match="shingles: this is llmkit's own"):
        ch08.check_shingles(functools.partial(library_shingles), seed=0)
    with pytest.raises(AssertionError, match="jaccard: this is llmkit's own"):
        ch08.check_jaccard(library_jaccard, seed=0)
    with pytest.raises(AssertionError, match="minhash: this is llmkit's own"):
        ch08.check_minhash(ch08.reference_minhash, seed=0)


def test_cases_argument_is_validated():
    with pytest.raises(ValueError, match="cases must be an int >= 12"):
        ch08.check_find_bad_words(find_bad_words, cases=3, seed=0)
    with pytest.raises(ValueError, match="cases must be an int >= 2"):
        ch08.check_minhash(minhash, cases=1, seed=0)


# ------------------------------------------------------------------ failing: bad words


def _bad_words_fails(fn, match):
    with pytest.raises(AssertionError, match=f"(?s)find_bad_words: .*hint: .*{match}"):
        ch08.check_find_bad_words(fn, seed=0)


def test_find_bad_words_substrings_scunthorpe():
    def substrings(text, words):
        found = []
        for w in sorted(words, key=len, reverse=True):
            found += [m for m in re.findall(re.escape(w), text, re.IGNORECASE)]
        return found

    _bad_words_fails(substrings, "Scunthorpe")

    def substring_regex(text, words):
        alternatives = "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
        return re.findall(alternatives, text, re.IGNORECASE)

    _bad_words_fails(substring_regex, "Scunthorpe")


def test_find_bad_words_case_sensitive():
    def case_sensitive(text, words):
        entries = sorted(words, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in entries)
        return re.findall(rf"(?<!\w)(?:{alternatives})(?!\w)", text)

    _bad_words_fails(case_sensitive, "ignore case")


def test_find_bad_words_tokens_and_punctuation():
    def tokens(text, words):
        return [t for t in text.split() if t.lower() in words]

    _bad_words_fails(tokens, "next to punctuation")

    def stripped_tokens(text, words):
        out = []
        for t in text.split():
            bare = t.strip(string.punctuation)
            if bare.lower() in words:
                out.append(bare)
        return out

    # not one of the known slips: the generic hint, which still names the rules
    _bad_words_fails(stripped_tokens, "neither neighbour is a word character")


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"boundary": "ascii"}, "letters of any script"),
        ({"boundary": "b"}, "\\\\b is a boundary"),
        ({"escape": False}, "re.escape"),
        ({"whitespace": " "}, "any run of whitespace"),
        ({"order": "given"}, "the longest wins"),
        ({"overlap": True}, "do not overlap"),
        ({"as_written": False}, "as it is written in the text"),
    ],
)
def test_find_bad_words_recognises_each_mistake(slip, match):
    def wrong(text, words):
        return ch08._find(text, words, **slip)

    _bad_words_fails(wrong, match)


def test_find_bad_words_types_and_mutation():
    _bad_words_fails(lambda text, words: None, "forget `return`")
    _bad_words_fails(lambda text, words: bool(find_bad_words(text, words)), "matched pieces")

    def mutates(text, words):
        out = find_bad_words(text, words)
        words.sort()
        return out

    _bad_words_fails(mutates, "leave words as it is")

    def crashes(text, words):
        return [text[0]]

    with pytest.raises(AssertionError, match="(?s)your function raised IndexError.*hint: "):
        ch08.check_find_bad_words(crashes, seed=0)


# ------------------------------------------------------------------ failing: keep_line


def _keep_fails(fn, match, lines=None):
    with pytest.raises(AssertionError, match=f"(?s)keep_line: .*hint: .*{match}"):
        keep_line_check(fn, seed=0, **({} if lines is None else {"lines": lines}))


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"ellipsis": ""}, "ending in '...' is dropped"),
        ({"quote_after_ellipsis": False}, "is kept: only a line whose"),
        ({"ellipsis": ".."}, "three dots"),
        ({"marks": (".", "?", "!")}, "closing double quote"),
        ({"marks": (".", "?", "!", '"', "'", "…", ":", ")")}, "only '.', '\\?', '!'"),
        ({"strip": False}, "strip the line first"),
        ({"min_words": 6}, "five words are enough"),
        ({"min_words": 4}, "four are not enough"),
        ({"split": " "}, "line.split\\(\\)"),
        ({"min_words": None}, "at least 5 words"),
        ({"punctuation": False}, "must also end in terminal punctuation"),
    ],
)
def test_keep_line_recognises_each_mistake(slip, match):
    def wrong(line):
        return ch08._keep_slip(line, **slip)

    _keep_fails(wrong, match)


def test_keep_line_written_differently():
    def no_strip_regex(line):
        return bool(re.search(r'(?<!\.\.)[.?!"]$', line)) and len(line.split()) > 4

    _keep_fails(no_strip_regex, "ends in a closing quote and is kept")

    def no_strip(line):
        return (
            line.endswith((".", "?", "!", '"'))
            and not line.endswith("...")
            and (len(line.split()) >= 5)
        )

    _keep_fails(no_strip, "strip the line first")

    def greater_than_five(line):
        line = line.strip()
        return (
            line.endswith((".", "?", "!", '"'))
            and not line.endswith("...")
            and (len(line.split()) > 5)
        )

    _keep_fails(greater_than_five, "five words are enough")


def test_keep_line_types():
    _keep_fails(lambda line: None, "forget `return`")
    _keep_fails(lambda line: len(line.split()) if keep_line(line) else 0, "return a bool")


# ------------------------------------------------------------------ failing: shingles


def _shingles_fails(fn, match):
    with pytest.raises(AssertionError, match=f"(?s)shingles: .*hint: .*{match}"):
        ch08.check_shingles(fn, seed=0)


def test_shingles_mistakes():
    def characters(text, n):
        t = normalize_text(text)
        return {t[i : i + n] for i in range(len(t) - n + 1)} if len(t) >= n else {t} - {""}

    _shingles_fails(characters, "character n-grams")

    def not_normalised(text, n):
        words = text.split()
        if len(words) < n:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}

    _shingles_fails(not_normalised, "normalise the text first")

    def lower_only(text, n):
        return not_normalised(text.lower(), n)

    _shingles_fails(lower_only, "normalise the text first|words = normalize_text")

    def one_short(text, n):
        words = normalize_text(text).split()
        if len(words) < n:
            return {" ".join(words)} if words else set()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n)} or {" ".join(words)}

    _shingles_fails(one_short, "off by one")

    def short_is_empty(text, n):
        words = normalize_text(text).split()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}

    _shingles_fails(short_is_empty, "fewer than n words")


def test_shingles_types():
    def as_list(text, n):
        return sorted(shingles(text, n))

    _shingles_fails(as_list, "return a set, not a list")

    def as_tuples(text, n):
        words = normalize_text(text).split()
        if len(words) < n:
            return {tuple(words)} if words else set()
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    _shingles_fails(as_tuples, "not a tuple")
    _shingles_fails(lambda text, n: None, "forget `return`")


# ------------------------------------------------------------------ failing: jaccard


def _jaccard_fails(fn, match):
    with pytest.raises(AssertionError, match=f"(?s)jaccard: .*hint: .*{match}"):
        ch08.check_jaccard(fn, seed=0)


def test_jaccard_mistakes():
    _jaccard_fails(
        lambda a, b: len(a & b) / min(len(a), len(b)) if a and b else 1.0, "overlap coefficient"
    )
    _jaccard_fails(
        lambda a, b: len(a & b) / (len(a) + len(b)) if a or b else 1.0, "counts the shared"
    )
    _jaccard_fails(lambda a, b: 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0, "Dice")
    _jaccard_fails(lambda a, b: len(a & b) / len(a | b) if a | b else 0.0, "1.0 by convention")
    with pytest.raises(AssertionError, match="(?s)raised ZeroDivisionError.*possibly empty"):
        ch08.check_jaccard(lambda a, b: len(a & b) / len(a | b), seed=0)

    def mutates(a, b):
        a &= b
        return jaccard(a | b, b) if a | b else 1.0

    _jaccard_fails(mutates, "make new sets")
    _jaccard_fails(lambda a, b: "0.5", "return a number")


# ------------------------------------------------------------------ failing: minhash


def _minhash_fails(fn, match):
    with pytest.raises(AssertionError, match=f"(?s)minhash: .*hint: .*{match}"):
        ch08.check_minhash(fn, seed=0)


def test_minhash_mistakes():
    _minhash_fails(
        lambda items, funcs: [max(h(s) for s in items) for h in funcs], "not the maximum"
    )
    _minhash_fails(lambda items, funcs: sorted(minhash(items, funcs)), "order of hash_funcs")
    _minhash_fails(
        lambda items, funcs: min(h(s) for h in funcs for s in items), "one entry per hash"
    )
    _minhash_fails(lambda items, funcs: [min(items, key=h) for h in funcs], "not the shingle")
    _minhash_fails(
        lambda items, funcs: [min(h(s) for h in funcs) for s in items], "not one per item"
    )
    _minhash_fails(
        lambda items, funcs: [min(hash(s) % 2**32 for s in items) for _ in funcs],
        "not Python's hash",
    )
    _minhash_fails(lambda items, funcs: None, "forget `return`")

    def mutates(items, funcs):
        out = minhash(items, funcs)
        items.clear()
        return out

    _minhash_fails(mutates, "only read items")

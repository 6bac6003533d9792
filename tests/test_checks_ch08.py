"""Lab 08 checks: each catalogued slip is named, and llmkit.datafilter (which the lab
imports as ``df``) is no shortcut. (Solution, stub and wrapper of every exercise:
tests/test_checks.py.)"""

from __future__ import annotations

import re

import pytest

from llmkit import datafilter as df
from llmkit.course.checks import ch08
from llmkit.datafilter import normalize_text

LINES = ["A line of Shakespeare, or rather not.", "First Citizen:", "  Speak, speak.  "]


def find_bad_words(text, words, *, before=r"(?<!\w)", after=r"(?!\w)", escape=True, longest=True):
    entries = sorted(set(words), key=lambda w: (-len(w), w)) if longest else list(words)
    quote = re.escape if escape else str
    body = "|".join(r"\s+".join(quote(p) for p in w.split()) for w in entries)
    return [m.group() for m in re.finditer(f"{before}(?:{body}){after}", text, re.IGNORECASE)]


def keep_line(line, *, strip=True, marks='.?!"', ellipsis=True, min_words=5):
    line = line.strip() if strip else line
    if not line.endswith(tuple(marks)) or (ellipsis and line.endswith("...")):
        return False
    return len(line.split()) >= min_words


def shingles(text, n, *, chars=False, normalise=True, last=1, short=True):
    text = normalize_text(text) if normalise else text
    words = list(text) if chars else text.split()
    glue = "" if chars else " "
    if len(words) < n:
        return {glue.join(words)} if words and short else set()
    return {glue.join(words[i : i + n]) for i in range(len(words) - n + last)}


def jaccard(a, b, *, denominator=None, empty=1.0):
    if not a and not b:
        return empty
    return len(a & b) / (denominator(a, b) if denominator else len(a | b))


def minhash(items, hash_funcs, *, pick=min, order=list):
    return order(pick(h(s) for s in items) for h in hash_funcs)


def fails(check, fn, match, **kwargs):
    with pytest.raises(AssertionError, match=match):
        check(fn, seed=0, **kwargs)


def test_correct_answers_pass():
    ch08.check_find_bad_words(find_bad_words, seed=1)
    ch08.check_keep_line(keep_line, seed=1, lines=LINES)
    ch08.check_shingles(shingles, seed=1)
    ch08.check_jaccard(jaccard, seed=1)
    ch08.check_minhash(minhash, seed=1)


def test_keep_line_reads_shakespeare_by_default(capsys):
    ch08.check_keep_line(keep_line, seed=0)
    assert len(ch08._shakespeare_lines()) == 40_001  # 40,000 lines and the final newline
    assert capsys.readouterr().out.startswith("✔ keep_line: 60 cases")


@pytest.mark.parametrize(
    "check, options, hint",
    [
        (ch08.check_find_bad_words, dict(before="", after=""), "the Scunthorpe problem"),
        (ch08.check_find_bad_words, dict(before=r"\b", after=r"\b"), r"\\b fails"),
        (ch08.check_find_bad_words, dict(escape=False), "re.escape them"),
        (ch08.check_find_bad_words, dict(longest=False), "the longest wins"),
        (ch08.check_keep_line, dict(ellipsis=False), "an ellipsis marks"),
        (ch08.check_keep_line, dict(strip=False), "strip the line first"),
        (ch08.check_keep_line, dict(min_words=6), "five are enough"),
        (ch08.check_keep_line, dict(marks=".?!"), "a closing double quote"),
        (ch08.check_shingles, dict(chars=True), "character n-grams"),
        (ch08.check_shingles, dict(normalise=False), "normalise the text first"),
        (ch08.check_shingles, dict(last=0), "off by one"),
        (ch08.check_shingles, dict(short=False), "fewer than n words"),
        (ch08.check_jaccard, dict(denominator=lambda a, b: min(len(a), len(b))), "smaller set"),
        (ch08.check_jaccard, dict(denominator=lambda a, b: len(a) + len(b)), r"\|a\| \+ \|b\| -"),
        (ch08.check_jaccard, dict(denominator=lambda a, b: (len(a) + len(b)) / 2), "Dice"),
        (ch08.check_jaccard, dict(empty=0.0), "two empty sets are identical"),
        (ch08.check_minhash, dict(pick=max), "not the maximum"),
        (ch08.check_minhash, dict(order=sorted), "in the order of hash_funcs"),
    ],
)
def test_slips_are_named(check, options, hint):
    student = {
        ch08.check_find_bad_words: find_bad_words,
        ch08.check_keep_line: keep_line,
        ch08.check_shingles: shingles,
        ch08.check_jaccard: jaccard,
        ch08.check_minhash: minhash,
    }[check]
    extra = {"lines": LINES} if check is ch08.check_keep_line else {}
    fails(check, lambda *a: student(*a, **options), hint, **extra)


def test_keep_line_wants_a_bool():
    fails(ch08.check_keep_line, lambda line: int(keep_line(line)), "True or False", lines=LINES)


def test_datafilter_is_no_shortcut():
    without = "must be written without llmkit.datafilter"
    only_line_rules = df.C4Config(
        max_word_length=None,
        citations=False,
        lorem_ipsum=False,
        javascript=False,
        curly_bracket=False,
        policy=False,
        badwords=None,
        min_sentences=None,
    )

    def minhash_by_closure(items, hash_funcs):  # the MinHash behind the hash functions
        cells = [c.cell_contents for h in hash_funcs for c in (h.__closure__ or ())]
        mh = next((c for c in cells if isinstance(c, df.MinHash)), None)
        if mh is None:
            return minhash(items, hash_funcs)
        return mh.signature_of_set(items).tolist()

    fails(
        ch08.check_find_bad_words,
        lambda t, w: df.BadWordsMatcher(w).find_all(t),
        f"{without}.BadWordsMatcher",
    )
    fails(
        ch08.check_keep_line,
        lambda line: bool(df.c4_clean(line, only_line_rules)[0]),
        f"{without}.c4_clean",
        lines=LINES,
    )
    fails(ch08.check_shingles, df.shingles, f"{without}.shingles")
    fails(ch08.check_jaccard, df.jaccard, f"{without}.jaccard")
    fails(ch08.check_minhash, minhash_by_closure, f"{without}.MinHash.signature_of_set")

"""llmkit.wordalign: IBM Model 1 against Koehn's worked example, its invariants, the baseline."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.wordalign import NULL, best_translations, ibm_model1, word_for_word, words

# Koehn, Statistical Machine Translation (2010), section 4.2, figure 4.4: the German-English
# corpus "das Haus / the house", "das Buch / the book", "ein Buch / a book", no NULL word.
KOEHN_PAIRS = [
    (["das", "haus"], ["the", "house"]),
    (["das", "buch"], ["the", "book"]),
    (["ein", "buch"], ["a", "book"]),
]
# t(english | german) after 1, 2 and 3 iterations, as printed in the book (4 digits)
KOEHN_TABLE = {
    1: {("das", "the"): 0.5, ("das", "book"): 0.25, ("buch", "book"): 0.5, ("ein", "a"): 0.5},
    2: {
        ("das", "the"): 0.6364,
        ("das", "book"): 0.1818,
        ("das", "house"): 0.1818,
        ("ein", "book"): 0.4286,
        ("ein", "a"): 0.5714,
        ("haus", "house"): 0.5714,
    },
    3: {
        ("das", "the"): 0.7479,
        ("das", "book"): 0.1208,
        ("das", "house"): 0.1313,
        ("buch", "book"): 0.7479,
        ("ein", "book"): 0.3466,
        ("ein", "a"): 0.6534,
        ("haus", "the"): 0.3466,
        ("haus", "house"): 0.6534,
    },
}


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_matches_koehns_worked_example(iterations):
    t = ibm_model1(KOEHN_PAIRS, iterations=iterations, null=False)
    for (e, f), expected in KOEHN_TABLE[iterations].items():
        assert t[e][f] == pytest.approx(expected, abs=5e-5)


def test_converges_to_the_obvious_dictionary():
    t = ibm_model1(KOEHN_PAIRS, iterations=50, null=False)
    assert best_translations(t) == {"das": "the", "haus": "house", "buch": "book", "ein": "a"}
    assert t["das"]["the"] > 0.99


sentences = st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(sentences, sentences), min_size=1, max_size=6), st.booleans())
def test_rows_are_distributions_and_word_order_does_not_matter(pairs, null):
    t = ibm_model1(pairs, iterations=3, null=null)
    for row in t.values():
        assert sum(row.values()) == pytest.approx(1.0)
        assert all(0.0 <= p <= 1.0 for p in row.values())
    assert (NULL in t) == null
    rng = random.Random(0)
    shuffled = [(rng.sample(s, len(s)), rng.sample(f, len(f))) for s, f in pairs]
    t2 = ibm_model1(shuffled, iterations=3, null=null)
    assert t2.keys() == t.keys()
    for e, row in t.items():
        for f, p in row.items():
            assert t2[e][f] == pytest.approx(p)


def test_words_keep_elisions_and_hyphens():
    assert words("Tu n'es pas là. Préfères-tu du thé ?") == [
        "tu",
        "n'es",
        "pas",
        "là",
        ".",
        "préfères-tu",
        "du",
        "thé",
        "?",
    ]
    assert words("Don't", lowercase=False) == ["Don't"]


def test_word_for_word_copies_unknown_words_and_capitalises():
    dictionary = {"tom": "tom", "is": "est", "here": "ici", ".": "."}
    assert word_for_word("Tom is here.", dictionary) == "Tom est ici."
    assert word_for_word("Mary is 30.", dictionary) == "Mary est 30."


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: ibm_model1([], iterations=1), ValueError),
        (lambda: ibm_model1(KOEHN_PAIRS, iterations=0), ValueError),
        (lambda: ibm_model1([("das haus", "the house")]), TypeError),
        (lambda: ibm_model1([(["a"],)]), ValueError),
        (lambda: ibm_model1(KOEHN_PAIRS, null=1), TypeError),
        (lambda: words(3), TypeError),
        (lambda: word_for_word("a", [("a", "b")]), TypeError),
        (lambda: best_translations([]), TypeError),
    ],
)
def test_bad_arguments_are_named(call, error):
    with pytest.raises(error):
        call()

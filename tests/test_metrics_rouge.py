"""Tests of the chapter-09 metrics in llmkit.metrics: ROUGE-L (Lin, 2004) and exact match.

The expected values are worked out by hand from the definitions (LCS of the words,
precision over the response, recall over the reference, their harmonic mean), then compared
with Google's ``rouge-score`` package on random strings when it is installed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.metrics import (
    exact_match,
    lcs_length,
    normalize_answer,
    rouge_l,
    rouge_l_scores,
    rouge_tokenize,
)


def test_tokenize_like_rouge_score():
    assert rouge_tokenize("Hello, World!") == ["hello", "world"]
    assert rouge_tokenize("don't stop-me now2") == ["don", "t", "stop", "me", "now2"]
    # only a-z and 0-9 make words: accented letters and other scripts split and vanish
    assert rouge_tokenize("café Ünïcode 日本 x") == ["caf", "n", "code", "x"]
    assert rouge_tokenize("  \n\t ") == [] and rouge_tokenize("") == []


def test_lcs_length_hand_worked():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # BCBA (CLRS's example)
    assert lcs_length([], [1, 2]) == 0 and lcs_length([1, 2, 3], [3, 2, 1]) == 1
    assert lcs_length("abc", "abc") == 3 and lcs_length("abc", "xaybzc") == 3


def test_rouge_l_hand_worked():
    # reference 6 words, response 5 words; LCS "the cat on the mat" = 5 words
    s = rouge_l_scores("The cat on the mat.", "the cat sat on the mat")
    assert s["precision"] == pytest.approx(5 / 5) and s["recall"] == pytest.approx(5 / 6)
    assert s["fmeasure"] == pytest.approx(2 * 1 * (5 / 6) / (1 + 5 / 6))
    # word order matters: reversed, only one word can be in a common subsequence
    s = rouge_l_scores("c b a", "a b c")
    assert s == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "fmeasure": 1 / 3})
    # repeated words count as often as they match: LCS("a a a", "a b a") = 2
    s = rouge_l_scores("a a a", "a b a")
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert rouge_l("Paris", "The capital is Paris") == pytest.approx(2 * 0.25 / 1.25)
    assert rouge_l("identical text", "Identical, TEXT!") == pytest.approx(1.0)
    assert rouge_l("x y", "a b") == 0.0


def test_rouge_l_empty_texts_score_zero():
    zero = {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    assert rouge_l_scores("", "a b") == zero and rouge_l_scores("a b", "...") == zero
    assert rouge_l("", "") == 0.0


def test_bad_input():
    with pytest.raises(TypeError, match="prediction must be a str"):
        rouge_l(["a"], "a")
    with pytest.raises(TypeError, match="reference must be a str"):
        exact_match("a", None)


def test_exact_match_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower.") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert exact_match("Paris.", "paris") and exact_match("the answer is 42", "Answer is 42!")
    assert not exact_match("Paris, France", "Paris")
    assert not exact_match("theory", "ory")  # articles are removed as whole words only


# random texts: words from a small vocabulary (so that LCS are long), punctuation, case,
# unicode and whitespace
_pieces = st.sampled_from(
    ["the", "The", "cat", "CAT", "sat", "on", "mat", "a", "42", "x1", "é", "日本", "'s"]
)
_seps = st.sampled_from([" ", "  ", "\n", ", ", ".", "-", "!", "\t", ""])
_texts = st.lists(st.tuples(_pieces, _seps), max_size=12).map(
    lambda ps: "".join(w + s for w, s in ps)
)


@pytest.fixture(scope="module")
def scorer():
    """``rouge-score``'s scorer of ROUGE-L with its defaults (no stemming)."""
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    return rouge_scorer.RougeScorer(["rougeL"])


@given(_texts | st.text(max_size=30), _texts | st.text(max_size=30))
def test_rouge_l_equals_rouge_score_package(scorer, prediction, reference):
    expected = scorer.score(reference, prediction)["rougeL"]  # (target, prediction)
    got = rouge_l_scores(prediction, reference)
    assert got["precision"] == pytest.approx(expected.precision, abs=1e-12)
    assert got["recall"] == pytest.approx(expected.recall, abs=1e-12)
    assert got["fmeasure"] == pytest.approx(expected.fmeasure, abs=1e-12)
    assert rouge_l(prediction, reference) == got["fmeasure"]
    assert 0.0 <= got["fmeasure"] <= 1.0

"""Tests of the translation metrics in llmkit.metrics: BLEU and chrF through sacrebleu.

The expected values are computed here from the definitions (Papineni et al. 2002; Popović
2015, as sacrebleu 2 implements chrF: precision and recall averaged over the character
n-gram orders, then the F-score with beta = 2), on examples small enough to check by hand.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from llmkit.metrics import bleu, chrf


def test_identical_is_100_and_disjoint_is_0():
    hyps = ["le chat est sur le tapis", "il fait beau aujourd'hui"]
    assert bleu(hyps, hyps) == pytest.approx(100.0)
    assert chrf(hyps, hyps) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == pytest.approx(0.0)
    assert chrf(["abc"], ["xyz"]) == pytest.approx(0.0)


def test_bleu_hand_checked():
    # hypothesis vs reference "the cat sat on a mat":
    # 1-grams 5/6 (the, cat, sat, on, mat; the second "the" is clipped),
    # 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3; equal lengths: BP = 1
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)
    assert expected == pytest.approx(53.728497, abs=1e-6)
    # a short hypothesis pays the brevity penalty exp(1 - r / c): here c = 4, r = 6
    short = bleu(["the cat sat on"], ["the cat sat on a mat"])
    assert short == pytest.approx(100 * math.exp(1 - 6 / 4))
    # case matters unless lowercase=True
    assert bleu(["The cat sat on"], ["the cat sat on"]) < 100
    assert bleu(["The cat sat on"], ["the cat sat on"], lowercase=True) == pytest.approx(100)


def test_bleu_is_corpus_level():
    # the n-gram counts are summed over the corpus before the precisions are taken
    hyps = ["the cat sat on the mat", "a b c d"]
    refs = ["the cat sat on a mat", "a b c d"]
    p = [(5 + 4) / (6 + 4), (3 + 3) / (5 + 3), (2 + 2) / (4 + 2), (1 + 1) / (3 + 1)]
    expected = 100 * math.exp(sum(math.log(x) for x in p) / 4)
    assert bleu(hyps, refs) == pytest.approx(expected)


def _chrf_one(hyp: str, ref: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF of one segment from the definition (whitespace removed, sacrebleu 2's averaging)."""
    h, r = hyp.replace(" ", ""), ref.replace(" ", "")
    precisions, recalls = [], []
    for n in range(1, order + 1):
        hc = Counter(h[i : i + n] for i in range(len(h) - n + 1))
        rc = Counter(r[i : i + n] for i in range(len(r) - n + 1))
        if not hc or not rc:
            continue  # this order is left out of the averages
        match = sum((hc & rc).values())
        precisions.append(match / sum(hc.values()))
        recalls.append(match / sum(rc.values()))
    p, rec = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 100 * (1 + beta**2) * p * rec / (beta**2 * p + rec) if p + rec else 0.0


@pytest.mark.parametrize(
    "hyp,ref",
    [
        ("le chat", "le chien"),
        ("il est grand", "elle est grande"),
        ("abcdefgh", "abc"),  # a short reference: orders 4-6 have no reference n-gram
        ("je suis fatigué", "je suis fatiguée"),
    ],
)
def test_chrf_hand_checked(hyp, ref):
    assert chrf([hyp], [ref]) == pytest.approx(_chrf_one(hyp, ref), abs=1e-9)


def test_chrf_worked_example():
    # "le chat" vs "le chien" without spaces: "lechat" vs "lechien"
    # 1-grams: l e c h a t / l e c h i e n -> 4 matches (l, e, c, h): P 4/6, R 4/7
    # 2-grams: le ec ch ha at / le ec ch hi ie en -> 3: P 3/5, R 3/6
    # 3-grams: lec ech cha hat / lec ech chi hie ien -> 2: P 2/4, R 2/5
    # 4-grams: lech echa chat / lech echi chie hien -> 1: P 1/3, R 1/4
    # 5-grams: lecha echat / lechi echie chien -> 0; 6-grams: lechat / lechie echien -> 0
    p = (4 / 6 + 3 / 5 + 2 / 4 + 1 / 3 + 0 + 0) / 6
    r = (4 / 7 + 3 / 6 + 2 / 5 + 1 / 4 + 0 + 0) / 6
    assert chrf(["le chat"], ["le chien"]) == pytest.approx(100 * 5 * p * r / (4 * p + r))


def test_chrf_plus_plus_adds_word_ngrams():
    # the same characters (spaces are ignored) but different words
    assert chrf(["lechat noir"], ["le chat noir"]) == pytest.approx(100)
    assert chrf(["lechat noir"], ["le chat noir"], word_order=2) < 100
    assert chrf(["le chat noir"], ["le chat noir"], word_order=2) == pytest.approx(100)


def test_multiple_references():
    # each hypothesis is matched against its own list of acceptable translations
    hyps = ["il fait froid ce matin", "je suis très content de te voir"]
    refs = [["il fait très froid ce matin", hyps[0]], hyps[1]]
    assert bleu(hyps, refs) == pytest.approx(100.0)
    assert chrf(hyps, refs) == pytest.approx(100.0)
    assert bleu(hyps, [refs[0][0], refs[1]]) < 100


def test_errors():
    with pytest.raises(TypeError, match="hypotheses"):
        bleu("le chat", ["le chat"])
    with pytest.raises(TypeError, match="references"):
        chrf(["le chat"], "le chat")
    with pytest.raises(ValueError):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        chrf([], [])
    with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
        bleu(["a", 3], ["a", "b"])
    with pytest.raises(TypeError, match=r"references\[0\]"):
        bleu(["a"], [[]])
    with pytest.raises(ValueError, match="word_order"):
        chrf(["a"], ["a"], word_order=-1)

"""Tests of the tagging metrics in llmkit.metrics: BIO spans, entity-level F1, accuracy.

The expected numbers are worked out by hand from CoNLL's rules (``conlleval``): an entity
is correct only when its type and both boundaries are right; an ``I-X`` that does not
continue an ``X`` entity starts one.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmkit.metrics import (
    SPAN_ERROR_KINDS,
    accuracy,
    bio_spans,
    span_errors,
    span_f1,
    span_f1_by_type,
    span_outcomes,
)


def test_bio_spans_basic():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"]
    assert bio_spans(tags) == {("PER", 0, 2), ("LOC", 3, 4), ("ORG", 5, 8)}


def test_bio_spans_lenient_reading_of_i_tags():
    # I-LOC after O starts an entity; B-LOC right after an entity starts a new one;
    # I-PER after LOC switches type.
    tags = ["O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "O", "I-MISC"]
    assert bio_spans(tags) == {("LOC", 1, 3), ("LOC", 3, 4), ("PER", 4, 5), ("MISC", 6, 7)}


def test_bio_spans_errors():
    with pytest.raises(ValueError, match="'O', 'B-<type>' or 'I-<type>'"):
        bio_spans(["B-PER", "X-PER"])
    with pytest.raises(ValueError, match="'B-'"):
        bio_spans(["B-"])


def test_span_f1_hand_worked():
    gold = [
        ["B-person", "I-person", "O", "B-location"],
        ["O", "B-group", "I-group", "O", "B-product"],
    ]
    pred = [
        ["B-person", "I-person", "O", "B-corporation"],  # 1 right, 1 wrong type
        ["O", "B-group", "O", "O", "B-product"],  # boundary wrong, 1 right
    ]
    # gold: 4 entities; predicted: 4; correct: person (0,2) and product (4,5) = 2
    result = span_f1(gold, pred)
    assert (result["n_true"], result["n_pred"], result["n_correct"]) == (4, 4, 2)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(0.5)


def test_span_f1_asymmetric_counts():
    gold = [["B-A", "O", "B-B", "I-B", "O", "B-C"]]
    pred = [["B-A", "O", "B-B", "I-B", "O", "O"]]
    r = span_f1(gold, pred)
    assert r["precision"] == 1.0
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(0.8)


def test_span_f1_degenerate_cases():
    assert span_f1([["O", "O"]], [["O", "O"]])["f1"] == 0.0  # no entities at all
    assert span_f1([], [])["f1"] == 0.0
    with pytest.raises(ValueError):
        span_f1([["O"]], [])
    with pytest.raises(ValueError, match="sentence 0"):
        span_f1([["O", "O"]], [["O"]])
    with pytest.raises(TypeError):
        span_f1("B-A", "B-A")


TAGS = st.sampled_from(["O", "B-A", "I-A", "B-B", "I-B"])


@given(st.lists(st.lists(TAGS, max_size=10), max_size=6))
def test_perfect_prediction_scores_one(sentences):
    r = span_f1(sentences, sentences)
    has_entities = any(bio_spans(s) for s in sentences)
    assert r["f1"] == (1.0 if has_entities else 0.0)


@given(st.lists(TAGS, max_size=12))
def test_spans_cover_every_non_o_tag_once(tags):
    covered = sorted(i for _, s, e in bio_spans(tags) for i in range(s, e))
    assert covered == [i for i, t in enumerate(tags) if t != "O"]


def test_accuracy():
    assert accuracy(["NOUN", "VERB", "DET", "ADP"], ["NOUN", "NOUN", "DET", "ADP"]) == 0.75
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


# --------------------------------------------------------------------------- per type, errors


def test_span_f1_by_type_hand_worked():
    gold = [
        ["B-person", "I-person", "O", "B-location"],
        ["O", "B-group", "I-group", "O", "B-product"],
    ]
    pred = [
        ["B-person", "I-person", "O", "B-corporation"],
        ["O", "B-group", "O", "O", "B-product"],
    ]
    r = span_f1_by_type(gold, pred)
    assert list(r) == ["corporation", "group", "location", "person", "product"]
    assert (r["person"]["n_true"], r["person"]["n_pred"], r["person"]["n_correct"]) == (1, 1, 1)
    assert r["person"]["f1"] == 1.0 and r["product"]["f1"] == 1.0
    # the location was predicted as a corporation: a miss for one, a false alarm for the other
    assert (r["location"]["recall"], r["location"]["n_pred"]) == (0.0, 0)
    assert (r["corporation"]["precision"], r["corporation"]["n_true"]) == (0.0, 0)
    assert r["group"]["n_true"] == r["group"]["n_pred"] == 1 and r["group"]["n_correct"] == 0


def test_span_errors_hand_worked():
    gold = [
        ["B-person", "I-person", "O", "B-location", "O", "B-group", "I-group"],
        ["B-product", "O", "O", "B-person", "O", "O"],
    ]
    pred = [
        ["B-person", "I-person", "O", "B-corporation", "O", "B-group", "O"],
        ["O", "O", "B-location", "O", "I-group", "I-group"],
    ]
    # person: correct; location -> corporation on the same word: wrong type;
    # group (5, 7) -> group (5, 6): wrong boundaries; product and person of sentence 2:
    # missed; the location (2, 3) and the group (4, 6) of sentence 2 touch no gold entity
    assert span_errors(gold, pred) == {
        "correct": 1,
        "wrong type": 1,
        "wrong boundaries": 1,
        "wrong type and boundaries": 0,
        "missed": 2,
        "false alarm": 2,
    }
    both = span_errors([["B-person", "I-person"]], [["B-group", "O"]])
    assert both["wrong type and boundaries"] == 1 and both["false alarm"] == 0


def test_per_type_and_errors_validate_like_span_f1():
    with pytest.raises(ValueError, match="same number of sentences"):
        span_f1_by_type([["O"]], [])
    with pytest.raises(TypeError, match="not one string"):
        span_errors(["O"], ["O"])


@given(st.lists(st.tuples(st.lists(TAGS, max_size=10), st.lists(TAGS, max_size=10)), max_size=6))
def test_per_type_counts_add_up_to_span_f1(pairs):
    pairs = [(t, p[: len(t)] + ["O"] * (len(t) - len(p))) for t, p in pairs]
    gold = [t for t, _ in pairs]
    pred = [p for _, p in pairs]
    total = span_f1(gold, pred)
    per_type = span_f1_by_type(gold, pred)
    for key in ("n_true", "n_pred", "n_correct"):
        assert sum(r[key] for r in per_type.values()) == total[key]
    errors = span_errors(gold, pred)
    assert errors["correct"] == total["n_correct"]
    assert sum(errors[k] for k in SPAN_ERROR_KINDS[:5]) == total["n_true"]
    assert errors["false alarm"] <= total["n_pred"] - total["n_correct"]


def test_span_outcomes_name_the_entities():
    gold = [["B-person", "I-person", "O", "B-location"], ["O", "B-group"]]
    pred = [["B-person", "O", "O", "B-corporation"], ["B-product", "O"]]
    assert span_outcomes(gold, pred) == [
        (0, "wrong boundaries", ("person", 0, 2), [("person", 0, 1)]),
        (0, "wrong type", ("location", 3, 4), [("corporation", 3, 4)]),
        (1, "missed", ("group", 1, 2), []),
        (1, "false alarm", ("product", 0, 1), []),
    ]

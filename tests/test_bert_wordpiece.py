"""``llmkit.bert.train_wordpiece``: a BERT-style WordPiece vocabulary trained on a corpus."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.bert import BERT_SPECIAL_TOKENS, load_pretrained, train_wordpiece

TEXTS = [
    "I swam across the river to get to the other bank.",
    "The bank raised its interest rates again!",
    "We rowed to the far side of the stream, then swam back.",
    "Rivers, streams and banks: a river bank is not a savings bank.",
    "Crème brûlée at the café; NAÏVE readers read it as creme brulee.",
] * 3


@pytest.fixture(scope="module")
def tok():
    return train_wordpiece(TEXTS, 120)


def test_specials_come_first_and_frame_texts(tok):
    assert [tok.id_to_token(i) for i in range(5)] == list(BERT_SPECIAL_TOKENS)
    enc = tok.encode("the river")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    pair = tok.encode("the river", "a bank")
    assert pair.tokens.count("[SEP]") == 2
    assert pair.type_ids[0] == 0 and pair.type_ids[-1] == 1


def test_same_corpus_same_vocabulary():
    a = train_wordpiece(TEXTS, 100).get_vocab()
    b = train_wordpiece(list(reversed(TEXTS)), 100).get_vocab()
    assert a == b
    assert len(a) == 100


def test_frequent_words_become_single_pieces_and_rare_ones_split(tok):
    vocab = tok.get_vocab()
    assert {"the", "river", "bank"} <= set(vocab)
    pieces = tok.encode("banterer", add_special_tokens=False).tokens  # not in TEXTS
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])


def test_normalisation_and_splitting_match_minilm(tok):
    """Same uncased pipeline as BERT's own tokenizer: case, accents and punctuation."""
    _, minilm = load_pretrained()
    for text in TEXTS[:5] + ["Hello,WORLD!!  Tabs\tand  Ünïcödé"]:
        ours = tok.normalizer.normalize_str(text)
        assert ours == minilm.normalizer.normalize_str(text)
        words = [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(ours)]
        assert words == [w for w, _ in minilm.pre_tokenizer.pre_tokenize_str(ours)]


def test_unknown_characters_become_unk(tok):
    assert tok.encode("the ☃ river", add_special_tokens=False).tokens == ["the", "[UNK]", "river"]


_SHARED = train_wordpiece(TEXTS, 120)
_VOCAB = _SHARED.get_vocab()
_FIRST = sorted(t for t in _VOCAB if len(t) == 1 and t.isalpha())
_NEXT = sorted(t[2:] for t in _VOCAB if len(t) == 3 and t.startswith("##") and t[2].isalpha())
_WORD = st.builds(
    lambda a, rest: a + "".join(rest),
    st.sampled_from(_FIRST),
    st.lists(st.sampled_from(_NEXT), max_size=10),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_WORD, max_size=6))
def test_pieces_spell_any_word_of_the_alphabet(words):
    """Every word made of the alphabet's characters is spelled by pieces, without [UNK]."""
    text = " ".join(words)
    enc = _SHARED.encode(text, add_special_tokens=False)
    assert "[UNK]" not in enc.tokens
    assert _SHARED.decode(enc.ids) == text


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="texts"):
        train_wordpiece("one string", 100)
    with pytest.raises(ValueError, match="texts"):
        train_wordpiece([], 100)
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(TEXTS, 10)
    with pytest.raises(ValueError, match="min_frequency"):
        train_wordpiece(TEXTS, 100, min_frequency=1)

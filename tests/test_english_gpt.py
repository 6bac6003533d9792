"""``llmkit.pretrained.english_gpt`` and its text, ``llmkit.data.load_english_text``.

The model tests replace the English text by a small synthetic corpus (``_english_data`` is
patched) and the smoke recipe by a shorter one, so they run in seconds without the data
mirror; every test gets its own empty cache. The tests of the text itself need the mirror.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import llmkit.pretrained as pre
from llmkit.gpt import GPT
from llmkit.tokenizers import BPETokenizer

_MIRROR = os.environ.get("LLMKIT_DATA_MIRROR", "").strip()
needs_mirror = pytest.mark.skipif(
    not _MIRROR or not Path(_MIRROR).is_dir(),
    reason="LLMKIT_DATA_MIRROR is unset: load_english_text needs the data",
)

SENTENCES = [
    "The cat sat on the mat.",
    "I like green tea in the morning.",
    "Where is the station?",
    "She reads a book every week.",
    "We walked to the old bridge together.",
    "this movie is funny , warm and far too long .",
    "Tom didn't know what to say.",
    "The meeting starts at nine.",
]
TEXT = {
    "train": [f"{SENTENCES[k % 8]} {SENTENCES[(k // 8) % 8]}" for k in range(60)],
    "val": SENTENCES[:4],
}

#: A short recipe for the cache mechanics: 12 steps, a checkpoint every step.
TEST_RECIPE = {
    "tokenizer": {"vocab_size": 300},
    "data": {"train_documents": None},
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0},
    "batch_size": 4,
    "train": {"max_steps": 12, "lr": 3e-3, "warmup_steps": 2, "eval_interval": 6, "eval_iters": 2},
    "seed": 7,
    "samples": {"n": 2, "max_new_tokens": 8, "temperature": 0.8, "top_k": 20, "seed": 0},
}


@pytest.fixture
def small(monkeypatch, tmp_path):
    """A tiny corpus instead of the English text, a short recipe and an empty cache."""
    monkeypatch.setattr(pre, "_english_data", lambda: {k: list(v) for k, v in TEXT.items()})
    monkeypatch.setitem(pre.ENGLISH_GPT_RECIPES, "smoke", TEST_RECIPE)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    return tmp_path


def _same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trains_caches_and_reloads_identically(small):
    model, tok, info = pre.english_gpt("smoke", progress=False)
    path = Path(info["path"])
    assert info["cached"] is False and path.name == f"english_gpt-smoke-{info['hash']}"
    assert path.parent == small / "models"
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "checkpoint.json",
        "tokenizer.json",
        "english_gpt.json",
    }
    assert not list((small / "models").glob("*.partial*"))  # nothing left behind
    assert info["steps"] == 12 == len(info["history"])
    assert info["vocab_size"] == tok.vocab_size == model.config.vocab_size == 300
    assert info["train_tokens"] == len(pre.encode_documents(tok, TEXT["train"]))
    assert info["val_loss"] < torch.log(torch.tensor(300.0)).item()
    assert len(info["samples"]) == 2 and all(isinstance(s, str) for s in info["samples"])
    for key in ("tokenizer_seconds", "total_seconds", "eval_seconds", "load_average"):
        assert key in info

    again, tok2, info2 = pre.english_gpt("smoke", progress=False)
    assert info2["cached"] is True
    assert _same_weights(model, again)
    assert tok2.merges == tok.merges and tok2.special_tokens == tok.special_tokens
    for key in ("val_loss", "samples", "hash", "train_tokens", "n_parameters"):
        assert info2[key] == info[key]
    assert info2["history"].to_dict() == info["history"].to_dict()
    # the samples are reproducible from the returned model
    assert pre.english_samples(again, tok2, **TEST_RECIPE["samples"]) == info["samples"]


def test_tokenizer_special_tokens_and_round_trip(small):
    _, tok, _ = pre.english_gpt("smoke", progress=False)
    specials = tok.special_tokens
    assert list(specials) == list(pre.ENGLISH_GPT_SPECIAL_TOKENS)
    assert sorted(specials.values()) == list(range(296, 300))  # the last ids
    text = "<user>\nWhere is the cat?\n<assistant>\nOn the mat.\n<|endoftext|>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[0] == specials["<user>"] and ids[-1] == specials["<|endoftext|>"]
    for s in ("Ünïcode ✓ and unseen words: zyxq", "tabs\tand\n\nnewlines"):
        assert tok.decode(tok.encode(s)) == s


def test_encode_documents_ends_each_document_with_endoftext():
    tok = BPETokenizer.train(" ".join(SENTENCES), 280, pre.ENGLISH_GPT_SPECIAL_TOKENS)
    eot = tok.special_tokens["<|endoftext|>"]
    docs = ["The cat.", "A <user> inside text."]
    ids = pre.encode_documents(tok, docs).tolist()
    expected = tok.encode(docs[0]) + [eot] + tok.encode(docs[1], allowed_special="none") + [eot]
    assert ids == expected
    assert tok.special_tokens["<user>"] not in ids  # special-token text stays text
    with pytest.raises(TypeError, match="documents"):
        pre.encode_documents(tok, "one string")
    with pytest.raises(ValueError, match="endoftext"):
        pre.encode_documents(BPETokenizer.train("abc abc", 257), docs)


def test_recipe_change_changes_the_fingerprint(small, monkeypatch):
    before = pre.english_gpt_dir("smoke")
    _, _, info = pre.english_gpt("smoke", progress=False)
    assert Path(info["path"]) == before
    recipe = {**TEST_RECIPE, "tokenizer": {"vocab_size": 290}}
    monkeypatch.setitem(pre.ENGLISH_GPT_RECIPES, "smoke", recipe)
    after = pre.english_gpt_dir("smoke")
    assert after != before
    _, tok, info2 = pre.english_gpt("smoke", progress=False)
    assert info2["cached"] is False and Path(info2["path"]) == after and tok.vocab_size == 290
    assert len({pre.english_gpt_dir(p).name for p in ("smoke", "book", "full")}) == 3


def test_a_damaged_entry_is_trained_again(small):
    model, _, info = pre.english_gpt("smoke", progress=False)
    (Path(info["path"]) / "tokenizer.json").unlink()
    with pytest.warns(UserWarning, match="could not be loaded.*training again"):
        again, _, info2 = pre.english_gpt("smoke", progress=False)
    assert info2["cached"] is False and _same_weights(model, again)


def test_an_interrupted_run_resumes_with_its_tokenizer(small, monkeypatch):
    reference, ref_tok, _ = pre.english_gpt("smoke", cache_dir=small / "ref", progress=False)
    real_train = pre.train

    class Interrupted(Exception):
        pass

    def interrupted_train(*args, callback=None, **kwargs):
        def stop(step, history):
            callback(step, history)
            if step == 7:
                raise Interrupted

        return real_train(*args, callback=stop, **kwargs)

    monkeypatch.setattr(pre, "train", interrupted_train)
    with pytest.raises(Interrupted):
        pre.english_gpt("smoke", progress=False)
    final = pre.english_gpt_dir("smoke")
    partial = final.with_name(final.name + ".partial")
    sidecar = final.with_name(final.name + ".partial-tokenizer.json")
    assert json.loads((partial / "checkpoint.json").read_text())["step"] == 7
    assert BPETokenizer.load(sidecar).merges == ref_tok.merges
    monkeypatch.setattr(pre, "train", real_train)
    resumed, tok, info = pre.english_gpt("smoke", progress=False)
    assert info["steps"] == 12 and not partial.exists() and not sidecar.exists()
    assert tok.merges == ref_tok.merges and _same_weights(reference, resumed)


def test_recipes_and_bad_arguments():
    assert set(pre.ENGLISH_GPT_RECIPES) == {"smoke", "book", "full"}
    for profile in ("smoke", "book", "full"):
        recipe = pre.english_gpt_recipe(profile)
        assert 256 + 4 < recipe["tokenizer"]["vocab_size"] <= 16384
    book = pre.english_gpt_recipe("book")
    assert book["tokenizer"]["vocab_size"] == 4096 and book["model"]["block_size"] == 64
    book["model"]["n_layer"] = 99  # a copy
    assert pre.ENGLISH_GPT_RECIPES["book"]["model"]["n_layer"] != 99
    with pytest.raises(ValueError, match="profile"):
        pre.english_gpt("big")
    with pytest.raises(TypeError, match="progress"):
        pre.english_gpt("smoke", progress=1)


# ------------------------------------------------------------------------ the English text


@pytest.fixture(scope="module")
def english():
    from llmkit import data

    return data.load_english_text(), data.load_english_text(by_source=True)


@needs_mirror
def test_english_text_is_deterministic_and_its_parts_disjoint(english):
    from llmkit import data

    flat, by_source = english
    assert data.load_english_text() == flat  # the same split and order on every call
    train, val = set(flat["train"]), set(flat["val"])
    assert len(train) == len(flat["train"]) and len(val) == len(flat["val"])
    assert not train & val
    for split in ("train", "val"):
        assert list(by_source[split]) == list(data.ENGLISH_TEXT_SOURCES)
        assert sorted(d for docs in by_source[split].values() for d in docs) == sorted(flat[split])
    for name in data.ENGLISH_TEXT_SOURCES:  # 5% of every source is held out
        n_val, n_train = len(by_source["val"][name]), len(by_source["train"][name])
        assert n_val == (n_val + n_train) // 20 > 0
    assert 100_000 < len(flat["train"]) < 120_000 and 5_000 < len(flat["val"]) < 6_500


@needs_mirror
def test_english_text_leaves_out_evaluation_data(english):
    from llmkit import data

    flat, by_source = english
    docs = set(flat["train"]) | set(flat["val"])
    instruction = {s.strip() for ex in data.load_instruction_data() for s in ex.values()}
    assert not docs & instruction
    for subset in data.HH_RLHF_SUBSETS:
        turns = set()
        for split in data.load_hh_rlhf(subset).values():
            for record in split:
                for text in record.values():
                    for part in text.split("\n\n"):
                        turns.add(part.split(":", 1)[-1].strip())
        # Short everyday sentences ("Thank you.", "What do you mean?") occur in both
        # Tatoeba and HH-RLHF; no longer turn does, so no conversation leaked in.
        assert not docs & {t for t in turns if len(t) >= 50}
    polarity = data.load_sentence_polarity()
    held_out = {t for split in ("validation", "test") for t, _ in polarity[split]}
    held_out -= {t for t, _ in polarity["train"]}
    assert not docs & held_out
    polarity_docs = set(by_source["train"]["sentence-polarity"]) | set(
        by_source["val"]["sentence-polarity"]
    )
    assert polarity_docs <= {t for t, _ in polarity["train"]}
    ud_train = " ".join(s.text for s in data.load_ud_ewt("train"))
    ud_docs = by_source["train"]["ud-ewt"] + by_source["val"]["ud-ewt"]
    assert all(d in ud_train for d in ud_docs[:200])


@needs_mirror
def test_char_gpt_book_fingerprint_is_unchanged():
    """The refactoring into one mechanism keeps the cached book model's directory name."""
    assert pre.char_gpt_dir("book").name == "char_gpt-book-995c1acc096c"


def test_load_english_text_bad_arguments():
    from llmkit import data

    with pytest.raises(TypeError, match="seed"):
        data.load_english_text(seed="1")
    with pytest.raises(TypeError, match="by_source"):
        data.load_english_text(by_source=1)

"""``llmkit.bert_tasks``: chapter 05's data, pretraining corpus, batching and cached runs.

These tests read the course's data mirror (``LLMKIT_DATA_MIRROR``) and the offline MiniLM
package; each cached run goes to its own temporary cache. The training runs use the
``smoke`` recipes, a few seconds each.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import llmkit.bert_tasks as bt
from llmkit.bert import IGNORE_INDEX, BertForTokenClassification, BertModel, load_pretrained

_MIRROR = os.environ.get("LLMKIT_DATA_MIRROR", "").strip()
pytestmark = pytest.mark.skipif(
    not _MIRROR or not Path(_MIRROR).is_dir(),
    reason="LLMKIT_DATA_MIRROR is unset: chapter 05's tasks need the data",
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_pretrained()[1]


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("name", list(bt.TASKS))
def test_load_task_labels_are_in_range(name):
    task = bt.TASKS[name]
    data = bt.load_task(name)
    assert set(data) == {"train", "validation", "test"}
    for split, rows in data.items():
        assert rows, split
        if task.kind == "sequence":
            labels = {y for _, y in rows}
        else:
            assert all(len(w) == len(t) for w, t in rows)
            labels = {y for _, tags in rows for y in tags}
        assert labels <= set(range(len(task.labels))), (split, labels)


def test_poem_labels_keep_their_meaning():
    from llmkit.data import load_poem_sentiment

    raw = load_poem_sentiment()["train"]
    ours = bt.load_task("poem-sentiment")["train"]
    names = bt.TASKS["poem-sentiment"].labels
    file_meaning = {-1: "negative", 0: "no_impact", 1: "positive", 2: "mixed"}
    for (text, y_file), (text2, y) in zip(raw, ours, strict=True):
        assert text == text2
        assert names[y] == file_meaning[y_file]


def test_unknown_task_and_encoder_are_named():
    with pytest.raises(ValueError, match="task.*sentence-polarity"):
        bt.load_task("imdb")
    with pytest.raises(ValueError, match="encoder.*minilm"):
        bt.run("wnut17", "bert-base", "smoke")
    with pytest.raises(ValueError, match="encoder"):
        bt.encoder_for("roberta")


def test_mlm_corpus_uses_training_splits_only():
    from llmkit.data import load_poem_sentiment, load_sentence_polarity, load_ud_ewt, load_wnut17

    corpus = bt.mlm_corpus()
    texts = corpus["train"] + corpus["val"]
    assert len(corpus["val"]) == len(texts) // 20
    test_only = set()
    train_side = set()
    test_only |= {t.strip() for t, _ in load_sentence_polarity()["test"]}
    train_side |= {t.strip() for t, _ in load_sentence_polarity()["train"]}
    test_only |= {t.strip() for t, _ in load_poem_sentiment()["test"]}
    train_side |= {t.strip() for t, _ in load_poem_sentiment()["train"]}
    test_only |= {(s.text or " ".join(s.forms)).strip() for s in load_ud_ewt("test")}
    train_side |= {(s.text or " ".join(s.forms)).strip() for s in load_ud_ewt("train")}
    test_only |= {" ".join(w) for w, _ in load_wnut17()["test"]}
    train_side |= {" ".join(w) for w, _ in load_wnut17()["train"]}
    leaked = (set(texts) & test_only) - train_side
    assert not leaked, sorted(leaked)[:5]
    # a test sentence that is not also a training sentence never appears
    assert len(set(texts) & (test_only - train_side)) == 0


def test_mlm_batches_are_framed_and_masked(tokenizer):
    stream = torch.arange(1000, 3000)
    get = bt.mlm_batch_fn({"train": stream, "val": stream}, tokenizer, 16, 32)
    a = get("train", torch.Generator().manual_seed(3))
    b = get("train", torch.Generator().manual_seed(3))
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["labels"], b["labels"])
    ids, labels = a["input_ids"], a["labels"]
    assert ids.shape == labels.shape == (32, 16)
    assert (ids[:, 0] == tokenizer.token_to_id("[CLS]")).all()
    assert (ids[:, -1] == tokenizer.token_to_id("[SEP]")).all()
    assert (labels[:, [0, -1]] == IGNORE_INDEX).all()
    chosen = labels != IGNORE_INDEX
    assert 0.05 < chosen.float().mean() < 0.3
    # the labels are the original consecutive stream ids
    starts = labels[chosen] >= 1000
    assert starts.all()


# --------------------------------------------------------------------------- batching


def test_tagging_labels_sit_on_first_pieces(tokenizer):
    words = ["Tokenization", "is", "unbelievably", "fun"]
    get = bt.tagging_batches(tokenizer, [(words, [1, 2, 3, 4])], batch_size=2)
    batch = get("train", torch.Generator().manual_seed(0))
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    enc = tokenizer.encode(words, is_pretokenized=True)
    assert ids.tolist() == enc.ids
    labelled = [(i, int(y)) for i, y in enumerate(labels) if y != IGNORE_INDEX]
    firsts = [enc.word_ids.index(w) for w in range(4)]
    assert labelled == list(zip(firsts, [1, 2, 3, 4], strict=True))
    assert len(enc.ids) > len(words) + 2  # some word really was split


def test_classification_batches_pad_and_mask(tokenizer):
    rows = [("a short one", 0), ("a much longer sentence than the other one", 1)]
    get = bt.classification_batches(tokenizer, rows, batch_size=8)
    batch = get("train", torch.Generator().manual_seed(0))
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["labels"].shape == (8,)
    lengths = batch["attention_mask"].sum(1)
    pad = tokenizer.token_to_id("[PAD]")
    for row, n in zip(batch["input_ids"], lengths, strict=True):
        assert (row[n:] == pad).all() and (row[:n] != pad).all()


def test_long_inputs_are_truncated_to_the_encoder(tokenizer):
    words = ["word"] * 300
    rows = bt._encode_tokens(tokenizer, [(words, [0] * 300)])
    ids, labels, word_ids = rows[0]
    assert len(ids) == len(labels) == len(word_ids) == bt.MAX_LENGTH
    assert ids[-1] == tokenizer.token_to_id("[SEP]")
    assert labels[-1] == IGNORE_INDEX and word_ids[-1] is None


class _PieceEcho(torch.nn.Module):
    """Logits whose argmax at each position is ``input_id % n_labels``."""

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.n = n_labels
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, mask=None):
        return torch.nn.functional.one_hot(ids % self.n, self.n).float()


def test_predict_reads_each_words_first_piece(tokenizer):
    n = len(bt.TASKS["ud-ewt-upos"].labels)
    sents = [
        (["Unbelievable", "tokenization", "!"], [0, 0, 0]),
        (["I", "swam", "across", "the", "river"], [0] * 5),
    ]
    pred = bt.predict(_PieceEcho(n), tokenizer, "ud-ewt-upos", sents, batch_size=2)
    for (words, _), tags in zip(sents, pred, strict=True):
        enc = tokenizer.encode(words, is_pretokenized=True)
        first = [enc.ids[enc.word_ids.index(w)] % n for w in range(len(words))]
        assert tags == first


def test_evaluate_scores_gold_predictions_perfectly(tokenizer, monkeypatch):
    data = bt.load_task("wnut17")["test"][:40]
    monkeypatch.setattr(bt, "predict", lambda *a, **k: [tags for _, tags in data])
    scores = bt.evaluate(None, tokenizer, "wnut17", data)
    assert scores["f1"] == scores["score"] == 1.0
    wrong = [[0] * len(tags) for _, tags in data]
    monkeypatch.setattr(bt, "predict", lambda *a, **k: wrong)
    assert bt.evaluate(None, tokenizer, "wnut17", data)["f1"] == 0.0


def test_majority_baseline_matches_a_count():
    data = bt.load_task("sentence-polarity")
    ys = [y for _, y in data["train"]]
    top = max(set(ys), key=ys.count)
    gold = [y for _, y in data["test"]]
    assert bt.majority_baseline("sentence-polarity") == sum(g == top for g in gold) / len(gold)


# --------------------------------------------------------------------------- cached runs


def test_small_bert_smoke_trains_then_loads(tmp_path):
    model, tok, info = bt.small_bert("smoke", cache_dir=tmp_path, progress=False)
    assert not info["cached"] and math.isfinite(info["val_loss"])
    hist = info["history"]
    assert hist.val_loss[-1] < hist.val_loss[0]
    assert model.config.max_position == bt.MAX_LENGTH
    again, _, info2 = bt.small_bert("smoke", cache_dir=tmp_path, progress=False)
    assert info2["cached"] and info2["val_loss"] == info["val_loss"]
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    enc, enc_tok = bt.encoder_for("scratch", "smoke", cache_dir=tmp_path, progress=False)
    assert isinstance(enc, BertModel) and enc.pooler is not None
    assert torch.equal(enc.embeddings.word.weight, model.bert.embeddings.word.weight)
    # pretrained without dropout, fine-tuned with BERT's 0.1
    assert model.config.dropout == 0.0 and enc.config.dropout == bt.FT_DROPOUT == 0.1
    # the encoder comes with its own vocabulary, cached beside it, not MiniLM's
    size = bt.SMALL_BERT_RECIPES["smoke"]["vocab_size"]
    assert tok.get_vocab_size() == enc_tok.get_vocab_size() == size == info["vocab_size"]
    assert enc.config.vocab_size == size
    assert enc_tok.get_vocab() == tok.get_vocab() == bt.small_bert_vocabulary("smoke").get_vocab()
    assert (Path(info["path"]) / "tokenizer.json").is_file()
    assert info["n_embedding_parameters"] < info["n_parameters"]


def test_small_bert_cache_key_covers_the_vocabulary(tmp_path, monkeypatch):
    """A new vocabulary size or method gives a new cache entry (and so a new model)."""
    recipe = bt.SMALL_BERT_RECIPES["smoke"]
    key = bt._fingerprint(bt._small_bert_payload("smoke"))
    monkeypatch.setitem(bt.SMALL_BERT_RECIPES, "smoke", {**recipe, "vocab_size": 512})
    assert bt._fingerprint(bt._small_bert_payload("smoke")) != key
    monkeypatch.setitem(bt.SMALL_BERT_RECIPES, "smoke", recipe)
    assert bt._fingerprint(bt._small_bert_payload("smoke")) == key
    monkeypatch.setattr(bt, "VOCABULARY_METHOD", bt.VOCABULARY_METHOD + " (changed)")
    assert bt._fingerprint(bt._small_bert_payload("smoke")) != key


def test_minilm_encoder_keeps_its_own_tokenizer(tokenizer):
    enc, tok = bt.encoder_for("minilm")
    assert tok.get_vocab_size() == enc.config.vocab_size == 30522
    assert tok.get_vocab() == tokenizer.get_vocab()


def test_run_smoke_is_cached_and_complete(tmp_path):
    args = ("ud-ewt-upos", "scratch", "smoke")
    assert bt.run(*args, cache_dir=tmp_path, progress=False, cached_only=True) is None
    r = bt.run("ud-ewt-upos", "scratch", "smoke", cache_dir=tmp_path, progress=False)
    assert not r["cached"]
    assert r["metric"] == "accuracy" and 0.0 <= r["test"]["score"] <= 1.0
    assert r["n_train"] == 64 and r["n_test"] == 48
    assert len(r["train_loss"]) == bt.FINETUNE_RECIPES["smoke"]["ud-ewt-upos"]["steps"]
    assert r["examples"] and all(len(e["pred"]) == len(e["gold"]) for e in r["examples"])
    test = bt.load_task("ud-ewt-upos")["test"][:48]
    assert [len(p) for p in r["predictions"]] == [len(w) for w, _ in test]
    assert bt.score("ud-ewt-upos", test, r["predictions"]) == r["test"]
    files = list((tmp_path / "models").glob("bert_task-ud-ewt-upos-scratch-smoke-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["test"] == r["test"]
    again = bt.run("ud-ewt-upos", "scratch", "smoke", cache_dir=tmp_path, progress=False)
    assert again["cached"] and again["test"] == r["test"]
    only = bt.run(*args, cache_dir=tmp_path, progress=False, cached_only=True)
    assert only is not None and only["test"] == r["test"]


def test_fine_tune_learns_a_separable_task(tokenizer):
    """A tiny encoder learns to tag every word of a constructed corpus by its first letter."""
    from llmkit.bert import BertConfig

    words = ["apple", "zebra", "anchor", "zone", "arrow", "zinc"]
    tag = {w: 1 if w[0] == "a" else 2 for w in words}
    g = torch.Generator().manual_seed(0)
    sents = []
    for _ in range(64):
        ws = [words[i] for i in torch.randint(len(words), (5,), generator=g).tolist()]
        sents.append((ws, [tag[w] for w in ws]))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        n_layers=1,
        n_heads=2,
        intermediate_size=64,
        max_position=32,
    )
    torch.manual_seed(0)
    model, history = bt.fine_tune(
        BertModel(config, add_pooler=True),
        tokenizer,
        "ud-ewt-upos",
        sents,
        sents,
        steps=60,
        batch_size=16,
        lr=3e-3,
        device="cpu",
    )
    assert isinstance(model, BertForTokenClassification)
    assert history.val_loss[-1] < 0.5 * history.val_loss[0]
    assert bt.evaluate(model, tokenizer, "ud-ewt-upos", sents)["accuracy"] == 1.0


# --------------------------------------------------------------------------- baselines


def test_random_encoder_is_minilm_shaped_and_untrained():
    minilm, _ = load_pretrained()
    a, tok = bt.encoder_for("random")
    b, _ = bt.encoder_for("random")
    assert tok.get_vocab_size() == minilm.config.vocab_size == 30522
    assert a.config == minilm.config and a.pooler is not None
    names = [n for n, _ in minilm.named_parameters()]
    assert [n for n, _ in a.named_parameters()] == names
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n  # seeded: the same random weights every call
    w = a.embeddings.word.weight.detach()
    assert not torch.allclose(w, minilm.embeddings.word.weight)
    assert abs(float(w.std()) - 0.02) < 0.001  # BERT's N(0, 0.02) initialisation


def test_score_checks_the_number_of_predictions():
    data = bt.load_task("sentence-polarity")["test"][:10]
    assert bt.score("sentence-polarity", data, [y for _, y in data])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="one prediction per example"):
        bt.score("sentence-polarity", data, [0] * 9)


def _word_task(n: int, seed: int) -> list[tuple[str, int]]:
    """Texts of filler words with one cue word that decides the label."""
    g = torch.Generator().manual_seed(seed)
    filler = ["the", "film", "a", "story", "was", "and", "it", "of"]
    rows = []
    for _ in range(n):
        words = [filler[i] for i in torch.randint(len(filler), (6,), generator=g).tolist()]
        y = int(torch.randint(2, (1,), generator=g))
        words.insert(int(torch.randint(7, (1,), generator=g)), ("dreadful", "wonderful")[y])
        rows.append((" ".join(words), y))
    return rows


def test_tfidf_logistic_learns_cue_words_and_not_noise():
    train, val, test = _word_task(200, 0), _word_task(50, 1), _word_task(100, 2)
    r = bt.tfidf_logistic(train, val, test)
    assert r["accuracy"] == r["score"] == 1.0 and r["n"] == 100
    assert set(r["val_accuracy"]) == {0.1, 1.0, 10.0, 100.0, 1000.0}
    assert r["val_accuracy"][r["C"]] == max(r["val_accuracy"].values())
    # labels that the words do not decide: near chance on held-out texts
    g = torch.Generator().manual_seed(5)
    noise = [(x, int(torch.randint(2, (1,), generator=g))) for x, _ in _word_task(400, 3)]
    r = bt.tfidf_logistic(noise[:200], noise[200:300], noise[300:])
    assert 0.3 < r["accuracy"] < 0.7


def test_bag_of_words_baseline_uses_the_runs_examples(monkeypatch):
    seen = {}
    monkeypatch.setattr(bt, "tfidf_logistic", lambda *splits: seen.setdefault("n", splits))
    bt.bag_of_words_baseline("poem-sentiment", "smoke")
    data = bt.load_task("poem-sentiment")
    recipe = bt.FINETUNE_RECIPES["smoke"]["poem-sentiment"]
    train, val, test = seen["n"]
    assert train == data["train"][: recipe["max_train"]] and len(train) == 64
    assert val == data["validation"] and test == data["test"][:48]


def test_bag_of_words_baseline_rejects_bad_input():
    with pytest.raises(ValueError, match="sequence task.*sentence-polarity"):
        bt.bag_of_words_baseline("wnut17")
    with pytest.raises(ValueError, match="c_values"):
        bt.tfidf_logistic(_word_task(4, 0), _word_task(4, 1), _word_task(4, 2), c_values=(0,))
    with pytest.raises(ValueError, match="train must be"):
        bt.tfidf_logistic([], _word_task(4, 1), _word_task(4, 2))


def test_run_smoke_random_encoder_keeps_every_prediction(tmp_path):
    r = bt.run("sentence-polarity", "random", "smoke", cache_dir=tmp_path, progress=False)
    test = bt.load_task("sentence-polarity")["test"][: r["n_test"]]
    assert r["encoder"] == "random" and len(r["predictions"]) == r["n_test"] == 48
    assert bt.score("sentence-polarity", test, r["predictions"]) == r["test"]


def test_run_fine_tunes_each_encoder_with_its_own_tokenizer(tmp_path, monkeypatch):
    """The scratch encoder reads the small vocabulary, MiniLM its own: ids always fit."""

    class Stop(Exception):
        pass

    seen = {}
    lrs = {}

    def fake_fine_tune(encoder, tokenizer, *args, **kwargs):
        seen[encoder.config.vocab_size] = tokenizer.get_vocab_size()
        lrs[encoder.config.vocab_size, encoder.config.hidden_size] = kwargs["lr"]
        raise Stop

    monkeypatch.setattr(bt, "fine_tune", fake_fine_tune)
    for name in bt.ALL_ENCODERS:
        with pytest.raises(Stop):
            bt.run("poem-sentiment", name, "smoke", cache_dir=tmp_path, progress=False)
    small = bt.SMALL_BERT_RECIPES["smoke"]["vocab_size"]
    assert seen == {small: small, 30522: 30522}
    # the small BERT fine-tunes with its own learning rate; MiniLM and its random twin share one
    width = bt.SMALL_BERT_RECIPES["smoke"]["model"]["hidden_size"]
    assert lrs == {(small, width): bt.FT_LR_SCRATCH, (30522, 384): bt.FT_LR}
    assert bt.FT_LR_SCRATCH != bt.FT_LR


def test_fine_tune_lr_per_encoder():
    assert bt.fine_tune_lr("scratch") == bt.FT_LR_SCRATCH == 1e-3
    assert bt.fine_tune_lr("minilm") == bt.fine_tune_lr("random") == bt.FT_LR == 1e-4
    with pytest.raises(ValueError, match="encoder must be one of"):
        bt.fine_tune_lr("bert-base")


def test_mlm_loss_by_corruption_splits_the_loss(tokenizer):
    """An untrained model: every kind near log(vocab); the parts add up to the whole."""
    from llmkit.bert import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        n_layers=1,
        n_heads=2,
        intermediate_size=64,
        max_position=32,
    )
    model = BertForMaskedLM(config)
    texts = ["the river bank is on the other side of the stream today"] * 40
    r = bt.mlm_loss_by_corruption(model, tokenizer, texts, seq_len=16, batch_size=8, n_batches=4)
    parts = ("mask", "random", "kept")
    assert r["all"]["n"] == sum(r[k]["n"] for k in parts) > 0
    total = sum(r[k]["loss"] * r[k]["n"] for k in parts) / r["all"]["n"]
    assert math.isclose(total, r["all"]["loss"], rel_tol=1e-6)
    assert r["mask"]["n"] > r["kept"]["n"]
    for k in parts:
        assert abs(r[k]["loss"] - math.log(config.vocab_size)) < 1.5, (k, r[k])
    again = bt.mlm_loss_by_corruption(
        model, tokenizer, texts, seq_len=16, batch_size=8, n_batches=4
    )
    assert again == r

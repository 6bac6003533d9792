"""The models of chapter 11: ``sentiment_reward`` (the reward) and ``review_gpt`` (the
policy before PPO), with ``review_prompts``.

Every test gets its own empty cache; the recipes are shortened so that each trains in
seconds. The sentiment tests need MiniLM (installed with the course) and the data mirror.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import llmkit.pretrained as pre
from llmkit import bert_tasks

TINY_FT = dict(steps=3, batch_size=4, max_train=24, max_val=8, max_test=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-step fine-tune on 24 sentences, in a cache shared by this module's tests."""
    root = tmp_path_factory.mktemp("sentiment")
    recipes = {**bert_tasks.FINETUNE_RECIPES["smoke"], "sentence-polarity": dict(TINY_FT)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(bert_tasks.FINETUNE_RECIPES, "smoke", recipes)
        mp.setenv("LLMKIT_CACHE", str(root))
        first = pre.sentiment_reward("smoke", progress=False)
    return root, first


@pytest.fixture
def tiny_sentiment(monkeypatch, trained):
    """The tiny recipe, with the shared cache holding its model."""
    recipes = {**bert_tasks.FINETUNE_RECIPES["smoke"], "sentence-polarity": dict(TINY_FT)}
    monkeypatch.setitem(bert_tasks.FINETUNE_RECIPES, "smoke", recipes)
    monkeypatch.setenv("LLMKIT_CACHE", str(trained[0]))
    return trained[0]


def test_sentiment_reward_trains_caches_and_reloads(tiny_sentiment, trained):
    reward = trained[1]
    info = reward.info
    path = Path(info["path"])
    assert info["cached"] is False and path.parent == tiny_sentiment / "models"
    assert path.name.startswith("sentiment_reward-smoke-")
    assert {p.name for p in path.iterdir()} >= {"model.safetensors", "sentiment_reward.json"}
    assert not list((tiny_sentiment / "models").glob("*.partial*"))
    assert info["n_test"] == 16 and 0.0 <= info["test_accuracy"] <= 1.0
    assert info["recipe"] == TINY_FT and info["train_seconds"] > 0
    texts = ["a charming , funny film .", "a dull , lifeless mess .", ""]
    scores = reward(texts)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    again = pre.sentiment_reward("smoke", progress=False)
    assert again.info["cached"] is True
    assert torch.allclose(again(texts), scores, atol=1e-5)
    assert again.info["test_accuracy"] == info["test_accuracy"]


def test_chapter_05bs_run_caches_the_same_sentiment_reward(trained, monkeypatch, tmp_path):
    """bert_tasks.run on sentence polarity from MiniLM stores its classifier as
    sentiment_reward's entry: loading it gives the weights a sentiment_reward() of its own
    would have trained, and a second run leaves the entry alone."""
    recipes = {**bert_tasks.FINETUNE_RECIPES["smoke"], "sentence-polarity": dict(TINY_FT)}
    monkeypatch.setitem(bert_tasks.FINETUNE_RECIPES, "smoke", recipes)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    result = bert_tasks.run("sentence-polarity", "minilm", "smoke", progress=False)
    entry = pre.sentiment_reward_dir("smoke")
    assert entry.is_dir() and result["cached"] is False
    reward = pre.sentiment_reward("smoke", progress=False)
    assert reward.info["cached"] is True
    assert reward.info["test_accuracy"] == pytest.approx(result["test"]["accuracy"])
    texts = ["a charming , funny film .", "a dull , lifeless mess ."]
    assert torch.allclose(reward(texts), trained[1](texts), atol=1e-5)
    stamp = (entry / "model.safetensors").stat().st_mtime_ns
    for f in (tmp_path / "models").glob("bert_task-sentence-polarity-minilm-*.json"):
        f.unlink()  # the result is trained again; the weights' entry is kept as it was
    assert bert_tasks.run("sentence-polarity", "minilm", "smoke", progress=False)["cached"] is False
    assert (entry / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "models").glob("sentiment_reward-*"))) == 1


def test_sentiment_reward_is_the_logit_difference_and_agrees_with_predict(tiny_sentiment):
    reward = pre.sentiment_reward("smoke", progress=False, batch_size=2)
    data = bert_tasks.load_task("sentence-polarity")["test"][:7]
    texts = [t for t, _ in data]
    scores = reward(texts)  # four batches of at most two
    with torch.no_grad():
        model, tok = reward.model, reward.tokenizer
        for text, s in zip(texts, scores, strict=True):
            ids = torch.tensor([tok.encode(text).ids])
            logits = model(ids, torch.ones_like(ids))[0]
            assert s.item() == pytest.approx((logits[1] - logits[0]).item(), abs=1e-4)
    labels = bert_tasks.predict(model, tok, "sentence-polarity", data)
    assert reward.predict(texts) == labels
    assert torch.allclose(reward.probabilities(texts), torch.sigmoid(scores))


def test_sentiment_reward_truncates_long_texts(tiny_sentiment):
    reward = pre.sentiment_reward("smoke", progress=False)
    long = "good " * 400
    assert torch.isfinite(reward([long, "bad"])).all()
    truncated = reward([long])
    # the same as the first 126 words: [CLS] + 126 pieces + [SEP] = 128
    assert truncated.item() == pytest.approx(reward(["good " * 126]).item(), abs=1e-4)


def test_a_damaged_sentiment_entry_is_trained_again(tiny_sentiment, monkeypatch, tmp_path):
    import shutil

    path = pre.sentiment_reward_dir("smoke")
    mine = tmp_path / "models" / path.name
    shutil.copytree(path, mine)  # a copy in a cache of its own, then damaged
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    assert pre.sentiment_reward_dir("smoke") == mine
    (mine / "model.safetensors").write_bytes(b"not weights")
    calls = []
    monkeypatch.setattr(pre, "_train_sentiment", lambda *a: calls.append(a) or "trained")
    with pytest.warns(UserWarning, match="could not be loaded"):
        assert pre.sentiment_reward("smoke", progress=False) == "trained"
    assert len(calls) == 1 and not mine.exists()  # the damaged entry was deleted


def test_sentiment_reward_bad_arguments(tiny_sentiment):
    with pytest.raises(ValueError, match="profile"):
        pre.sentiment_reward("huge")
    with pytest.raises(TypeError, match="progress"):
        pre.sentiment_reward("smoke", progress=1)
    with pytest.raises(ValueError, match="batch_size"):
        pre.sentiment_reward("smoke", batch_size=0)
    reward = pre.sentiment_reward("smoke", progress=False)
    with pytest.raises(TypeError, match="not one string"):
        reward("a film")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        reward(["a film", 3])
    assert reward([]).shape == (0,)


def test_sentiment_recipe_is_chapter_05s():
    payload = bert_tasks.sentiment_payload("book")
    assert payload["recipe"] == bert_tasks.FINETUNE_RECIPES["book"]["sentence-polarity"]
    assert payload["lr"] == bert_tasks.FT_LR and payload["seed"] == 0


# ------------------------------------------------------------------------ review GPT

SENTENCES = [
    "the film is a charming , funny ride .",
    "a dull , lifeless mess of a movie .",
    "it 's a smart and moving story .",
    "too long and too loud .",
    "the cast is wonderful .",
    "nothing works here .",
]
ENGLISH = {
    "train": [f"{SENTENCES[k % 6]} {SENTENCES[(k // 6) % 6]}" for k in range(40)],
    "val": SENTENCES[:3],
}
ENGLISH_RECIPE = {
    "tokenizer": {"vocab_size": 300},
    "data": {"train_documents": None},
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0},
    "batch_size": 4,
    "train": {"max_steps": 6, "lr": 3e-3, "warmup_steps": 2, "eval_interval": 3, "eval_iters": 2},
    "seed": 7,
    "samples": {"n": 2, "max_new_tokens": 6, "temperature": 0.8, "top_k": 20, "seed": 0},
}
REVIEW_RECIPE = {
    "batch_size": 4,
    "train": {"max_steps": 8, "lr": 3e-3, "warmup_steps": 2, "eval_interval": 4, "eval_iters": 2},
    "seed": 3,
    "samples": {"n": 2, "max_new_tokens": 6, "temperature": 1.0, "top_k": None, "seed": 0},
}
REVIEWS = {"train": SENTENCES * 4, "validation": SENTENCES[::-1], "test": SENTENCES[1:]}


@pytest.fixture
def small_review(monkeypatch, tmp_path):
    monkeypatch.setattr(pre, "_english_data", lambda: {k: list(v) for k, v in ENGLISH.items()})
    monkeypatch.setitem(pre.ENGLISH_GPT_RECIPES, "smoke", ENGLISH_RECIPE)
    monkeypatch.setitem(pre.REVIEW_GPT_RECIPES, "smoke", REVIEW_RECIPE)
    monkeypatch.setattr(pre, "review_sentences", lambda split: list(REVIEWS[split]))
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    return tmp_path


def test_review_gpt_continues_the_english_gpt_and_is_cached(small_review):
    base, base_tok, base_info = pre.english_gpt("smoke", progress=False)
    model, tok, info = pre.review_gpt("smoke", progress=False)
    assert info["cached"] is False and info["base_path"] == base_info["path"]
    assert tok.vocab_size == base_tok.vocab_size and tok.special_tokens == base_tok.special_tokens
    assert model.config.to_dict() == base.config.to_dict()
    val_ids = pre.encode_documents(tok, REVIEWS["validation"])
    assert info["base_val_loss"] == pytest.approx(pre.evaluate_lm(base, val_ids), rel=1e-5)
    assert info["val_loss"] == pytest.approx(pre.evaluate_lm(model, val_ids), rel=1e-5)
    assert info["val_loss"] < info["base_val_loss"]  # it learned the reviews
    assert info["steps"] == 8 and len(info["samples"]) == 2
    again, _, info2 = pre.review_gpt("smoke", progress=False)
    assert info2["cached"] is True and Path(info2["path"]) == pre.review_gpt_dir("smoke")
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_review_gpt_starts_from_the_base_weights(small_review, monkeypatch):
    base, _, _ = pre.english_gpt("smoke", progress=False)
    # one step at a negligible learning rate: the weights stay the base model's
    train = {**REVIEW_RECIPE["train"], "max_steps": 1, "lr": 1e-12, "warmup_steps": 0}
    monkeypatch.setitem(pre.REVIEW_GPT_RECIPES, "smoke", {**REVIEW_RECIPE, "train": train})
    model, _, info = pre.review_gpt("smoke", progress=False)
    for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-8)
    assert info["val_loss"] == pytest.approx(info["base_val_loss"], rel=1e-5)


def test_review_gpt_fingerprint_covers_the_recipe_and_the_base(small_review, monkeypatch):
    first = pre.review_gpt_dir("smoke")
    recipe = {**REVIEW_RECIPE, "seed": 4}
    monkeypatch.setitem(pre.REVIEW_GPT_RECIPES, "smoke", recipe)
    assert pre.review_gpt_dir("smoke") != first
    monkeypatch.setitem(pre.REVIEW_GPT_RECIPES, "smoke", REVIEW_RECIPE)
    monkeypatch.setitem(pre.ENGLISH_GPT_RECIPES, "smoke", {**ENGLISH_RECIPE, "seed": 8})
    assert pre.review_gpt_dir("smoke") != first


def test_review_gpt_recipes_share_the_base_network():
    for profile in ("smoke", "book", "full"):
        recipe = pre.review_gpt_recipe(profile)
        assert recipe["model"] == pre.ENGLISH_GPT_RECIPES[profile]["model"]
        assert recipe["train"]["max_steps"] >= 1
    with pytest.raises(ValueError, match="profile"):
        pre.review_gpt("tiny")
    with pytest.raises(TypeError, match="progress"):
        pre.review_gpt("smoke", progress="yes")


def test_review_prompts_are_deterministic_and_held_out(small_review):
    _, tok, _ = pre.english_gpt("smoke", progress=False)
    eot = tok.special_tokens["<|endoftext|>"]
    prompts = pre.review_prompts(tok, "test")
    assert prompts == pre.review_prompts(tok, "test")
    assert len(prompts) <= len(REVIEWS["test"])
    for p in prompts:
        assert p[0] == eot and 2 <= len(p) - 1 <= 8
        assert eot not in p[1:]
    for i, text in enumerate(REVIEWS["test"]):  # sentence i gives its first 2 + i % 7 tokens
        ids = tok.encode(text, allowed_special="none")
        k = 2 + i % 7
        assert ([eot, *ids[:k]] in prompts) == (len(ids) > k)
    assert pre.review_prompts(tok, "test", n=2) == prompts[:2]
    fixed = pre.review_prompts(tok, "validation", min_tokens=3, max_tokens=3)
    assert all(len(p) == 4 for p in fixed)


def test_review_prompts_bad_arguments(small_review):
    _, tok, _ = pre.english_gpt("smoke", progress=False)
    with pytest.raises(ValueError, match="split"):
        pre.review_prompts(tok, "dev")
    with pytest.raises(ValueError, match="max_tokens"):
        pre.review_prompts(tok, "test", min_tokens=5, max_tokens=4)
    with pytest.raises(ValueError, match="min_tokens"):
        pre.review_prompts(tok, "test", min_tokens=0)
    with pytest.raises(ValueError, match="n"):
        pre.review_prompts(tok, "test", n=0)
    with pytest.raises(ValueError, match="endoftext"):
        pre.review_prompts(object(), "test")


def test_review_sentences_are_the_polarity_texts():
    from llmkit.data import load_sentence_polarity

    data = load_sentence_polarity()
    assert pre.review_sentences("validation") == [t for t, _ in data["validation"]]
    with pytest.raises(ValueError, match="split"):
        pre.review_sentences("dev")
    assert json.dumps(pre.review_sentences("test")[:2])


# ------------------------------------------------------------------ the PPO runner

PPO_RECIPE = {
    "steps": 2,
    "ppo": {
        "batch_size": 4,
        "max_new_tokens": 4,
        "minibatch_size": 2,
        "ppo_epochs": 1,
        "lr": 1e-3,
        "horizon": 100.0,
    },
    "prompts": {"split": "validation", "n": None},
    "eval": {"split": "test", "n": 3, "seed": 5},
    "monitor": {"reward_drop": 100.0, "canary_drop": 1.0},
    "seed": 0,
}


class _CountReward:
    """A stand-in reward: the number of 'good' minus 'dull' in each text."""

    def __call__(self, texts):
        return torch.tensor([t.count("good") - t.count("dull") + 0.0 for t in texts])


@pytest.fixture
def tiny_ppo(small_review, monkeypatch):
    from llmkit import rl

    monkeypatch.setitem(rl.SENTIMENT_PPO_RECIPES, "smoke", PPO_RECIPE)
    monkeypatch.setattr(pre, "sentiment_reward", lambda *a, **k: _CountReward())
    monkeypatch.setattr(pre, "sentiment_reward_dir", lambda *a, **k: Path("count_reward"))
    monkeypatch.setattr(rl, "_SCORERS", {})
    real = bert_tasks.tfidf_classifier
    monkeypatch.setattr(  # a quicker judge: 300 sentences, one C
        bert_tasks,
        "tfidf_classifier",
        lambda train, val, **k: real(train[:300], val[:100], c_values=(10.0,)),
    )
    return small_review


def test_sentiment_ppo_runs_evaluates_and_caches(tiny_ppo):
    from llmkit import rl

    r = rl.sentiment_ppo(0.1, adaptive=False, profile="smoke", progress=False)
    assert r["cached"] is False and r["alarm"] is None and len(r["history"]) == 2
    assert r["args"] == {
        "beta": 0.1,
        "adaptive": False,
        "target_kl": None,
        "flip": [],
        "monitor": True,
    }
    before, after = r["eval"]["before"], r["eval"]["after"]
    assert before["kl"] == 0.0 and before["n"] == 3.0  # the policy is the reference
    assert 0.0 <= after["judge_positive"] <= 1.0 and after["response_len"] <= 4
    assert all(0.0 <= h["judge_positive"] <= 1.0 for h in r["history"])
    assert r["kl_coef"] == 0.1  # fixed beta
    assert len(r["samples"]) == 3 and r["samples"][0]["before"].startswith(
        r["samples"][0]["prompt"]
    )
    again = rl.sentiment_ppo(0.1, adaptive=False, profile="smoke", progress=False)
    assert again["cached"] is True and again["history"] == r["history"]
    assert rl.sentiment_ppo(0.2, profile="smoke", cached_only=True, progress=False) is None


def test_sentiment_ppo_monitor_stops_and_keeps_the_last_good_policy(tiny_ppo, monkeypatch):
    from llmkit import rl

    # a canary limit below zero fires on the first step
    recipe = {**PPO_RECIPE, "monitor": {"reward_drop": 100.0, "canary_drop": -1.0}}
    monkeypatch.setitem(rl.SENTIMENT_PPO_RECIPES, "smoke", recipe)
    r = rl.sentiment_ppo(flip=("score",), profile="smoke", progress=False)
    assert r["alarm"]["rule"] == "canary" and r["alarm"]["step"] == 0
    assert "tf-idf judge" in r["alarm"]["message"]
    assert Path(r["alarm"]["checkpoint"]).is_dir()
    assert len(r["history"]) == 1
    # the restored policy is the starting one: the held-out KL is exactly zero
    assert r["eval"]["after"]["kl"] == 0.0


def test_sentiment_ppo_bad_arguments():
    from llmkit import rl

    with pytest.raises(ValueError, match="beta"):
        rl.sentiment_ppo(-1.0)
    with pytest.raises(TypeError, match="flip"):
        rl.sentiment_ppo(flip="score")
    with pytest.raises(ValueError, match="flip"):
        rl.sentiment_ppo(flip=("reward",))
    with pytest.raises(ValueError, match="target_kl"):
        rl.sentiment_ppo(target_kl=0)
    with pytest.raises(ValueError, match="profile"):
        rl.sentiment_ppo(profile="huge")
    with pytest.raises(ValueError, match="steps"):
        rl.sentiment_ppo(steps=0, profile="smoke")
    for profile in ("smoke", "book", "full"):
        recipe = rl.sentiment_ppo_recipe(profile)
        rl.PPOConfig(**recipe["ppo"])  # valid settings
        assert recipe["eval"]["split"] != recipe["prompts"]["split"]

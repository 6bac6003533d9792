"""llmkit.reward.hh_reward_model: the cached HH-RLHF reward model (chapter 10), trained with
a tiny recipe in a temporary cache: what it records, that a cache hit gives the same model,
that a damaged entry is retrained, and argument validation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from llmkit import reward

TINY = {
    "max_length": 24,
    "train_pairs": 8,
    "val_pairs": 2,
    "test_pairs": 4,
    "batch_size": 2,
    "train": {
        "max_steps": 2,
        "lr": 1e-4,
        "warmup_steps": 0,
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        "eval_interval": 2,
        "eval_iters": 1,
    },
    "seed": 0,
}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    for name in ("minilm", "english_gpt"):
        monkeypatch.setitem(reward.HH_REWARD_RECIPES["smoke"], name, copy.deepcopy(TINY))
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    return tmp_path


def _rescore(model, tokenizer, info):
    """Score the held-out pairs again with ``model`` (as the library did)."""
    scores = {}
    for subset in reward.HH_SUBSETS:
        pairs = reward.load_pairs(subset)["test"][: info["recipe"]["test_pairs"]]
        ex = reward.encode_pairs(pairs, tokenizer, info["max_length"], **info["encode"])
        scores[subset] = reward.score_pairs(model, ex, info["pad_id"])
    return scores


def test_minilm_trains_caches_and_records(tiny):
    model, tok, info = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    assert isinstance(model, reward.RewardModel) and model.pooling == "mean"
    assert not model.training and info["cached"] is False
    path = reward.hh_reward_dir("minilm", "smoke")
    assert info["path"] == str(path) and path.name.startswith("hh_reward_minilm-smoke-")
    assert (path / "hh_reward.json").exists() and (path / "model.safetensors").exists()
    assert info["n_train"] == 16 and info["n_val"] == 4 and info["steps"] == 2
    for key in (*reward.HH_SUBSETS, "pooled"):
        m = info["test"][key]
        assert m["n"] == (8 if key == "pooled" else 4)
        assert 0.0 <= m["low"] <= m["accuracy"] <= m["high"] <= 1.0
    # the recorded accuracy is that of the recorded scores, and those are the model's
    for subset, (r_c, r_r) in _rescore(model, tok, info).items():
        torch.testing.assert_close(r_c, torch.tensor(info["test_scores"][subset]["chosen"]))
        torch.testing.assert_close(r_r, torch.tensor(info["test_scores"][subset]["rejected"]))
        assert info["test"][subset]["accuracy"] == pytest.approx(reward.pairwise_accuracy(r_c, r_r))
    assert 0.0 <= info["truncated"]["helpful-base"] <= 1.0
    assert info["train_seconds"] > 0 and info["hardware"]


def test_cache_hit_returns_the_same_scores(tiny):
    first, tok, info = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    again, tok2, info2 = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    assert info2["cached"] is True and info2["path"] == info["path"]
    assert info2["test"] == info["test"]
    a, b = _rescore(first, tok, info), _rescore(again, tok2, info2)
    for subset in reward.HH_SUBSETS:
        torch.testing.assert_close(a[subset][0], b[subset][0])
        torch.testing.assert_close(a[subset][1], b[subset][1])
    assert info2["history"].val_loss == pytest.approx(info["history"].val_loss)


def test_a_damaged_entry_is_trained_again(tiny):
    _, _, info = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    path = reward.hh_reward_dir("minilm", "smoke")
    meta = json.loads((path / "hh_reward.json").read_text())
    meta["model_sha256"] = "0" * 64
    (path / "hh_reward.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="could not be loaded"):
        _, _, again = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    assert again["cached"] is False and again["test"] == info["test"]  # deterministic


def test_english_gpt_backbone_reads_the_last_token(tiny):
    model, tok, info = reward.hh_reward_model("english_gpt", "smoke", progress=False, device="cpu")
    assert model.pooling == "last" and info["backbone"] == "english_gpt"
    eot = tok.special_tokens["<|endoftext|>"]
    assert info["encode"] == {"end_id": eot, "keep_first": 0} and info["pad_id"] == eot
    for subset, (r_c, _) in _rescore(model, tok, info).items():
        torch.testing.assert_close(r_c, torch.tensor(info["test_scores"][subset]["chosen"]))


def test_a_new_recipe_is_a_new_entry(tiny, monkeypatch):
    before = reward.hh_reward_dir("minilm", "smoke")
    recipe = copy.deepcopy(TINY)
    recipe["max_length"] = 20
    monkeypatch.setitem(reward.HH_REWARD_RECIPES["smoke"], "minilm", recipe)
    assert reward.hh_reward_dir("minilm", "smoke") != before
    assert reward.hh_reward_dir("minilm", "smoke", cache_dir=tiny / "x").parent == (
        tiny / "x" / "models"
    )


def test_recipes_cover_every_profile_and_backbone():
    for profile in ("smoke", "book", "full"):
        for name in reward.REWARD_BACKBONES:
            recipe = reward.hh_reward_recipe(name, profile)
            assert recipe["val_pairs"] >= 1 and recipe["batch_size"] >= 1
            recipe["max_length"] = -1  # a copy: the module's recipe is unchanged
            assert reward.HH_REWARD_RECIPES[profile][name]["max_length"] > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backbone": "bert"}, ValueError, "backbone"),
        ({"backbone": "minilm", "profile": "fast"}, ValueError, "profile"),
        ({"backbone": "minilm", "progress": "yes"}, (TypeError, ValueError), "progress"),
    ],
)
def test_bad_arguments(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        reward.hh_reward_model(**kwargs, cache_dir=tmp_path)
    assert not (tmp_path / "models").exists()


def test_bad_recipe_arguments():
    with pytest.raises(ValueError, match="backbone"):
        reward.hh_reward_recipe("gpt2")
    with pytest.raises(ValueError, match="profile"):
        reward.hh_reward_dir("minilm", "huge")


def test_score_texts_matches_score_pairs():
    from llmkit.bert import BertConfig, BertModel

    class Tok:
        def encode(self, text):
            return [1] + [2 + (ord(c) % 20) for c in text]

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30, hidden_size=16, n_layers=1, n_heads=2, intermediate_size=32, max_position=64
    )
    model = reward.RewardModel(BertModel(cfg, add_pooler=True), "cls")
    texts = [
        "\\n\\nHuman: hi\\n\\nAssistant: hello",
        "\\n\\nHuman: hi\\n\\nAssistant: no",
        "x" * 40,
    ]
    got = reward.score_texts(model, Tok(), texts, 20, 0, batch_size=2, keep_first=1)
    pairs = [reward.PreferencePair("", t, texts[0]) for t in texts]
    ex = reward.encode_pairs(pairs, Tok(), 20, keep_first=1)
    want, _ = reward.score_pairs(model, ex, 0)
    torch.testing.assert_close(got, want)
    assert got.shape == (3,) and model.training  # the mode is restored
    with pytest.raises(TypeError, match="texts"):
        reward.score_texts(model, Tok(), "one text", 20, 0)


def test_a_frozen_backbone_trains_the_head_only(tiny, monkeypatch):
    from llmkit.bert_tasks import encoder_for

    recipe = copy.deepcopy(TINY)
    recipe["train_backbone"] = False
    monkeypatch.setitem(reward.HH_REWARD_RECIPES["smoke"], "minilm", recipe)
    model, _, info = reward.hh_reward_model("minilm", "smoke", progress=False, device="cpu")
    assert info["n_trained"] == 384 + 1  # the head: MiniLM's width and a bias
    fresh, _ = encoder_for("minilm")
    start = fresh.state_dict()
    for name, p in model.backbone.state_dict().items():
        torch.testing.assert_close(p, start[name], msg=name)

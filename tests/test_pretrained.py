"""``llmkit.pretrained.char_gpt``: train on first use, load from the cache afterwards.

Most tests replace the data set by a small synthetic corpus (``_data`` is patched), so they
run in seconds and need no data mirror; one test trains the smoke model on tinyshakespeare
when the mirror is available. Every test gets its own empty cache.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import llmkit.pretrained as pre
from llmkit.gpt import GPT
from llmkit.tokenizers import CharTokenizer

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
) * 12

_MIRROR = os.environ.get("LLMKIT_DATA_MIRROR", "").strip()


def _small_data():
    n = int(0.9 * len(CORPUS))
    tok = CharTokenizer.train(CORPUS)
    ids = torch.tensor(tok.encode(CORPUS))
    return tok, ids[:n], ids[n:]


#: A shorter smoke recipe for the cache mechanics: 20 steps, a checkpoint every 2.
TEST_RECIPE = {
    "model": {"block_size": 16, "n_layer": 2, "n_head": 2, "d_model": 16, "dropout": 0.0},
    "batch_size": 8,
    "train": {"max_steps": 20, "lr": 3e-3, "warmup_steps": 2, "eval_interval": 5, "eval_iters": 2},
    "seed": 1337,
}
STEPS = 20


@pytest.fixture
def small(monkeypatch, tmp_path):
    """A tiny corpus instead of tinyshakespeare, a short recipe and an empty cache."""
    monkeypatch.setattr(pre, "_data", _small_data)
    monkeypatch.setitem(pre.CHAR_GPT_RECIPES, "smoke", TEST_RECIPE)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    return tmp_path


def _same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_first_call_trains_and_caches_second_call_loads(small, capsys):
    model, tok, info = pre.char_gpt("smoke", progress=False)
    assert capsys.readouterr().out == ""
    assert info["cached"] is False and info["profile"] == "smoke"
    path = Path(info["path"])
    assert path.parent == small / "models"
    assert path.name == f"char_gpt-smoke-{info['hash']}"
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "checkpoint.json",
        "tokenizer.json",
        "char_gpt.json",
    }
    assert not (small / "models" / f"{path.name}.partial").exists()
    assert info["steps"] == STEPS == len(info["history"])
    assert math.isfinite(info["val_loss"]) and info["val_loss"] < math.log(tok.vocab_size)
    assert not model.training

    again, tok2, info2 = pre.char_gpt("smoke", progress=True)
    assert "loaded the smoke character-level GPT" in capsys.readouterr().out
    assert info2["cached"] is True and tok2.vocab == tok.vocab
    assert _same_weights(model, again)
    assert info2["val_loss"] == info["val_loss"]
    assert info2["history"].to_dict() == info["history"].to_dict()
    assert info["cpu_count"] == os.cpu_count()
    assert info["load_average"] is None or info["load_average"] >= 0
    for key in ("hash", "model_config", "train_config", "batch_size", "seed", "hardware"):
        assert info2[key] == info[key]
    ids = torch.tensor([tok.encode("First Citizen")])
    assert torch.equal(model(ids), again(ids))


def test_progress_prints_one_line_per_evaluation(small, capsys):
    pre.char_gpt("smoke", progress=True)
    out = capsys.readouterr().out.splitlines()
    evals = STEPS // TEST_RECIPE["train"]["eval_interval"] + 1
    assert out[0].startswith("training the smoke character-level GPT")
    assert sum(line.startswith("step ") for line in out) == evals
    assert out[-1].startswith("validation loss")


def test_cache_dir_argument_and_recipe_in_the_name(small, monkeypatch, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    _, _, info = pre.char_gpt("smoke", cache_dir=other, progress=False)
    assert Path(info["path"]).parent == other / "models"
    assert not (small / "models").exists()
    assert pre.char_gpt_dir("smoke", cache_dir=other) == Path(info["path"])
    # a different recipe is a different model: trained again, in another directory
    recipe = {**TEST_RECIPE, "train": {**TEST_RECIPE["train"], "max_steps": 7}}
    monkeypatch.setitem(pre.CHAR_GPT_RECIPES, "smoke", recipe)
    _, _, info7 = pre.char_gpt("smoke", cache_dir=other, progress=False)
    assert info7["cached"] is False and info7["steps"] == 7
    assert info7["path"] != info["path"]


def test_the_callers_random_state_is_left_alone(small):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pre.char_gpt("smoke", progress=False)  # trains
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)
    pre.char_gpt("smoke", progress=False)  # loads
    assert torch.equal(torch.rand(3), expected)


def test_training_is_deterministic(small, tmp_path_factory):
    a, _, _ = pre.char_gpt("smoke", progress=False)
    b, _, _ = pre.char_gpt("smoke", cache_dir=tmp_path_factory.mktemp("b"), progress=False)
    assert _same_weights(a, b)


@pytest.mark.parametrize(
    "damage",
    ["weights_bytes", "weights_missing", "info_garbage", "tokenizer_missing", "empty_dir"],
)
def test_a_damaged_cache_is_trained_again(small, damage):
    model, _, info = pre.char_gpt("smoke", progress=False)
    path = Path(info["path"])
    if damage == "weights_bytes":  # still loadable, but not the weights that were saved
        raw = bytearray((path / "model.safetensors").read_bytes())
        raw[-1] ^= 0xFF
        (path / "model.safetensors").write_bytes(bytes(raw))
    elif damage == "weights_missing":
        (path / "model.safetensors").unlink()
    elif damage == "info_garbage":
        (path / "char_gpt.json").write_text("{not json")
    elif damage == "tokenizer_missing":
        (path / "tokenizer.json").unlink()
    else:
        for f in path.iterdir():
            f.unlink()
    with pytest.warns(UserWarning, match="could not be loaded.*training again"):
        again, _, info2 = pre.char_gpt("smoke", progress=False)
    assert info2["cached"] is False
    assert _same_weights(model, again)
    assert pre.char_gpt("smoke", progress=False)[2]["cached"] is True


def test_an_interrupted_run_resumes_exactly(small, monkeypatch):
    reference, _, _ = pre.char_gpt("smoke", cache_dir=small / "ref", progress=False)

    real_train = pre.train

    class Interrupted(Exception):
        pass

    def interrupted_train(*args, callback=None, **kwargs):
        def stop(step, history):
            callback(step, history)
            if step == 13:  # after the checkpoint at step 12 (one every 2 steps)
                raise Interrupted

        return real_train(*args, callback=stop, **kwargs)

    monkeypatch.setattr(pre, "train", interrupted_train)
    with pytest.raises(Interrupted):
        pre.char_gpt("smoke", progress=False)
    partial = pre.char_gpt_dir("smoke").with_name(pre.char_gpt_dir("smoke").name + ".partial")
    assert json.loads((partial / "checkpoint.json").read_text())["step"] == 12
    monkeypatch.setattr(pre, "train", real_train)
    resumed, _, info = pre.char_gpt("smoke", progress=False)
    assert info["cached"] is False and info["steps"] == STEPS
    assert not partial.exists()
    assert _same_weights(reference, resumed)


def test_a_partial_run_of_another_recipe_is_discarded(small):
    target = pre.char_gpt_dir("smoke")
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True)
    (partial / "checkpoint.json").write_text("{}")
    with pytest.warns(UserWarning, match="ignoring the interrupted run"):
        _, _, info = pre.char_gpt("smoke", progress=False)
    assert info["steps"] == STEPS and not partial.exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="profile.*smoke.*'big'"):
        pre.char_gpt("big")
    with pytest.raises(ValueError, match="profile"):
        pre.char_gpt_recipe("Book")
    with pytest.raises(TypeError, match="progress"):
        pre.char_gpt("smoke", progress="yes")


def test_recipes():
    assert set(pre.CHAR_GPT_RECIPES) == {"smoke", "book", "full"}
    full = pre.char_gpt_recipe("full")
    # nanoGPT's config/train_shakespeare_char.py
    assert full["model"] == {
        "block_size": 256,
        "n_layer": 6,
        "n_head": 6,
        "d_model": 384,
        "dropout": 0.2,
    }
    assert full["batch_size"] == 64
    t = full["train"]
    assert (t["max_steps"], t["lr"], t["min_lr"], t["warmup_steps"]) == (5000, 1e-3, 1e-4, 100)
    assert t["betas"] == [0.9, 0.99]
    book = pre.char_gpt_recipe("book")
    assert book["model"]["dropout"] == 0.0
    book["model"]["n_layer"] = 99  # a copy
    assert pre.CHAR_GPT_RECIPES["book"]["model"]["n_layer"] != 99


def test_profile_none_uses_the_current_profile(monkeypatch):
    monkeypatch.setenv("LLMKIT_PROFILE", "full")
    assert pre.char_gpt_recipe() == pre.char_gpt_recipe("full")
    monkeypatch.setenv("LLMKIT_PROFILE", "smoke")
    assert pre.char_gpt_recipe() == pre.char_gpt_recipe("smoke")


def test_evaluate_lm_scores_every_window_once():
    torch.manual_seed(0)
    from llmkit.gpt import GPTConfig

    model = GPT(GPTConfig(vocab_size=7, block_size=5, n_layer=1, n_head=1, d_model=8))
    ids = torch.randint(0, 7, (23,))  # 4 windows of 5 (+1 target); 2 tokens left over
    x = ids[:20].view(4, 5)
    y = ids[1:21].view(4, 5)
    with torch.no_grad():
        expected = float(model.loss(x, y))
    for batch_size in (1, 3, 64):
        assert pre.evaluate_lm(model, ids, batch_size=batch_size) == pytest.approx(expected)
    model.train()
    pre.evaluate_lm(model, ids)
    assert model.training  # restored
    with pytest.raises(ValueError, match="block_size"):
        pre.evaluate_lm(model, ids[:5])
    with pytest.raises(ValueError, match="ids"):
        pre.evaluate_lm(model, ids[None])
    with pytest.raises(ValueError, match="batch_size"):
        pre.evaluate_lm(model, ids, batch_size=0)


@pytest.mark.skipif(
    not _MIRROR or not Path(_MIRROR).is_dir(),
    reason="LLMKIT_DATA_MIRROR is unset: the tinyshakespeare smoke model needs the data",
)
def test_smoke_model_on_tinyshakespeare(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path))
    model, tok, info = pre.char_gpt("smoke", progress=False)
    assert tok.vocab_size == 65 == model.config.vocab_size
    assert info["val_loss"] < 3.3  # the uniform guess is log(65) = 4.17
    out = model.generate(torch.tensor([tok.encode("\n")]), 20)
    assert out.shape == (1, 21)


def test_describe_hardware_names_the_cpu_and_threads():
    text = pre.describe_hardware("cpu")
    assert text.endswith(f"{torch.get_num_threads()} threads")
    assert text.split(",")[0].strip()

"""Tests of llmkit.train (the training loop) and llmkit.viz.plot_history.

The model here is a tiny language model defined in this file (embedding, a residual MLP,
dropout, an output head tied to the embedding), so the loop is tested on its own.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, load_model, save_model
from torch import nn

import llmkit.checkpoint as C
import llmkit.train as T
from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.device import select_device
from llmkit.train import (
    History,
    TrainConfig,
    configure_optimizer,
    cosine_lr,
    cross_entropy_loss,
    lm_batch_fn,
    random_batches,
    train,
)
from llmkit.viz import ema, plot_history

VOCAB = 13


@dataclass
class TinyConfig:
    vocab_size: int = VOCAB
    d_model: int = 16
    dropout: float = 0.0


class TinyLM(nn.Module):
    """ids (b, t) -> logits (b, t, vocab): embedding, LayerNorm + residual MLP, tied head."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.ln = nn.LayerNorm(config.d_model)
        self.fc = nn.Linear(config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.emb.weight  # weight tying
        nn.init.normal_(self.emb.weight, std=0.3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        h = h + torch.tanh(self.fc(self.ln(h)))
        return self.head(self.drop(h))


def make_model(seed: int = 0, dropout: float = 0.0) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(dropout=dropout))


def token_stream(n: int = 3000) -> torch.Tensor:
    """A learnable stream: mostly ``next = 5 * cur + 1 mod V``, with random tokens mixed in."""
    g = torch.Generator().manual_seed(1234)
    ids = torch.empty(n, dtype=torch.long)
    ids[0] = 0
    noise = torch.randint(0, VOCAB, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.15
    for i in range(1, n):
        ids[i] = noise[i] if flip[i] else (5 * ids[i - 1] + 1) % VOCAB
    return ids


STREAM = token_stream()


def get_batch_fn(batch_size: int = 8, block_size: int = 12):
    return lm_batch_fn(
        {"train": STREAM[:2500], "val": STREAM[2500:]}, block_size=block_size, batch_size=batch_size
    )


def quiet(**kw) -> TrainConfig:
    base = dict(progress=False, device="cpu", eval_interval=0)
    base.update(kw)
    return TrainConfig(**base)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- batches


def test_random_batches_are_shifted_windows():
    ids = torch.arange(100) + 1000
    g = torch.Generator().manual_seed(0)
    x, y = random_batches(ids, block_size=7, batch_size=5, generator=g)
    assert x.shape == y.shape == (5, 7)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    starts = x[:, 0] - 1000
    assert torch.equal(x, starts[:, None] + 1000 + torch.arange(7))  # contiguous windows
    assert int(starts.min()) >= 0 and int(starts.max()) <= 100 - 7 - 1
    x2, y2 = random_batches(ids, 7, 5, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = random_batches(ids, 7, 5, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)


def test_random_batches_shortest_stream_and_all_offsets():
    ids = torch.arange(5)
    x, y = random_batches(ids, 4, 3, torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.arange(4).expand(3, 4))  # only one window fits
    assert torch.equal(y, torch.arange(1, 5).expand(3, 4))
    x, _ = random_batches(torch.arange(10), 1, 500, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == set(range(9))  # every start, the last one included


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.arange(10).view(2, 5), 2, 2), ValueError, "ids"),
        ((torch.arange(10.0), 2, 2), TypeError, "integers"),
        ((torch.arange(10), 10, 2), ValueError, "block_size"),
        ((torch.arange(10), 0, 2), ValueError, "block_size"),
        ((torch.arange(10), 2, 0), ValueError, "batch_size"),
        (([1, 2, 3], 1, 1), TypeError, "torch.Tensor"),
    ],
)
def test_random_batches_errors(args, error, match):
    with pytest.raises(error, match=match):
        random_batches(*args, generator=torch.Generator().manual_seed(0))


def test_lm_batch_fn_splits():
    get_batch = get_batch_fn(batch_size=3, block_size=4)
    x, y = get_batch("val", torch.Generator().manual_seed(0))
    assert x.shape == (3, 4) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match=r"\['train', 'val'\]"):
        get_batch("test", torch.Generator())
    with pytest.raises(ValueError, match="block_size"):
        lm_batch_fn({"train": torch.arange(3)}, block_size=8, batch_size=2)


# --------------------------------------------------------------------------- device, config


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    auto = select_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
    for bad in ("banana", "tpu", "meta"):
        with pytest.raises(ValueError, match="'auto', 'cpu'"):
            select_device(bad)
    with pytest.raises(TypeError, match="device"):
        select_device(3)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_select_device_unavailable_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        select_device("cuda")


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_steps": -1}, ValueError, "max_steps"),
        ({"max_steps": 2.5}, TypeError, "max_steps"),
        ({"lr": -0.1}, ValueError, "lr"),
        ({"lr": 1e-3, "min_lr": 1e-2}, ValueError, "min_lr"),
        ({"betas": (1.0, 0.9)}, ValueError, "betas\\[0\\]"),
        ({"betas": (0.9,)}, ValueError, "betas"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"grad_accum_steps": 0}, ValueError, "grad_accum_steps"),
        ({"eval_interval": -5}, ValueError, "eval_interval"),
        ({"log_interval": 0}, ValueError, "log_interval"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"compile": "yes"}, TypeError, "compile"),
        ({"seed": True}, TypeError, "seed"),
    ],
)
def test_train_config_validation(kwargs, error, name):
    """A bad field raises an error that names it."""
    with pytest.raises(error, match=name):
        TrainConfig(**kwargs)


def test_train_config_round_trip():
    config = TrainConfig(max_steps=7, lr=3e-4, min_lr=None, betas=(0.8, 0.99), checkpoint_dir="x")
    d = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(d) == config
    assert config.resolved_min_lr == pytest.approx(3e-5)
    assert config.resolved_lr_decay_steps == 7
    with pytest.warns(UserWarning, match="unknown keys \\['nope'\\]"):
        assert TrainConfig.from_dict({**d, "nope": 1}) == config


# --------------------------------------------------------------------------- optimizer, lr


def test_configure_optimizer_decays_only_matrices():
    model = make_model()
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.25, lr=0.01))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.25 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model.emb.weight, model.fc.weight])  # head is tied
    assert ids(no_decay["params"]) == ids([model.ln.weight, model.ln.bias, model.fc.bias])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 0.01


def test_weight_decay_applies_to_matrices_only_during_training():
    """With zero gradients AdamW only decays: matrices shrink by (1 - lr*wd) per step."""
    model = make_model()
    before = state(model)
    steps, lr, wd = 4, 0.1, 0.5
    config = quiet(max_steps=steps, lr=lr, min_lr=lr, warmup_steps=0, weight_decay=wd)
    history = train(model, config, get_batch_fn(), loss_fn=lambda m, b: (m(b[0]) * 0.0).sum())
    assert history.lr == [lr] * steps
    factor = (1 - lr * wd) ** steps
    after = state(model)
    for name in ("emb.weight", "head.weight", "fc.weight"):
        torch.testing.assert_close(after[name], before[name] * factor, rtol=1e-6, atol=0)
    for name in ("ln.weight", "ln.bias", "fc.bias"):
        assert torch.equal(after[name], before[name]), name


def test_cosine_lr_schedule():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=4, decay_steps=14)
    assert [cosine_lr(s, **kw) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert cosine_lr(4, **kw) == pytest.approx(1.0)  # peak at the end of warm-up
    assert cosine_lr(9, **kw) == pytest.approx(0.55)  # half-way: (lr + min_lr) / 2
    assert cosine_lr(14, **kw) == cosine_lr(100, **kw) == 0.1
    values = [cosine_lr(s, **kw) for s in range(4, 15)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_history_lr_follows_schedule():
    config = quiet(max_steps=12, lr=0.02, min_lr=0.002, warmup_steps=3, lr_decay_steps=10)
    history = train(make_model(), config, get_batch_fn())
    expected = [cosine_lr(s, 0.02, 0.002, 3, 10) for s in range(12)]
    assert history.lr == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- the loop


def test_train_learns_and_records_history(capfd):
    model = make_model()
    config = TrainConfig(
        max_steps=25,
        lr=3e-2,
        warmup_steps=3,
        eval_interval=10,
        eval_iters=4,
        log_interval=4,
        device="cpu",
        progress=True,
    )
    history = train(model, config, get_batch_fn(batch_size=8, block_size=12))
    assert "25/25" in capfd.readouterr().err  # the tqdm bar ran
    assert history.steps == list(range(1, 26))
    assert len(history.train_loss) == len(history.lr) == len(history.grad_norm) == 25
    assert history.val_steps == [0, 10, 20, 25]  # start, every 10, the end
    assert history.val_tokens == [0, 960, 1920, 2400]
    assert history.tokens_seen == [96 * (s + 1) for s in range(25)]
    assert all(b >= a for a, b in zip(history.seconds, history.seconds[1:], strict=False))
    assert history.val_loss[0] > math.log(VOCAB) - 0.5  # about uniform before training
    assert history.val_loss[-1] < history.val_loss[0] - 0.5
    assert history.final_val_loss == history.val_loss[-1]
    assert history.best_val_loss == min(history.val_loss)
    assert all(math.isfinite(v) and v > 0 for v in history.grad_norm)
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    assert next(model.parameters()).device.type == "cpu" and model.training


def test_eval_batches_are_used_and_fixed():
    eval_batches = [get_batch_fn()("val", torch.Generator().manual_seed(s)) for s in range(3)]
    model = make_model()
    with torch.no_grad():
        expected = sum(cross_entropy_loss(model, b).item() for b in eval_batches) / 3
    config = quiet(max_steps=3, eval_interval=100, lr=0.0)  # lr 0: the model never changes
    history = train(model, config, get_batch_fn(), eval_batches=eval_batches)
    assert history.val_steps == [0, 3]
    assert history.val_loss == pytest.approx([expected, expected], rel=1e-6)
    with pytest.raises(ValueError, match="eval_batches"):
        train(make_model(), config, get_batch_fn(), eval_batches=[])


def test_gradient_accumulation_equals_one_big_batch():
    """accum=2 over half batches == accum=1 over the concatenated batch (loss and weights)."""
    g = torch.Generator().manual_seed(7)
    halves = [random_batches(STREAM, 10, 4, g) for _ in range(12)]

    def half_batches():
        it = iter(halves)
        return lambda split, gen: next(it)

    def full_batches():
        it = iter(halves)

        def get(split, gen):
            (x1, y1), (x2, y2) = next(it), next(it)
            return torch.cat([x1, x2]), torch.cat([y1, y2])

        return get

    kw = dict(max_steps=6, lr=5e-2, warmup_steps=2, grad_clip=0.5)
    m1, m2 = make_model(), make_model()
    h1 = train(m1, quiet(grad_accum_steps=2, **kw), half_batches())
    h2 = train(m2, quiet(grad_accum_steps=1, **kw), full_batches())
    assert h1.tokens_seen == h2.tokens_seen == [80 * s for s in range(1, 7)]
    assert h1.train_loss == pytest.approx(h2.train_loss, rel=1e-6)
    assert h1.grad_norm == pytest.approx(h2.grad_norm, rel=1e-5)
    for k, v in state(m1).items():
        torch.testing.assert_close(v, state(m2)[k], rtol=1e-5, atol=1e-6)
    h3 = train(make_model(), quiet(grad_accum_steps=1, **kw), half_batches())
    assert h3.train_loss != pytest.approx(h1.train_loss, rel=1e-3)  # the test can fail


def test_gradient_clipping_shrinks_the_updates():
    kw = dict(max_steps=4, lr=1e-2, warmup_steps=0, weight_decay=0.0)
    start = state(make_model())
    free_model, clip_model = make_model(), make_model()
    h_free = train(free_model, quiet(grad_clip=None, **kw), get_batch_fn())
    h_clip = train(clip_model, quiet(grad_clip=1e-7, **kw), get_batch_fn())
    # the recorded norm is the one before clipping: the first step sees the same gradient
    assert h_clip.grad_norm[0] == pytest.approx(h_free.grad_norm[0], rel=1e-6)
    assert h_clip.grad_norm[0] > 1e-3
    assert h_clip.train_loss[0] == pytest.approx(h_free.train_loss[0], rel=1e-6)

    def moved(model):
        return sum((v - start[k]).norm() ** 2 for k, v in state(model).items()) ** 0.5

    # clipped to norm 1e-7 the gradient is at AdamW's eps scale: the steps get much smaller
    assert moved(clip_model) < 0.8 * moved(free_model)


def test_train_is_reproducible_with_seed_and_dropout():
    kw = dict(max_steps=5, lr=1e-2, warmup_steps=1, eval_interval=5, eval_iters=2)
    h1 = train(make_model(dropout=0.2), quiet(seed=5, **kw), get_batch_fn())
    h2 = train(make_model(dropout=0.2), quiet(seed=5, **kw), get_batch_fn())
    h3 = train(make_model(dropout=0.2), quiet(seed=6, **kw), get_batch_fn())
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    assert h1.train_loss != h3.train_loss


def test_train_argument_errors():
    config = quiet(max_steps=2)
    with pytest.raises(TypeError, match="model"):
        train("model", config, get_batch_fn())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        train(make_model(), {"max_steps": 2}, get_batch_fn())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="get_batch"):
        train(make_model(), config, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss_fn"):
        train(make_model(), config, get_batch_fn(), loss_fn=lambda m, b: m(b[0]))
    with pytest.raises(TypeError, match="batch"):
        train(make_model(), config, lambda split, g: "text")
    with pytest.raises(ValueError, match="logits"):
        train(make_model(), config, lambda split, g: (torch.zeros(2, 3).long(), torch.zeros(2, 4)))
    nan_loss = lambda m, b: m(b[0]).sum() * float("nan")  # noqa: E731
    with pytest.raises(FloatingPointError, match="step 1"):
        train(make_model(), config, get_batch_fn(), loss_fn=nan_loss)


def test_bfloat16_autocast_and_compile_flag(monkeypatch):
    """The CUDA options, exercised on the CPU: bf16 autocast runs, compile wraps the model."""
    history = train(make_model(), quiet(max_steps=3, dtype="bfloat16"), get_batch_fn())
    assert all(math.isfinite(v) for v in history.train_loss)
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = make_model()
    train(model, quiet(max_steps=1, compile=True), get_batch_fn())
    assert compiled == [model]


def test_torchrun_environment_needs_a_master_address(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR.*torchrun"):
        train(make_model(), quiet(max_steps=1), get_batch_fn())


def test_shard_splits_the_global_batch():
    x = torch.arange(12).view(6, 2)
    parts = [T._shard((x, {"y": x + 1}), r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(parts[1][1]["y"], x[2:4] + 1)
    with pytest.raises(ValueError, match="6.*4"):
        T._shard(x, 0, 4)


def test_callback_stops_training():
    seen = []

    def callback(step, history):
        seen.append((step, len(history.train_loss)))
        return step == 3

    history = train(make_model(), quiet(max_steps=10), get_batch_fn(), callback=callback)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert history.steps == [1, 2, 3]


# --------------------------------------------------------------------------- checkpoints


def resume_config(ckpt: Path | None, **kw) -> TrainConfig:
    base = dict(
        max_steps=20,
        lr=3e-2,
        warmup_steps=3,
        eval_interval=5,
        eval_iters=2,
        grad_accum_steps=2,
        log_interval=3,
        seed=3,
        checkpoint_dir=None if ckpt is None else str(ckpt),
    )
    base.update(kw)
    return quiet(**base)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("how", ["callback", "crash"])
def test_resume_gives_exactly_the_same_run(tmp_path, monkeypatch, how):
    """20 steps straight == 10 steps (+ checkpoint) then a resume in a fresh model, bitwise."""
    straight_model = make_model(seed=0, dropout=0.2)
    straight = train(straight_model, resume_config(tmp_path / "a"), get_batch_fn())

    ckpt = tmp_path / "b"
    if how == "callback":  # stop cleanly after step 10; the checkpoint is written then
        first = train(
            make_model(seed=0, dropout=0.2),
            resume_config(ckpt),
            get_batch_fn(),
            callback=lambda step, h: step == 10,
        )
        assert first.steps[-1] == 10
    else:  # a periodic checkpoint at step 10, then a crash at step 13

        def crash(step, h):
            if step == 13:
                raise Interrupt

        with pytest.raises(Interrupt):
            train(
                make_model(seed=0, dropout=0.2),
                resume_config(ckpt, checkpoint_interval=10),
                get_batch_fn(),
                callback=crash,
            )

    assert sorted(p.name for p in ckpt.iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "training_state.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    assert meta["step"] == 10 and meta["history"]["steps"] == list(range(1, 11))
    assert meta["model_config"] == {"vocab_size": VOCAB, "d_model": 16, "dropout": 0.2}
    assert meta["train_config"]["checkpoint_dir"] == str(ckpt)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    torch.manual_seed(999)  # the global RNG state must come from the checkpoint
    resumed_model = make_model(seed=123, dropout=0.2)  # different initial weights
    resumed = train(resumed_model, resume_config(ckpt), get_batch_fn(), resume_from=ckpt)

    assert resumed.steps == straight.steps
    assert resumed.train_loss == straight.train_loss  # bitwise: floats compared with ==
    assert resumed.val_steps == straight.val_steps == [0, 5, 10, 15, 20]
    assert resumed.val_loss == straight.val_loss
    assert resumed.lr == straight.lr and resumed.grad_norm == straight.grad_norm
    assert resumed.tokens_seen == straight.tokens_seen
    for k, v in state(straight_model).items():
        assert torch.equal(state(resumed_model)[k], v), k
    assert load_checkpoint(ckpt).step == 20  # the resumed run overwrote the checkpoint


def test_resume_without_the_rng_state_differs(tmp_path, monkeypatch):
    """The exactness test can fail: with dropout, skipping the RNG restore changes the run."""
    straight = train(make_model(dropout=0.2), resume_config(tmp_path / "a"), get_batch_fn())
    ckpt = tmp_path / "c"
    stop = lambda step, h: step == 10  # noqa: E731
    train(make_model(dropout=0.2), resume_config(ckpt), get_batch_fn(), callback=stop)
    original = T.load_checkpoint
    monkeypatch.setattr(
        T, "load_checkpoint", lambda *a, **k: original(*a, **{**k, "restore_rng": False})
    )
    resumed = train(make_model(dropout=0.2), resume_config(ckpt), get_batch_fn(), resume_from=ckpt)
    assert resumed.train_loss[:10] == straight.train_loss[:10]  # restored from the history
    assert resumed.train_loss[10:] != straight.train_loss[10:]


def test_save_and_load_checkpoint_round_trip(tmp_path):
    model = make_model(seed=1)
    history = History(steps=[1], train_loss=[2.5], lr=[0.1], grad_norm=[1.0], seconds=[0.1])
    gen = torch.Generator().manual_seed(42)
    path = save_checkpoint(
        tmp_path / "ck", model, TrainConfig(max_steps=3), step=1, rng=gen, history=history
    )
    other = make_model(seed=2)
    gen2 = torch.Generator()
    ckpt = load_checkpoint(path, other, rng=gen2)
    assert ckpt.step == 1 and TrainConfig.from_dict(ckpt.train_config) == TrainConfig(max_steps=3)
    assert History.from_dict(ckpt.history) == history and ckpt.model_config["d_model"] == 16
    assert torch.equal(gen2.get_state(), gen.get_state())
    for k, v in state(model).items():
        assert torch.equal(state(other)[k], v)
    assert other.head.weight is other.emb.weight  # still tied after loading
    with pytest.raises(FileNotFoundError, match="missing"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "checkpoint.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="junk"):
        load_checkpoint(tmp_path / "junk")
    with pytest.raises(ValueError, match="optimizer"):
        load_checkpoint(path, optimizer=configure_optimizer(other, TrainConfig()))


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(path, make_model(seed=1), step=1)

    def failing_save_file(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(C, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_model(seed=2), step=2)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # the temp dir was removed
    assert load_checkpoint(path).step == 1  # the old checkpoint is intact
    monkeypatch.undo()

    save_checkpoint(path, make_model(seed=2), step=2)  # overwriting works
    assert load_checkpoint(path).step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]

    # a crash between the two renames of an overwrite leaves only .ck.old: it is used
    os.replace(path, tmp_path / ".ck.old")
    with pytest.warns(UserWarning, match="a save was interrupted"):
        assert load_checkpoint(path).step == 2

    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="results"):
        save_checkpoint(precious, make_model(), step=0)
    assert (precious / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- DDP (gloo, CPU)

DDP_STEPS = 6


def ddp_config(ckpt: str | None = None) -> TrainConfig:
    return quiet(
        max_steps=DDP_STEPS,
        lr=3e-2,
        warmup_steps=2,
        grad_accum_steps=2,
        eval_interval=3,
        eval_iters=2,
        log_interval=2,
        seed=11,
        checkpoint_dir=ckpt,
    )


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    model = make_model(seed=rank)  # different on purpose: DDP starts from rank 0's weights
    history = train(model, ddp_config(os.path.join(out_dir, "ckpt")), get_batch_fn(batch_size=8))
    save_model(model, os.path.join(out_dir, f"rank{rank}.safetensors"))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(history.to_dict()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process(tmp_path):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        assert var not in os.environ, "run the test suite without torchrun"
    context = mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the DDP workers did not finish in 240 s")

    single_model = make_model(seed=0)
    single = train(single_model, ddp_config(), get_batch_fn(batch_size=8))

    models = []
    for rank in range(2):
        m = make_model(seed=5)
        load_model(m, str(tmp_path / f"rank{rank}.safetensors"))
        models.append(m)
    for k, v in state(models[0]).items():
        assert torch.equal(state(models[1])[k], v), f"ranks differ in {k}"
        torch.testing.assert_close(v, state(single_model)[k], rtol=1e-5, atol=1e-6)

    histories = [
        History.from_dict(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in range(2)
    ]
    for name in ("train_loss", "grad_norm", "val_loss", "lr", "tokens_seen"):
        assert getattr(histories[0], name) == getattr(histories[1], name), name  # all-reduced
    ddp = histories[0]
    assert ddp.tokens_seen == single.tokens_seen  # the same global batch
    assert ddp.train_loss == pytest.approx(single.train_loss, abs=1e-6, rel=0)
    assert ddp.val_steps == single.val_steps == [0, 3, 6]
    assert ddp.val_loss == pytest.approx(single.val_loss, abs=1e-6, rel=0)
    assert ddp.grad_norm == pytest.approx(single.grad_norm, rel=1e-5)

    # only rank 0 wrote the checkpoint, with both ranks' RNG states
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.step == DDP_STEPS and ckpt.meta["world_size"] == 2
    rng_keys = {k for k in load_file(str(tmp_path / "ckpt" / "training_state.safetensors"))}
    assert {"rng.generator", "rng.torch.0", "rng.torch.1"} <= rng_keys
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- viz


@pytest.fixture
def plt():
    """pyplot on the Agg backend, imported here so the DDP workers never load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    yield matplotlib.pyplot
    matplotlib.pyplot.close("all")


def test_plot_history(plt):
    history = History(
        steps=[1, 2, 3],
        train_loss=[3.0, 2.0, 1.5],
        lr=[1, 1, 1],
        grad_norm=[1, 1, 1],
        seconds=[0.5, 1.0, 1.5],
        tokens_seen=[10, 20, 30],
        val_steps=[0, 3],
        val_loss=[3.1, 1.6],
        val_seconds=[0.0, 1.5],
        val_tokens=[0, 30],
    )
    ax = plot_history(history)
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1, 2, 3], [0, 3]]
    assert ax.get_legend() is not None and ax.get_xlabel() == "optimizer step"
    fig, ax2 = plt.subplots()
    assert plot_history(history.to_dict(), ax=ax2, x="seconds", smooth=0.5, label="run") is ax2
    lines = ax2.get_lines()
    assert len(lines) == 3 and list(lines[2].get_xdata()) == [0.0, 1.5]
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == [
        "run train (EMA 0.5)",
        "run val",
    ]
    ax3 = plot_history(history, x="tokens", log_y=True, title="t")
    assert ax3.get_yscale() == "log" and list(ax3.get_lines()[1].get_xdata()) == [0, 30]
    with pytest.raises(ValueError, match="step, seconds, tokens"):
        plot_history(history, x="epoch")
    with pytest.raises(ValueError, match="smooth"):
        plot_history(history, smooth=1.0)


def test_ema():
    assert ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected
    assert ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 0.5 / 0.75])

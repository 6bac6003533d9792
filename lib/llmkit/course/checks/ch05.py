"""Check functions for the chapter-05 lab ("BERT").

One function per exercise. Each calls the student's code on fixed edge cases and seeded
random inputs, compares with :mod:`llmkit.bert` (or with torch), prints one line on
success (:func:`~llmkit.course.checks.passed`) and raises ``AssertionError`` on failure:
its first line names the exercise and says what is wrong, then the input and a
``hint:`` line. A ``NotImplementedError`` from an unfinished stub is let through.

- **Seeds**: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set (the grader sets it),
  else fresh inputs on every run; see :mod:`llmkit.course.checks`. Checks that need
  torch's global random state (model initialisation, dropout) fork it, so the
  student's own random state is left as it was.
- **The library is not an answer**: each check refuses ``llmkit``'s own object.
- **Masking is random**: :func:`check_mask_tokens` cannot compare with
  :func:`llmkit.bert.mask_tokens` draw for draw. It checks the invariants on every
  input (specials and padding untouched, labels the original ids exactly where a token
  was selected, nothing changed where none was) and the rates on two large inputs:
  the selection rate, then 80 % ``[MASK]`` / 10 % random / 10 % unchanged among the
  selected, each within :data:`Z_TOLERANCE` binomial standard deviations (a correct
  answer fails with probability below 1e-10), and that the random ids are spread over
  the whole vocabulary. Last, that the ``generator`` argument alone decides the draws.
- **Each exercise on its own**: :func:`check_fine_tune_step` trains
  ``llmkit``'s :class:`~llmkit.bert.BertForSequenceClassification`, not the student's
  classifier, so a mistake in exercise 2 costs that exercise's points only.

===============================  =====================================================
check                            student's code
===============================  =====================================================
``check_mask_tokens``            ``mask_tokens(input_ids, mask_token_id, vocab_size,``
                                 ``special_ids, pad_token_id, mlm_probability=0.15,``
                                 ``generator=None) -> (inputs, labels)``
``check_sentence_classifier``    ``SentenceClassifier(encoder, n_labels)``, an
                                 ``nn.Module``: ``(b, t) ids -> (b, n_labels) logits``
``check_fine_tune_step``         ``fine_tune_step(model, batch, optimizer,``
                                 ``max_grad_norm=1.0) -> float``
``check_align_labels``           ``align_labels(word_ids, word_labels) -> list[int]``
===============================  =====================================================
"""

from __future__ import annotations

import copy
import functools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.bert import IGNORE_INDEX, BertConfig, BertForSequenceClassification, BertModel
from llmkit.bert import align_labels as _ref_align_labels
from llmkit.bert import mask_tokens as _ref_mask_tokens
from llmkit.course.checks import call_student, check_cases, check_rng, passed, reject_library
from llmkit.course.checks import require_result as _require_result

__all__ = [
    "Z_TOLERANCE",
    "check_mask_tokens",
    "check_sentence_classifier",
    "check_fine_tune_step",
    "check_align_labels",
    "reference_fine_tune_step",
]

#: Rates are accepted within this many binomial standard deviations of BERT's.
Z_TOLERANCE = 7.0


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _fail(name: str, what: str, inputs: str, hint: str) -> AssertionError:
    return AssertionError(f"{name}: {what}\n  input: {inputs}\n  hint: {hint}")


def _torch_gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


@contextmanager
def _own_torch_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded with ``seed``; restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _show(x: Any, limit: int = 300) -> str:
    s = f"torch.tensor({x.tolist()})" if isinstance(x, torch.Tensor) else repr(x)
    return s if len(s) <= limit else s[: limit - 5] + " ...)"


# --------------------------------------------------------------------------------------
# exercise 1: mask_tokens
# --------------------------------------------------------------------------------------


def _mask_call(
    fn: Callable[..., Any],
    name: str,
    shown: str,
    ids: torch.Tensor,
    setting: dict[str, Any],
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the student's function and validate the shape of what it returns."""
    arg = ids.clone()
    got = call_student(
        fn,
        name,
        shown,
        arg,
        generator=generator,
        hint="draw every random number with generator=generator; pad_token_id may be None",
        **setting,
    )
    _require_result(got, name, shown)
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise _fail(
            name,
            f"expected a pair (inputs, labels), got {type(got).__name__}",
            shown,
            "return two tensors: the corrupted inputs and the labels",
        )
    out = []
    for what, t in zip(("inputs", "labels"), got, strict=True):
        if not isinstance(t, torch.Tensor):
            raise _fail(
                name,
                f"{what} should be a tensor, got {type(t).__name__}",
                shown,
                f"return {what} as a torch.Tensor shaped like input_ids",
            )
        if tuple(t.shape) != tuple(ids.shape):
            raise _fail(
                name,
                f"{what} has shape {tuple(t.shape)}, expected {tuple(ids.shape)}",
                shown,
                f"{what} has one entry per token: the shape of input_ids",
            )
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise _fail(
                name,
                f"{what} has dtype {t.dtype}",
                shown,
                f"{what} are token ids: an integer tensor like input_ids (torch.long)",
            )
        out.append(t.detach().long().cpu())
    if not torch.equal(arg, ids):
        raise _fail(
            name,
            "your function modified input_ids",
            shown,
            "work on a copy (input_ids.clone()) or build new tensors with torch.where",
        )
    return out[0], out[1]


def _mask_problem(
    ids: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    setting: dict[str, Any],
) -> tuple[str, str] | None:
    """The first broken invariant as ``(what, hint)``, or None."""
    pad, vocab = setting["pad_token_id"], setting["vocab_size"]
    is_special = torch.zeros_like(ids, dtype=torch.bool)
    for s in setting["special_ids"]:
        is_special |= ids == s
    is_pad = ids == pad if pad is not None else torch.zeros_like(is_special)
    selected = labels != IGNORE_INDEX
    for where, kind in ((is_special, "a special token"), (is_pad, "padding")):
        bad = where & (selected | (inputs != ids))
        if bool(bad.any()):
            at = tuple(int(i) for i in bad.nonzero()[0])
            return (
                f"{kind} at index {at} was selected or changed (input {int(inputs[at])}, "
                f"label {int(labels[at])})",
                "special tokens and padding are never selected: they keep their id and "
                "get the label -100",
            )
    bad = selected & (labels != ids)
    if bool(bad.any()):
        at = tuple(int(i) for i in bad.nonzero()[0])
        hint = "a selected position's label is its original token id; every other label is -100"
        if bool((labels[bad] == inputs[bad]).all()):
            hint = (
                "the label is the original token (from input_ids), not the token the "
                "model now sees ([MASK] or a random one)"
            )
        return f"label {int(labels[at])} at index {at}, where the token was {int(ids[at])}", hint
    bad = ~selected & (inputs != ids)
    if bool(bad.any()):
        at = tuple(int(i) for i in bad.nonzero()[0])
        return (
            f"the token at index {at} changed from {int(ids[at])} to {int(inputs[at])} but "
            "its label is -100",
            "only selected positions are replaced, and each selected position gets its "
            "original id as label (whether it became [MASK], a random token or stayed)",
        )
    bad = (inputs < 0) | (inputs >= vocab)
    if bool(bad.any()):
        at = tuple(int(i) for i in bad.nonzero()[0])
        return (
            f"input id {int(inputs[at])} at index {at} is not in [0, vocab_size={vocab})",
            "draw the random replacements with torch.randint(vocab_size, ...)",
        )
    return None


def _random_mask_input(
    rng: random.Random, g: torch.Generator, big: bool = False
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A batch laid out like BERT's: [CLS] words [SEP] (words [SEP]) [PAD] ..."""
    vocab = rng.randint(600, 1200) if big else rng.randint(12, 60)
    roles = rng.sample(range(min(vocab, 8)), 4)
    pad, cls, sep, mask = roles
    if not big and rng.random() < 0.25:
        pad = None
    special = [cls, sep] + ([mask] if rng.random() < 0.5 else [])
    lo = 8
    hi = lo + 40 if big else vocab  # big inputs: words from a narrow band of ids
    b, t = (120, 500) if big else (rng.randint(1, 4), rng.randint(1, 16))
    words = torch.randint(lo, hi, (b, t), generator=g)
    ids = words.clone()
    for row in range(b):
        length = t if pad is None else rng.randint(min(2, t), t)
        ids[row, 0] = cls
        if length >= 2:
            ids[row, length - 1] = sep
        if length >= 5 and rng.random() < 0.3:  # a sentence pair
            ids[row, rng.randint(2, length - 3)] = sep
        if pad is not None:
            ids[row, length:] = pad
    p = 0.15 if rng.random() < 0.5 else round(rng.uniform(0.1, 0.6), 2)
    setting = dict(
        mask_token_id=mask,
        vocab_size=vocab,
        special_ids=special,
        pad_token_id=pad,
        mlm_probability=p,
    )
    return ids, setting


def _describe_mask_input(ids: torch.Tensor, setting: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in setting.items())
    if ids.numel() <= 64:
        return f"input_ids={_show(ids)}, {args}"
    return f"input_ids of shape {tuple(ids.shape)} (words from a narrow band of ids), {args}"


def _band(p: float, n: int) -> float:
    """Z_TOLERANCE standard deviations of a binomial proportion, plus a little slack."""
    return Z_TOLERANCE * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)) + 1e-3


def _rates_problem(
    ids: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, setting: dict[str, Any]
) -> tuple[str, str] | None:
    p, vocab, mask = setting["mlm_probability"], setting["vocab_size"], setting["mask_token_id"]
    eligible = torch.ones_like(ids, dtype=torch.bool)
    for s in [*setting["special_ids"], setting["pad_token_id"]]:
        if s is not None:
            eligible &= ids != s
    n = int(eligible.sum())
    selected = labels != IGNORE_INDEX
    n_sel = int(selected.sum())
    rate = n_sel / n
    if abs(rate - p) > _band(p, n):
        hint = (
            "select each token that is neither special nor padding independently, with "
            "probability mlm_probability"
        )
        if rate > 0.95:
            hint = (
                "give labels to the selected tokens only, -100 to all others (labels equal "
                "to input_ids everywhere would train the model to copy its input)"
            )
        elif p != 0.15 and abs(rate - 0.15) <= _band(0.15, n):
            hint = f"select with probability mlm_probability (here {p}), not a fixed 15 %"
        elif abs(rate - 0.9 * p) <= _band(0.9 * p, n):
            hint = (
                "every selected token gets its label, including the 10 % that stay "
                "unchanged: the model must predict them too"
            )
        return (
            f"{rate:.2%} of the {n:,} tokens that are neither special nor padding have a "
            f"label, expected {p:.0%} (mlm_probability)",
            hint,
        )
    if n_sel == 0:
        return None
    masked = int((selected & (inputs == mask)).sum()) / n_sel
    same = int((selected & (inputs == ids)).sum()) / n_sel
    other_pos = selected & (inputs != mask) & (inputs != ids)
    other = int(other_pos.sum()) / n_sel
    expected = {"mask": 0.8 + 0.1 / vocab, "random": 0.1 - 0.2 / vocab, "same": 0.1 + 0.1 / vocab}
    got = {"mask": masked, "random": other, "same": same}
    if any(abs(got[k] - expected[k]) > _band(expected[k], n_sel) for k in expected):
        hint = (
            "of the selected tokens 80 % become [MASK], 10 % a random token and 10 % stay "
            "unchanged: draw one more uniform number u per token; [MASK] where u < 0.8, a "
            "random id where 0.8 <= u < 0.9"
        )
        if masked > 0.97:
            hint = (
                "only 80 % of the selected tokens become [MASK]; 10 % become a random "
                "token and 10 % stay as they are"
            )
        elif abs(masked - 0.1) < 0.05 and abs(other - 0.8) < 0.05:
            hint = "the shares are swapped: 80 % [MASK] and 10 % random, not the other way"
        elif same < 0.01 and abs(masked - 8 / 9) < 0.03:
            hint = (
                "every selected token gets its label, including the 10 % that stay "
                "unchanged: the model must predict them too"
            )
        return (
            f"of the {n_sel:,} selected tokens, {masked:.1%} became [MASK], {other:.1%} a "
            f"random token and {same:.1%} stayed unchanged; expected about 80 %, 10 %, 10 %",
            hint,
        )
    n_other = int(other_pos.sum())
    if n_other:
        mean = float(inputs[other_pos].double().mean())
        centre, sd = (vocab - 1) / 2, vocab / math.sqrt(12 * n_other)
        if abs(mean - centre) > Z_TOLERANCE * sd + 2:
            return (
                f"the random replacements average {mean:.1f}, expected about {centre:.1f} "
                f"for ids drawn uniformly from [0, {vocab})",
                "draw each random token uniformly from the whole vocabulary: "
                "torch.randint(vocab_size, ..., generator=generator)",
            )
    return None


def check_mask_tokens(fn: Callable[..., Any], cases: int = 12, seed: int | None = None) -> None:
    """Check ``fn(input_ids, mask_token_id=, vocab_size=, special_ids=, pad_token_id=,
    mlm_probability=, generator=) -> (inputs, labels)``: BERT's masking recipe, as
    :func:`llmkit.bert.mask_tokens` does it (see the module doc for what is checked)."""
    name = "mask_tokens"
    reject_library(name, fn, _ref_mask_tokens)
    check_cases(cases, 2)
    rng = check_rng(seed)
    inputs_list = []
    # fixed: every token special or padding -> nothing selected, labels all -100
    inputs_list.append(
        (
            torch.tensor([[1, 2, 0, 0], [1, 2, 0, 0]]),
            dict(
                mask_token_id=3,
                vocab_size=10,
                special_ids=[1, 2],
                pad_token_id=0,
                mlm_probability=0.5,
            ),
        )
    )
    # fixed: no padding (pad_token_id None), a high selection probability
    inputs_list.append(
        (
            torch.tensor([[1, 5, 6, 7, 8, 9, 2]]),
            dict(
                mask_token_id=3,
                vocab_size=10,
                special_ids=[1, 2],
                pad_token_id=None,
                mlm_probability=0.9,
            ),
        )
    )
    while len(inputs_list) < cases:
        inputs_list.append(_random_mask_input(rng, _torch_gen(rng)))
    for i, (ids, setting) in enumerate(inputs_list):
        shown = _describe_mask_input(ids, setting)
        generator = None if i == 2 else _torch_gen(rng)  # the default generator works too
        inputs, labels = _mask_call(fn, name, shown, ids, setting, generator)
        problem = _mask_problem(ids, inputs, labels, setting)
        if problem is not None:
            what, hint = problem
            raise _fail(
                name,
                f"{what}\n  got:   inputs={_show(inputs)}, labels={_show(labels)}",
                shown,
                hint,
            )
    # the rates, on two large inputs: mlm_probability 0.15 and another one
    for p in (0.15, round(rng.uniform(0.3, 0.5), 2)):
        ids, setting = _random_mask_input(rng, _torch_gen(rng), big=True)
        n_big = ids.numel()
        setting["mlm_probability"] = p
        shown = _describe_mask_input(ids, setting)
        inputs, labels = _mask_call(fn, name, shown, ids, setting, _torch_gen(rng))
        problem = _mask_problem(ids, inputs, labels, setting) or _rates_problem(
            ids, inputs, labels, setting
        )
        if problem is not None:
            raise _fail(name, problem[0], shown, problem[1])
    # the generator decides: same seed -> same masks, whatever the global random state
    ids = ids[:20]
    shown = _describe_mask_input(ids, setting) + ", generator=torch.Generator().manual_seed(s)"
    s = rng.randrange(2**31)
    runs = []
    for global_seed in (1, 2):
        with _own_torch_rng(global_seed):
            g = torch.Generator().manual_seed(s)
            runs.append(_mask_call(fn, name, shown, ids, setting, g))
    if not all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True)):
        raise _fail(
            name,
            "two calls with generators seeded alike gave different masks",
            shown,
            "draw every random number from the generator argument: torch.rand(shape, "
            "generator=generator) and torch.randint(vocab_size, shape, generator=generator)",
        )
    other = _mask_call(fn, name, shown, ids, setting, torch.Generator().manual_seed(s + 1))
    if all(torch.equal(a, b) for a, b in zip(runs[0], other, strict=True)):
        raise _fail(
            name,
            "generators with different seeds gave the same masks",
            shown,
            "use the generator you are given; do not make your own",
        )
    passed(
        name,
        f"{cases} random batches keep the invariants; rates 15 % and 80/10/10 on "
        f"{2 * n_big:,} tokens",
    )


# --------------------------------------------------------------------------------------
# models for exercises 2 and 3
# --------------------------------------------------------------------------------------


def _random_config(rng: random.Random, dropout: float = 0.0) -> BertConfig:
    n_heads = rng.randint(1, 2)
    hidden = n_heads * rng.choice([4, 8])
    return BertConfig(
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


def _random_batch(
    rng: random.Random, g: torch.Generator, config: BertConfig, types: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, token_type_ids)``, rows of different lengths."""
    b, t = rng.randint(2, 4), rng.randint(3, 10)
    ids = torch.randint(1, config.vocab_size, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    type_ids = torch.zeros(b, t, dtype=torch.long)
    for row in range(b):
        length = t if row == 0 else rng.randint(1, t)
        mask[row, length:] = 0
        ids[row, length:] = config.pad_token_id
        if types and length > 2:
            type_ids[row, rng.randint(1, length - 1) : length] = 1
    return ids, mask, type_ids


# --------------------------------------------------------------------------------------
# exercise 2: SentenceClassifier
# --------------------------------------------------------------------------------------


class _PoolSpy:
    """Stands in for ``encoder.pool`` during the student's forward: records the call."""

    def __init__(self, encoder: BertModel) -> None:
        self.encoder = encoder
        self.calls = 0

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return BertModel.pool(self.encoder, hidden)


def _classifier_variants(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor
) -> list[tuple[torch.Tensor, str]]:
    """Logits of common mistakes (evaluation mode), with the hint each deserves."""
    enc, head = model.encoder, model.classifier

    def pooled(h: torch.Tensor) -> torch.Tensor:
        return head(torch.tanh(enc.pooler(h)))

    hidden = enc(ids, mask, types)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return [
        (
            head(hidden[:, 0]),
            "pass the [CLS] vector through the pooler first: "
            "torch.tanh(self.encoder.pooler(hidden[:, 0]))",
        ),
        (
            head(enc.pooler(hidden[:, 0])),
            "the pooler ends with tanh: torch.tanh(self.encoder.pooler(hidden[:, 0]))",
        ),
        (
            pooled((hidden * m).sum(1) / m.sum(1)),
            "BERT classifies from the first position, "
            "[CLS] (hidden[:, 0]), not from an average over the tokens",
        ),
        (
            pooled(hidden.mean(1)),
            "BERT classifies from the first position, [CLS] "
            "(hidden[:, 0]), not from an average over the tokens",
        ),
        (pooled(hidden[:, -1]), "[CLS] is the first position: hidden[:, 0]"),
        (
            pooled(enc(ids, None, types)[:, 0]),
            "pass attention_mask to the encoder, so that padding is not attended to",
        ),
        (pooled(enc(ids, mask, None)[:, 0]), "pass token_type_ids to the encoder"),
        (pooled(enc(ids)[:, 0]), "pass attention_mask and token_type_ids to the encoder"),
        (F.softmax(pooled(hidden[:, 0]), dim=-1), "return the logits, not probabilities"),
    ]


def check_sentence_classifier(cls: type, cases: int = 6, seed: int | None = None) -> None:
    """Check the class ``cls(encoder, n_labels)`` against
    :class:`llmkit.bert.BertForSequenceClassification` with the same weights.

    ``cls`` must keep the lab's ``__init__`` (``self.encoder``, ``self.dropout``,
    ``self.classifier``); its ``forward(input_ids, attention_mask=None,
    token_type_ids=None)`` must return ``classifier(dropout(tanh(pooler(h[:, 0]))))``
    with ``h`` the encoder's hidden states. Compared in float64 on random tiny BERTs
    with padded batches, in evaluation mode and, with dropout, in training mode (the
    same torch seed gives both the same dropout masks). Calling ``encoder.pool``, the
    library's version of the exercise, is refused.
    """
    name = "SentenceClassifier"
    reject_library(name, cls, BertForSequenceClassification)
    check_cases(cases, 2)
    rng = check_rng(seed)
    for case in range(cases):
        config = _random_config(rng, dropout=0.0 if case == 0 else rng.choice([0.1, 0.3]))
        n_labels = rng.randint(2, 5)
        g = _torch_gen(rng)
        ids, mask, types = _random_batch(rng, g, config, types=case % 2 == 1)
        shown = (
            f"SentenceClassifier(encoder, n_labels={n_labels}) on a random BERT with "
            f"hidden_size={config.hidden_size}, n_layers={config.n_layers}, dropout="
            f"{config.dropout}; input_ids={ids.tolist()}, attention_mask={mask.tolist()}, "
            f"token_type_ids={types.tolist()}"
        )
        torch_seed = rng.randrange(2**31)
        with _own_torch_rng(torch_seed):
            encoder = BertModel(config)
            model = call_student(cls, name, shown, encoder, n_labels)
            parts = {k: getattr(model, k, None) for k in ("encoder", "dropout", "classifier")}
            if (
                not isinstance(model, nn.Module)
                or parts["encoder"] is not encoder
                or not isinstance(parts["classifier"], nn.Linear)
                or not isinstance(parts["dropout"], nn.Dropout)
            ):
                raise _fail(
                    name,
                    "the model does not have the parts of the lab's __init__",
                    shown,
                    "keep the __init__ of the exercise: an nn.Module with self.encoder "
                    "(the encoder given), self.dropout and self.classifier; write forward",
                )
            _randomise(model, g)
            ref = BertForSequenceClassification(config, n_labels, encoder=encoder).double()
            ref.classifier.load_state_dict(model.classifier.state_dict())
            ref.dropout.p = model.dropout.p = config.dropout
        spy = _PoolSpy(encoder)
        for mode in ("eval", "train"):
            if mode == "train" and config.dropout == 0:
                continue
            model.train(mode == "train")
            ref.train(mode == "train")
            batch = (ids, mask, types) if case > 0 else (ids[:1, :], None, None)
            dseed = rng.randrange(2**31)
            with torch.no_grad(), _own_torch_rng(dseed):
                expected = ref(*batch)
            encoder.pool = spy  # type: ignore[method-assign]
            try:
                with torch.no_grad(), _own_torch_rng(dseed):
                    got = call_student(model, name, shown, *batch)
            finally:
                del encoder.pool
            if spy.calls:
                raise _fail(
                    name,
                    "your forward called self.encoder.pool, which is the answer itself",
                    shown,
                    "compute the pooled vector from its parts: "
                    "torch.tanh(self.encoder.pooler(hidden[:, 0]))",
                )
            if got is None:
                raise _fail(name, "forward returned None", shown, "did you forget `return`?")
            if not isinstance(got, torch.Tensor):
                raise _fail(
                    name,
                    f"forward returned {type(got).__name__}",
                    shown,
                    "return the logits as a tensor",
                )
            if tuple(got.shape) != tuple(expected.shape):
                raise _fail(
                    name,
                    f"the logits have shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                    shown,
                    "one row of n_labels logits per sentence, from its [CLS] vector "
                    "(hidden[:, 0], shape (b, hidden))",
                )
            if torch.allclose(got.double(), expected, rtol=1e-7, atol=1e-9):
                continue
            diff = float((got.double() - expected).abs().max())
            hint = (
                "hidden = self.encoder(input_ids, attention_mask, token_type_ids); then "
                "self.classifier(self.dropout(torch.tanh(self.encoder.pooler(hidden[:, 0]))))"
            )
            if mode == "train":
                hint = (
                    "right in evaluation mode, wrong in training mode: apply self.dropout "
                    "once, to the pooled vector, just before the classifier"
                )
            else:
                model.eval()
                with torch.no_grad():
                    for wrong, why in _classifier_variants(model, *_batch_full(batch, ids)):
                        if wrong.shape == got.shape and torch.allclose(
                            got.double(), wrong, rtol=1e-7, atol=1e-9
                        ):
                            hint = why
                            break
            raise _fail(
                name,
                f"in {mode} mode the logits differ from BertForSequenceClassification's "
                f"(max abs diff {diff:.3g})",
                shown,
                hint,
            )
    passed(
        name,
        f"{cases} random BERTs match llmkit.bert.BertForSequenceClassification "
        "(eval and train mode)",
    )


def _batch_full(
    batch: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None], ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch with its defaults made explicit (all-ones mask, zero token types)."""
    x, mask, types = batch
    if mask is None:
        mask = torch.ones_like(x)
    if types is None:
        types = torch.zeros_like(x)
    return x, mask, types


# --------------------------------------------------------------------------------------
# exercise 3: fine_tune_step
# --------------------------------------------------------------------------------------


def reference_fine_tune_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float = 1.0,
    *,
    clip: str = "norm",
    zero_grad: bool = True,
) -> float:
    """One fine-tuning step of a sequence classifier, as the lab asks for it.

    Forward ``model(input_ids, attention_mask) -> (b, n_labels)``, mean cross-entropy
    with ``batch["labels"]`` ``(b,)``, backward, clip the norm of all gradients together
    to ``max_grad_norm`` (``torch.nn.utils.clip_grad_norm_``), ``optimizer.step()``,
    ``optimizer.zero_grad()``. Returns the loss before the step, a float.

    ``clip`` and ``zero_grad`` give the usual mistakes, for the hints: ``"none"`` (no
    clipping), ``"each"`` (each parameter's gradient clipped on its own), ``"value"``
    (``clip_grad_value_``), ``"after"`` (clipping after the step); ``zero_grad=False``.
    """
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = F.cross_entropy(logits, batch["labels"])
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if clip == "norm":
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    elif clip == "each":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], max_grad_norm)
    elif clip == "value":
        torch.nn.utils.clip_grad_value_(params, max_grad_norm)
    optimizer.step()
    if clip == "after":
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if zero_grad:
        optimizer.zero_grad()
    return loss.item()


_OPTIMIZERS: list[tuple[str, Callable[[Any], torch.optim.Optimizer], bool]] = [
    ("SGD(lr=0.5)", lambda ps: torch.optim.SGD(ps, lr=0.5), True),
    ("SGD(lr=0.3, momentum=0.9)", lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=0.9), True),
    ("SGD(lr=0.2)", lambda ps: torch.optim.SGD(ps, lr=0.2), False),
    ("AdamW(lr=0.01)", lambda ps: torch.optim.AdamW(ps, lr=0.01), True),
]

_STEP_SLIPS = [
    (
        {"clip": "none"},
        "clip the norm of all gradients together, after backward() and before "
        "optimizer.step() (clipping after the step changes nothing): "
        "torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)",
    ),
    (
        {"clip": "each"},
        "clip the norm of all gradients together (one global norm), not each "
        "parameter's gradient on its own",
    ),
    (
        {"clip": "value"},
        "clip the gradients' norm (clip_grad_norm_), not each value (clip_grad_value_)",
    ),
]


def _grad_norm(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    probe = copy.deepcopy(model)
    logits = probe(batch["input_ids"], batch["attention_mask"])
    F.cross_entropy(logits, batch["labels"]).backward()
    grads = [p.grad for p in probe.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def _updates_match(after: dict, before: dict, ref_after: dict) -> bool:
    for k, b in before.items():
        got, exp = after[k] - b, ref_after[k] - b
        scale = float(exp.abs().max()) if exp.numel() else 0.0
        if float((got - exp).abs().max()) > 1e-4 * scale + 1e-12:
            return False
    return True


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def check_fine_tune_step(fn: Callable[..., Any], cases: int = 4, seed: int | None = None) -> None:
    """Check ``fn(model, batch, optimizer, max_grad_norm=...) -> float`` against
    :func:`reference_fine_tune_step` run on a deep copy.

    ``model`` is a tiny :class:`llmkit.bert.BertForSequenceClassification` (float64, no
    dropout) and ``batch`` a dict of ``input_ids``, ``attention_mask`` ``(b, t)`` and
    ``labels`` ``(b,)``. Three steps on different batches per case; after each, the
    change of every weight must match the reference's (to 1e-4 of its size) and the
    returned loss the reference's. The optimizers (SGD with and without momentum,
    AdamW) and ``max_grad_norm`` (a fraction of the gradient norm, so that clipping
    matters, or far above it) make a missing ``zero_grad``, missing or wrong clipping,
    and a summed loss show.
    """
    name = "fine_tune_step"
    reject_library(name, fn, reference_fine_tune_step)
    check_cases(cases, len(_OPTIMIZERS))
    rng = check_rng(seed)
    for case in range(cases):
        opt_name, make_opt, clipped = _OPTIMIZERS[case % len(_OPTIMIZERS)]
        config = _random_config(rng)
        n_labels = rng.randint(2, 4)
        g = _torch_gen(rng)
        with _own_torch_rng(rng.randrange(2**31)):
            model = BertForSequenceClassification(config, n_labels)
        _randomise(model, g)
        model.train()
        ref = copy.deepcopy(model)
        optimizer, ref_optimizer = make_opt(model.parameters()), make_opt(ref.parameters())
        batches = []
        for _ in range(3):
            ids, mask, _ = _random_batch(rng, g, config, types=False)
            labels = torch.randint(0, n_labels, (ids.shape[0],), generator=g)
            batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
        norm = _grad_norm(model, batches[0])
        factor = rng.uniform(0.1, 0.5) if clipped else rng.uniform(20.0, 40.0)
        max_norm = float(f"{norm * factor:.3g}")
        kept_grads = False
        for step, batch in enumerate(batches):
            shown = (
                f"step {step + 1} of 3 on a random BertForSequenceClassification "
                f"(hidden_size={config.hidden_size}, n_layers={config.n_layers}, "
                f"n_labels={n_labels}), optimizer {opt_name}, max_grad_norm={max_norm}; "
                f"batch: input_ids={batch['input_ids'].tolist()}, attention_mask="
                f"{batch['attention_mask'].tolist()}, labels={batch['labels'].tolist()}"
            )
            before = _state(model)
            snapshot = copy.deepcopy((ref, ref_optimizer))
            expected = reference_fine_tune_step(ref, batch, ref_optimizer, max_norm)
            student_batch = {k: v.clone() for k, v in batch.items()}
            got = call_student(
                fn,
                name,
                shown,
                model,
                student_batch,
                optimizer,
                max_grad_norm=max_norm,
                hint="the model takes (input_ids, attention_mask) and returns (b, n_labels) "
                "logits; F.cross_entropy(logits, labels)",
            )
            after = _state(model)
            if not _updates_match(after, before, _state(ref)):
                moved = any(not torch.equal(after[k], before[k]) for k in before)
                hint = (
                    "forward, F.cross_entropy(logits, batch['labels']), loss.backward(), "
                    "clip_grad_norm_(model.parameters(), max_grad_norm), optimizer.step(), "
                    "optimizer.zero_grad()"
                )
                if not moved:
                    hint = "call optimizer.step() to update the weights"
                elif step > 0 and kept_grads:
                    hint = (
                        "the first step was right, a later one not: call "
                        "optimizer.zero_grad() after the step, since backward() adds to the "
                        "gradients already there"
                    )
                else:
                    for slip, why in _STEP_SLIPS:
                        wrong_model, wrong_opt = copy.deepcopy(snapshot)
                        reference_fine_tune_step(wrong_model, batch, wrong_opt, max_norm, **slip)
                        if _updates_match(after, before, _state(wrong_model)):
                            hint = why
                            break
                raise _fail(
                    name,
                    "after your step the weights differ from a reference step's",
                    shown,
                    hint,
                )
            kept_grads = any(
                p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters()
            )
            if got is None:
                raise _fail(
                    name,
                    "your function returned None",
                    shown,
                    "return the loss as a float: loss.item()",
                )
            if isinstance(got, torch.Tensor) or not isinstance(got, float | int):
                raise _fail(
                    name,
                    f"expected a float, got {type(got).__name__}",
                    shown,
                    "return loss.item(), a Python float (a tensor would keep the whole "
                    "graph of the step alive)",
                )
            if not math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-10):
                hint = "return the mean cross-entropy of the batch, computed before the update"
                if math.isclose(got, expected * len(batch["labels"]), rel_tol=1e-5):
                    hint = "return the mean of the per-sentence losses, not their sum"
                raise _fail(name, f"returned loss {got:.8g}, expected {expected:.8g}", shown, hint)
            for k, v in batch.items():
                if not torch.equal(student_batch[k], v):
                    raise _fail(
                        name,
                        f"your function modified batch[{k!r}]",
                        shown,
                        "leave the batch as it is",
                    )
    passed(name, f"{cases} models x 3 steps match a reference step (SGD, momentum, AdamW)")


# --------------------------------------------------------------------------------------
# exercise 4: align_labels
# --------------------------------------------------------------------------------------

#: Pre-tokenized sentences whose words the MiniLM tokenizer splits into pieces.
SENTENCES: list[list[str]] = [
    ["The", "Petronas", "Towers", "dominate", "Kuala", "Lumpur", "."],
    ["Tokenization", "splits", "unbelievably", "long", "words", "into", "pieces", "."],
    ["@", "jdoe_42", "loved", "the", "#", "Transformers", "premiere", "!"],
    ["Devlin", "et", "al.", "pretrained", "BERT", "on", "BooksCorpus", "and", "Wikipedia"],
    ["Schwarzenegger", "visited", "Llanfairpwllgwyngyll", "in", "Wales"],
]


@functools.lru_cache(maxsize=1)
def _minilm_tokenizer() -> Any:
    from llmkit.bert import _read_tokenizer, minilm_path

    return _read_tokenizer(minilm_path())


def _random_word_ids(rng: random.Random) -> tuple[list[int | None], list[int]]:
    n_words = rng.randint(0, 9)
    word_ids: list[int | None] = [None] if rng.random() < 0.8 else []
    for w in range(n_words):
        pieces = rng.choice([0, 1, 1, 1, 2, 2, 3, 4]) if n_words > 1 else rng.randint(1, 4)
        word_ids += [w] * pieces
    if rng.random() < 0.8:
        word_ids.append(None)
    labels = [rng.randint(0, 12) for _ in range(n_words)]
    return word_ids, labels


def _align_variants(word_ids: list[int | None], labels: list[int]) -> list[tuple[list[int], str]]:
    ign = IGNORE_INDEX
    every = [ign if w is None else labels[w] for w in word_ids]
    last = [
        ign if w is None or (i + 1 < len(word_ids) and word_ids[i + 1] == w) else labels[w]
        for i, w in enumerate(word_ids)
    ]
    special_zero = [
        0 if w is None else v
        for w, v in zip(word_ids, _ref_align_labels(word_ids, labels), strict=True)
    ]
    counted, k, prev = [], 0, None
    for w in word_ids:
        if w is None or w == prev:
            counted.append(ign)
        else:
            counted.append(labels[k] if k < len(labels) else ign)
            k += 1
        prev = w
    return [
        (every, "only the first piece of a word carries its label; later pieces get -100"),
        (last, "the label goes on the *first* piece of each word, -100 on the others"),
        (special_zero, "special tokens (word id None) get the label -100"),
        (
            counted,
            "index word_labels with the word id, word_labels[word_id]: a word the "
            "tokenizer dropped has no pieces, so counting the words you have seen goes wrong",
        ),
    ]


def check_align_labels(
    fn: Callable[[Sequence[int | None], Sequence[int]], Any],
    cases: int = 30,
    seed: int | None = None,
) -> None:
    """Check ``fn(word_ids, word_labels) -> list[int]`` against
    :func:`llmkit.bert.align_labels`: on fixed cases, on random ``word_ids`` (``None``
    for specials, words of 1 to 4 pieces, now and then a word without any) and on
    sentences tokenized by MiniLM's WordPiece tokenizer (``tokenizer.encode(words,
    is_pretokenized=True).word_ids``)."""
    name = "align_labels"
    reject_library(name, fn, _ref_align_labels)
    fixed: list[tuple[list[int | None], list[int]]] = [
        ([None, 0, 1, 1, 2, None], [3, 5, 7]),
        ([None, None], []),  # an empty sentence
        ([None, 0, 0, 0, None], [4]),  # one word in three pieces
        ([None, 0, 0, 1, None], [0, 0]),  # label 0 is a label like any other
        ([0, 1, 1, 2], [2, 1, 0]),  # no special tokens
        ([None, 0, 2, 2, None], [1, 2, 3]),  # word 1 has no pieces (dropped)
    ]
    check_cases(cases, len(fixed))
    rng = check_rng(seed)
    inputs = list(fixed)
    while len(inputs) < cases:
        inputs.append(_random_word_ids(rng))
    tok = _minilm_tokenizer()
    real = []
    for words in SENTENCES:
        word_ids = list(tok.encode(words, is_pretokenized=True).word_ids)
        real.append((word_ids, [rng.randint(0, 12) for _ in words], words))
    for word_ids, labels, *words in [(w, lab) for w, lab in inputs] + real:
        expected = _ref_align_labels(word_ids, labels)
        shown = f"word_ids={word_ids}, word_labels={labels}"
        if words:
            shown += f" (MiniLM's pieces of {' '.join(words[0])!r})"
        args = (list(word_ids), list(labels))
        got = call_student(fn, name, shown, *args)
        _require_result(got, name, shown)
        try:
            got_list = [int(v) for v in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        except (TypeError, ValueError):
            raise _fail(
                name,
                f"expected a list of ints, got {_show(got)}",
                shown,
                "return one integer label per token",
            ) from None
        if len(got_list) != len(expected):
            raise _fail(
                name,
                f"{len(got_list)} labels for {len(word_ids)} tokens",
                shown,
                "return one label per token: as many labels as word_ids",
            )
        if got_list != expected:
            at = next(i for i, (a, b) in enumerate(zip(got_list, expected, strict=True)) if a != b)
            hint = (
                "the first piece of each word gets word_labels[word_id]; later pieces of the "
                "same word and special tokens (None) get -100"
            )
            for wrong, why in _align_variants(word_ids, labels):
                if got_list == wrong:
                    hint = why
                    break
            raise _fail(
                name,
                f"got {got_list}, expected {expected} (first difference at token {at})",
                shown,
                hint,
            )
        if args != (list(word_ids), list(labels)):
            raise _fail(name, "your function modified its arguments", shown, "build a new list")
    passed(
        name,
        f"{len(inputs)} random cases and {len(real)} MiniLM-tokenized sentences match "
        "llmkit.bert.align_labels",
    )

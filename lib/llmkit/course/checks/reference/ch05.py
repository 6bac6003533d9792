"""Reference answers and known slips for lab 05 (BERT). See the package docstring.

``mask_tokens`` is random, so its reference is not one draw but :class:`Masking`, a
description of BERT's recipe whose :meth:`Masking.differs` tells what a student's
``(inputs, labels)`` breaks; its slips are descriptions of wrong recipes whose
``differs`` is ``None`` when the student's masks follow them. The classifier's
reference and slips are classes built like the lab's ``SentenceClassifier``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100
#: Rates are accepted within this many binomial standard deviations of BERT's.
Z_TOLERANCE = 7.0
#: Rates are measured on inputs with at least this many tokens that can be selected.
MIN_TOKENS_FOR_RATES = 5000


# ----------------------------------------------------------------------- mask_tokens


def _at(where: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in where.nonzero()[0])


def _band(p: float, n: int) -> float:
    """Z_TOLERANCE standard deviations of a binomial proportion, plus a little slack."""
    return Z_TOLERANCE * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)) + 1e-3


class Masking:
    """BERT's masking recipe for one input: what ``mask_tokens`` must return.

    Called with ``mask_tokens``' arguments. :meth:`differs` checks the invariants on
    every input (specials and padding untouched, labels the original ids exactly where
    a token was selected, nothing changed elsewhere, ids in the vocabulary) and, on
    inputs with at least :data:`MIN_TOKENS_FOR_RATES` selectable tokens, the rates:
    ``mlm_probability`` selected, 80 % / 10 % / 10 % among them, random ids spread over
    the vocabulary, each within :data:`Z_TOLERANCE` standard deviations.
    """

    def __init__(
        self,
        input_ids,
        mask_token_id,
        vocab_size,
        special_ids,
        pad_token_id,
        mlm_probability=0.15,
        generator=None,
    ):  # noqa: ANN001 - the lab's signature
        self.ids = input_ids
        self.mask, self.vocab, self.p = mask_token_id, vocab_size, mlm_probability
        none = torch.zeros_like(input_ids, dtype=torch.bool)
        self.special = none.clone()
        for s in special_ids:
            self.special |= input_ids == s
        self.pad = input_ids == pad_token_id if pad_token_id is not None else none
        self.protected = self.special | self.pad
        self.n = int((~self.protected).sum())

    def __repr__(self) -> str:
        return (
            f"masks by BERT's recipe ({self.p:g} of the tokens that are neither special "
            "nor padding selected; of those 80 % [MASK], 10 % random, 10 % unchanged)"
        )

    # -- the student's answer, unpacked
    def _unpack(self, got: Any) -> tuple[torch.Tensor, torch.Tensor] | str:
        if not isinstance(got, tuple | list) or len(got) != 2:
            return f"expected a pair (inputs, labels), got {type(got).__name__}"
        out = []
        for what, t in zip(("inputs", "labels"), got, strict=True):
            if not isinstance(t, torch.Tensor):
                return f"{what} should be a tensor, not {type(t).__name__}"
            if tuple(t.shape) != tuple(self.ids.shape):
                return f"{what} has shape {tuple(t.shape)}, expected {tuple(self.ids.shape)}"
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                return f"{what} has dtype {t.dtype}; token ids are integers (torch.long)"
            out.append(t.detach().long().cpu())
        return out[0], out[1]

    def differs(self, got: Any) -> str | None:
        unpacked = self._unpack(got)
        if isinstance(unpacked, str):
            return unpacked
        return self._invariants(*unpacked) or self._rates(*unpacked)

    def _invariants(self, inputs: torch.Tensor, labels: torch.Tensor) -> str | None:
        ids = self.ids
        selected = labels != IGNORE_INDEX
        for where, kind in ((self.special, "a special token"), (self.pad, "padding")):
            bad = where & (selected | (inputs != ids))
            if bool(bad.any()):
                at = _at(bad)
                return (
                    f"{kind} at index {at} was selected or changed (input {int(inputs[at])}, "
                    f"label {int(labels[at])}): special tokens and padding are never selected"
                )
        bad = selected & (labels != ids)
        if bool(bad.any()):
            at = _at(bad)
            return (
                f"label {int(labels[at])} at index {at}, where the token was {int(ids[at])}: "
                "a selected position's label is its original id, every other label -100"
            )
        bad = ~selected & (inputs != ids)
        if bool(bad.any()):
            at = _at(bad)
            return (
                f"the token at index {at} changed from {int(ids[at])} to {int(inputs[at])} "
                "but its label is -100: only selected tokens change, and each gets a label"
            )
        bad = (inputs < 0) | (inputs >= self.vocab)
        if bool(bad.any()):
            at = _at(bad)
            return f"input id {int(inputs[at])} at index {at} is not in [0, {self.vocab})"
        return None

    def _shares(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        selected = labels != IGNORE_INDEX
        n_sel = max(int(selected.sum()), 1)
        masked = int((selected & (inputs == self.mask)).sum()) / n_sel
        same = int((selected & (inputs == self.ids) & (inputs != self.mask)).sum()) / n_sel
        return {
            "rate": int(selected.sum()) / max(self.n, 1),
            "mask": masked,
            "same": same,
            "random": 1.0 - masked - same,
            "n_sel": n_sel,
        }

    def _rates(self, inputs: torch.Tensor, labels: torch.Tensor) -> str | None:
        if self.n < MIN_TOKENS_FOR_RATES:
            return None
        s = self._shares(inputs, labels)
        if abs(s["rate"] - self.p) > _band(self.p, self.n):
            return (
                f"{s['rate']:.2%} of the {self.n:,} tokens that are neither special nor "
                f"padding have a label, expected {self.p:.0%} (mlm_probability)"
            )
        v = self.vocab
        # a random id can be [MASK] or the original token: a little more of those two
        want = {"mask": 0.8 + 0.1 / v, "random": 0.1 - 0.2 / v, "same": 0.1 + 0.1 / v}
        if any(abs(s[k] - want[k]) > _band(want[k], s["n_sel"]) for k in want):
            return (
                f"of the {s['n_sel']:,} selected tokens, {s['mask']:.1%} became [MASK], "
                f"{s['random']:.1%} a random token and {s['same']:.1%} stayed unchanged; "
                "expected about 80 %, 10 %, 10 %"
            )
        other = (labels != IGNORE_INDEX) & (inputs != self.mask) & (inputs != self.ids)
        k = int(other.sum())
        if k:
            mean = float(inputs[other].double().mean())
            centre, sd = (v - 1) / 2, v / math.sqrt(12 * k)
            if abs(mean - centre) > Z_TOLERANCE * sd + 2:
                return (
                    f"the random replacements average {mean:.1f}, expected about "
                    f"{centre:.1f} for ids drawn uniformly from [0, {v}): draw them with "
                    "torch.randint(vocab_size, ...)"
                )
        return None


class _MaskingSlip(Masking):
    """A wrong recipe: ``differs`` is None when the student's masks follow it."""

    def __repr__(self) -> str:
        return type(self).__doc__.strip().splitlines()[0]

    def differs(self, got: Any) -> str | None:
        unpacked = self._unpack(got)
        if isinstance(unpacked, str) or not self.shows(*unpacked):
            return "not this slip"
        return None

    def shows(self, inputs: torch.Tensor, labels: torch.Tensor) -> bool:
        raise NotImplementedError


class MaskingAlwaysMask(_MaskingSlip):
    """Every selected token becomes [MASK]."""

    def shows(self, inputs, labels):  # noqa: ANN001
        s = self._shares(inputs, labels)
        return self.n >= MIN_TOKENS_FOR_RATES and s["mask"] > 0.97


class MaskingLabelsEverywhere(_MaskingSlip):
    """Every token that is neither special nor padding gets a label."""

    def shows(self, inputs, labels):  # noqa: ANN001
        return torch.equal(labels, torch.where(self.protected, IGNORE_INDEX, self.ids))


class MaskingLabelsCorrupted(_MaskingSlip):
    """The label is the token the model sees ([MASK] or random), not the original one."""

    def shows(self, inputs, labels):  # noqa: ANN001
        selected = labels != IGNORE_INDEX
        return bool((selected & (inputs != self.ids)).any()) and torch.equal(
            labels[selected], inputs[selected]
        )


class MaskingFixedRate(_MaskingSlip):
    """15 % of the tokens selected whatever mlm_probability says."""

    def shows(self, inputs, labels):  # noqa: ANN001
        s = self._shares(inputs, labels)
        return (
            self.n >= MIN_TOKENS_FOR_RATES
            and abs(self.p - 0.15) > _band(0.15, self.n)
            and abs(s["rate"] - 0.15) <= _band(0.15, self.n)
        )


# ------------------------------------------------------------------------- mlm_loss


def _token_losses(logits: torch.Tensor, labels: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """-log p(label) at every position, with -100 read as token 0."""
    logp = torch.log_softmax(logits, dim=dim)
    return -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not -100."""
    keep = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits[keep], dim=-1)  # (n, V)
    return -logp.gather(-1, labels[keep].unsqueeze(-1)).mean()


def mlm_loss_all_positions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The masked positions' losses summed, then divided by all b * t positions."""
    keep = labels != IGNORE_INDEX
    return (_token_losses(logits, labels) * keep).sum() / keep.numel()


def mlm_loss_ignores_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-100 replaced by token 0 and kept: the mean over every position."""
    return _token_losses(logits, labels).mean()


def mlm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum over the masked positions instead of their mean."""
    keep = labels != IGNORE_INDEX
    return _token_losses(logits, labels)[keep].sum()


def mlm_loss_wrong_axis(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log_softmax over the positions (dim 1) instead of the vocabulary."""
    keep = labels != IGNORE_INDEX
    return _token_losses(logits, labels, dim=1)[keep].mean()


# ----------------------------------------------------------------- SentenceClassifier


class SentenceClassifier(nn.Module):
    """The lab's classifier: ``classifier(dropout(tanh(pooler(hidden[:, 0]))))``."""

    def __init__(self, encoder: nn.Module, n_labels: int):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.config.dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_labels)

    def hidden(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
        return self.encoder(input_ids, attention_mask, token_type_ids)

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.encoder.pooler(hidden[:, 0]))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # noqa: ANN001
        hidden = self.hidden(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.pooled(hidden)))


class ClassifierWithoutPooler(SentenceClassifier):
    """The [CLS] vector straight into the classifier."""

    def pooled(self, hidden):  # noqa: ANN001
        return hidden[:, 0]


class ClassifierMeanPooling(SentenceClassifier):
    """The average of all positions instead of [CLS]."""

    def pooled(self, hidden):  # noqa: ANN001
        return torch.tanh(self.encoder.pooler(hidden.mean(dim=1)))


class ClassifierWithoutMask(SentenceClassifier):
    """attention_mask not passed on: padding is attended to."""

    def hidden(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
        return self.encoder(input_ids, None, token_type_ids)


class ClassifierWithoutDropout(SentenceClassifier):
    """No dropout (right in evaluation mode only)."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # noqa: ANN001
        return self.classifier(self.pooled(self.hidden(input_ids, attention_mask, token_type_ids)))


# --------------------------------------------------------------------- align_labels


def align_every_piece(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Every piece of a word carries its label."""
    return [IGNORE_INDEX if w is None else word_labels[w] for w in word_ids]


def align_last_piece(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """The last piece of each word carries its label, not the first."""
    out = []
    for i, w in enumerate(word_ids):
        later = i + 1 < len(word_ids) and word_ids[i + 1] == w
        out.append(IGNORE_INDEX if w is None or later else word_labels[w])
    return out


def align_specials_zero(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Special tokens get label 0 instead of -100."""
    out, previous = [], None
    for w in word_ids:
        out.append(0 if w is None else IGNORE_INDEX if w == previous else word_labels[w])
        previous = w
    return out


def align_counting(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Labels taken in order, counting the words seen, instead of word_labels[word_id]."""
    out, previous, k = [], None, 0
    for w in word_ids:
        if w is None or w == previous:
            out.append(IGNORE_INDEX)
        else:
            out.append(word_labels[k] if k < len(word_labels) else IGNORE_INDEX)
            k += 1
        previous = w
    return out

"""Reward models learned from human preferences (chapter 10).

A reward model reads a conversation, the assistant's last answer included, and returns one
number: how much a person would like that answer. It is learned from *comparisons*: for
one prompt, a person saw two answers and chose one. The Bradley-Terry model (Bradley and
Terry, 1952) turns two rewards into the probability that the first is preferred,
``P(chosen > rejected) = sigmoid(r_chosen - r_rejected)``, and training maximises the
likelihood of the choices people made (Ziegler et al., 2019; Ouyang et al., 2022)::

    from llmkit import reward
    from llmkit.train import TrainConfig, train

    pairs = reward.load_pairs("helpful-base")          # {"train", "test"}: PreferencePair
    train_ex = reward.encode_pairs(pairs["train"], tokenizer, max_length=256)
    val_ex = reward.encode_pairs(pairs["test"], tokenizer, max_length=256)
    model = reward.RewardModel(encoder, pooling="cls")  # or (decoder, pooling="last")
    get_batch = reward.pair_batch_fn(train_ex, val_ex, batch_size=16, pad_id=0)
    train(model, TrainConfig(max_steps=300, lr=3e-5), get_batch, loss_fn=reward.pair_loss)
    reward.evaluate_pairs(model, val_ex, pad_id=0)     # accuracy and a bootstrap interval

**The model** (:class:`RewardModel`): a linear head ``d -> 1`` on one vector per sequence.
``pooling="cls"`` reads an encoder's ``[CLS]`` (a :class:`~llmkit.bert.BertModel`: its pooled
``tanh`` vector when it has a pooler, as :class:`~llmkit.bert.BertForSequenceClassification`
does, else the raw hidden state); ``pooling="last"`` reads a decoder's (:class:`~llmkit.gpt.GPT`,
:class:`~llmkit.llama.Llama`) final hidden state at the **last real token** of each row, the
only position that has read the whole conversation. The last real token is found from the
attention mask, so right padding, left padding (and any other) give the same reward as the
unpadded sequence: the decoders count positions over real tokens only (:mod:`llmkit.lm`).

**The loss and the metric.** :func:`bradley_terry_loss` is the mean of
``-log sigmoid(r_chosen - r_rejected)``, computed with ``logsigmoid`` (finite and exact at
margins of +-100, where ``log(sigmoid(x))`` underflows to ``log 0``); it depends on the
rewards' difference only, so a reward model's scale and offset are free.
:func:`pairwise_accuracy` is the share of pairs where the chosen answer gets the higher
reward, a tie counting one half (a constant reward scores 0.5, chance).

**The data** (:func:`preference_pair`, :func:`load_pairs`). Anthropic's HH-RLHF pairs (Bai et
al., 2022) are two whole transcripts, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, that
usually share every turn but the assistant's last answer. A :class:`PreferencePair` keeps the
shared prefix and the two endings; the model reads ``prefix + ending``, the whole
conversation, truncated on the left (:func:`encode_text`) so that the answer, which decides
the comparison, is always kept.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate
from llmkit.metrics import bootstrap_interval

__all__ = [
    "POOLINGS",
    "PADDINGS",
    "TURN_MARKERS",
    "RewardModel",
    "bradley_terry_loss",
    "pair_outcomes",
    "pairwise_accuracy",
    "split_turns",
    "PreferencePair",
    "preference_pair",
    "final_answer",
    "load_pairs",
    "LENGTH_UNITS",
    "answer_length",
    "length_outcomes",
    "EncodedPair",
    "encode_text",
    "encode_pairs",
    "pair_collate",
    "pair_batch_fn",
    "pair_loss",
    "score_pairs",
    "score_texts",
    "evaluate_pairs",
    "REWARD_BACKBONES",
    "HH_SUBSETS",
    "HH_REWARD_RECIPES",
    "hh_reward_recipe",
    "hh_reward_dir",
    "hh_reward_model",
]

POOLINGS = ("cls", "mean", "last")
PADDINGS = ("right", "left")
#: The markers that open a turn in an HH-RLHF transcript.
TURN_MARKERS = ("\n\nHuman:", "\n\nAssistant:")
_TURN = re.compile("(?=" + "|".join(re.escape(m) for m in TURN_MARKERS) + ")")
_ASSISTANT = TURN_MARKERS[1]


# ----------------------------------------------------------------------------- the model


def _check_inputs(ids: Any, attention_mask: Any) -> torch.Tensor:
    """Validate ``ids (b, t)`` and the mask; return the mask as bool ``(b, t)``."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"ids must have shape (batch, seq) with both > 0, got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integers, got dtype {ids.dtype}")
    if attention_mask is None:
        return torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(
            f"attention_mask must be a torch.Tensor or None, got {type(attention_mask).__name__}"
        )
    if attention_mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of ids {tuple(ids.shape)}, got "
            f"{tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool:
        if attention_mask.dtype.is_complex or not bool(
            ((attention_mask == 0) | (attention_mask == 1)).all()
        ):
            raise ValueError("attention_mask must be bool or hold only 0 and 1 (1 = real token)")
        attention_mask = attention_mask != 0
    empty = (~attention_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"attention_mask must have a real token in every row; rows {empty[:5]}")
    return attention_mask.to(ids.device)


def _is_encoder(backbone: nn.Module) -> bool:
    from llmkit.bert import BertModel

    return isinstance(backbone, BertModel)


class RewardModel(nn.Module):
    """A scalar reward on a transformer: ``(ids (b, t), mask (b, t)) -> rewards (b,)``.

    Args:
        backbone: a :class:`~llmkit.bert.BertModel` (``pooling="cls"``) or a decoder with
            ``hidden_states(ids, attention_mask=...)`` such as :class:`~llmkit.gpt.GPT` and
            :class:`~llmkit.llama.Llama` (``pooling="last"``). It is trained with the head
            (freeze its parameters to train the head only).
        pooling: ``"cls"``: the encoder's ``[CLS]`` vector (pooled when it has a pooler);
            rows must start with a real token (pad on the right). ``"mean"``: the mean of
            the encoder's final hidden states over the real tokens (how sentence encoders
            such as all-MiniLM-L6-v2 were trained to summarise a text); pad on the right,
            as an encoder's positions count from column 0. ``"last"``: the decoder's
            final hidden state at each row's last real token (any padding).
        dropout: dropout on the pooled vector before the head.

    The head ``nn.Linear(width, 1)`` starts with weights N(0, 0.02^2) and bias 0, so a fresh
    model gives every text a reward near 0.
    """

    def __init__(self, backbone: nn.Module, pooling: str, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        validate.one_of("pooling", pooling, POOLINGS)
        validate.probability("dropout", dropout)
        config = getattr(backbone, "config", None)
        if pooling in ("cls", "mean"):
            if not _is_encoder(backbone):
                raise TypeError(
                    f"pooling={pooling!r} needs an encoder (llmkit.bert.BertModel), got "
                    f"{type(backbone).__name__}; use pooling='last' for a decoder"
                )
            width = int(config.hidden_size)
        else:
            if _is_encoder(backbone) or not callable(getattr(backbone, "hidden_states", None)):
                raise TypeError(
                    "pooling='last' needs a decoder with hidden_states(ids, attention_mask=...) "
                    f"(llmkit.gpt.GPT, llmkit.llama.Llama), got {type(backbone).__name__}; "
                    "use pooling='cls' or 'mean' for an encoder"
                )
            width = int(config.d_model)
        self.backbone = backbone
        self.pooling = pooling
        self.config = config
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, 1)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pooled vector the head reads, ``(b, width)`` (arguments as :meth:`forward`)."""
        mask = _check_inputs(ids, attention_mask)
        if self.pooling == "mean":
            hidden = self.backbone(ids, mask.long())  # (b, t, width)
            weights = mask.to(hidden.dtype).unsqueeze(-1)  # (b, t, 1)
            return (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        if self.pooling == "cls":
            if not bool(mask[:, 0].all()):
                raise ValueError(
                    "pooling='cls' reads column 0, the [CLS] token: pad on the right "
                    "(every row of attention_mask must start with a real token)"
                )
            hidden = self.backbone(ids, mask.long())  # (b, t, width)
            if getattr(self.backbone, "pooler", None) is not None:
                return self.backbone.pool(hidden)  # (b, width)
            return hidden[:, 0]
        hidden = self.backbone.hidden_states(ids, attention_mask=mask)  # (b, t, width)
        positions = torch.arange(ids.shape[1], device=ids.device)
        last = (mask.long() * positions).argmax(dim=1)  # (b,) the last real column
        return hidden[torch.arange(ids.shape[0], device=ids.device), last]

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Rewards of a batch.

        Args:
            ids: ``(b, t)`` token ids (for ``"cls"``: starting with ``[CLS]``).
            attention_mask: ``(b, t)`` bool or 0/1, ``True``/1 = real token, at least one
                per row; ``None`` = all real.
        Returns:
            ``(b,)`` float rewards.
        """
        return self.head(self.dropout(self.features(ids, attention_mask))).squeeze(-1)


# ------------------------------------------------------------------------ loss and metric


def _check_rewards(r_chosen: Any, r_rejected: Any) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for name, r in (("r_chosen", r_chosen), ("r_rejected", r_rejected)):
        if not isinstance(r, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(r).__name__}")
        if not r.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {r.dtype}")
        out.append(r)
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"r_chosen and r_rejected must have the same shape, got {tuple(out[0].shape)} and "
            f"{tuple(out[1].shape)}"
        )
    if out[0].numel() == 0:
        raise ValueError("r_chosen and r_rejected must hold at least one pair")
    return out[0], out[1]


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """The Bradley-Terry loss: ``mean(-log sigmoid(r_chosen - r_rejected))``.

    ``ln 2`` when the rewards are equal; near 0 when the chosen answers win by a wide margin
    and near the margin itself when they lose by one (``-logsigmoid(x) ~ -x`` for ``x << 0``):
    finite at margins of +-100 and beyond, where ``log(sigmoid(x))`` gives ``inf``.

    Args:
        r_chosen, r_rejected: float tensors of the same shape (e.g. ``(b,)``), pair by pair.
    Returns:
        a scalar tensor (nats per pair), differentiable in both rewards.
    """
    r_chosen, r_rejected = _check_rewards(r_chosen, r_rejected)
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pair_outcomes(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: 1.0 where ``r_chosen > r_rejected``, 0.5 on a tie, 0.0 else (float32,
    the shape of the rewards; :func:`pairwise_accuracy` is their mean)."""
    r_chosen, r_rejected = _check_rewards(r_chosen, r_rejected)
    wins = (r_chosen > r_rejected).float()
    ties = (r_chosen == r_rejected).float()
    return wins + 0.5 * ties


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """The share of pairs where the chosen answer has the higher reward, ties counting 1/2.

    Args:
        r_chosen, r_rejected: float tensors of the same shape.
    Returns:
        a float in ``[0, 1]``; 0.5 for a constant reward.
    """
    return float(pair_outcomes(r_chosen, r_rejected).mean())


# ---------------------------------------------------------------------------- the data


def split_turns(text: str) -> list[str]:
    """A transcript cut before every turn marker (:data:`TURN_MARKERS`).

    Each piece but possibly the first starts with ``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"``
    and runs to the next marker; text before the first marker is a piece of its own; no piece
    is empty, and ``"".join(split_turns(text)) == text``.

    >>> split_turns("\\n\\nHuman: Hi\\n\\nAssistant: Hello")
    ['\\n\\nHuman: Hi', '\\n\\nAssistant: Hello']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [piece for piece in _TURN.split(text) if piece]


class PreferencePair(NamedTuple):
    """One comparison: ``prefix + chosen`` and ``prefix + rejected`` are the two transcripts.

    Attributes:
        prefix: the turns both transcripts share, ending at a turn boundary ("" if none).
        chosen: the rest of the preferred transcript (starts with a turn marker).
        rejected: the rest of the other one.
    """

    prefix: str
    chosen: str
    rejected: str

    @property
    def chosen_text(self) -> str:
        """The whole preferred transcript, ``prefix + chosen``."""
        return self.prefix + self.chosen

    @property
    def rejected_text(self) -> str:
        """The whole other transcript, ``prefix + rejected``."""
        return self.prefix + self.rejected

    @property
    def differs_in_last_answer(self) -> bool:
        """True when both endings are a single assistant turn: the transcripts share every
        turn but the assistant's last answer."""
        return all(
            e.startswith(_ASSISTANT) and len(split_turns(e)) == 1
            for e in (self.chosen, self.rejected)
        )


def preference_pair(chosen: str, rejected: str) -> PreferencePair:
    """Split two transcripts at their last shared turn boundary.

    Both are cut into turns (:func:`split_turns`). The prefix is the longest run of whole
    turns, from the start, that the two share, but never all the turns of either: each
    ending keeps at least its last turn. So

    * the usual pair (same conversation, two last answers): prefix = every turn before the
      last answer; each ending = ``"\\n\\nAssistant:"`` and its answer;
    * turns that differ earlier (a different human turn, or two assistant turns that differ
      before the last): the prefix stops before the first turn that differs, and the endings
      hold all the rest, several turns each;
    * identical transcripts: the prefix is all turns but the last, the endings are equal;
    * an empty answer (``"\\n\\nAssistant:"`` alone) is a turn like any other;
    * the split is never inside a turn, even where two answers begin with the same words.

    ``prefix + ending`` is always the transcript itself.

    Args:
        chosen: the preferred transcript.
        rejected: the other transcript.
    Returns:
        a :class:`PreferencePair` ``(prefix, chosen_ending, rejected_ending)``.
    """
    if not isinstance(chosen, str):
        raise TypeError(f"chosen must be a str, got {type(chosen).__name__}")
    if not isinstance(rejected, str):
        raise TypeError(f"rejected must be a str, got {type(rejected).__name__}")
    turns_c, turns_r = split_turns(chosen), split_turns(rejected)
    limit = max(0, min(len(turns_c), len(turns_r)) - 1)
    k = 0
    while k < limit and turns_c[k] == turns_r[k]:
        k += 1
    prefix = "".join(turns_c[:k])
    return PreferencePair(prefix, chosen[len(prefix) :], rejected[len(prefix) :])


def final_answer(text: str) -> str:
    """The content of the last assistant turn of a transcript, stripped of surrounding
    whitespace ("" when it is empty or the transcript has no assistant turn)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    k = text.rfind(_ASSISTANT)
    if k < 0:
        return ""
    return text[k + len(_ASSISTANT) :].split(TURN_MARKERS[0])[0].strip()


def load_pairs(subset: str = "helpful-base") -> dict[str, list[PreferencePair]]:
    """HH-RLHF preference pairs of one subset, split by :func:`llmkit.data.load_hh_rlhf`.

    Only the upstream **test** files are in the data mirror (the training files are too large
    for it), so the course trains and evaluates on those: ``llmkit.data`` splits each file
    90/10 in file order (deterministic), the first ``floor(0.9 n)`` pairs "train" and the rest
    "test": 2118 / 236 pairs (helpful-base), 2080 / 232 (harmless-base). Numbers measured on
    these 468 held-out pairs are not those of papers that train on the 160 k training pairs.

    Args:
        subset: ``"helpful-base"`` or ``"harmless-base"``.
    Returns:
        ``{"train": [...], "test": [...]}`` of :class:`PreferencePair` (file order).
    """
    from llmkit.data import load_hh_rlhf

    return {
        split: [preference_pair(r["chosen"], r["rejected"]) for r in records]
        for split, records in load_hh_rlhf(subset).items()
    }


LENGTH_UNITS = ("words", "chars")


def answer_length(text: str, unit: str = "words") -> int:
    """The length of a transcript's final answer (:func:`final_answer`): whitespace-separated
    words (``"words"``) or characters (``"chars"``)."""
    validate.one_of("unit", unit, LENGTH_UNITS)
    answer = final_answer(text)
    return len(answer.split()) if unit == "words" else len(answer)


def length_outcomes(pairs: Sequence[PreferencePair], unit: str = "words") -> torch.Tensor:
    """The length baseline, pair by pair: the longer final answer wins.

    Its "reward" is :func:`answer_length`; outcomes as :func:`pair_outcomes` (1 = the chosen
    answer is longer, 0.5 = the same length, 0 = shorter), so their mean is the baseline's
    pairwise accuracy.

    Args:
        pairs: :class:`PreferencePair` list.
        unit: ``"words"`` or ``"chars"``.
    Returns:
        ``(len(pairs),)`` float32.
    """
    pairs = _check_pairs("pairs", pairs)
    validate.one_of("unit", unit, LENGTH_UNITS)
    lengths = torch.tensor(
        [[answer_length(p.chosen_text, unit), answer_length(p.rejected_text, unit)] for p in pairs],
        dtype=torch.float32,
    )
    return pair_outcomes(lengths[:, 0], lengths[:, 1])


def _check_pairs(name: str, pairs: Any) -> list[PreferencePair]:
    if isinstance(pairs, PreferencePair) or not isinstance(pairs, Sequence) or not pairs:
        raise TypeError(f"{name} must be a non-empty list of PreferencePair")
    for k, p in enumerate(pairs):
        if not isinstance(p, PreferencePair):
            raise TypeError(f"{name}[{k}] must be a PreferencePair, got {type(p).__name__}")
    return list(pairs)


# ------------------------------------------------------------------------------ encoding


@dataclass(frozen=True)
class EncodedPair:
    """The token ids of one comparison's two conversations.

    Attributes:
        chosen, rejected: ids of ``prefix + ending`` (truncated on the left).
        chosen_cut, rejected_cut: how many ids truncation removed (0 if none).
    """

    chosen: list[int]
    rejected: list[int]
    chosen_cut: int = 0
    rejected_cut: int = 0

    def __post_init__(self) -> None:
        for name in ("chosen", "rejected"):
            if not getattr(self, name):
                raise ValueError(f"{name} must hold at least one id")


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have encode(text), got {type(tokenizer).__name__}")
    out = tokenizer.encode(text)
    ids = getattr(out, "ids", out)  # a tokenizers.Encoding, or a list of ids
    return [int(i) for i in ids]


def _starts_with_cls(tokenizer: Any, ids: list[int]) -> bool:
    token_to_id = getattr(tokenizer, "token_to_id", None)
    cls = token_to_id("[CLS]") if callable(token_to_id) else None
    return cls is not None and bool(ids) and ids[0] == cls


def encode_text(
    text: str,
    tokenizer: Any,
    max_length: int | None = None,
    *,
    keep_first: int | None = None,
    end_id: int | None = None,
) -> tuple[list[int], int]:
    """Token ids of a conversation, truncated **on the left** to ``max_length``.

    The end of a conversation (the answer being judged) matters most, so a long one loses
    its beginning: the first ``keep_first`` ids (a BERT tokenizer's ``[CLS]``) are kept, then
    the last ``max_length - keep_first`` ids (ending with ``[SEP]`` for BERT, with ``end_id``
    if given).

    Args:
        text: the conversation (e.g. ``pair.chosen_text``).
        tokenizer: ``encode(text)`` returning ids or a ``tokenizers.Encoding``.
        max_length: the most ids kept; ``None`` = no limit.
        keep_first: ids kept at the start; default 1 when the ids start with the tokenizer's
            ``[CLS]``, else 0.
        end_id: an id appended before truncating (e.g. ``<|endoftext|>`` for a decoder, so
            that the last token is the same marker in every conversation).
    Returns:
        ``(ids, cut)``: the ids and how many were removed.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    ids = _encode(tokenizer, text)
    if end_id is not None:
        ids.append(validate.integer("end_id", end_id, minimum=0))
    if keep_first is None:
        keep_first = 1 if _starts_with_cls(tokenizer, ids) else 0
    validate.integer("keep_first", keep_first, minimum=0)
    if max_length is None or len(ids) <= max_length:
        return ids, 0
    validate.integer("max_length", max_length, minimum=keep_first + 1)
    cut = len(ids) - max_length
    return ids[:keep_first] + ids[keep_first + cut :], cut


def encode_pairs(
    pairs: Sequence[PreferencePair],
    tokenizer: Any,
    max_length: int | None = None,
    *,
    keep_first: int | None = None,
    end_id: int | None = None,
) -> list[EncodedPair]:
    """:func:`encode_text` of both conversations of every pair (arguments as there)."""
    pairs = _check_pairs("pairs", pairs)
    if max_length is not None:
        validate.positive_int("max_length", max_length)
    out = []
    options = {"keep_first": keep_first, "end_id": end_id}
    for p in pairs:
        c, c_cut = encode_text(p.chosen_text, tokenizer, max_length, **options)
        r, r_cut = encode_text(p.rejected_text, tokenizer, max_length, **options)
        out.append(EncodedPair(c, r, c_cut, r_cut))
    return out


def _check_encoded(name: str, examples: Any) -> list[EncodedPair]:
    if isinstance(examples, EncodedPair) or not isinstance(examples, Sequence) or not examples:
        raise TypeError(f"{name} must be a non-empty list of EncodedPair")
    for k, ex in enumerate(examples):
        if not isinstance(ex, EncodedPair):
            raise TypeError(f"{name}[{k}] must be an EncodedPair, got {type(ex).__name__}")
    return list(examples)


def pair_collate(
    examples: Sequence[EncodedPair], pad_id: int, padding: str = "right"
) -> dict[str, torch.Tensor]:
    """A batch of comparisons: both sides padded to one common width.

    Args:
        examples: at least one :class:`EncodedPair`.
        pad_id: the id written into padding positions.
        padding: ``"right"`` (ids first; what ``pooling="cls"`` needs) or ``"left"``.
    Returns:
        ``{"chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}``, each ``(b, T)``
        (ids int64, masks bool, ``True`` = real token), ``T`` the longest of all ``2 b``
        sequences, so the two sides can be stacked into one forward pass.
    """
    examples = _check_encoded("examples", examples)
    validate.integer("pad_id", pad_id, minimum=0)
    validate.one_of("padding", padding, PADDINGS)
    width = max(max(len(ex.chosen), len(ex.rejected)) for ex in examples)
    out: dict[str, torch.Tensor] = {}
    for side in ("chosen", "rejected"):
        ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.bool)
        for b, ex in enumerate(examples):
            seq = getattr(ex, side)
            cols = slice(0, len(seq)) if padding == "right" else slice(width - len(seq), width)
            ids[b, cols] = torch.tensor(seq, dtype=torch.long)
            mask[b, cols] = True
        out[f"{side}_ids"], out[f"{side}_mask"] = ids, mask
    return out


def pair_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A ``loss_fn`` for :func:`llmkit.train.train`: the Bradley-Terry loss of a batch from
    :func:`pair_collate`, both sides scored in one forward pass ``model(ids, mask)``."""
    if not isinstance(batch, Mapping) or not {"chosen_ids", "rejected_ids"} <= set(batch):
        raise TypeError("batch must be a dict from pair_collate (chosen_ids, rejected_ids, ...)")
    b = batch["chosen_ids"].shape[0]
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    rewards = model(ids, mask).float()  # (2b,)
    return bradley_terry_loss(rewards[:b], rewards[b:])


def pair_batch_fn(
    train_examples: Sequence[EncodedPair],
    val_examples: Sequence[EncodedPair],
    batch_size: int,
    pad_id: int,
    padding: str = "right",
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """A ``get_batch(split, generator)`` for :func:`llmkit.train.train` over comparisons.

    Each call draws ``batch_size`` distinct pairs of the split with
    ``torch.randperm(n, generator=generator)`` and collates them (:func:`pair_collate`); a
    ``"val"`` call without a generator uses one seeded with 0, so runs are reproducible.
    """
    validate.positive_int("batch_size", batch_size)
    validate.integer("pad_id", pad_id, minimum=0)
    validate.one_of("padding", padding, PADDINGS)
    splits = {
        "train": _check_encoded("train_examples", train_examples),
        "val": _check_encoded("val_examples", val_examples),
    }
    for name, examples in splits.items():
        if batch_size > len(examples):
            raise ValueError(
                f"batch_size={batch_size} is more than the {len(examples)} pairs of {name!r}"
            )

    def get_batch(split: str, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        validate.one_of("split", split, ("train", "val"))
        if generator is None and split == "val":
            generator = torch.Generator().manual_seed(0)
        examples = splits[split]
        pick = torch.randperm(len(examples), generator=generator)[:batch_size].tolist()
        return pair_collate([examples[i] for i in pick], pad_id, padding)

    return get_batch


@torch.no_grad()
def score_pairs(
    model: nn.Module,
    examples: Sequence[EncodedPair],
    pad_id: int,
    *,
    batch_size: int = 32,
    padding: str = "right",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewards of every pair's two sides, in eval mode (the mode is restored after).

    Returns:
        ``(r_chosen, r_rejected)``, each ``(len(examples),)`` float32 on the CPU.
    """
    examples = _check_encoded("examples", examples)
    validate.positive_int("batch_size", batch_size)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for i in range(0, len(examples), batch_size):
            batch = pair_collate(examples[i : i + batch_size], pad_id, padding)
            batch = {k: v.to(device) for k, v in batch.items()}
            chosen.append(model(batch["chosen_ids"], batch["chosen_mask"]).float().cpu())
            rejected.append(model(batch["rejected_ids"], batch["rejected_mask"]).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def score_texts(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int | None,
    pad_id: int,
    *,
    batch_size: int = 32,
    padding: str = "right",
    keep_first: int | None = None,
    end_id: int | None = None,
) -> torch.Tensor:
    """The reward of each conversation in ``texts`` (eval mode; the mode is restored after).

    Each text is encoded as :func:`encode_text` does (truncated on the left to
    ``max_length``; ``keep_first`` and ``end_id`` as there), batches are padded by
    :func:`pair_collate` (``padding``), so a text gets the reward it gets inside a pair.

    Returns:
        ``(len(texts),)`` float32 on the CPU.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise TypeError("texts must be a non-empty list of str")
    validate.positive_int("batch_size", batch_size)
    ids = [
        encode_text(t, tokenizer, max_length, keep_first=keep_first, end_id=end_id)[0]
        for t in texts
    ]
    examples = [EncodedPair(x, x) for x in ids]
    rewards, _ = score_pairs(model, examples, pad_id, batch_size=batch_size, padding=padding)
    return rewards


def evaluate_pairs(
    model: nn.Module,
    examples: Sequence[EncodedPair],
    pad_id: int,
    *,
    batch_size: int = 32,
    padding: str = "right",
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Pairwise accuracy of a reward model, with a bootstrap interval.

    Returns:
        ``{"accuracy", "low", "high", "loss", "n"}``: :func:`pairwise_accuracy` over the
        pairs, the ``level`` percentile-bootstrap interval of it
        (:func:`llmkit.metrics.bootstrap_interval` of the per-pair outcomes), the mean
        Bradley-Terry loss and the number of pairs.
    """
    r_c, r_r = score_pairs(model, examples, pad_id, batch_size=batch_size, padding=padding)
    outcomes = pair_outcomes(r_c, r_r)
    low, high = bootstrap_interval(outcomes, n=n_bootstrap, seed=seed, level=level)
    return {
        "accuracy": float(outcomes.mean()),
        "low": low,
        "high": high,
        "loss": float(bradley_terry_loss(r_c, r_r)),
        "n": len(outcomes),
    }


# ------------------------------------------------------------ a trained, cached reward model

#: The backbones :func:`hh_reward_model` can train a reward model on, with their pooling:
#: chapter 05's offline MiniLM encoder (the mean over its tokens, as it was trained as a
#: sentence encoder), chapter 09's English GPT and SmolLM2-135M-Instruct (the last real
#: token).
REWARD_BACKBONES: dict[str, str] = {"minilm": "mean", "english_gpt": "last", "smollm2": "last"}
#: The two HH-RLHF subsets a reward model is trained and evaluated on.
HH_SUBSETS = ("helpful-base", "harmless-base")
_HH_FORMAT = "llmkit-hh-reward"
_HH_VERSION = 1
_HH_INFO = "hh_reward.json"


def _hh_train(max_steps: int, lr: float, warmup: int, every: int, iters: int) -> dict[str, Any]:
    return {
        "max_steps": max_steps,
        "lr": lr,
        "warmup_steps": warmup,
        "weight_decay": 0.01,
        "betas": [0.9, 0.999],
        "eval_interval": every,
        "eval_iters": iters,
    }


#: :func:`hh_reward_model`'s recipes, per profile and backbone. ``max_length``: the most
#: tokens of a conversation kept, from its end (:func:`encode_text`); ``train_pairs``,
#: ``test_pairs``: the first pairs of each subset's split used (``None``: all);
#: ``val_pairs``: pairs per subset taken from the *end* of its training split to watch
#: the validation loss (not trained on); ``batch_size``: pairs per step (each step scores
#: ``2 * batch_size`` conversations); ``train_backbone`` (default ``True``): ``False``
#: freezes the backbone and trains the head alone.
#:
#: Book, MiniLM: the encoder frozen, its head (385 parameters) trained for 300 steps of 16
#: pairs of at most 128 WordPiece tokens (4,800 pairs drawn from the 4,070 training pairs,
#: about 1.2 passes); forward passes only, about 1.2 M token positions: 379 s measured on
#: the idle 2-CPU machine (load average 1.5), 751 s at a load average of 4.3. Fine-tuning
#: the whole encoder affords only about 100 steps in that time, and there it memorised
#: its 1,600 pairs (held-out accuracy 53.3 % reading ``[CLS]`` at lr 5e-5, 51.6 % reading
#: the mean at 1e-4: chance). The ``full`` profile
#: fine-tunes the whole encoder over all the pairs several times at 256 tokens.
HH_REWARD_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "minilm": {
            "max_length": 32,
            "train_pairs": 32,
            "val_pairs": 4,
            "test_pairs": 12,
            "batch_size": 4,
            "train": _hh_train(3, 5e-5, 1, 3, 1),
            "seed": 0,
        },
        "english_gpt": {
            "max_length": 32,
            "train_pairs": 32,
            "val_pairs": 4,
            "test_pairs": 12,
            "batch_size": 4,
            "train": _hh_train(3, 3e-4, 1, 3, 1),
            "seed": 0,
        },
        "smollm2": {
            "max_length": 16,
            "train_pairs": 8,
            "val_pairs": 2,
            "test_pairs": 4,
            "batch_size": 2,
            "train": _hh_train(1, 1e-5, 0, 1, 1),
            "seed": 0,
        },
    },
    "book": {
        "minilm": {
            "max_length": 128,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 16,
            "train": _hh_train(300, 1e-3, 30, 75, 4),
            "train_backbone": False,
            "seed": 0,
        },
        "english_gpt": {
            "max_length": 64,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 32,
            "train": _hh_train(150, 3e-4, 15, 50, 4),
            "seed": 0,
        },
        "smollm2": {
            "max_length": 128,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 8,
            "train": _hh_train(100, 1e-5, 10, 25, 4),
            "seed": 0,
        },
    },
    "full": {
        "minilm": {
            "max_length": 256,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 32,
            "train": _hh_train(1000, 3e-5, 100, 100, 8),
            "seed": 0,
        },
        "english_gpt": {
            "max_length": 64,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 32,
            "train": _hh_train(1000, 3e-4, 100, 100, 8),
            "seed": 0,
        },
        "smollm2": {
            "max_length": 512,
            "train_pairs": None,
            "val_pairs": 64,
            "test_pairs": None,
            "batch_size": 16,
            "train": _hh_train(500, 1e-5, 50, 50, 8),
            "seed": 0,
        },
    },
}


def hh_reward_recipe(backbone: str = "minilm", profile: str | None = None) -> dict[str, Any]:
    """A copy of :func:`hh_reward_model`'s recipe for ``backbone`` and ``profile``."""
    from llmkit import cache

    validate.one_of("backbone", backbone, tuple(REWARD_BACKBONES))
    return copy.deepcopy(HH_REWARD_RECIPES[cache.profile_name(profile)][backbone])


@dataclass
class _Backbone:
    """A fresh backbone to fine-tune, how its tokenizer encodes a conversation, its identity."""

    module: nn.Module
    tokenizer: Any
    pad_id: int
    encode: dict[str, Any]  #: keyword arguments of :func:`encode_pairs`
    identity: dict[str, Any]  #: what the cache entry's hash covers


def _hh_backbone(
    name: str, profile: str, cache_dir: Any, progress: bool, *, identity_only: bool = False
) -> _Backbone | dict[str, Any]:
    """The backbone ``name`` (or, with ``identity_only``, just its identity, cheaply)."""
    from llmkit import data

    if name == "minilm":
        from llmkit.bert import MINILM_SHA256

        identity = {"minilm_sha256": MINILM_SHA256}
        if identity_only:
            return identity
        from llmkit.bert_tasks import encoder_for

        module, tokenizer = encoder_for("minilm")
        pad = tokenizer.token_to_id("[PAD]")
        return _Backbone(module, tokenizer, 0 if pad is None else int(pad), {}, identity)
    if name == "english_gpt":
        from llmkit import pretrained

        identity = {"english_gpt": pretrained.english_gpt_dir(profile, cache_dir=cache_dir).name}
        if identity_only:
            return identity
        module, tokenizer, _ = pretrained.english_gpt(
            profile, cache_dir=cache_dir, progress=progress, device="cpu"
        )
        end = int(tokenizer.special_tokens["<|endoftext|>"])
        return _Backbone(module, tokenizer, end, {"end_id": end, "keep_first": 0}, identity)
    from llmkit import pretrained

    identity = {"smollm2_sha256": data.entry(pretrained.SMOLLM2).sha256}
    if identity_only:
        return identity
    module, tokenizer, _ = pretrained.smollm2(device="cpu", dtype=torch.float32)
    end = int(tokenizer.special_tokens["<|endoftext|>"])
    return _Backbone(module, tokenizer, end, {"end_id": end, "keep_first": 0}, identity)


def _hh_fingerprint(backbone: str, profile: str, recipe: Mapping[str, Any], cache_dir: Any) -> str:
    from llmkit import cache, data

    identity = _hh_backbone(backbone, profile, cache_dir, False, identity_only=True)
    payload = {
        "format": _HH_FORMAT,
        "version": _HH_VERSION,
        "backbone": backbone,
        "pooling": REWARD_BACKBONES[backbone],
        "identity": identity,
        "files": {s: data.entry(f"hh-rlhf-{s}-test").sha256 for s in HH_SUBSETS},
        "recipe": recipe,
    }
    return cache.fingerprint(payload)


def hh_reward_dir(
    backbone: str = "minilm",
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The cache directory of :func:`hh_reward_model`'s entry (it may not exist yet)."""
    from llmkit import cache

    profile = cache.profile_name(profile)
    recipe = hh_reward_recipe(backbone, profile)
    digest = _hh_fingerprint(backbone, profile, recipe, cache_dir)
    return cache.entry_path(f"hh_reward_{backbone}", profile, digest, cache_dir)


def _hh_splits(recipe: Mapping[str, Any]) -> dict[str, dict[str, list[PreferencePair]]]:
    """``{subset: {"train", "val", "test"}}``: the val pairs are the end of the train split."""
    out = {}
    n_val, n_train, n_test = recipe["val_pairs"], recipe["train_pairs"], recipe["test_pairs"]
    for subset in HH_SUBSETS:
        pairs = load_pairs(subset)
        train_part, val = pairs["train"][:-n_val], pairs["train"][-n_val:]
        out[subset] = {
            "train": train_part if n_train is None else train_part[:n_train],
            "val": val,
            "test": pairs["test"] if n_test is None else pairs["test"][:n_test],
        }
    return out


def _truncated_share(examples: Sequence[EncodedPair]) -> float:
    cut = sum((ex.chosen_cut > 0) + (ex.rejected_cut > 0) for ex in examples)
    return cut / (2 * len(examples))


def hh_reward_model(
    backbone: str = "minilm",
    profile: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> tuple[RewardModel, Any, dict[str, Any]]:
    """A reward model trained on HH-RLHF's helpful and harmless pairs; trained on first use
    and cached (chapter 10).

    First use: the backbone (:data:`REWARD_BACKBONES`: ``"minilm"``, the offline
    all-MiniLM-L6-v2 of :func:`llmkit.bert_tasks.encoder_for`; ``"english_gpt"``, the cached
    model of :func:`llmkit.pretrained.english_gpt` for ``profile``; ``"smollm2"``,
    :func:`llmkit.pretrained.smollm2`) gets a :class:`RewardModel` head and is fine-tuned
    whole with the Bradley-Terry loss (:func:`pair_loss`) by :func:`llmkit.train.train`,
    following :data:`HH_REWARD_RECIPES` ``[profile][backbone]``: both subsets' training
    pairs (:func:`load_pairs`; the last ``val_pairs`` of each held out for the validation
    loss), each conversation truncated on the left to ``max_length`` tokens
    (:func:`encode_pairs`; a decoder's conversations end with ``<|endoftext|>``). Then
    every held-out test pair of both subsets is scored. The weights and a JSON record go to
    ``<cache>/models/hh_reward_<backbone>-<profile>-<hash>/`` (the hash covers the recipe,
    the backbone's identity and the data files' SHA-256); later calls load them.

    Args:
        backbone: ``"minilm"``, ``"english_gpt"`` or ``"smollm2"``.
        profile: ``"smoke"``, ``"book"``, ``"full"`` or ``None`` (the current profile).
        cache_dir: the cache root (default ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``).
        progress: print a line per evaluation while training.
        device: where to train and return the model (``"auto"``: CUDA, MPS, CPU).
    Returns:
        ``(model, tokenizer, info)``: the :class:`RewardModel` in eval mode, the backbone's
        tokenizer, and ``info`` with ``backbone``, ``pooling``, ``pad_id``, ``encode``
        (the keyword arguments of :func:`encode_pairs` for this backbone), ``max_length``,
        ``test`` (per subset and ``"pooled"``: ``accuracy``, ``low``, ``high`` (95 %
        bootstrap interval), ``loss``, ``n``), ``test_scores`` (per subset: the rewards
        ``chosen`` and ``rejected`` of each test pair, in file order), ``truncated`` (the
        share of training conversations cut, per subset), ``n_train``, ``n_val``,
        ``history``, ``train_seconds``, ``eval_seconds``, ``load_average``, ``hardware``,
        ``n_parameters``, ``n_trained`` (those the recipe trains), ``recipe``, ``hash``,
        ``path`` and ``cached``.
    """
    from llmkit import cache
    from llmkit.device import select_device

    validate.one_of("backbone", backbone, tuple(REWARD_BACKBONES))
    profile = cache.profile_name(profile)
    validate.boolean("progress", progress)
    target = select_device(device)
    recipe = hh_reward_recipe(backbone, profile)
    digest = _hh_fingerprint(backbone, profile, recipe, cache_dir)
    final = cache.entry_path(f"hh_reward_{backbone}", profile, digest, cache_dir)
    what = f"{profile} {backbone} reward model"

    def build() -> tuple[RewardModel, _Backbone]:
        bb = _hh_backbone(backbone, profile, cache_dir, progress)
        assert isinstance(bb, _Backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(recipe["seed"]))
            model = RewardModel(bb.module, REWARD_BACKBONES[backbone])
        if not recipe.get("train_backbone", True):
            for p in model.backbone.parameters():
                p.requires_grad_(False)
        return model, bb

    def load(path: Path) -> tuple[RewardModel, Any, dict[str, Any]]:
        from llmkit.checkpoint import load_checkpoint
        from llmkit.train import History

        meta = json.loads((path / _HH_INFO).read_text())
        if meta.get("format") != _HH_FORMAT or meta.get("hash") != digest:
            raise ValueError(f"{_HH_INFO} does not describe this recipe")
        if cache.sha256_file(path / "model.safetensors") != meta["model_sha256"]:
            raise ValueError("model.safetensors does not match its recorded SHA-256")
        model, bb = build()
        ckpt = load_checkpoint(path, model)
        meta.setdefault("n_trained", sum(p.numel() for p in model.parameters() if p.requires_grad))
        meta["history"] = History.from_dict(ckpt.history) if ckpt.history else None
        meta["cached"] = True
        meta["path"] = str(path)
        cache.log(progress, f"loaded the {what} from {cache.show_path(path)}")
        return model.to(target).eval(), bb.tokenizer, meta

    def train_now() -> tuple[RewardModel, Any, dict[str, Any]]:
        model, bb = build()
        return _train_hh_reward(
            model, bb, backbone, profile, recipe, digest, final, target, progress
        )

    return cache.load_or_train(final, load, train_now, what)


def _train_hh_reward(
    model: RewardModel,
    bb: _Backbone,
    backbone: str,
    profile: str,
    recipe: Mapping[str, Any],
    digest: str,
    final: Path,
    target: torch.device,
    progress: bool,
) -> tuple[RewardModel, Any, dict[str, Any]]:
    """Train :func:`hh_reward_model`'s model, cache it in ``final``, return what it returns."""
    from llmkit import cache
    from llmkit.checkpoint import save_checkpoint
    from llmkit.train import History, TrainConfig, train

    began = time.perf_counter()
    splits = _hh_splits(recipe)
    max_length = int(recipe["max_length"])
    enc = {
        s: {
            part: encode_pairs(pairs, bb.tokenizer, max_length, **bb.encode)
            for part, pairs in parts.items()
        }
        for s, parts in splits.items()
    }
    train_ex = [ex for s in HH_SUBSETS for ex in enc[s]["train"]]
    val_ex = [ex for s in HH_SUBSETS for ex in enc[s]["val"]]
    seed = int(recipe["seed"])
    config = TrainConfig(**recipe["train"], seed=seed, device=str(target), progress=False)
    batch_size = int(recipe["batch_size"])
    get_batch = pair_batch_fn(train_ex, val_ex, batch_size, bb.pad_id)
    g = torch.Generator().manual_seed(seed + 1)  # fixed validation batches
    eval_batches = [get_batch("val", g) for _ in range(max(1, config.eval_iters))]
    n_params = sum(p.numel() for p in model.parameters())
    steps = config.max_steps
    cache.log(
        progress,
        f"training the {profile} {backbone} reward model ({n_params:,} parameters, "
        f"{steps} steps of {batch_size} pairs, at most {max_length} tokens) on "
        f"{cache.describe_hardware(target)}; it will be cached in {cache.show_path(final)}",
    )
    printed = 0
    loads: list[float] = []
    every = max(1, steps // 50)

    def report(step: int, history: History) -> None:
        nonlocal printed
        if step % every == 0 and hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])
        while printed < len(history.val_steps):
            i = printed
            cache.log(
                progress,
                f"step {history.val_steps[i]:>5}/{steps}  val loss {history.val_loss[i]:.4f}"
                f"  {history.val_seconds[i]:6.1f} s",
            )
            printed += 1

    prepare_seconds = time.perf_counter() - began
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        history = train(
            model,
            config,
            get_batch,
            loss_fn=pair_loss,
            eval_batches=eval_batches,
            callback=report,
            model_config={"backbone": backbone, "pooling": model.pooling},
        )
    report(steps, history)
    model.eval()
    t0 = time.perf_counter()
    test: dict[str, dict[str, float]] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    outcomes = []
    for s in HH_SUBSETS:
        r_c, r_r = score_pairs(model, enc[s]["test"], bb.pad_id)
        out = pair_outcomes(r_c, r_r)
        outcomes.append(out)
        test[s] = _summary(out, r_c, r_r)
        scores[s] = {"chosen": r_c.tolist(), "rejected": r_r.tolist()}
    pooled = torch.cat(outcomes)
    all_c = torch.tensor([x for s in HH_SUBSETS for x in scores[s]["chosen"]])
    all_r = torch.tensor([x for s in HH_SUBSETS for x in scores[s]["rejected"]])
    test["pooled"] = _summary(pooled, all_c, all_r)
    eval_seconds = time.perf_counter() - t0
    partial = final.parent / f"{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    save_checkpoint(
        partial,
        model,
        config,
        step=steps,
        history=history,
        model_config={"backbone": backbone, "pooling": model.pooling},
    )
    meta: dict[str, Any] = {
        "format": _HH_FORMAT,
        "version": _HH_VERSION,
        "profile": profile,
        "backbone": backbone,
        "pooling": model.pooling,
        "hash": digest,
        "recipe": dict(recipe),
        "max_length": max_length,
        "pad_id": bb.pad_id,
        "encode": dict(bb.encode),
        "n_train": len(train_ex),
        "n_val": len(val_ex),
        "truncated": {s: _truncated_share(enc[s]["train"]) for s in HH_SUBSETS},
        "test": test,
        "test_scores": scores,
        "steps": history.steps[-1] if history.steps else 0,
        "val_loss": history.val_loss[-1] if history.val_loss else None,
        "prepare_seconds": prepare_seconds,
        "train_seconds": history.seconds[-1] if history.seconds else 0.0,
        "eval_seconds": eval_seconds,
        "load_average": round(sum(loads) / len(loads), 2) if loads else None,
        "hardware": cache.describe_hardware(target),
        "cpu_count": os.cpu_count(),
        "device": str(target),
        "torch_version": torch.__version__,
        "n_parameters": n_params,
        "n_trained": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "backbone_identity": bb.identity,
        "model_sha256": cache.sha256_file(partial / "model.safetensors"),
    }
    (partial / _HH_INFO).write_text(json.dumps(meta, indent=1))
    cache.publish(partial, final)
    cache.log(
        progress,
        f"held-out pairwise accuracy {test['pooled']['accuracy']:.3f} "
        f"({test['pooled']['n']} pairs); trained in {meta['train_seconds']:.0f} s",
    )
    meta["history"] = history
    meta["cached"] = False
    meta["path"] = str(final)
    return model, bb.tokenizer, meta


def _summary(outcomes: torch.Tensor, r_c: torch.Tensor, r_r: torch.Tensor) -> dict[str, float]:
    low, high = bootstrap_interval(outcomes, n=1000, seed=0, level=0.95)
    return {
        "accuracy": float(outcomes.mean()),
        "low": low,
        "high": high,
        "loss": float(bradley_terry_loss(r_c, r_r)),
        "n": len(outcomes),
    }

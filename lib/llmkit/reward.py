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

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    "evaluate_pairs",
]

POOLINGS = ("cls", "last")
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
            rows must start with a real token (pad on the right). ``"last"``: the decoder's
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
        if pooling == "cls":
            if not _is_encoder(backbone):
                raise TypeError(
                    "pooling='cls' needs an encoder (llmkit.bert.BertModel), got "
                    f"{type(backbone).__name__}; use pooling='last' for a decoder"
                )
            width = int(config.hidden_size)
        else:
            if _is_encoder(backbone) or not callable(getattr(backbone, "hidden_states", None)):
                raise TypeError(
                    "pooling='last' needs a decoder with hidden_states(ids, attention_mask=...) "
                    f"(llmkit.gpt.GPT, llmkit.llama.Llama), got {type(backbone).__name__}; "
                    "use pooling='cls' for an encoder"
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

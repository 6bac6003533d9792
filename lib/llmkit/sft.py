"""Supervised fine-tuning data: conversations to token ids, labels and batches (chapter 09).

Supervised fine-tuning (SFT) trains a pretrained language model on demonstrations: whole
conversations, written in a chat template (:func:`llmkit.chat.render`), with the loss on the
assistant's tokens only. The user's and the system's tokens are read as context but are not
targets: the model is not taught to write the user's questions.

Quick start::

    from llmkit import sft
    from llmkit.train import TrainConfig, train

    messages = sft.instruction_messages(example)    # [{"role": "user", ...}, {"role": ...}]
    ex = sft.encode_conversation(messages, tokenizer, template="notes", max_length=257)
    ex.ids, ex.labels                                # labels[i] == ids[i] on targets, else -100
    get_batch = sft.sft_batch_fn(train_examples, val_examples, batch_size=16, pad_id=0)
    history = train(model, TrainConfig(max_steps=500, lr=1e-4), get_batch)

**Targets.** A token is a target (``labels[i] == ids[i]``, else :data:`IGNORE_INDEX`) when it
belongs to what the assistant must write:

* the content of every assistant message;
* the markup that closes it: ``<|im_end|>`` in ChatML (not the newline after it, which
  follows the end of the turn); the closing newline in the notes' template;
* the end-of-turn token, which teaches the model to stop. ChatML: ``<|im_end|>`` itself.
  Notes' template: ``<|endoftext|>`` (the tokenizer's special token, else its
  ``eos_token_id``), appended to the ids when the conversation ends with the assistant's
  message; the tokens of the next ``<user>`` when a user message follows (one token where
  ``<user>`` is a special token). When a system or another assistant message follows, the
  notes' template has no end-of-turn marker and nothing more is a target.

Never the assistant's header (``<|im_start|>assistant\\n``, ``<assistant>\\n``): at
inference the prompt supplies it (``add_generation_prompt=True``).

**How the ids relate to** ``tokenizer.encode(text)``. The rendered text is cut into
segments wherever the target flag changes (e.g. after ``<assistant>\\n``, before and after
``<|im_end|>``); each segment is encoded on its own with ``tokenizer.encode(segment)`` and the
ids are concatenated, plus the appended ``<|endoftext|>`` above. So

* the labels are exact: the target tokens decode to exactly the target text (no token
  straddles a boundary between a target and a non-target character);
* ``tokenizer.decode(ids) == text`` (``+ "<|endoftext|>"`` where it was appended);
* ``ids == tokenizer.encode(text)`` (plus the appended id) whenever no pre-tokenisation chunk
  of the whole text crosses a segment boundary. A boundary next to a special token is never
  crossed (special tokens split the text first); the one after the header's newline is
  crossed when the assistant's content starts with whitespace, which GPT-2-style patterns
  would join to that newline in the whole text. Cut there, the prompt's tokens end exactly
  as ``render(..., add_generation_prompt=True)`` encodes them at inference.

Special-token texts inside a message (a user typing ``<|im_end|>``) are read as those special
tokens, as ``tokenizer.encode(text)`` reads them.

**Lengths.** ``max_length`` counts ids. :func:`pad_collate` shifts by one (``x = ids[:-1]``,
``y = labels[1:]``), so a model with a context of ``n`` tokens takes ``max_length = n + 1``.
A longer conversation is truncated as ``truncation`` says (:data:`TRUNCATIONS`):

* ``"right"``: keep the first ``max_length`` ids and the first ``max_length`` labels, cut at
  the same place (never misaligned); the example may lose its end-of-turn token, or all its
  targets (:func:`sft_batch_fn` refuses an example without targets);
* ``"drop"`` (:func:`encode_conversations` only): leave the conversation out;
* ``"error"``: raise a ``ValueError``.

**Batches.** :func:`pad_collate` pads on the right (``x`` with ``pad_id``, ``y`` with -100);
:func:`pack_examples` concatenates several examples per row instead. With
:func:`llmkit.train.cross_entropy_loss` the loss of a batch is the mean over its target
tokens (every target token weighs the same, whatever its example's length).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate
from llmkit.chat import CHATML_DEFAULT_SYSTEM, TEMPLATES, render

__all__ = [
    "IGNORE_INDEX",
    "TRUNCATIONS",
    "SFTExample",
    "instruction_messages",
    "target_segments",
    "encode_conversation",
    "encode_conversations",
    "pad_collate",
    "pack_examples",
    "sft_batch_fn",
    "sequential_batches",
    "target_loss",
]

IGNORE_INDEX = -100
"""The label of a token that is not a target (``F.cross_entropy``'s ``ignore_index``)."""

TRUNCATIONS = ("right", "drop", "error")

_EOT_TEXT = "<|endoftext|>"
_NOTES_EOT_NEXT = "<user>"


@dataclass(frozen=True)
class SFTExample:
    """One tokenized conversation.

    Attributes:
        ids: ``(n,)`` token ids.
        labels: ``(n,)``, aligned with ``ids``: ``labels[i] == ids[i]`` where token ``i`` is a
            target, else :data:`IGNORE_INDEX`. Not yet shifted (:func:`pad_collate` shifts).
        truncated: how many ids were cut off by ``truncation="right"`` (0 if none).
    """

    ids: list[int]
    labels: list[int]
    truncated: int = 0

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels):
            raise ValueError(
                f"ids and labels must have the same length, got {len(self.ids)} and "
                f"{len(self.labels)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        """Number of target tokens that a model predicts (``labels[1:]``: the first token
        has no context and is never a target)."""
        return sum(1 for v in self.labels[1:] if v != IGNORE_INDEX)


def instruction_messages(example: Mapping[str, str]) -> list[dict[str, str]]:
    """An ``{"instruction", "input", "output"}`` example as a conversation.

    The user's message is the instruction, followed by a blank line and the input when the
    input is not empty; the assistant's message is the output.

    >>> instruction_messages({"instruction": "Add.", "input": "2 + 2", "output": "4"})
    [{'role': 'user', 'content': 'Add.\\n\\n2 + 2'}, {'role': 'assistant', 'content': '4'}]
    """
    if not isinstance(example, Mapping):
        raise TypeError(f"example must be a dict, got {type(example).__name__}")
    for key in ("instruction", "output"):
        if not isinstance(example.get(key), str):
            raise ValueError(f"example must have a str {key!r}, got {example.get(key)!r}")
    extra = example.get("input", "") or ""
    if not isinstance(extra, str):
        raise TypeError(f"example['input'] must be a str, got {type(extra).__name__}")
    user = example["instruction"] + (f"\n\n{extra}" if extra else "")
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": example["output"]},
    ]


def _end_of_text_id(tokenizer: Any) -> int:
    specials: Mapping[str, int] = getattr(tokenizer, "special_tokens", {}) or {}
    if _EOT_TEXT in specials:
        return int(specials[_EOT_TEXT])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(
            "the notes template ends a conversation's last assistant turn with <|endoftext|>: "
            "the tokenizer needs it as a special token or an eos_token_id"
        )
    return int(eos)


def target_segments(
    messages: Sequence[Mapping[str, Any]],
    template: str = "notes",
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> tuple[list[tuple[str, bool]], bool]:
    """The rendered conversation cut where the target flag changes (see the module docstring).

    Args:
        messages: ``[{"role", "content"}, ...]`` as for :func:`llmkit.chat.render`.
        template: one of :data:`llmkit.chat.TEMPLATES`.
        default_system: ChatML's default system message (see :func:`llmkit.chat.render`).
    Returns:
        ``(segments, append_eot)``: ``segments`` is ``[(text, is_target), ...]`` whose texts
        join to ``render(messages, template).text``, neighbours with different flags;
        ``append_eot`` is True when ``<|endoftext|>`` must follow as a target (notes' template,
        conversation ending with the assistant's message).
    """
    rendered = render(messages, template, default_system=default_system)
    text, msgs = rendered.text, rendered.messages
    flags = [False] * len(text)
    for k, (m, (_, end), (c0, _)) in enumerate(
        zip(msgs, rendered.spans, rendered.content_spans, strict=True)
    ):
        if m["role"] != "assistant":
            continue
        if template == "chatml":
            stop = end - 1  # content + "<|im_end|>", not the newline after it
        else:
            stop = end  # content + the closing newline
            if k + 1 < len(msgs) and msgs[k + 1]["role"] == "user":
                stop += len(_NOTES_EOT_NEXT)  # the next "<user>" ends the turn
        flags[c0:stop] = [True] * (stop - c0)
    segments: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or flags[i] != flags[start]:
            segments.append((text[start:i], flags[start]))
            start = i
    append_eot = template == "notes" and bool(msgs) and msgs[-1]["role"] == "assistant"
    return segments, append_eot


def _check_truncation(truncation: str, max_length: int | None, allowed: Sequence[str]) -> None:
    validate.one_of("truncation", truncation, allowed)
    if max_length is not None:
        validate.integer("max_length", max_length, minimum=2)


def encode_conversation(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    template: str = "notes",
    max_length: int | None = None,
    truncation: str = "right",
    *,
    mask_prompt: bool = True,
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> SFTExample:
    """Token ids and labels of one conversation (see the module docstring for the exact rule).

    Args:
        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
        tokenizer: has ``encode(text) -> list[int]`` (special tokens recognised) and, for the
            notes' template, ``special_tokens`` with ``<|endoftext|>`` or an ``eos_token_id``.
        template: ``"notes"`` or ``"chatml"``.
        max_length: the most ids kept (at least 2); ``None`` = no limit.
        truncation: ``"right"`` or ``"error"`` when the ids are longer than ``max_length``
            (``"drop"`` is for :func:`encode_conversations`).
        mask_prompt: ``False`` makes every token a target (``labels == ids``): training on
            the whole text, prompts included, as plain language modelling does.
        default_system: ChatML's default system message (``None`` for none).
    Returns:
        an :class:`SFTExample`.
    """
    validate.one_of("template", template, TEMPLATES)
    validate.boolean("mask_prompt", mask_prompt)
    if truncation == "drop":
        raise ValueError(
            "truncation='drop' leaves examples out of a list: use encode_conversations(); "
            "encode_conversation takes 'right' or 'error'"
        )
    _check_truncation(truncation, max_length, ("right", "error"))
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have encode(text), got {type(tokenizer).__name__}")
    segments, append_eot = target_segments(messages, template, default_system)
    ids: list[int] = []
    labels: list[int] = []
    for text, is_target in segments:
        piece = [int(i) for i in tokenizer.encode(text)]
        ids += piece
        labels += piece if is_target or not mask_prompt else [IGNORE_INDEX] * len(piece)
    if append_eot:
        eot = _end_of_text_id(tokenizer)
        ids.append(eot)
        labels.append(eot)
    cut = 0
    if max_length is not None and len(ids) > max_length:
        if truncation == "error":
            raise ValueError(
                f"the conversation has {len(ids)} tokens, more than max_length={max_length} "
                "(truncation='error')"
            )
        cut = len(ids) - max_length
        ids, labels = ids[:max_length], labels[:max_length]
    return SFTExample(ids, labels, cut)


def encode_conversations(
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    tokenizer: Any,
    template: str = "notes",
    max_length: int | None = None,
    truncation: str = "right",
    *,
    mask_prompt: bool = True,
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> list[SFTExample]:
    """:func:`encode_conversation` over a list; ``truncation="drop"`` leaves out every
    conversation longer than ``max_length`` (so the result may be shorter than the input;
    compare the lengths to count the dropped ones)."""
    _check_truncation(truncation, max_length, TRUNCATIONS)
    if isinstance(conversations, (str, Mapping)):
        raise TypeError("conversations must be a list of conversations (lists of messages)")
    out = []
    for messages in conversations:
        ex = encode_conversation(
            messages,
            tokenizer,
            template,
            None if truncation == "drop" else max_length,
            "right" if truncation == "drop" else truncation,
            mask_prompt=mask_prompt,
            default_system=default_system,
        )
        if truncation == "drop" and max_length is not None and len(ex) > max_length:
            continue
        out.append(ex)
    return out


def _check_examples(name: str, examples: Any) -> list[SFTExample]:
    if isinstance(examples, SFTExample) or not isinstance(examples, Sequence):
        raise TypeError(f"{name} must be a list of SFTExample, got {type(examples).__name__}")
    if not examples:
        raise ValueError(f"{name} must hold at least one example")
    for k, ex in enumerate(examples):
        if not isinstance(ex, SFTExample):
            raise TypeError(f"{name}[{k}] must be an SFTExample, got {type(ex).__name__}")
        if len(ex) < 2:
            raise ValueError(
                f"{name}[{k}] has {len(ex)} token(s): a training example needs at least 2 "
                "(an input and a next token)"
            )
    return list(examples)


def pad_collate(
    examples: Sequence[SFTExample], pad_id: int, pad_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack examples into one batch, shifted for next-token prediction, padded on the right.

    Row ``b`` holds example ``b``: ``x[b, :n-1] = ids[:-1]`` and ``y[b, :n-1] = labels[1:]``
    (``y[b, t]`` is the label of the token that follows ``x[b, t]``); the rest of the row
    is ``pad_id`` in ``x`` and -100 in ``y``, so padding is never a target. With a causal
    model, right padding does not change the logits of the real tokens.

    Args:
        examples: at least one :class:`SFTExample` of at least 2 ids.
        pad_id: the id written into ``x`` after each example's end (any valid id).
        pad_to: the width of the batch; default: the longest example's length - 1.
    Returns:
        ``x: (b, T)`` and ``y: (b, T)``, int64, ``T = max(len(ids)) - 1`` or ``pad_to``.
    """
    examples = _check_examples("examples", examples)
    validate.integer("pad_id", pad_id, minimum=0)
    width = max(len(ex) for ex in examples) - 1
    if pad_to is not None:
        validate.positive_int("pad_to", pad_to)
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({width})")
        width = pad_to
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for b, ex in enumerate(examples):
        n = len(ex) - 1
        x[b, :n] = torch.tensor(ex.ids[:-1], dtype=torch.long)
        y[b, :n] = torch.tensor(ex.labels[1:], dtype=torch.long)
    return x, y


def pack_examples(
    examples: Sequence[SFTExample], length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack examples end to end into rows of ``length`` positions (fewer padding tokens).

    Each example contributes its shifted pair ``(ids[:-1], labels[1:])`` of ``len - 1``
    positions, exactly as in :func:`pad_collate`; examples are placed in order, a new row
    starting when the next one does not fit; the end of a row is padded (``pad_id`` / -100).
    The labels never mix examples: the shift is made inside each example, so the last token
    of an example is not asked to predict the first of the next.

    Attention does cross example boundaries: a causal model reads the earlier examples of
    its row as context (there is no block-diagonal mask), and the positions of an example
    are counted from the start of its row. What the model learns to predict is unchanged;
    what it reads before an example is not: an unrelated conversation, where
    :func:`pad_collate` has nothing.

    Args:
        examples: :class:`SFTExample` of at most ``length + 1`` ids each.
        length: positions per row.
        pad_id: the id of padding positions in ``x``.
    Returns:
        ``x: (rows, length)`` and ``y: (rows, length)``, int64.
    """
    examples = _check_examples("examples", examples)
    validate.positive_int("length", length)
    validate.integer("pad_id", pad_id, minimum=0)
    rows: list[tuple[list[int], list[int]]] = []
    for k, ex in enumerate(examples):
        n = len(ex) - 1
        if n > length:
            raise ValueError(
                f"examples[{k}] has {len(ex)} ids, more than length + 1 = {length + 1}; "
                "truncate it first (encode_conversation's max_length)"
            )
        if not rows or len(rows[-1][0]) + n > length:
            rows.append(([], []))
        rows[-1][0].extend(ex.ids[:-1])
        rows[-1][1].extend(ex.labels[1:])
    x = torch.full((len(rows), length), pad_id, dtype=torch.long)
    y = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for r, (xs, ys) in enumerate(rows):
        x[r, : len(xs)] = torch.tensor(xs, dtype=torch.long)
        y[r, : len(ys)] = torch.tensor(ys, dtype=torch.long)
    return x, y


def sft_batch_fn(
    train_examples: Sequence[SFTExample],
    val_examples: Sequence[SFTExample],
    batch_size: int,
    pad_id: int,
    *,
    packing: bool = False,
    length: int | None = None,
) -> Callable[[str, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]:
    """A ``get_batch(split, generator)`` for :func:`llmkit.train.train` over SFT examples.

    Each call draws ``batch_size`` distinct examples (or packed rows) of the split with
    ``torch.randperm(n, generator=generator)``; the generator is the only randomness, so a
    run is reproducible and :func:`llmkit.train.train`, which hands ``"val"`` a freshly
    seeded generator at every evaluation, evaluates on the same batches each time. A
    ``"val"`` call without a generator uses one seeded with 0 (deterministic too); a
    ``"train"`` call without one uses torch's global generator.

    Args:
        train_examples, val_examples: :class:`SFTExample` lists, each example with at least
            one target token among ``labels[1:]``.
        batch_size: examples (rows) per batch; at most the number of examples (rows).
        pad_id: the id of padding positions in ``x``.
        packing: pack the examples once (:func:`pack_examples`, in the given order) and
            draw rows of ``length`` positions; else :func:`pad_collate` per batch.
        length: the row width: required when packing; when padding, ``None`` pads to the
            batch's longest example, an int pads every batch to that width (fixed shapes).
    Returns:
        ``get_batch(split, generator) -> (x, y)``, both ``(batch_size, T)`` int64.
    """
    validate.positive_int("batch_size", batch_size)
    validate.integer("pad_id", pad_id, minimum=0)
    validate.boolean("packing", packing)
    if packing and length is None:
        raise ValueError("packing=True needs length (positions per packed row)")
    if length is not None:
        validate.positive_int("length", length)
    splits = {
        "train": _check_examples("train_examples", train_examples),
        "val": _check_examples("val_examples", val_examples),
    }
    for name, examples in splits.items():
        for k, ex in enumerate(examples):
            if ex.n_targets == 0:
                raise ValueError(
                    f"{name}_examples[{k}] has no target token (truncated before the "
                    "assistant's reply?); drop it, e.g. encode_conversations(..., "
                    "truncation='drop')"
                )
    if packing:
        assert length is not None
        rows = {name: pack_examples(ex, length, pad_id) for name, ex in splits.items()}
        sizes = {name: r[0].shape[0] for name, r in rows.items()}
    else:
        sizes = {name: len(ex) for name, ex in splits.items()}
    for name, n in sizes.items():
        if batch_size > n:
            what = "packed rows" if packing else "examples"
            raise ValueError(f"batch_size={batch_size} is more than the {n} {what} of {name!r}")

    def get_batch(
        split: str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        validate.one_of("split", split, ("train", "val"))
        if generator is None and split == "val":
            generator = torch.Generator().manual_seed(0)
        pick = torch.randperm(sizes[split], generator=generator)[:batch_size]
        if packing:
            x, y = rows[split]
            return x[pick], y[pick]
        return pad_collate([splits[split][int(i)] for i in pick], pad_id, length)

    return get_batch


def sequential_batches(
    examples: Sequence[SFTExample], batch_size: int, pad_id: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """All examples in order, ``batch_size`` per batch (the last may be smaller), padded by
    :func:`pad_collate`: e.g. ``eval_batches`` for :func:`llmkit.train.train`. Their mean
    loss weighs batches equally; :func:`target_loss` weighs target tokens equally."""
    examples = _check_examples("examples", examples)
    validate.positive_int("batch_size", batch_size)
    return [
        pad_collate(examples[i : i + batch_size], pad_id)
        for i in range(0, len(examples), batch_size)
    ]


@torch.no_grad()
def target_loss(
    model: nn.Module, examples: Sequence[SFTExample], pad_id: int, batch_size: int = 16
) -> float:
    """The mean cross-entropy (nats) over all target tokens of ``examples``, every target
    token weighing the same (the assistant-token loss of a data set).

    Args:
        model: ``model(x: (b, t)) -> logits (b, t, V)``; evaluated in eval mode on the device
            of its parameters, then put back in the mode it was in.
        examples: :class:`SFTExample` with at least one target in all.
        pad_id, batch_size: as in :func:`pad_collate` / :func:`sequential_batches`.
    Returns:
        the mean loss per target token.
    """
    batches = sequential_batches(examples, batch_size, pad_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in batches:
            logits = model(x.to(device)).float()
            y = y.to(device)
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    y.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            count += int((y != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("examples have no target token")
    return total / count

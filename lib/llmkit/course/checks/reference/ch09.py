"""Reference answers and known slips for lab 09 (supervised fine-tuning). See the package
docstring. The references call :mod:`llmkit.chat` and :mod:`llmkit.sft` (off limits in the
lab, reachable here because the checks compute the expected value after the student's
call); ``conversation_labels`` and the slips are written out."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100

Messages = Sequence[dict[str, str]]
Parts = Sequence[tuple[str, list[int], list[int], list[int]]]
Examples = Sequence[tuple[list[int], list[int]]]


# ----------------------------------------------------------------------- render_notes


def render_notes(messages: Messages) -> tuple[str, list[tuple[int, int]]]:
    """``llmkit.chat.render(messages, "notes")``: the text and each content's span."""
    from llmkit.chat import render

    r = render(messages, "notes")
    return r.text, [tuple(s) for s in r.content_spans]


def _render(messages: Messages, head: str, tail: str, last_tail: bool = True):
    text, spans = "", []
    for k, m in enumerate(messages):
        text += head.format(role=m["role"])
        spans.append((len(text), len(text) + len(m["content"])))
        text += m["content"]
        if last_tail or k + 1 < len(messages):
            text += tail
    return text, spans


def render_no_final_newline(messages: Messages):
    """Joins the messages with newlines: the last one is not closed."""
    return _render(messages, "<{role}>\n", "\n", last_tail=False)


def render_no_header_newline(messages: Messages):
    """``<role>{content}\\n``: no newline after the role marker."""
    return _render(messages, "<{role}>", "\n")


def render_spans_with_markup(messages: Messages):
    """Spans of the whole messages, markup included."""
    from llmkit.chat import render

    r = render(messages, "notes")
    return r.text, [tuple(s) for s in r.spans]


def render_spans_inclusive(messages: Messages):
    """Spans whose end is the index of the last character (not one past it)."""
    text, spans = render_notes(messages)
    return text, [(a, b - 1) for a, b in spans]


# ---------------------------------------------------------------- conversation_labels


def _labels(
    parts: Parts,
    eot_id: int,
    *,
    roles: tuple[str, ...] = ("assistant",),
    end_of_turn: bool = True,
    append_eot: bool = True,
    header: bool = False,
    close: bool = True,
    shift: bool = False,
) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for k, (role, head, content, tail) in enumerate(parts):
        after_assistant = k > 0 and parts[k - 1][0] == "assistant"
        for j, i in enumerate(head):
            ids.append(i)
            target = (role in roles and header) or (
                end_of_turn and j == 0 and role == "user" and after_assistant
            )
            labels.append(i if target else IGNORE)
        for i in content:
            ids.append(i)
            labels.append(i if role in roles else IGNORE)
        for i in tail:
            ids.append(i)
            labels.append(i if role in roles and close else IGNORE)
    if append_eot and parts and parts[-1][0] == "assistant":
        ids.append(eot_id)
        labels.append(eot_id if end_of_turn else IGNORE)
    if shift:
        labels = labels[1:] + [IGNORE]
    return ids, labels


def conversation_labels(parts: Parts, eot_id: int) -> tuple[list[int], list[int]]:
    """Ids and labels of a conversation in the notes' template, tokenized by parts.

    ``parts``: ``(role, header_ids, content_ids, close_ids)`` per message. The ids are all
    the parts in order, plus ``eot_id`` when the last message is the assistant's. Targets:
    the assistant's content and closing ids, the first header id (``<user>``) of a user
    message that follows an assistant message, and the appended ``eot_id``.
    """
    return _labels(parts, eot_id)


def labels_every_role(parts: Parts, eot_id: int):
    """Every message's content is a target, the user's and the system's too."""
    return _labels(parts, eot_id, roles=("system", "user", "assistant"))


def labels_no_end_of_turn(parts: Parts, eot_id: int):
    """Neither the next ``<user>`` nor the appended end-of-text is a target."""
    return _labels(parts, eot_id, end_of_turn=False)


def labels_no_eot_appended(parts: Parts, eot_id: int):
    """Forgets to append the end-of-text id after the last assistant message."""
    return _labels(parts, eot_id, append_eot=False)


def labels_with_header(parts: Parts, eot_id: int):
    """The assistant's header is a target too."""
    return _labels(parts, eot_id, header=True)


def labels_no_close(parts: Parts, eot_id: int):
    """The assistant's closing newline is not a target."""
    return _labels(parts, eot_id, close=False)


def labels_shifted(parts: Parts, eot_id: int):
    """Shifts the labels already (``labels[i]`` is the label of ``ids[i + 1]``)."""
    return _labels(parts, eot_id, shift=True)


# ------------------------------------------------------------------------ pad_collate


def pad_collate(examples: Examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``llmkit.sft.pad_collate`` on ``(ids, labels)`` pairs."""
    from llmkit.sft import SFTExample
    from llmkit.sft import pad_collate as collate

    return collate([SFTExample(list(i), list(lab)) for i, lab in examples], pad_id)


def _collate(
    examples: Examples,
    pad_id: int,
    *,
    y_pad: int | None = IGNORE,
    shift: int = 1,
    left: bool = False,
    y_from_ids: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for ids, labels in examples:
        target = ids if y_from_ids else labels
        if shift == 0:
            rows.append((list(ids), list(target)))
        elif shift == 1:
            rows.append((list(ids[:-1]), list(target[1:])))
        else:  # shifted twice: y[t] is the label two tokens on
            rows.append((list(ids[:-1]), list(target[2:]) + [IGNORE]))
    width = max(len(x) for x, _ in rows)
    fill = pad_id if y_pad is None else y_pad
    xs, ys = [], []
    for x, y in rows:
        n = width - len(x)
        xs.append([pad_id] * n + x if left else x + [pad_id] * n)
        ys.append([fill] * n + y if left else y + [fill] * n)
    return torch.tensor(xs, dtype=torch.long), torch.tensor(ys, dtype=torch.long)


def collate_pad_y_with_pad_id(examples: Examples, pad_id: int):
    """Pads ``y`` with ``pad_id`` (padding becomes a target)."""
    return _collate(examples, pad_id, y_pad=None)


def collate_not_shifted(examples: Examples, pad_id: int):
    """``x = ids``, ``y = labels``: each position is asked for its own token."""
    return _collate(examples, pad_id, shift=0)


def collate_shifted_twice(examples: Examples, pad_id: int):
    """``y[t]`` is the label two tokens on (shifted here and again)."""
    return _collate(examples, pad_id, shift=2)


def collate_left(examples: Examples, pad_id: int):
    """Pads on the left."""
    return _collate(examples, pad_id, left=True)


def collate_y_from_ids(examples: Examples, pad_id: int):
    """``y`` from the ids: every token a target, the prompt's too."""
    return _collate(examples, pad_id, y_from_ids=True)

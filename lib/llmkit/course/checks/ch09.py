"""Checks of lab 09 (supervised fine-tuning): one :class:`Exercise` per exercise.

===================  ============================================  ============================
exercise             the student's function                        reference
===================  ============================================  ============================
render_notes         ``(messages) -> (text, spans)``: the notes'   ``llmkit.chat.render(...,
                     template and each content's ``(start, end)``  "notes")``
conversation_labels  ``(parts, eot_id) -> (ids, labels)``: -100    the rule of ``llmkit.sft``
                     except on the assistant's reply and the end   for the notes' template
                     of its turn                                   (on tokenized parts)
pad_collate          ``(examples, pad_id) -> (x, y)``: shifted,    ``llmkit.sft.pad_collate``
                     right-padded, -100 on padding in ``y``
===================  ============================================  ============================

Off limits in every exercise: :mod:`llmkit.chat` and :mod:`llmkit.sft` (which compute
all three); in ``pad_collate`` also ``torch.nn.utils.rnn.pad_sequence``. Roles are
``"system"``, ``"user"`` and ``"assistant"``, in any order; contents are random text with
newlines, unicode and markup-like strings. In ``conversation_labels`` the ids are small
made-up numbers: a header is ``[role id, newline id]`` (:data:`ROLE_IDS`, :data:`NEWLINE`),
a message closes with ``[NEWLINE]``.
"""

from __future__ import annotations

import random

from .runner import Case, Exercise, Slip

__all__ = [
    "ROLE_IDS",
    "NEWLINE",
    "EOT",
    "check_render_notes",
    "check_conversation_labels",
    "check_pad_collate",
]

_REF = "llmkit.course.checks.reference.ch09"
_LLMKIT = ["llmkit.chat", "llmkit.sft"]
ROLES = ("system", "user", "assistant")
#: Made-up ids of the role markers ``<system>``, ``<user>``, ``<assistant>``.
ROLE_IDS = {"system": 1, "user": 2, "assistant": 3}
NEWLINE = 10
#: The made-up id of ``<|endoftext|>``.
EOT = 0
_PIECES = [
    "Hello",
    "What is 2 + 2?",
    "4",
    "\n",
    "\n\n",
    " ",
    "",
    "<user>",
    "<assistant>\n",
    "print('hello world)",
    "café",
    "日本語",
    "🙂",
    "a\nb",
]


# ----------------------------------------------------------------------- render_notes


def _content(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 3)))


def _messages(rng: random.Random, n: int | None = None) -> list[dict[str, str]]:
    n = rng.randint(0, 5) if n is None else n
    return [{"role": rng.choice(ROLES), "content": _content(rng)} for _ in range(n)]


def _fixed_render() -> list[Case]:
    u = {"role": "user", "content": 'Fix: print("hello world)'}
    a = {"role": "assistant", "content": 'print("hello world")'}
    return [
        Case(([],)),
        Case(([u],)),
        Case(([u, a],)),
        Case(([{"role": "system", "content": "Be brief."}, u, a, u, a],)),
        Case(([{"role": "user", "content": ""}, {"role": "assistant", "content": "\n"}],)),
        Case(([{"role": "assistant", "content": "<user>\nnot a turn"}],)),
    ]


RENDER_NOTES = Exercise(
    name="render_notes",
    reference=f"{_REF}:render_notes",
    forbid=_LLMKIT,
    fixed=_fixed_render,
    random=lambda rng: Case((_messages(rng),)),
    cases=30,
    hint="each message is '<' + role + '>' + newline + content + newline; a span is "
    "(start, end) of the content alone, so that text[start:end] == content",
    slips=[
        Slip(
            f"{_REF}:render_no_final_newline",
            "every message ends with a newline, the last one too",
        ),
        Slip(
            f"{_REF}:render_no_header_newline",
            "a newline follows the role marker: '<user>\\n', then the content",
        ),
        Slip(
            f"{_REF}:render_spans_with_markup",
            "a span covers the content only, without '<role>\\n' and the closing newline",
        ),
        Slip(
            f"{_REF}:render_spans_inclusive",
            "end is exclusive, as in a slice: text[start:end] == content",
        ),
    ],
)


# ---------------------------------------------------------------- conversation_labels


def _parts(rng: random.Random, roles: list[str]) -> list:
    return [
        (
            role,
            [ROLE_IDS[role], NEWLINE],
            [rng.randrange(11, 60) for _ in range(rng.randint(0, 5))],
            [NEWLINE],
        )
        for role in roles
    ]


def _label_case(rng: random.Random) -> Case:
    roles = [rng.choice(ROLES) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.5 and roles:  # most conversations alternate user / assistant
        roles = ["user" if k % 2 == 0 else "assistant" for k in range(len(roles))]
    return Case((_parts(rng, roles), EOT))


def _fixed_labels() -> list[Case]:
    rng = random.Random(9)
    return [
        Case(([], EOT)),
        Case((_parts(rng, ["user"]), EOT)),
        Case((_parts(rng, ["user", "assistant"]), EOT)),
        Case((_parts(rng, ["system", "user", "assistant", "user", "assistant"]), EOT)),
        Case((_parts(rng, ["user", "assistant", "user"]), 99)),
        Case((_parts(rng, ["assistant", "assistant", "system", "user"]), EOT)),
        Case(([("user", [2, 10], [11, 12], [10]), ("assistant", [3, 10], [], [10])], EOT)),
    ]


CONVERSATION_LABELS = Exercise(
    name="conversation_labels",
    reference=f"{_REF}:conversation_labels",
    forbid=_LLMKIT,
    fixed=_fixed_labels,
    random=_label_case,
    cases=30,
    hint="ids: every part in order, then eot_id if the last message is the assistant's; "
    "labels: -100 everywhere except the assistant's content and closing ids, the <user> id "
    "that follows an assistant message, and the appended eot_id",
    slips=[
        Slip(
            f"{_REF}:labels_every_role",
            "only the assistant's tokens are targets: the user's and the system's are "
            "context (-100)",
        ),
        Slip(
            f"{_REF}:labels_no_end_of_turn",
            "the end of the turn is a target, or the model never learns to stop: the <user> "
            "id after an assistant message, and the appended eot_id",
        ),
        Slip(
            f"{_REF}:labels_no_eot_appended",
            "append eot_id to the ids (as a target) when the last message is the assistant's",
        ),
        Slip(
            f"{_REF}:labels_with_header",
            "the assistant's header is not a target: at inference the prompt ends with it",
        ),
        Slip(
            f"{_REF}:labels_no_close",
            "the assistant's closing newline is part of its reply: a target",
        ),
        Slip(
            f"{_REF}:labels_shifted",
            "do not shift here: labels[i] is the label of ids[i] (the collate shifts)",
        ),
    ],
)


# ------------------------------------------------------------------------ pad_collate


def _example(rng: random.Random, n: int) -> tuple[list[int], list[int]]:
    ids = [rng.randrange(1, 60) for _ in range(n)]
    start = rng.randint(0, n)  # the prompt, then the reply
    labels = [-100] * start + ids[start:]
    if rng.random() < 0.3:  # a second turn: masked ids after the first reply
        k = rng.randint(start, n)
        m = rng.randint(0, n - k)
        labels[k : k + m] = [-100] * m
    return ids, labels


def _collate_case(rng: random.Random) -> Case:
    b = rng.randint(1, 5)
    examples = [_example(rng, rng.randint(2, 12)) for _ in range(b)]
    return Case((examples, rng.choice([0, 0, 1, rng.randrange(60)])))


def _fixed_collate() -> list[Case]:
    return [
        Case(([([5, 6], [-100, 6])], 0)),
        Case(([([5, 6, 7, 8], [-100, -100, 7, 8]), ([9, 4, 3], [-100, 4, 3])], 0)),
        Case(([([1, 2, 3], [-100, 2, 3]), ([4, 5, 6], [-100, -100, 6])], 7)),
        Case(([([2, 3], [-100, 3]), ([4, 5, 6, 7, 8], [-100, -100, -100, 7, 8])], 1)),
    ]


PAD_COLLATE = Exercise(
    name="pad_collate",
    reference=f"{_REF}:pad_collate",
    forbid=[*_LLMKIT, "torch.nn.utils.rnn:pad_sequence"],
    fixed=_fixed_collate,
    random=_collate_case,
    cases=30,
    hint="x[b] = ids[:-1] then pad_id, y[b] = labels[1:] then -100, every row as wide as the "
    "longest example minus one; two torch.long tensors",
    slips=[
        Slip(
            f"{_REF}:collate_pad_y_with_pad_id",
            "pad y with -100, not pad_id: padding must never be a target",
        ),
        Slip(
            f"{_REF}:collate_not_shifted",
            "shift by one: x = ids[:-1] and y = labels[1:] (each position predicts the next token)",
        ),
        Slip(
            f"{_REF}:collate_shifted_twice",
            "shift once only: y[t] is the label of the token right after x[t]",
        ),
        Slip(f"{_REF}:collate_left", "pad on the right: each row starts with its tokens"),
        Slip(
            f"{_REF}:collate_y_from_ids",
            "y comes from the labels (with their -100), not from the ids",
        ),
    ],
)


def check_render_notes(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``render_notes(messages)``; see the table above."""
    RENDER_NOTES.check(fn, cases=cases, seed=seed)


def check_conversation_labels(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``conversation_labels(parts, eot_id)``."""
    CONVERSATION_LABELS.check(fn, cases=cases, seed=seed)


def check_pad_collate(fn, cases: int = 30, seed: int | None = None) -> None:
    """Check ``pad_collate(examples, pad_id)``."""
    PAD_COLLATE.check(fn, cases=cases, seed=seed)

"""Lab 09's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, right answers written differently pass, and llmkit.chat, llmkit.sft
and torch's pad_sequence are off limits."""

from __future__ import annotations

import pytest
import torch

from llmkit import chat, sft
from llmkit.course.checks import ch09

# Answers, right and wrong, written out here: llmkit's objects and the checks' references
# are off limits.


def render(messages, header_newline=True, last_newline=True, markup=False, inclusive=False):
    pieces, spans, pos = [], [], 0
    for k, m in enumerate(messages):
        head = f"<{m['role']}>" + ("\n" if header_newline else "")
        tail = "\n" if last_newline or k + 1 < len(messages) else ""
        start = pos
        c0 = pos + len(head)
        c1 = c0 + len(m["content"])
        pos = c1 + len(tail)
        pieces += [head, m["content"], tail]
        span = (start, pos) if markup else (c0, c1 - 1 if inclusive else c1)
        spans.append(span)
    return "".join(pieces), spans


def labels(parts, eot_id, roles=("assistant",), eot=True, append=True, header=False,
           close=True, shift=False):  # fmt: skip
    ids, labs = [], []
    for k, (role, head, content, tail) in enumerate(parts):
        ends = eot and role == "user" and k > 0 and parts[k - 1][0] == "assistant"
        for j, i in enumerate(head):
            ids.append(i)
            labs.append(i if (j == 0 and ends) or (header and role in roles) else -100)
        ids += content + tail
        labs += [i if role in roles else -100 for i in content]
        labs += [i if role in roles and close else -100 for i in tail]
    if append and parts and parts[-1][0] == "assistant":
        ids.append(eot_id)
        labs.append(eot_id if eot else -100)
    if shift:
        labs = labs[1:] + [-100]
    return ids, labs


def collate(examples, pad_id, y_pad=-100, shift=1, left=False, from_ids=False):
    rows = []
    for ids, labs in examples:
        src = ids if from_ids else labs
        x = ids if shift == 0 else ids[:-1]
        y = src if shift == 0 else src[shift:] + [-100] * (shift - 1)
        rows.append((x, y))
    w = max(len(x) for x, _ in rows)
    fill_y = pad_id if y_pad is None else y_pad

    def pad(v, fill):
        return [fill] * (w - len(v)) + v if left else v + [fill] * (w - len(v))

    x = torch.tensor([pad(x, pad_id) for x, _ in rows])
    y = torch.tensor([pad(y, fill_y) for _, y in rows])
    return x, y


def with_(fn, **kw):
    return lambda *args: fn(*args, **kw)


SLIPS = [
    ("render_notes", with_(render, last_newline=False), "the last one too"),
    ("render_notes", with_(render, header_newline=False), "a newline follows the role marker"),
    ("render_notes", with_(render, markup=True), "the content only"),
    ("render_notes", with_(render, inclusive=True), "end is exclusive"),
    ("conversation_labels", with_(labels, roles=("user", "assistant")), "are context"),
    ("conversation_labels", with_(labels, eot=False), "never learns to stop"),
    ("conversation_labels", with_(labels, append=False), "append eot_id"),
    ("conversation_labels", with_(labels, header=True), "header is not a target"),
    ("conversation_labels", with_(labels, close=False), "closing newline"),
    ("conversation_labels", with_(labels, shift=True), "do not shift here"),
    ("pad_collate", with_(collate, y_pad=None), "pad y with -100"),
    ("pad_collate", with_(collate, shift=0), "shift by one"),
    ("pad_collate", with_(collate, shift=2), "shift once only"),
    ("pad_collate", with_(collate, left=True), "pad on the right"),
    ("pad_collate", with_(collate, from_ids=True), "comes from the labels"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch09, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_right_answers_pass():
    ch09.check_render_notes(render, seed=1)
    ch09.check_conversation_labels(labels, seed=1)
    ch09.check_pad_collate(collate, seed=1)


def test_the_checks_agree_with_llmkit_sft():
    """The labels rule of the lab is llmkit.sft's for the notes' template, on a tokenizer
    whose role markers are single tokens (checked here with a character tokenizer)."""
    from llmkit.tokenizers import CharTokenizer

    tok = CharTokenizer.train(
        "abcdefghij \n?.é", ["<|endoftext|>", "<system>", "<user>", "<assistant>"]
    )
    rng = __import__("random").Random(0)
    for _ in range(50):
        msgs = [
            {"role": rng.choice(ch09.ROLES), "content": "".join(rng.sample("abc d\né?.", 4))}
            for _ in range(rng.randint(1, 5))
        ]
        parts = [
            (m["role"], tok.encode(f"<{m['role']}>\n"), tok.encode(m["content"]), tok.encode("\n"))
            for m in msgs
        ]
        ids, labs = labels(parts, tok.special_tokens["<|endoftext|>"])
        ex = sft.encode_conversation(msgs, tok, "notes")
        assert (ids, labs) == (ex.ids, ex.labels)
        assert render(msgs) == (
            chat.render(msgs, "notes").text,
            [tuple(s) for s in chat.render(msgs, "notes").content_spans],
        )


def _pad_sequence(examples, pad_id):
    x = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(i[:-1]) for i, _ in examples], batch_first=True, padding_value=pad_id
    )
    y = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(lab[1:]) for _, lab in examples], batch_first=True, padding_value=-100
    )
    return x, y


def _sft_collate(examples, pad_id):
    return sft.pad_collate([sft.SFTExample(list(i), list(lab)) for i, lab in examples], pad_id)


def _sft_labels(parts, eot_id):
    ids, labs = labels(parts, eot_id)
    sft.SFTExample(ids, labs)  # any use of llmkit.sft is off limits
    return ids, labs


def _chat_render(messages):
    r = chat.render(messages, "notes")
    return r.text, [tuple(s) for s in r.content_spans]


SHORTCUTS = [
    ("render_notes", _chat_render, "llmkit.chat"),
    ("conversation_labels", _sft_labels, "llmkit.sft"),
    ("pad_collate", _pad_sequence, "pad_sequence"),
    ("pad_collate", _sft_collate, "llmkit.sft"),
]


@pytest.mark.parametrize(("exercise", "shortcut", "label"), SHORTCUTS)
def test_library_versions_are_off_limits(exercise, shortcut, label):
    with pytest.raises(AssertionError, match=f"must be written without .*{label}"):
        getattr(ch09, f"check_{exercise}")(shortcut, seed=0)
    assert _pad_sequence([([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5])], 0)[1].tolist() == [
        [2, 3],
        [5, -100],
    ]

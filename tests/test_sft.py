"""Tests of llmkit.sft: conversations to SFT ids/labels, truncation, collate, packing, batches.

The labels are checked against text worked out from the messages alone (what the assistant
must write, its closing markup and the end-of-turn token), by decoding the target tokens,
over random conversations and both templates, with a byte-level BPE trained here and with
SmolLM2's tokenizer. Losses are compared with a hand computation of the masked mean.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from llmkit.chat import render
from llmkit.gpt import GPT, GPTConfig
from llmkit.sft import (
    IGNORE_INDEX,
    SFTExample,
    encode_conversation,
    encode_conversations,
    instruction_messages,
    pack_examples,
    pad_collate,
    sequential_batches,
    sft_batch_fn,
    target_loss,
    target_segments,
)
from llmkit.tokenizers import BPETokenizer
from llmkit.train import TrainConfig, cross_entropy_loss, train

SPECIALS = ["<|endoftext|>", "<system>", "<user>", "<assistant>", "<|im_start|>", "<|im_end|>"]
CORPUS = (
    "Edit the following sentence for grammar. He goes to the park every day.\n"
    "What is the capital of France? The capital of France is Paris.\n"
    'Write a program: print("hello world")\n\n'
    "Unicode: café, naïve, 日本語, emoji 🙂. Numbers 1234 and 3.14!\n"
) * 20


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=320, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def smol_tok() -> BPETokenizer:
    """SmolLM2-135M-Instruct's tokenizer, built from its GGUF metadata as
    :func:`llmkit.pretrained.smollm2` builds it (without loading the weights)."""
    from llmkit import data, gguf, pretrained

    try:
        metadata = gguf.read_metadata(data.path(pretrained.SMOLLM2))
    except data.DataUnavailableError:
        pytest.skip("SmolLM2's GGUF file is not available offline")
    return BPETokenizer.from_gguf_metadata(metadata)


U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "Paris."}
U2 = {"role": "user", "content": "And of Italy?"}
A2 = {"role": "assistant", "content": "Rome."}
SYS = {"role": "system", "content": "Be brief."}


# ----------------------------------------------------------------------- expected targets


def expected_targets(messages, template: str) -> list[str]:
    """What each assistant message must teach, worked out from the messages alone."""
    msgs = render(messages, template).messages  # ChatML may add the default system message
    out = []
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        if template == "chatml":
            out.append(m["content"] + "<|im_end|>")
        else:
            nxt = msgs[k + 1]["role"] if k + 1 < len(msgs) else None
            end = {"user": "<user>", None: "<|endoftext|>"}.get(nxt, "")
            out.append(m["content"] + "\n" + end)
    return out


def target_runs(tokenizer, ex: SFTExample) -> list[str]:
    """The decoded text of every maximal run of target tokens."""
    runs, cur = [], []
    for i, lab in zip(ex.ids, ex.labels, strict=True):
        if lab == IGNORE_INDEX:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert lab == i
            cur.append(i)
    if cur:
        runs.append(cur)
    return [tokenizer.decode(r) for r in runs]


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_markup = st.sampled_from(
    ["<user>", "<assistant>", "<system>", "<|im_end|>", "<|im_start|>", "<|endoftext|>", "\n"]
    + ["\n\n", " ", "  ", "<", ">", "|", "user", "assistant\n", "{{ x }}", "é", "🙂", "42"]
)
_content = st.lists(_text | _markup, max_size=5).map("".join)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]), "content": _content}
    ),
    max_size=5,
)


def check_example(tokenizer, messages, template: str, ex: SFTExample) -> None:
    text = render(messages, template).text
    eot = tokenizer.special_tokens["<|endoftext|>"]
    appended = template == "notes" and bool(messages) and messages[-1]["role"] == "assistant"
    assert len(ex.ids) == len(ex.labels) and ex.truncated == 0
    # the labels cover exactly the assistant's text, its closing markup, the end of turn
    assert target_runs(tokenizer, ex) == expected_targets(messages, template)
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ex.ids, ex.labels, strict=True))
    # how the ids relate to encoding the rendered text in one go
    assert tokenizer.decode(ex.ids) == text + ("<|endoftext|>" if appended else "")
    assert (ex.ids[-1] == eot and ex.labels[-1] == eot) if appended else True
    clean = not any(m["role"] == "assistant" and m["content"][:1].isspace() for m in messages)
    if clean:
        assert ex.ids == tokenizer.encode(text) + ([eot] if appended else [])


@pytest.mark.parametrize("template", ["notes", "chatml"])
@given(messages=_messages)
def test_labels_cover_exactly_the_assistant_spans(tok, template, messages):
    ex = encode_conversation(messages, tok, template)
    check_example(tok, messages, template, ex)
    segments, _ = target_segments(messages, template)
    assert "".join(s for s, _ in segments) == render(messages, template).text
    assert all(a[1] != b[1] for a, b in zip(segments, segments[1:], strict=False))


@pytest.mark.parametrize("template", ["notes", "chatml"])
def test_smollm2_tokenizer(smol_tok, template):
    conversations = [
        [U1, A1],
        [SYS, U1, A1, U2, A2],
        [U1, {"role": "assistant", "content": "  indented\n\ncode:\n    x = 1\n"}, U2],
        [{"role": "user", "content": "Type <|im_end|> or <user> here"}, A1, SYS, A2],
    ]
    for messages in conversations:
        ex = encode_conversation(messages, smol_tok, template)
        check_example(smol_tok, messages, template, ex)
    # ChatML: <|im_end|> (id 2, SmolLM2's end of turn) is a target after every reply
    ex = encode_conversation([U1, A1, U2, A2], smol_tok, "chatml")
    im_end = smol_tok.special_tokens["<|im_end|>"]
    targets = [i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    assert targets.count(im_end) == 2 and targets[-1] == im_end
    assert ex.ids.count(im_end) == 5  # system, 2 users, 2 assistants


def test_end_of_turn_is_a_target(tok):
    user, eot = tok.special_tokens["<user>"], tok.special_tokens["<|endoftext|>"]
    ex = encode_conversation([U1, A1, U2, A2], tok, "notes")
    labelled = {i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != IGNORE_INDEX}
    assert ex.ids[-1] == eot and ex.labels[-1] == eot
    # the first <user> opens the conversation (not a target), the second ends A1's turn
    positions = [k for k, i in enumerate(ex.ids) if i == user]
    assert len(positions) == 2 and ex.labels[positions[0]] == IGNORE_INDEX
    assert ex.labels[positions[1]] == user and user in labelled
    # the assistant header is never a target
    for k, i in enumerate(ex.ids):
        if i == tok.special_tokens["<assistant>"]:
            assert ex.labels[k] == IGNORE_INDEX and ex.labels[k + 1] == IGNORE_INDEX
    chat = encode_conversation([U1, A1], tok, "chatml")
    im_end = tok.special_tokens["<|im_end|>"]
    k = max(k for k, i in enumerate(chat.ids) if i == im_end)
    assert chat.labels[k] == im_end and chat.labels[k + 1 :] == [IGNORE_INDEX] * (
        len(chat.ids) - k - 1
    )


def test_notes_template_needs_an_end_of_text_token():
    bare = BPETokenizer.train(CORPUS[:500], vocab_size=260, special_tokens=["<user>"])
    with pytest.raises(ValueError, match="<\\|endoftext\\|>"):
        encode_conversation([U1, A1], bare, "notes")
    encode_conversation([A1, U1], bare, "notes")  # not ending with the assistant: no need


def test_instruction_messages():
    ex = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    assert instruction_messages(ex) == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert instruction_messages({**ex, "input": ""})[0]["content"] == "Add the numbers."
    with pytest.raises(ValueError, match="'output'"):
        instruction_messages({"instruction": "x"})


def test_mask_prompt_false_trains_on_everything(tok):
    ex = encode_conversation([SYS, U1, A1], tok, "notes", mask_prompt=False)
    assert ex.labels == ex.ids
    assert encode_conversation([SYS, U1, A1], tok, "notes").ids == ex.ids


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("template", ["notes", "chatml"])
def test_right_truncation_keeps_ids_and_labels_aligned(tok, template):
    messages = [U1, A1, U2, A2]
    full = encode_conversation(messages, tok, template)
    for n in range(2, len(full) + 3):
        ex = encode_conversation(messages, tok, template, max_length=n)
        k = min(n, len(full))
        assert ex.ids == full.ids[:k] and ex.labels == full.labels[:k]
        assert ex.truncated == len(full) - k
    with pytest.raises(ValueError, match="more than max_length=5"):
        encode_conversation(messages, tok, template, max_length=5, truncation="error")
    assert encode_conversation(messages, tok, template, len(full), "error") == full


def test_drop_truncation(tok):
    convs = [[U1, A1], [SYS, U1, A1, U2, A2], [U2, A2]]
    full = encode_conversations(convs, tok, "notes")
    limit = max(len(full[0]), len(full[2]))
    kept = encode_conversations(convs, tok, "notes", max_length=limit, truncation="drop")
    assert kept == [full[0], full[2]]
    with pytest.raises(ValueError, match="encode_conversations"):
        encode_conversation(convs[0], tok, "notes", max_length=4, truncation="drop")
    with pytest.raises(ValueError, match="truncation"):
        encode_conversations(convs, tok, "notes", max_length=4, truncation="left")
    with pytest.raises(ValueError, match="template"):
        encode_conversation(convs[0], tok, "alpaca")


# ------------------------------------------------------------------------------ batches


def _examples(tok, template="notes"):
    convs = [[U1, A1], [SYS, U1, A1, U2, A2], [U2, A2], [U1, A2, U2, A1]]
    return encode_conversations(convs, tok, template)


def test_pad_collate_shapes_and_padding(tok):
    exs = _examples(tok)
    x, y = pad_collate(exs, pad_id=7)
    longest = max(len(e) for e in exs)
    assert x.shape == y.shape == (len(exs), longest - 1) and x.dtype == torch.long
    for b, e in enumerate(exs):
        n = len(e) - 1
        assert x[b, :n].tolist() == e.ids[:-1] and y[b, :n].tolist() == e.labels[1:]
        assert (x[b, n:] == 7).all() and (y[b, n:] == IGNORE_INDEX).all()
    x2, y2 = pad_collate(exs, pad_id=7, pad_to=longest + 3)
    assert x2.shape == (len(exs), longest + 3) and torch.equal(x2[:, : longest - 1], x)
    with pytest.raises(ValueError, match="pad_to"):
        pad_collate(exs, 0, pad_to=2)
    with pytest.raises(ValueError, match="at least 2"):
        pad_collate([SFTExample([1], [1])], 0)


class _Bigram(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x)


def _by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(model(x).double(), dim=-1)
    terms = [
        -logp[b, t, y[b, t]]
        for b in range(y.shape[0])
        for t in range(y.shape[1])
        if y[b, t] != IGNORE_INDEX
    ]
    return torch.stack(terms).mean()


@torch.no_grad()
def test_batch_loss_is_the_mean_over_unmasked_tokens(tok):
    torch.manual_seed(0)
    model = _Bigram(tok.vocab_size)
    exs = _examples(tok) + _examples(tok, "chatml")
    x, y = pad_collate(exs, pad_id=0)
    loss = cross_entropy_loss(model, (x, y))
    assert float(loss) == pytest.approx(float(_by_hand(model, x, y)), rel=1e-6)
    # every target token weighs the same: a longer reply counts more than a short one
    assert float(target_loss(model, exs, pad_id=0, batch_size=3)) == pytest.approx(
        float(loss), rel=1e-6
    )
    xp, yp = pack_examples(exs, length=max(map(len, exs)), pad_id=0)
    # the bigram model has no attention: packed or padded, the same targets, the same loss
    assert float(cross_entropy_loss(model, (xp, yp))) == pytest.approx(float(loss), rel=1e-6)


def test_packing_never_mixes_labels(tok):
    exs = _examples(tok) + _examples(tok, "chatml")
    length = max(len(e) for e in exs) + 5
    x, y = pack_examples(exs, length, pad_id=3)
    assert x.shape[1] == length and x.shape[0] < len(exs)
    # walk the rows: each example's positions hold exactly its own shifted pair, so the
    # last token of an example never predicts the first token of the next one
    r, c = 0, 0
    for e in exs:
        n = len(e) - 1
        if c + n > length:
            assert (x[r, c:] == 3).all() and (y[r, c:] == IGNORE_INDEX).all()
            r, c = r + 1, 0
        assert x[r, c : c + n].tolist() == e.ids[:-1]
        assert y[r, c : c + n].tolist() == e.labels[1:]
        c += n
    assert r == x.shape[0] - 1
    assert (x[r, c:] == 3).all() and (y[r, c:] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="truncate it first"):
        pack_examples(exs, length=4, pad_id=0)


def test_sft_batch_fn(tok):
    exs = _examples(tok) * 3
    get_batch = sft_batch_fn(exs, exs[:8], batch_size=5, pad_id=0)
    state = torch.get_rng_state()
    a = get_batch("train", torch.Generator().manual_seed(1))
    b = get_batch("train", torch.Generator().manual_seed(1))
    assert torch.get_rng_state().equal(state)  # only the given generator was used
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert a[0].shape[0] == 5
    draws = {tuple(get_batch("train", torch.Generator().manual_seed(s))[0][:, 0]) for s in range(5)}
    assert len(draws) > 1
    get_val = sft_batch_fn(exs, exs[:4], batch_size=3, pad_id=0)
    v1, v2 = get_val("val"), get_val("val")  # deterministic without a generator too
    assert all(torch.equal(u, v) for u, v in zip(v1, v2, strict=True))
    with pytest.raises(ValueError, match="batch_size=5 is more than the 4 examples of 'val'"):
        sft_batch_fn(exs, exs[:4], batch_size=5, pad_id=0)
    fixed = sft_batch_fn(exs, exs, batch_size=2, pad_id=0, length=40)
    assert fixed("train", torch.Generator().manual_seed(0))[0].shape == (2, 40)
    packed = sft_batch_fn(exs, exs, batch_size=2, pad_id=0, packing=True, length=60)
    px, py = packed("train", torch.Generator().manual_seed(0))
    assert px.shape == py.shape == (2, 60)
    with pytest.raises(ValueError, match="needs length"):
        sft_batch_fn(exs, exs, batch_size=2, pad_id=0, packing=True)
    prompt_only = encode_conversation([U1, A1], tok, "notes", max_length=4)
    with pytest.raises(ValueError, match=r"train_examples\[1\] has no target"):
        sft_batch_fn([exs[0], prompt_only], exs, batch_size=1, pad_id=0)
    with pytest.raises(ValueError, match="split"):
        sft_batch_fn(exs, exs, batch_size=1, pad_id=0)("test")


def test_sft_runs_through_train(tok):
    exs = _examples(tok) * 2
    torch.manual_seed(0)
    config = GPTConfig(tok.vocab_size, block_size=64, n_layer=1, n_head=2, d_model=16)
    model = GPT(config)
    get_batch = sft_batch_fn(exs, exs[:4], batch_size=4, pad_id=0)
    run = TrainConfig(
        max_steps=3, lr=1e-2, eval_interval=3, eval_iters=1, device="cpu", progress=False
    )
    history = train(model, run, get_batch)
    assert len(history.train_loss) == 3 and len(history.val_loss) == 2
    evals = sequential_batches(exs[:4], 3, pad_id=0)
    assert [b[0].shape[0] for b in evals] == [3, 1]
    with torch.no_grad():
        by_hand = float(_by_hand(model.eval(), *pad_collate(exs[:4], 0)))
    assert target_loss(model, exs[:4], pad_id=0) == pytest.approx(by_hand, rel=1e-5)

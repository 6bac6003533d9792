"""Lab 06 checks: each catalogued slip is named, the off-limits functions fail, and the
counting model of greedy_translate cannot be got round. (Solution, stub and wrapper of
every exercise: tests/test_checks.py.)"""

from __future__ import annotations

import math
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from llmkit.course.checks import ch06
from llmkit.nn import CrossAttention
from llmkit.seq2seq import Seq2Seq, collate, translate


def pad_sequences(seqs, pad_id, *, left=False, invert=False, fill=None):
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id if fill is None else fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        cols = slice(longest - len(s), None) if left else slice(0, len(s))
        ids[i, cols], mask[i, cols] = torch.tensor(s), True
    return ids, ~mask if invert else mask


def cross_attention(x, memory, memory_mask, params, n_heads, **slip):
    b, t, d = x.shape
    hd = d // n_heads
    q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
    kv = (x if slip.get("kv_from_x") else memory) @ params["kv_proj.weight"].T
    k, v = (kv + params["kv_proj.bias"]).split(d, dim=-1)
    q, k, v = (z.view(b, -1, n_heads, hd).transpose(1, 2) for z in (q, k, v))
    m = None if memory_mask is None or slip.get("no_mask") else memory_mask[:, None, None, :]
    if slip.get("sdpa"):
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    else:
        scores = q @ k.transpose(-2, -1) / (1 if slip.get("unscaled") else math.sqrt(hd))
        if slip.get("causal"):
            scores = scores.masked_fill(~torch.ones(t, k.shape[2]).tril().bool(), -math.inf)
        y = (scores if m is None else scores.masked_fill(~m, -math.inf)).softmax(-1) @ v
    return y.transpose(1, 2).reshape(b, t, d) @ params["proj.weight"].T + params["proj.bias"]


def greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None, **slip):
    decode = slip.get("decode", model.decode)
    single = src_ids.dim() == 1
    if single:
        src_ids, src_mask = src_ids[None], None if src_mask is None else src_mask[None]
    mask = None if slip.get("no_mask") else src_mask
    memory = model.encode(src_ids, mask)
    tgt = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = decode(tgt, memory, mask)[:, slip.get("position", -1)].argmax(-1)
            done |= nxt.masked_fill_(done, eos_id) == eos_id
            tgt = torch.cat([tgt, nxt[:, None]], dim=1)
            if slip.get("stop", all)(done.tolist()):
                break
    keep = slip.get("keep_eos", False)
    rows = [r[: r.index(eos_id) + keep] if eos_id in r else r for r in tgt[:, 1:].tolist()]
    return rows[0] if single else rows


PAD, CROSS = ch06.check_pad_sequences, ch06.check_cross_attention
GREEDY = ch06.check_greedy_translate


def fails(check, fn, match):
    with pytest.raises(AssertionError, match=match):
        check(fn, seed=0)


def test_correct_answers_pass():
    PAD(pad_sequences, seed=1)
    CROSS(cross_attention, seed=1)
    GREEDY(greedy_translate, seed=1)


@pytest.mark.parametrize(
    "check, student, slip, hint",
    [
        (PAD, pad_sequences, dict(left=True), "pad on the right"),
        (PAD, pad_sequences, dict(invert=True), "True marks a real token"),
        (PAD, pad_sequences, dict(fill=0), "fill the padding with pad_id"),
        (CROSS, cross_attention, dict(no_mask=True), "padded source positions must get weight 0"),
        (CROSS, cross_attention, dict(kv_from_x=True), "keys and values come from memory"),
        (CROSS, cross_attention, dict(unscaled=True), r"sqrt\(head_dim\)"),
        (CROSS, cross_attention, dict(causal=True), "no causal mask"),
        (GREEDY, greedy_translate, dict(no_mask=True), "pass src_mask to model.encode and to"),
        (GREEDY, greedy_translate, dict(stop=any), "stop when every row has produced eos_id"),
        (GREEDY, greedy_translate, dict(keep_eos=True), "leave eos_id out"),
        (GREEDY, greedy_translate, dict(position=0), r"logits\[:, -1\]"),
    ],
)
def test_slips_are_named(check, student, slip, hint):
    fails(check, lambda *a: student(*a, **slip), hint)


def by_collate(seqs, pad_id):
    batch = collate([(s, []) for s in seqs], pad_id, pad_id, pad_id)
    return batch["src"], batch["src_mask"]


def by_torch(seqs, pad_id):
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], True, pad_id)
    return ids, ids != pad_id


def by_nested(seqs, pad_id):
    nested = torch.nested.nested_tensor([torch.tensor(s) for s in seqs])
    ids = nested.to_padded_tensor(pad_id)
    real = torch.nested.nested_tensor([torch.ones(len(s)) for s in seqs]).to_padded_tensor(0)
    return ids, real.bool()


def by_layer(x, memory, memory_mask, params, n_heads):
    layer = CrossAttention(x.shape[-1], n_heads).double()
    layer.load_state_dict(params)
    return layer(x, memory, memory_mask)


def by_multihead(x, memory, memory_mask, params, n_heads):
    mha = torch.nn.MultiheadAttention(x.shape[-1], n_heads, batch_first=True).double()
    return mha(x, memory, memory)[0]


def by_conditioned(model, src_ids, *args):
    dec = model.conditioned(src_ids, args[-1])
    return greedy_translate(model, src_ids, *args, decode=lambda tgt, memory, mask: dec(tgt))


@pytest.mark.parametrize(
    "check, shortcut, name",
    [
        (PAD, by_collate, "llmkit.seq2seq.collate"),
        (PAD, by_torch, "torch.nn.utils.rnn"),
        (PAD, by_nested, "torch.nested"),
        (CROSS, by_layer, "llmkit.nn"),
        (CROSS, by_multihead, "torch.nn.MultiheadAttention"),
        (CROSS, partial(cross_attention, sdpa=True), "torch.nn.functional.scaled_dot_product"),
        (GREEDY, translate, "llmkit.seq2seq.translate"),
        (GREEDY, by_conditioned, "llmkit.seq2seq.Seq2Seq.conditioned"),
    ],
)
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_off_limits_and_lab_imports_fail(check, shortcut, name):
    fails(check, shortcut, f"must be written without {re.escape(name)}")


def test_counting_model_cannot_be_got_round():
    base = Seq2Seq  # type(model).__mro__ reaches it too

    def encode_each_step(model, *args, **kwargs):  # the class's method, re-encoding each step
        def decode(tgt, memory, mask):
            src = args[0] if args[0].dim() == 2 else args[0][None]
            return base.decode(model, tgt, base.encode(model, src, mask), mask)

        return greedy_translate(model, *args, **kwargs, decode=decode)

    def forward_each_step(model, src_ids, *args, **kwargs):
        src = src_ids if src_ids.dim() == 2 else src_ids[None]
        return greedy_translate(
            model, src_ids, *args, **kwargs, decode=lambda tgt, memory, mask: model(src, tgt, mask)
        )

    def private_decoder_never_stops(model, *args, **kwargs):
        def decode(tgt, memory, mask):
            kv = type(model).memory_kv(model, memory)
            return base._decode(model, tgt, kv, mask)

        return greedy_translate(model, *args, **kwargs, decode=decode, stop=lambda done: False)

    fails(GREEDY, encode_each_step, "the encoder ran")
    fails(GREEDY, forward_each_step, "the encoder ran")
    fails(GREEDY, private_decoder_never_stops, "the decoder ran")


def test_counting_model_holds_no_other_model():
    case = ch06._translation_case("all")
    model = case.args[0]
    assert type(model) is Seq2Seq  # a real model, not a proxy
    seen, todo = set(), [model]
    while todo:  # everything reachable through attributes and vars()
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, torch.Tensor | str | int | float | type(None)):
            continue
        seen.add(id(obj))
        assert not isinstance(obj, torch.nn.Module) or any(obj is m for m in model.modules())
        items = vars(obj).values() if hasattr(obj, "__dict__") else ()
        if isinstance(obj, dict):
            items = obj.values()
        elif isinstance(obj, list | tuple | set):
            items = obj
        todo.extend(items)
    assert type(model.ln_enc).runs == 0 and type(model.ln_dec).runs == 0

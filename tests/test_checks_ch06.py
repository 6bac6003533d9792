"""Lab 06 checks: each catalogued slip is named, the off-limits functions fail, and the
counting model of greedy_translate cannot be got round. (Solution, stub and wrapper of
every exercise: tests/test_checks.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.course.checks import ch06
from llmkit.seq2seq import Seq2Seq, collate, translate


def pad_sequences(seqs, pad_id, *, left=False, invert=False, fill=None, torch_pad=False):
    if torch_pad:
        rows = [torch.tensor(s) for s in seqs]
        ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
        return ids, ids != pad_id
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id if fill is None else fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        cols = slice(longest - len(s), None) if left else slice(0, len(s))
        ids[i, cols], mask[i, cols] = torch.tensor(s), True
    return ids, ~mask if invert else mask


def cross_attention(
    x,
    memory,
    memory_mask,
    params,
    n_heads,
    *,
    mask=True,
    kv_from_x=False,
    scale=True,
    causal=False,
    sdpa=False,
):
    b, t, d = x.shape
    hd = d // n_heads
    q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
    kv = (x if kv_from_x else memory) @ params["kv_proj.weight"].T + params["kv_proj.bias"]
    k, v = kv.split(d, dim=-1)
    q, k, v = (z.view(b, -1, n_heads, hd).transpose(1, 2) for z in (q, k, v))
    m = memory_mask[:, None, None, :] if (mask and memory_mask is not None) else None
    if sdpa:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    else:
        scores = q @ k.transpose(-2, -1) / (math.sqrt(hd) if scale else 1)
        if causal:
            scores = scores.masked_fill(~torch.ones(t, k.shape[2]).tril().bool(), -math.inf)
        if m is not None:
            scores = scores.masked_fill(~m, -math.inf)
        y = scores.softmax(-1) @ v
    y = y.transpose(1, 2).reshape(b, t, d)
    return y @ params["proj.weight"].T + params["proj.bias"]


def greedy_translate(
    model,
    src_ids,
    bos_id,
    eos_id,
    max_new_tokens,
    src_mask=None,
    *,
    use_mask=True,
    stop_all=True,
    stop_any=False,
    keep_eos=False,
    position=-1,
    encode=None,
    decode=None,
):
    encode = encode or model.encode
    decode = decode or model.decode
    single = src_ids.dim() == 1
    if single:
        src_ids, src_mask = src_ids[None], None if src_mask is None else src_mask[None]
    mask = src_mask if use_mask else None
    memory = encode(src_ids, mask)
    tgt = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = decode(tgt, memory, mask)
            nxt = logits[:, position].argmax(-1).masked_fill(done, eos_id)
            done |= nxt == eos_id
            tgt = torch.cat([tgt, nxt[:, None]], dim=1)
            if (stop_all and done.all()) or (stop_any and done.any()):
                break
    rows = [r[: r.index(eos_id) + keep_eos] if eos_id in r else r for r in tgt[:, 1:].tolist()]
    return rows[0] if single else rows


def fails(check, fn, match):
    with pytest.raises(AssertionError, match=match):
        check(fn, seed=0)


def test_correct_answers_pass():
    ch06.check_pad_sequences(pad_sequences, seed=1)
    ch06.check_cross_attention(cross_attention, seed=1)
    ch06.check_greedy_translate(greedy_translate, seed=1)


@pytest.mark.parametrize(
    "options, hint",
    [
        (dict(left=True), "pad on the right"),
        (dict(invert=True), "True marks a real token"),
        (dict(fill=0), "fill the padding with pad_id"),
    ],
)
def test_pad_sequences_slips(options, hint):
    fails(ch06.check_pad_sequences, lambda s, p: pad_sequences(s, p, **options), hint)


@pytest.mark.parametrize(
    "options, hint",
    [
        (dict(mask=False), "padded source positions must get weight 0"),
        (dict(kv_from_x=True), "keys and values come from memory"),
        (dict(scale=False), r"sqrt\(head_dim\)"),
        (dict(causal=True), "no causal mask"),
    ],
)
def test_cross_attention_slips(options, hint):
    fails(ch06.check_cross_attention, lambda *a: cross_attention(*a, **options), hint)


@pytest.mark.parametrize(
    "options, hint",
    [
        (dict(use_mask=False), "pass src_mask to model.encode and to model.decode"),
        (dict(stop_all=False, stop_any=True), "stop when every row has produced eos_id"),
        (dict(keep_eos=True), "leave eos_id out"),
        (dict(position=0), r"logits\[:, -1\]"),
    ],
)
def test_greedy_translate_slips(options, hint):
    fails(ch06.check_greedy_translate, lambda *a: greedy_translate(*a, **options), hint)


def test_off_limits_functions_fail():
    without = "must be written without"
    fails(
        ch06.check_cross_attention,
        lambda *a: cross_attention(*a, sdpa=True),
        f"{without} torch.nn.functional.scaled_dot_product_attention",
    )
    fails(
        ch06.check_pad_sequences,
        lambda s, p: pad_sequences(s, p, torch_pad=True),
        f"{without} torch.nn.utils.rnn",
    )

    def multihead(x, memory, memory_mask, params, n_heads):
        mha = torch.nn.MultiheadAttention(x.shape[-1], n_heads, batch_first=True).double()
        return mha(x, memory, memory)[0]

    fails(ch06.check_cross_attention, multihead, f"{without} torch.nn.MultiheadAttention")


def test_lab_imports_as_shortcuts_fail():
    def by_collate(seqs, pad_id):
        batch = collate([(s, []) for s in seqs], pad_id, pad_id, pad_id)
        return batch["src"], batch["src_mask"]

    def by_layer(x, memory, memory_mask, params, n_heads):
        from llmkit.nn import CrossAttention

        layer = CrossAttention(x.shape[-1], n_heads).double()
        layer.load_state_dict(params)
        return layer(x, memory, memory_mask)

    def by_conditioned(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
        dec = model.conditioned(src_ids, src_mask)
        return greedy_translate(
            model,
            src_ids,
            bos_id,
            eos_id,
            max_new_tokens,
            src_mask,
            decode=lambda tgt, memory, mask: dec(tgt),
        )

    fails(ch06.check_pad_sequences, by_collate, "without llmkit.seq2seq.collate")
    fails(ch06.check_cross_attention, by_layer, "without llmkit.nn")
    fails(ch06.check_greedy_translate, translate, "without llmkit.seq2seq.translate")
    fails(ch06.check_greedy_translate, by_conditioned, "without llmkit.seq2seq.Seq2Seq.conditioned")


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

        return greedy_translate(model, *args, **kwargs, decode=decode, stop_all=False)

    fails(ch06.check_greedy_translate, encode_each_step, "the encoder ran")
    fails(ch06.check_greedy_translate, forward_each_step, "the encoder ran")
    fails(ch06.check_greedy_translate, private_decoder_never_stops, "the decoder ran")


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

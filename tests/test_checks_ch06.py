"""The chapter-06 lab checks pass on correct answers and fail, with the right hint, on
the usual mistakes."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from llmkit.course.checks import ch06

# ------------------------------------------------------------------ correct answers


def pad_sequences(seqs, pad_id):
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


def pad_sequences_from_lengths(seqs, pad_id):
    lengths = torch.tensor([len(s) for s in seqs])
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    rows = [list(s) + [pad_id] * (mask.shape[1] - len(s)) for s in seqs]
    return torch.tensor(rows), mask


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
    sdpa=False,
):
    b, t, d = x.shape
    hd = d // n_heads
    q = x @ params["q_proj.weight"].T + params["q_proj.bias"]
    source = x if kv_from_x else memory
    kv = source @ params["kv_proj.weight"].T + params["kv_proj.bias"]
    k, v = kv.split(d, dim=-1)
    q, k, v = (z.view(b, -1, n_heads, hd).transpose(1, 2) for z in (q, k, v))
    m = memory_mask[:, None, None, :] if (mask and memory_mask is not None) else None
    if sdpa:
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
    else:
        scores = q @ k.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(hd)
        if m is not None:
            scores = scores.masked_fill(~m, float("-inf"))
        y = scores.softmax(-1) @ v
    y = y.transpose(1, 2).reshape(b, t, d)
    return y @ params["proj.weight"].T + params["proj.bias"]


@torch.no_grad()
def greedy_translate(
    model,
    src_ids,
    bos_id,
    eos_id,
    max_new_tokens,
    src_mask=None,
    *,
    stop=True,
    cut=True,
    extra=0,
    encode_each_step=False,
    use_mask=True,
):
    single = src_ids.dim() == 1
    if single:
        src_ids = src_ids[None]
        src_mask = None if src_mask is None else src_mask[None]
    mask = src_mask if use_mask else None
    memory = model.encode(src_ids, mask)
    tgt = torch.full((src_ids.shape[0], 1), bos_id, dtype=torch.long)
    done = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens + extra):
        if encode_each_step:
            logits = model(src_ids, tgt, mask)
        else:
            logits = model.decode(tgt, memory, mask)
        nxt = logits[:, -1].argmax(-1).masked_fill(done, eos_id)
        done |= nxt == eos_id
        tgt = torch.cat([tgt, nxt[:, None]], dim=1)
        if stop and done.all():
            break
    rows = tgt[:, 1:].tolist()
    if cut:
        rows = [r[: r.index(eos_id)] if eos_id in r else r for r in rows]
    return rows[0] if single else rows


def greedy_translate_row_by_row(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
    """One source at a time, padding removed: the same tokens, fewer decoder calls."""
    if src_ids.dim() == 1:
        return greedy_translate(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask)
    out = []
    for i in range(src_ids.shape[0]):
        row = src_ids[i] if src_mask is None else src_ids[i][src_mask[i]]
        with torch.no_grad():
            memory = model.encode(row[None])
            tgt = [bos_id]
            for _ in range(max_new_tokens):
                nxt = int(model.decode(torch.tensor([tgt]), memory)[0, -1].argmax())
                if nxt == eos_id:
                    break
                tgt.append(nxt)
        out.append(tgt[1:])
    return out


# ------------------------------------------------------------------ passing


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_checks_pass_on_correct_answers(seed, capsys):
    ch06.check_pad_sequences(pad_sequences, seed=seed)
    ch06.check_pad_sequences(pad_sequences_from_lengths, seed=seed)
    ch06.check_cross_attention(cross_attention, seed=seed)
    ch06.check_cross_attention(functools.partial(cross_attention, sdpa=True), seed=seed)
    ch06.check_greedy_translate(greedy_translate, seed=seed)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.startswith("✔ ") for line in lines)
    assert lines[0].startswith("✔ pad_sequences: 20 batches match")
    assert lines[2].startswith("✔ cross_attention: 12 random cases match")
    assert lines[4].startswith("✔ greedy_translate: 10 random translations match")


def test_greedy_translate_row_by_row_is_refused():
    # encodes once per source: refused (the exercise asks for one batch, encoded once)
    with pytest.raises(AssertionError, match="the encoder ran"):
        ch06.check_greedy_translate(greedy_translate_row_by_row, seed=0)


def test_references_agree_with_the_library():
    import random

    rng = random.Random(0)
    g = ch06._generator(rng)
    x, memory, mask, params = ch06._cross_case(rng, g, 2, 3, 5, 2, 4, True)
    assert torch.allclose(
        ch06.reference_cross_attention(x, memory, mask, params, 2),
        ch06._cross_attention(x, memory, mask, params, 2),
    )
    for kind in ("single", "zero", "full", "all", "some", "none"):
        model, src, m, bos, eos, n = ch06._translation_case(rng, g, kind)
        assert ch06._greedy_loop(model, src, m, bos, eos, n) == (
            ch06.reference_greedy_translate(model, src, bos, eos, n, src_mask=m)
        )


def test_seed_from_environment_makes_inputs_repeat(monkeypatch):
    seen = []

    def spy(x, memory, memory_mask, params, n_heads):
        seen.append(x.sum().item())
        return cross_attention(x, memory, memory_mask, params, n_heads)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch06.check_cross_attention(spy)
    first, seen[:] = list(seen), []
    ch06.check_cross_attention(spy)
    assert seen == first
    seen.clear()
    ch06.check_cross_attention(spy, seed=6)
    assert seen != first


def test_checks_leave_the_global_torch_generator_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ch06.check_greedy_translate(greedy_translate, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_unfinished_stub_propagates():
    def stub(*args, **kwargs):
        raise NotImplementedError("stub")

    for check in (
        ch06.check_pad_sequences,
        ch06.check_cross_attention,
        ch06.check_greedy_translate,
    ):
        with pytest.raises(NotImplementedError):
            check(stub, seed=0)


def test_checks_refuse_llmkit_functions():
    from llmkit.seq2seq import pad_sequences as library_pad
    from llmkit.seq2seq import translate

    with pytest.raises(AssertionError, match="pad_sequences: this is llmkit's own function"):
        ch06.check_pad_sequences(library_pad, seed=0)
    with pytest.raises(AssertionError, match="greedy_translate: this is llmkit's own"):
        ch06.check_greedy_translate(functools.partial(translate), seed=0)
    with pytest.raises(AssertionError, match="cross_attention: this is llmkit's own"):
        ch06.check_cross_attention(ch06.reference_cross_attention, seed=0)


def test_cases_argument_is_validated():
    with pytest.raises(ValueError, match="cases must be an int >= 4"):
        ch06.check_greedy_translate(greedy_translate, cases=2, seed=0)


# ------------------------------------------------------------------ failing: padding


def _pad_fails(fn, match):
    with pytest.raises(AssertionError, match=match) as err:
        ch06.check_pad_sequences(fn, seed=0)
    assert "hint:" in str(err.value)


def test_pad_sequences_mistakes():
    def left_padded(seqs, pad_id):
        ids, mask = pad_sequences([s[::-1] for s in seqs], pad_id)
        return ids.flip(1), mask.flip(1)

    _pad_fails(left_padded, "pad on the right")
    _pad_fails(lambda s, p: (pad_sequences(s, p)[0], ~pad_sequences(s, p)[1]), "opposite")
    _pad_fails(lambda s, p: (pad_sequences(s, p)[0], pad_sequences(s, p)[1].long()), "bool mask")
    _pad_fails(lambda s, p: (pad_sequences(s, p)[0].int(), pad_sequences(s, p)[1]), "torch.long")
    _pad_fails(lambda s, p: pad_sequences(s, 0), "fill the padding with pad_id")
    _pad_fails(lambda s, p: pad_sequences(s, p)[0], "expected a pair")

    def fixed_length(seqs, pad_id):
        return pad_sequences([list(s) + [pad_id] * (12 - len(s)) for s in seqs], pad_id)

    _pad_fails(fixed_length, "longest sequence of \\*this\\* batch")

    def appends_in_place(seqs, pad_id):
        longest = max(map(len, seqs))
        mask = [[True] * len(s) + [False] * (longest - len(s)) for s in seqs]
        for s in seqs:
            s.extend([pad_id] * (longest - len(s)))
        return torch.tensor(seqs), torch.tensor(mask)

    _pad_fails(appends_in_place, "modified the input lists")
    _pad_fails(lambda s, p: None, "returned None")


# ------------------------------------------------------------------ failing: cross-attention


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"mask": False}, "you ignored memory_mask"),
        ({"kv_from_x": True}, "come from memory"),
        ({"scale": False}, "sqrt\\(head_dim\\)"),
    ],
)
def test_cross_attention_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)cross_attention: .*hint: .*{match}"):
        ch06.check_cross_attention(functools.partial(cross_attention, **slip), seed=0)


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"masking": "inverted"}, "marks a real source token"),
        ({"masking": "queries"}, "becomes \\(b, 1, 1, s\\)"),  # crashes when t != s
        ({"masking": "after"}, "\\*before\\* the softmax"),
        ({"queries": "memory", "keys": "x"}, "come from memory|swapped the roles"),
        ({"scale": "model"}, "not by sqrt\\(D\\)"),
        ({"causal": True}, "no causal mask"),
        ({"swap_kv": True}, "the next D the values"),
        ({"layout": "h two d"}, "laid out \\(two, heads, head_dim\\)"),
        ({"heads": "d h", "layout": "two d h"}, "contiguous columns"),
        ({"proj": False}, "output projection"),
        ({"softmax_dim": -2}, "softmax over the keys"),
    ],
)
def test_cross_attention_recognises_each_mistake(slip, match):
    def wrong(x, memory, memory_mask, params, n_heads):
        return ch06._cross_attention(x, memory, memory_mask, params, n_heads, **slip)

    with pytest.raises(AssertionError, match=f"(?s)hint: .*{match}"):
        ch06.check_cross_attention(wrong, seed=0)


def test_cross_attention_shape_mutation_and_type():
    def last_query_only(x, memory, memory_mask, params, n_heads):
        return cross_attention(x, memory, memory_mask, params, n_heads)[:, -1:]

    with pytest.raises(AssertionError, match="one output per query"):
        ch06.check_cross_attention(last_query_only, seed=0)

    def mutates(x, memory, memory_mask, params, n_heads):
        out = cross_attention(x, memory, memory_mask, params, n_heads)
        memory.zero_()
        return out

    with pytest.raises(AssertionError, match="modified its inputs"):
        ch06.check_cross_attention(mutates, seed=0)

    with pytest.raises(AssertionError, match="expected a tensor, got list"):
        ch06.check_cross_attention(lambda *a: cross_attention(*a).tolist(), seed=0)

    def crashes(x, memory, memory_mask, params, n_heads):
        return cross_attention(x, memory, memory_mask[:, None, :, None], params, n_heads)

    with pytest.raises(AssertionError, match="(?s)your function raised.*hint: .*memory_mask"):
        ch06.check_cross_attention(crashes, seed=0)


# ------------------------------------------------------------------ failing: translation


def _translate_fails(fn, match):
    with pytest.raises(AssertionError, match=f"(?s)greedy_translate: .*hint: .*{match}") as err:
        ch06.check_greedy_translate(fn, seed=0)
    return str(err.value)


def test_greedy_translate_padding_mask():
    _translate_fails(
        functools.partial(greedy_translate, use_mask=False), "to model.encode \\*and\\* to"
    )

    def no_mask_in_decode(model, src_ids, bos_id, eos_id, max_new_tokens, src_mask=None):
        class NoMaskDecode:
            def encode(self, s, m=None):
                return model.encode(s, m)

            def decode(self, t, memory, m=None):
                return model.decode(t, memory)

            def __call__(self, s, t, m=None):
                return model(s, t, m)

        return greedy_translate(NoMaskDecode(), src_ids, bos_id, eos_id, max_new_tokens, src_mask)

    _translate_fails(
        no_mask_in_decode, "pass src_mask to model.(encode \\*and\\* to model.)?decode"
    )


def test_greedy_translate_eos_and_off_by_one():
    _translate_fails(functools.partial(greedy_translate, stop=False), "stop the loop as soon")
    _translate_fails(functools.partial(greedy_translate, cut=False), "before its first eos_id")
    _translate_fails(functools.partial(greedy_translate, extra=-1), "not one fewer")
    _translate_fails(functools.partial(greedy_translate, extra=1), "not one more")

    def one_more_call(model, src_ids, bos_id, eos_id, n, src_mask=None):
        out = greedy_translate(model, src_ids, bos_id, eos_id, n, src_mask)
        if n:  # decodes the finished target once more: crashes at n == max_len
            memory = model.encode(src_ids if src_ids.dim() == 2 else src_ids[None], src_mask)
            tgt = torch.full((memory.shape[0], n + 1), bos_id)
            model.decode(tgt, memory, src_mask if src_ids.dim() == 2 else None)
        return out

    _translate_fails(one_more_call, "at most max_len positions|the encoder ran|decode was called")

    def keeps_bos(model, src_ids, bos_id, eos_id, n, src_mask=None):
        out = greedy_translate(model, src_ids, bos_id, eos_id, n, src_mask)
        return [bos_id, *out] if src_ids.dim() == 1 else [[bos_id, *r] for r in out]

    _translate_fails(keeps_bos, "leave bos_id out")

    def first_position(model, src_ids, bos_id, eos_id, n, src_mask=None):
        return ch06._greedy_loop(model, src_ids, src_mask, bos_id, eos_id, n, position=0)

    _translate_fails(first_position, "\\*last\\* position")

    def stops_at_first_eos(model, src_ids, bos_id, eos_id, n, src_mask=None):
        return ch06._greedy_loop(model, src_ids, src_mask, bos_id, eos_id, n, stop="any")

    _translate_fails(stops_at_first_eos, "\\*every\\* row")

    def last_token_only(model, src_ids, bos_id, eos_id, n, src_mask=None):
        return ch06._greedy_loop(model, src_ids, src_mask, bos_id, eos_id, n, whole_target=False)

    _translate_fails(last_token_only, "no cache")


def test_greedy_translate_encoder_once_and_types():
    _translate_fails(
        functools.partial(greedy_translate, encode_each_step=True), "run model.encode once"
    )

    def conditioned(model, src_ids, bos_id, eos_id, n, src_mask=None):
        return model.conditioned(src_ids, src_mask)

    with pytest.raises(AssertionError, match="do not use model.conditioned"):
        ch06.check_greedy_translate(conditioned, seed=0)

    def as_tensor(model, src_ids, bos_id, eos_id, n, src_mask=None):
        return torch.tensor([0])

    _translate_fails(as_tensor, "return Python lists")

    def batch_for_one(model, src_ids, bos_id, eos_id, n, src_mask=None):
        if src_ids.dim() == 1:
            return [greedy_translate(model, src_ids, bos_id, eos_id, n, src_mask)]
        return greedy_translate(model, src_ids, bos_id, eos_id, n, src_mask)

    _translate_fails(batch_for_one, "return that batch's only list")

    def mutates(model, src_ids, bos_id, eos_id, n, src_mask=None):
        out = greedy_translate(model, src_ids, bos_id, eos_id, n, src_mask)
        src_ids.fill_(0)
        return out

    _translate_fails(mutates, "build new tensors")

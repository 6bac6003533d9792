"""The chapter-02 lab checks: they pass on correct answers, fail with the right hint on
subtly wrong ones, refuse llmkit's own functions and let an unfinished stub through."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from einops import rearrange

import llmkit.nn
from llmkit.course.checks import ch02

# ---------------------------------------------------------------------------- answers
# Written out here (not llmkit's objects, which the checks refuse).


def causal_mask(t):
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


def attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def split_heads(x, n_heads):
    b, t, hd = x.shape
    return x.view(b, t, n_heads, hd // n_heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):
    q, k, v = (x @ w_qkv.T + b_qkv).chunk(3, dim=-1)
    q, k, v = (split_heads(a, n_heads) for a in (q, k, v))
    y = attention(q, k, v, causal_mask(x.shape[1]))
    return merge_heads(y) @ w_proj.T + b_proj


def mha_inline(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):
    """The same without helpers, in float32 (the checks allow 1e-5)."""
    x, w_qkv, b_qkv, w_proj, b_proj = (a.float() for a in (x, w_qkv, b_qkv, w_proj, b_proj))
    t = x.shape[1]
    q, k, v = rearrange(x @ w_qkv.T + b_qkv, "b t (three h d) -> three b h t d", three=3, h=n_heads)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    y = torch.softmax(scores.masked_fill(future, -1e9), dim=-1) @ v
    return rearrange(y, "b h t d -> b t (h d)") @ w_proj.T + b_proj


def attention_renormalised(q, k, v, mask=None):
    """Mask after the softmax, then renormalise: mathematically the same, so correct."""
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        w = w * mask
        w = w / w.sum(dim=-1, keepdim=True)
    return w @ v


CORRECT = {
    "check_causal_mask": [causal_mask, lambda t: torch.ones(t, t).tril().bool()],
    "check_attention": [attention, attention_renormalised],
    "check_split_heads": [split_heads, lambda x, n: rearrange(x, "b t (h d) -> b h t d", h=n)],
    "check_merge_heads": [merge_heads, lambda x: rearrange(x, "b h t d -> b t (h d)")],
    "check_multi_head_attention": [multi_head_attention, mha_inline],
}


@pytest.mark.parametrize(
    ("check", "index"), [(c, i) for c, fns in CORRECT.items() for i in range(len(fns))]
)
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checks_pass_on_correct_answers(check, index, seed, capsys):
    getattr(ch02, check)(CORRECT[check][index], seed=seed)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✔ ") and "match" in out


# ---------------------------------------------------------------------------- mistakes


def _attention_with(scale=None, mask_after_softmax=False, dim=-1, inverted=False, zero=False):
    def wrong(q, k, v, mask=None):
        d = q.shape[-1] if scale is None else scale(q, v)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask is not None and inverted:
            mask = ~mask
        if mask is not None and not mask_after_softmax:
            scores = scores.masked_fill(~mask, 0.0 if zero else float("-inf"))
        w = torch.softmax(scores, dim=dim)
        if mask is not None and mask_after_softmax:
            w = w.masked_fill(~mask, 0.0)
        return w @ v

    return wrong


def _attention_batch_t(q, k, v, mask=None):
    """``k.T`` reverses *all* dimensions: right for 2-D inputs only."""
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _mha_with(layout="three h d", causal=True, scale=None, project=True):
    def wrong(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):
        t, d_model = x.shape[1], x.shape[2]
        qkv = x @ w_qkv.T + b_qkv
        q, k, v = rearrange(qkv, f"b t ({layout}) -> three b h t d", three=3, h=n_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(scale or q.shape[-1])
        if causal:
            scores = scores.masked_fill(~causal_mask(t), float("-inf"))
        y = rearrange(torch.softmax(scores, dim=-1) @ v, "b h t d -> b t (h d)")
        del d_model
        return y @ w_proj.T + b_proj if project else y

    return wrong


def _mha_transposed_heads(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):
    b, t, _ = x.shape
    q, k, v = (x @ w_qkv.T + b_qkv).chunk(3, dim=-1)
    q, k, v = (a.reshape(b, n_heads, t, -1) for a in (q, k, v))  # no transpose
    y = attention(q, k, v, causal_mask(t))
    return y.reshape(b, t, -1) @ w_proj.T + b_proj


WRONG = [
    # causal mask
    ("check_causal_mask", lambda t: torch.triu(torch.ones(t, t, dtype=torch.bool)), "transposed"),
    ("check_causal_mask", lambda t: ~causal_mask(t), "True means"),
    ("check_causal_mask", lambda t: torch.tril(torch.ones(t, t, dtype=torch.bool), -1), "itself"),
    ("check_causal_mask", lambda t: torch.tril(torch.ones(t, t)), "bool"),
    ("check_causal_mask", lambda t: None, "return"),
    # attention
    ("check_attention", _attention_with(scale=lambda q, v: 1.0), "sqrt\\(d\\)"),
    ("check_attention", _attention_with(scale=lambda q, v: q.shape[-1] ** 2), "not by d"),
    ("check_attention", _attention_with(scale=lambda q, v: v.shape[-1]), "value width"),
    ("check_attention", _attention_with(mask_after_softmax=True), "before\\* the softmax"),
    ("check_attention", _attention_with(dim=-2), "over the keys"),
    ("check_attention", _attention_with(inverted=True), "may attend"),
    ("check_attention", _attention_with(zero=True), "-inf, not 0"),
    ("check_attention", lambda q, k, v, mask=None: attention(q, k, v), "ignored the mask"),
    ("check_attention", _attention_batch_t, "raised|transpose"),
    # heads
    ("check_split_heads", lambda x, n: x.reshape(x.shape[0], n, x.shape[1], -1), "reshape alone"),
    ("check_split_heads", lambda x, n: rearrange(x, "b t (h d) -> b t h d", h=n), "before the"),
    ("check_split_heads", lambda x, n: rearrange(x, "b t (d h) -> b h t d", h=n), "\\(d h\\)"),
    ("check_merge_heads", lambda x: x.reshape(x.shape[0], x.shape[2], -1), "reshape alone"),
    ("check_merge_heads", lambda x: rearrange(x, "b h t d -> b t (d h)"), "\\(d h\\)"),
    # multi-head attention
    ("check_multi_head_attention", _mha_with(causal=False), "causal mask"),
    ("check_multi_head_attention", _mha_with(project=False), "output projection"),
    ("check_multi_head_attention", _mha_with(scale=-1), "sqrt\\(head_dim\\)"),
    ("check_multi_head_attention", _mha_with(layout="h three d"), "\\(three, heads, head_dim\\)"),
    ("check_multi_head_attention", _mha_with(layout="three d h"), "\\(three, heads, head_dim\\)"),
    ("check_multi_head_attention", _mha_transposed_heads, "wrong values"),
]


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
@pytest.mark.parametrize(("check", "wrong", "hint"), WRONG)
@pytest.mark.parametrize("seed", [None, 0])
def test_checks_fail_on_subtly_wrong_answers(check, wrong, hint, seed, capsys):
    if hint == "sqrt\\(head_dim\\)":
        # scale by sqrt(d_model): built here because the wrong answer needs d_model
        def wrong(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):  # noqa: F811
            return _mha_with(scale=x.shape[-1])(x, w_qkv, b_qkv, w_proj, b_proj, n_heads)

    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch02, check)(wrong, seed=seed)
    message = str(info.value)
    assert message.startswith(check.removeprefix("check_") + ":")
    assert "hint:" in message and "input:" in message
    assert capsys.readouterr().out == ""


def test_attention_hint_on_an_unscaled_answer_reads_well():
    with pytest.raises(AssertionError) as info:
        ch02.check_attention(_attention_with(scale=lambda q, v: 1.0), seed=0)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("attention: wrong values (max abs difference ")
    assert lines[-1] == (
        "  hint: divide the scores q @ k^T by sqrt(d), d = q.shape[-1], before the softmax"
    )


# ---------------------------------------------------------------------------- the library


LIBRARY = {
    "check_causal_mask": llmkit.nn.causal_mask,
    "check_attention": llmkit.nn.attention,
    "check_split_heads": ch02.reference_split_heads,
    "check_merge_heads": ch02.reference_merge_heads,
    "check_multi_head_attention": ch02.reference_multi_head_attention,
}


@pytest.mark.parametrize("check", sorted(LIBRARY))
def test_checks_refuse_llmkits_own_function(check, capsys):
    fn = LIBRARY[check]
    name = check.removeprefix("check_")
    message = f"^{name}: this is llmkit's own function; write your own implementation$"
    for submitted in (fn, functools.partial(fn), functools.wraps(fn)(lambda *a: fn(*a))):
        with pytest.raises(AssertionError, match=message):
            getattr(ch02, check)(submitted, seed=0)
    assert capsys.readouterr().out == ""


def test_multi_head_check_refuses_the_module_class():
    with pytest.raises(AssertionError, match="llmkit's own"):
        ch02.check_multi_head_attention(llmkit.nn.MultiHeadAttention, seed=0)


def _not_implemented(*args):
    raise NotImplementedError("exercise")


@pytest.mark.parametrize("check", sorted(LIBRARY))
def test_checks_let_not_implemented_through(check):
    with pytest.raises(NotImplementedError):
        getattr(ch02, check)(_not_implemented)


def test_crash_becomes_a_hint():
    def crashes(q, k, v, mask=None):
        return q @ k  # wrong shapes for q @ k (no transpose)

    with pytest.raises(AssertionError, match="your function raised RuntimeError") as info:
        ch02.check_attention(crashes, seed=0)
    assert "hint:" in str(info.value)


def test_modifying_inputs_is_reported():
    def in_place(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])
        scores = q @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    with pytest.raises(AssertionError, match="modified its inputs"):
        ch02.check_attention(in_place, seed=0)


# ---------------------------------------------------------------------------- isolation


def test_multi_head_check_grades_it_with_the_reference_helpers(capsys):
    """The student's mha calls their own (wrong) helpers: mha keeps its points, and the
    helpers are back in place afterwards."""
    namespace: dict = {"__name__": "__main__", "torch": torch, "math": math}
    exec(
        "def causal_mask(t):\n"
        "    return torch.ones(t, t, dtype=torch.bool).triu()  # wrong\n\n"
        "def attention(q, k, v, mask=None):\n"
        "    return torch.softmax(q @ k.transpose(-2, -1), -1) @ v  # wrong\n\n"
        "def split_heads(x, n_heads):\n"
        "    return x.reshape(x.shape[0], n_heads, x.shape[1], -1)  # wrong\n\n"
        "def merge_heads(x):\n"
        "    return x.reshape(x.shape[0], x.shape[2], -1)  # wrong\n\n"
        "def multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):\n"
        "    q, k, v = (x @ w_qkv.T + b_qkv).chunk(3, dim=-1)\n"
        "    q, k, v = (split_heads(a, n_heads) for a in (q, k, v))\n"
        "    y = attention(q, k, v, mask=causal_mask(x.shape[1]))\n"
        "    return merge_heads(y) @ w_proj.T + b_proj\n",
        namespace,
    )
    own = {n: namespace[n] for n in ("causal_mask", "attention", "split_heads", "merge_heads")}
    ch02.check_multi_head_attention(namespace["multi_head_attention"], seed=0)
    assert capsys.readouterr().out.startswith("✔ multi_head_attention: 12 random cases")
    assert all(namespace[n] is fn for n, fn in own.items())
    with pytest.raises(AssertionError):
        ch02.check_attention(own["attention"], seed=0)


def test_helpers_with_other_signatures_still_reach_the_students_code(capsys):
    namespace: dict = {"__name__": "__main__", "torch": torch, "math": math}
    exec(
        "def attention(q, k, v, causal):\n"
        "    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
        "    if causal:\n"
        "        t = s.shape[-1]\n"
        "        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float('-inf'))\n"
        "    return torch.softmax(s, -1) @ v\n\n"
        "def multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):\n"
        "    b, t, d = x.shape\n"
        "    q, k, v = (x @ w_qkv.T + b_qkv).view(b, t, 3, n_heads, -1).permute(2, 0, 3, 1, 4)\n"
        "    y = attention(q, k, v, causal=True)\n"
        "    return y.transpose(1, 2).reshape(b, t, d) @ w_proj.T + b_proj\n",
        namespace,
    )
    ch02.check_multi_head_attention(namespace["multi_head_attention"], seed=0)
    assert "✔" in capsys.readouterr().out


# ---------------------------------------------------------------------------- seeds


def _attention_inputs(**kwargs) -> list[tuple]:
    seen = []

    def spy(q, k, v, mask=None):
        seen.append((q.clone(), None if mask is None else mask.clone()))
        return attention(q, k, v, mask)

    ch02.check_attention(spy, **kwargs)
    return seen


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(qa, qb) and ((ma is None and mb is None) or torch.equal(ma, mb))
        for (qa, ma), (qb, mb) in zip(a, b, strict=True)
    )


def test_check_seed_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("LLMKIT_CHECK_SEED", "123")
    from_env = _attention_inputs()
    assert _same(_attention_inputs(), from_env) and _same(_attention_inputs(seed=123), from_env)
    assert not _same(_attention_inputs(seed=7), from_env)  # an explicit seed wins
    monkeypatch.setenv("LLMKIT_CHECK_SEED", "")  # empty: fresh inputs
    assert not _same(_attention_inputs(), _attention_inputs())


def test_random_cases_cover_batches_masks_and_widths():
    cases = [ch02._attention_case(ch02.check_rng(s)) for s in range(200)]
    assert {q.dim() for q, _, _, _ in cases} == {2, 3, 4}
    assert any(q.shape[-2] != k.shape[-2] for q, k, _, _ in cases)
    assert any(q.shape[-1] != v.shape[-1] for q, _, v, _ in cases)
    masks = [m for *_, m in cases if m is not None]
    assert len(masks) > 100 and any(m.dim() > 2 for m in masks)
    assert all(bool(m.any(dim=-1).all()) for m in masks)  # no fully masked query


def test_cases_argument_is_validated():
    with pytest.raises(ValueError, match="cases must be an int >= 4"):
        ch02.check_attention(attention, cases=2)

"""Lab 02's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, PyTorch's and llmkit's attention are off limits (the lab imports
``MultiHeadAttention`` and ``Block``), and the later exercises are graded on their own."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import llmkit.nn
from llmkit.course.checks import ch02

# Answers, right and wrong (one keyword per slip), written out here: llmkit's objects and
# the checks' references are off limits.
QKV = ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")


def causal_mask(t):
    return torch.ones(t, t, dtype=torch.bool).tril()


def attention(q, k, v, mask=None, scale=None, dim=-1, masked=-math.inf, after=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(scale(q, v) if scale else q.shape[-1])
    if mask is not None and not after:
        scores = scores.masked_fill(~mask, masked)
    w = torch.softmax(scores, dim=dim)
    return (w.masked_fill(~mask, 0.0) if mask is not None and after else w) @ v


def mha(x, w_qkv, b_qkv, w_proj, b_proj, h, layout="three h d", causal=True, **kw):
    q, k, v = rearrange(x @ w_qkv.T + b_qkv, f"b t ({layout}) -> three b h t d", three=3, h=h)
    scores = q @ k.transpose(-2, -1) / math.sqrt(kw.get("width") or q.shape[-1])
    if causal:
        scores = scores.masked_fill(~causal_mask(x.shape[1]), -math.inf)
    y = rearrange(torch.softmax(scores, -1) @ v, "b h t d -> b t (h d)")
    return y @ w_proj.T + b_proj if kw.get("project", True) else y


def block(x, p, h, post=False, res=(1, 1), act="tanh", causal=True, parallel=False, **kw):
    def ln(z, n):
        if kw.get("unbiased"):
            z = (z - z.mean(-1, keepdim=True)) / (z.var(-1, keepdim=True) + 1e-5).sqrt()
            return z * p[n + ".weight"] + p[n + ".bias"]
        return F.layer_norm(z, z.shape[-1:], p[n + ".weight"], p[n + ".bias"], eps=1e-5)

    def mlp(z):
        z = z @ p["mlp.fc.weight"].T + p["mlp.fc.bias"]
        z = z.relu() if act == "relu" else F.gelu(z, approximate=act)
        return z @ p["mlp.proj.weight"].T + p["mlp.proj.bias"]

    att = kw.get("attend") or (lambda z: mha(z, *(p[n] for n in QKV), h, causal=causal))
    if post:
        y = ln(x + att(x), "ln_1")
        return ln(y + mlp(y), "ln_2")
    y = x * res[0] + att(ln(x, "ln_1"))
    return y * res[1] + mlp(ln(x if parallel else y, "ln_2"))


def with_(fn, **kw):
    return lambda *args: fn(*args, **kw)


SLIPS = [
    ("causal_mask", lambda t: causal_mask(t).T, "transposed"),
    ("causal_mask", lambda t: ~causal_mask(t), "True means"),
    ("causal_mask", lambda t: causal_mask(t).tril(-1), "attend to itself"),
    ("attention", with_(attention, scale=lambda q, v: 1), r"by sqrt\(d\), d = q"),
    ("attention", with_(attention, scale=lambda q, v: q.shape[-1] ** 2), "not by d"),
    ("attention", with_(attention, scale=lambda q, v: v.shape[-1]), "value width"),
    ("attention", with_(attention, dim=-2), "over the keys"),
    ("attention", with_(attention, after=True), r"\*before\* the softmax"),
    ("attention", with_(attention, masked=0.0), "-inf, not 0"),
    ("attention", lambda q, k, v, mask=None: attention(q, k, v), "ignored the mask"),
    ("split_heads", lambda x, n: x.reshape(x.shape[0], n, x.shape[1], -1), "reshape alone"),
    ("split_heads", lambda x, n: rearrange(x, "b t (h d) -> b t h d", h=n), "before the pos"),
    ("split_heads", lambda x, n: rearrange(x, "b t (d h) -> b h t d", h=n), r"\(d h\)"),
    ("merge_heads", lambda x: x.reshape(x.shape[0], x.shape[2], -1), "reshape alone"),
    ("merge_heads", lambda x: rearrange(x, "b h t d -> b t (d h)"), r"\(d h\)"),
    ("multi_head_attention", with_(mha, causal=False), "apply the causal mask"),
    ("multi_head_attention", with_(mha, project=False), "output projection"),
    ("multi_head_attention", lambda x, *a: mha(x, *a, width=x.shape[-1]), "not by sqrt"),
    ("multi_head_attention", with_(mha, layout="h three d"), r"\(three, heads, head_dim\)"),
    ("multi_head_attention", with_(mha, layout="three d h"), r"\(three, heads, head_dim\)"),
    ("transformer_block", with_(block, post=True), "pre-LN"),
    ("transformer_block", with_(block, res=(0, 1)), "residual connection"),
    ("transformer_block", with_(block, res=(1, 0)), "residual connection"),
    ("transformer_block", with_(block, act="relu"), "not ReLU"),
    ("transformer_block", with_(block, act="none"), "tanh approximation"),
    ("transformer_block", with_(block, causal=False), "attention is causal"),
    ("transformer_block", with_(block, parallel=True), r"LN_2\(y\), not"),
    ("transformer_block", with_(block, unbiased=True), "biased variance"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch02, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_float32_and_renormalised_answers_pass():
    def renormalised(q, k, v, mask=None):
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
        return (w if mask is None else w * mask / (w * mask).sum(-1, keepdim=True)) @ v

    ch02.check_attention(renormalised, seed=1)
    ch02.check_multi_head_attention(lambda *a: mha(*(t.float() for t in a[:-1]), a[-1]))
    ch02.check_transformer_block(
        lambda x, p, h: block(x.float(), {k: v.float() for k, v in p.items()}, h), seed=1
    )


def _mha_torch(x, w_qkv, b_qkv, w_proj, b_proj, h):
    layer = nn.MultiheadAttention(x.shape[-1], h, batch_first=True, dtype=x.dtype)
    names = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    layer.load_state_dict(dict(zip(names, (w_qkv, b_qkv, w_proj, b_proj), strict=True)))
    return layer(x, x, x, attn_mask=~causal_mask(x.shape[1]), need_weights=False)[0]


def _mha_llmkit(x, w_qkv, b_qkv, w_proj, b_proj, h):
    layer = llmkit.nn.MultiHeadAttention(x.shape[-1], h).to(x.dtype)
    names = ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias")
    layer.load_state_dict(dict(zip(names, (w_qkv, b_qkv, w_proj, b_proj), strict=True)))
    return layer(x)[0]


def _block_llmkit(x, p, h):
    layer = llmkit.nn.Block(x.shape[-1], h, hidden=p["mlp.fc.weight"].shape[0]).to(x.dtype)
    layer.load_state_dict(p)
    return layer(x)[0]


def _mha_sdpa(x, w_qkv, b_qkv, w_proj, b_proj, h):
    q, k, v = rearrange(x @ w_qkv.T + b_qkv, "b t (three h d) -> three b h t d", three=3, h=h)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return rearrange(y, "b h t d -> b t (h d)") @ w_proj.T + b_proj


SHORTCUTS = [
    ("causal_mask", llmkit.nn.causal_mask, "llmkit.nn"),
    ("attention", llmkit.nn.attention, "llmkit.nn"),
    ("attention", with_(F.scaled_dot_product_attention), "functional.scaled_dot_product_attention"),
    ("multi_head_attention", _mha_sdpa, "scaled_dot_product_attention"),
    ("multi_head_attention", _mha_torch, "torch.nn.MultiheadAttention"),
    ("multi_head_attention", _mha_llmkit, "llmkit.nn"),
    (
        "multi_head_attention",
        lambda x, w, b, w2, b2, h: F.multi_head_attention_forward(
            x, x, x, x.shape[-1], h, w, b, None, None, False, 0.0, w2, b2
        ),
        "_forward",
    ),
    ("transformer_block", _block_llmkit, "llmkit.nn"),
    (
        "transformer_block",
        lambda x, p, h: block(x, p, h, attend=lambda z: _mha_torch(z, *(p[n] for n in QKV), h)),
        "MultiheadAttention",
    ),
    ("transformer_block", lambda x, p, h: nn.TransformerEncoderLayer(4, 1)(x), "EncoderLayer"),
]


@pytest.mark.parametrize(("exercise", "shortcut", "label"), SHORTCUTS)
def test_library_attention_is_off_limits(exercise, shortcut, label):
    with pytest.raises(AssertionError, match=f"must be written without .*{label}"):
        getattr(ch02, f"check_{exercise}")(shortcut, seed=0)


def test_later_exercises_use_the_reference_helpers(capsys):
    """Wrong earlier answers cost no points in multi_head_attention or transformer_block,
    and are back in place afterwards."""
    ns = {"torch": torch, "F": F, "QKV": QKV}
    source = """
def causal_mask(t):
    return torch.ones(t, t, dtype=torch.bool).triu()
def attention(q, k, v, mask=None):
    return torch.softmax(q @ k.mT, -1) @ v
def split_heads(x, n):
    return x.reshape(x.shape[0], n, x.shape[1], -1)
def merge_heads(x):
    return x.reshape(x.shape[0], x.shape[2], -1)
def multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads):
    q, k, v = (split_heads(a, n_heads) for a in (x @ w_qkv.T + b_qkv).chunk(3, -1))
    return merge_heads(attention(q, k, v, mask=causal_mask(t=x.shape[1]))) @ w_proj.T + b_proj
def transformer_block(x, p, n_heads):
    ln = lambda z, n: F.layer_norm(z, z.shape[-1:], p[n + '.weight'], p[n + '.bias'])
    y = x + multi_head_attention(ln(x, 'ln_1'), *(p[n] for n in QKV), n_heads)
    h = F.gelu(ln(y, 'ln_2') @ p['mlp.fc.weight'].T + p['mlp.fc.bias'], approximate='tanh')
    return y + h @ p['mlp.proj.weight'].T + p['mlp.proj.bias']
"""
    exec(source, ns)
    own = dict(ns)
    ch02.check_multi_head_attention(ns["multi_head_attention"], seed=0)
    ns["multi_head_attention"] = lambda *a: a[0] * 0  # wrong too
    ch02.check_transformer_block(ns["transformer_block"], seed=0)
    assert capsys.readouterr().out.count("✔") == 2
    assert all(ns[k] is own[k] for k in ("causal_mask", "attention", "split_heads"))
    with pytest.raises(AssertionError):
        ch02.check_attention(ns["attention"], seed=0)

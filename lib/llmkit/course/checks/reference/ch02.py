"""Reference answers and known slips for lab 02 (attention). See the package docstring.

The references that ``llmkit`` has only inside its modules (splitting and merging heads,
multi-head attention and the block from given weights) run ``llmkit.nn``'s own code:
:class:`~llmkit.nn.MultiHeadAttention` and :class:`~llmkit.nn.Block` loaded with the
student's weights. The slips are written out, one keyword per mistake.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

import llmkit.nn
from llmkit.nn import Block, MultiHeadAttention

# ------------------------------------------------------------------------ references


def causal_mask(t: int) -> torch.Tensor:
    """``llmkit.nn.causal_mask`` with the lab's signature (stands in for the student's)."""
    return llmkit.nn.causal_mask(t)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """``llmkit.nn.attention`` with the lab's signature (stands in for the student's)."""
    return llmkit.nn.attention(q, k, v, mask)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(b, t, h*d) -> (b, h, t, d)``; head ``i`` takes columns ``i*d .. (i+1)*d - 1``."""
    return rearrange(x, "b t (h d) -> b h t d", h=n_heads)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(b, h, t, d) -> (b, t, h*d)``, the inverse of :func:`split_heads`."""
    return rearrange(x, "b h t d -> b t (h d)")


@torch.no_grad()
def multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads: int) -> torch.Tensor:
    """Causal self-attention by :class:`llmkit.nn.MultiHeadAttention` holding these weights."""
    mha = MultiHeadAttention(w_proj.shape[0], n_heads, causal=True, impl="manual")
    mha = mha.to(w_qkv.dtype).eval()
    mha.load_state_dict(
        {"qkv.weight": w_qkv, "qkv.bias": b_qkv, "proj.weight": w_proj, "proj.bias": b_proj}
    )
    return mha(x)[0]


@torch.no_grad()
def transformer_block(x: torch.Tensor, params: dict, n_heads: int) -> torch.Tensor:
    """The pre-LN block by :class:`llmkit.nn.Block` (causal, GELU tanh) loaded with ``params``."""
    d_model, hidden = params["ln_1.weight"].shape[0], params["mlp.fc.weight"].shape[0]
    block = Block(d_model, n_heads, causal=True, impl="manual", hidden=hidden)
    block = block.to(params["ln_1.weight"].dtype).eval()
    block.load_state_dict(params)
    return block(x)[0]


# ------------------------------------------------------------------ causal mask slips


def causal_mask_transposed(t: int) -> torch.Tensor:
    """The upper triangle: each query sees itself and the future."""
    return torch.ones(t, t, dtype=torch.bool).triu()


def causal_mask_inverted(t: int) -> torch.Tensor:
    """True on the forbidden positions (the strict upper triangle)."""
    return torch.ones(t, t, dtype=torch.bool).triu(1)


def causal_mask_no_diagonal(t: int) -> torch.Tensor:
    """j < i: a token may not attend to itself."""
    return torch.ones(t, t, dtype=torch.bool).tril(-1)


# -------------------------------------------------------------------- attention slips


def _attention(q, k, v, mask=None, *, scale=None, dim=-1, masked=-math.inf, after=False):
    d = q.shape[-1] if scale is None else scale(q, v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None and not after:
        scores = scores.masked_fill(~mask, masked)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v


def attention_unscaled(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=lambda q, v: 1.0)


def attention_scaled_by_d(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=lambda q, v: q.shape[-1] ** 2)


def attention_scaled_by_value_width(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=lambda q, v: v.shape[-1])


def attention_softmax_over_queries(q, k, v, mask=None):
    return _attention(q, k, v, mask, dim=-2)


def attention_mask_after_softmax(q, k, v, mask=None):
    return _attention(q, k, v, mask, after=True)


def attention_mask_with_zero(q, k, v, mask=None):
    return _attention(q, k, v, mask, masked=0.0)


def attention_mask_ignored(q, k, v, mask=None):
    return _attention(q, k, v, None)


# ---------------------------------------------------------------------- heads slips


def split_heads_reshape(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A reshape to (b, h, t, d) without the transpose: positions and heads mixed."""
    b, t, width = x.shape
    return x.reshape(b, n_heads, t, width // n_heads)


def split_heads_no_transpose(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(b, t, h, d): the heads left behind the positions."""
    return rearrange(x, "b t (h d) -> b t h d", h=n_heads)


def split_heads_interleaved(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Head i takes every n_heads-th column: the pattern (d h) instead of (h d)."""
    return rearrange(x, "b t (d h) -> b h t d", h=n_heads)


def merge_heads_reshape(x: torch.Tensor) -> torch.Tensor:
    """A reshape to (b, t, h*d) without the transpose."""
    b, h, t, d = x.shape
    return x.reshape(b, t, h * d)


def merge_heads_interleaved(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b h t d -> b t (d h)")


# ------------------------------------------------------------- multi-head attention slips


def _mha(
    x,
    w_qkv,
    b_qkv,
    w_proj,
    b_proj,
    n_heads,
    *,
    layout="three h d",
    causal=True,
    full_width=False,
    project=True,
):
    t = x.shape[1]
    qkv = x @ w_qkv.T + b_qkv
    q, k, v = rearrange(qkv, f"b t ({layout}) -> three b h t d", three=3, h=n_heads)
    width = x.shape[-1] if full_width else q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(width)
    if causal:
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, -math.inf)
    y = merge_heads(torch.softmax(scores, dim=-1) @ v)
    return y @ w_proj.T + b_proj if project else y


def mha_not_causal(*args):
    return _mha(*args, causal=False)


def mha_no_projection(*args):
    return _mha(*args, project=False)


def mha_scaled_by_d_model(*args):
    return _mha(*args, full_width=True)


def mha_heads_before_qkv(*args):
    return _mha(*args, layout="h three d")


def mha_heads_interleaved(*args):
    return _mha(*args, layout="three d h")


# ------------------------------------------------------------------------ block slips


def _block(
    x,
    params,
    n_heads,
    *,
    pre_ln=True,
    attn_residual=True,
    mlp_residual=True,
    act="tanh",
    causal=True,
    parallel=False,
    unbiased=False,
):
    p = params

    def ln(z, name):
        if unbiased:
            z = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, keepdim=True) + 1e-5)
            return z * p[f"{name}.weight"] + p[f"{name}.bias"]
        return F.layer_norm(z, z.shape[-1:], p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    def linear(z, name):
        return z @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def mlp(z):
        h = linear(z, "mlp.fc")
        h = torch.relu(h) if act == "relu" else F.gelu(h, approximate=act)
        return linear(h, "mlp.proj")

    weights = [
        p[k] for k in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias")
    ]
    if not pre_ln:  # the original transformer: normalise after each addition
        y = ln(x + _mha(x, *weights, n_heads, causal=causal), "ln_1")
        return ln(y + mlp(y), "ln_2")
    a = _mha(ln(x, "ln_1"), *weights, n_heads, causal=causal)
    y = x + a if attn_residual else a
    m = mlp(ln(x if parallel else y, "ln_2"))
    return y + m if mlp_residual else m


def block_post_ln(x, params, n_heads):
    return _block(x, params, n_heads, pre_ln=False)


def block_no_attention_residual(x, params, n_heads):
    return _block(x, params, n_heads, attn_residual=False)


def block_no_mlp_residual(x, params, n_heads):
    return _block(x, params, n_heads, mlp_residual=False)


def block_relu(x, params, n_heads):
    return _block(x, params, n_heads, act="relu")


def block_exact_gelu(x, params, n_heads):
    return _block(x, params, n_heads, act="none")


def block_not_causal(x, params, n_heads):
    return _block(x, params, n_heads, causal=False)


def block_parallel(x, params, n_heads):
    """The MLP reads LN_2(x) instead of LN_2(y): GPT-J's parallel block, not GPT-2's."""
    return _block(x, params, n_heads, parallel=True)


def block_unbiased_variance(x, params, n_heads):
    """LayerNorm by hand with torch.var's default (unbiased, divides by D - 1)."""
    return _block(x, params, n_heads, unbiased=True)

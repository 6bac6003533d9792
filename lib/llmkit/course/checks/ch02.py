"""Checks of lab 02 (attention and the transformer): one :class:`Exercise` per exercise.

=====================  =================================================================
exercise               the student's function (reference)
=====================  =================================================================
causal_mask            ``(t) -> (t, t) bool`` (``llmkit.nn.causal_mask``)
attention              ``(q, k, v, mask=None) -> (..., t, d_v)`` (``llmkit.nn.attention``)
split_heads            ``(x: (b, t, h*d), n_heads) -> (b, h, t, d)`` (einops)
merge_heads            ``(x: (b, h, t, d)) -> (b, t, h*d)`` (einops)
multi_head_attention   ``(x, w_qkv, b_qkv, w_proj, b_proj, n_heads) -> (b, t, D)``, causal
                       (``llmkit.nn.MultiHeadAttention`` holding the same weights)
transformer_block      ``(x, params, n_heads) -> (b, t, D)``, pre-LN, causal, GELU (tanh)
                       (``llmkit.nn.Block`` loaded with ``params``, its state dict)
=====================  =================================================================

Off limits in every exercise: llmkit's modules that compute attention or a block
(``llmkit.nn``, ``llmkit.gpt``, ``llmkit.bert``, ``llmkit.seq2seq``) and PyTorch's
attention (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``,
``F.multi_head_attention_forward``); in the block also PyTorch's transformer layers.
Each exercise is graded on its own: while ``multi_head_attention`` and
``transformer_block`` run, the student's earlier functions are replaced by references.
Inputs are ``float64``; results are compared with ``rtol = atol = 1e-5`` and any float
dtype, so an answer computed in ``float32`` passes too.
"""

from __future__ import annotations

import math
import random

import torch

from .runner import Case, Exercise, Slip

__all__ = [
    "check_causal_mask",
    "check_attention",
    "check_split_heads",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_transformer_block",
]

_REF = "llmkit.course.checks.reference.ch02"
#: llmkit's modules that compute attention, multi-head attention or a whole block.
_LLMKIT = ["llmkit.nn", "llmkit.gpt", "llmkit.bert", "llmkit.seq2seq"]
_TORCH_ATTENTION = [
    "torch.nn.functional:scaled_dot_product_attention",
    "torch.nn.functional:multi_head_attention_forward",
    "torch.nn:MultiheadAttention",
    "torch:_native_multi_head_attention",
]
_FORBID = _LLMKIT + _TORCH_ATTENTION
_TORCH_LAYERS = [
    f"torch.nn:{name}"
    for name in ("TransformerEncoderLayer", "TransformerDecoderLayer", "Transformer")
]
#: The student's earlier answers, replaced by references in the later exercises.
_HELPERS = {
    "causal_mask": f"{_REF}:causal_mask",
    "attention": f"{_REF}:attention",
    "split_heads": f"{_REF}:split_heads",
    "merge_heads": f"{_REF}:merge_heads",
}


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(62))


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ------------------------------------------------------------------- causal mask, attention


CAUSAL_MASK = Exercise(
    name="causal_mask",
    reference="llmkit.nn:causal_mask",
    forbid=_FORBID,
    fixed=[(3,), (1,), (2,), (6,)],
    random=lambda rng: (rng.randint(1, 40),),
    hint="a (t, t) bool tensor, True where query i may attend to key j, i.e. j <= i: "
    "the lower triangle with its diagonal",
    slips=[
        Slip(
            f"{_REF}:causal_mask_transposed",
            "your mask is transposed: row i is query i, and it may attend to the keys "
            "j <= i (the lower triangle), not to the future",
        ),
        Slip(
            f"{_REF}:causal_mask_inverted",
            "True means *may attend*: you marked the forbidden positions instead",
        ),
        Slip(
            f"{_REF}:causal_mask_no_diagonal",
            "a token may attend to itself: keep the diagonal (j <= i, not j < i)",
        ),
    ],
)


def _mask(g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """A random bool mask in which every query may attend to at least one key."""
    mask = torch.rand(shape, generator=g) < 0.6
    first = torch.randint(0, shape[-1], (*shape[:-1], 1), generator=g)
    return mask.scatter(-1, first, True)


def _attention_case(q, k, v, mask=None) -> Case:
    shown = "None" if mask is None else f"bool {tuple(mask.shape)}"
    label = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, mask={shown}"
    return Case((q, k, v) if mask is None else (q, k, v, mask), label=label)


def _random_attention(rng: random.Random) -> Case:
    """Zero to two batch dimensions, t != s and d != d_v in some cases, and no mask, a
    causal mask or a random one (broadcast over the batch or not)."""
    g = _generator(rng)
    batch = [rng.randint(1, 3) for _ in range(rng.choice([0, 1, 1, 2]))]
    t = rng.randint(1, 9)
    s = t if rng.random() < 0.5 else rng.randint(1, 9)
    d = rng.randint(2, 12)
    d_v = d if rng.random() < 0.4 else rng.randint(1, 12)
    q = _randn(g, *batch, t, d, scale=rng.choice([0.5, 1.0, 2.0]))
    k, v = _randn(g, *batch, s, d), _randn(g, *batch, s, d_v)
    kind = rng.choice(["none", "causal", "random", "random"])
    mask = None
    if kind == "causal" and s >= t:
        mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    elif kind != "none":
        mask = _mask(g, (t, s) if not batch or rng.random() < 0.5 else (*batch, t, s))
    return _attention_case(q, k, v, mask)


def _fixed_attention() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        _attention_case(_randn(g, 1, 3), _randn(g, 1, 3), _randn(g, 1, 2)),
        _attention_case(_randn(g, 4, 8), _randn(g, 4, 8), _randn(g, 4, 8)),
        _attention_case(
            _randn(g, 4, 8),
            _randn(g, 4, 8),
            _randn(g, 4, 5),
            torch.ones(4, 4, dtype=torch.bool).tril(),
        ),
        _attention_case(
            _randn(g, 2, 3, 8), _randn(g, 2, 5, 8), _randn(g, 2, 5, 4), _mask(g, (2, 3, 5))
        ),
    ]


ATTENTION = Exercise(
    name="attention",
    reference="llmkit.nn:attention",
    forbid=_FORBID,
    fixed=_fixed_attention(),
    random=_random_attention,
    rtol=1e-5,
    atol=1e-5,
    dtype=False,
    hint="scores = q @ k.transpose(-2, -1) / sqrt(d); masked_fill(~mask, -inf); softmax "
    "over the last dimension; weights @ v. Use transpose(-2, -1), not .T, so that leading "
    "batch dimensions are left alone",
    crash_hint="read the shapes in the exercise again: k.transpose(-2, -1), not k.T",
    slips=[
        Slip(
            f"{_REF}:attention_unscaled",
            "divide the scores q @ k^T by sqrt(d), d = q.shape[-1], before the softmax",
        ),
        Slip(f"{_REF}:attention_scaled_by_d", "divide the scores by sqrt(d), not by d"),
        Slip(
            f"{_REF}:attention_scaled_by_value_width",
            "scale by the square root of the query/key width q.shape[-1], not of the value width",
        ),
        Slip(
            f"{_REF}:attention_softmax_over_queries",
            "take the softmax over the keys (the last dimension, dim=-1): each query's "
            "weights must sum to 1",
        ),
        Slip(
            f"{_REF}:attention_mask_after_softmax",
            "apply the mask *before* the softmax: set the masked scores to -inf, so the "
            "softmax gives them weight 0 and the other weights still sum to 1",
        ),
        Slip(
            f"{_REF}:attention_mask_with_zero",
            "a masked score must be -inf, not 0: exp(0) = 1 still gives it weight",
        ),
        Slip(
            f"{_REF}:attention_mask_ignored",
            "you ignored the mask: set the scores where mask is False to -inf",
        ),
    ],
)


# ------------------------------------------------------------------------------ heads


def _heads_shape(rng: random.Random) -> tuple[int, int, int, int]:
    """(b, t, h, d) with t different from h and d, so that mixed-up axes show."""
    h, d = rng.randint(2, 5), rng.randint(2, 6)
    return rng.randint(1, 3), rng.choice([n for n in range(1, 9) if n not in (h, d)]), h, d


def _split_case(b: int, t: int, h: int, d: int) -> Case:
    x = torch.arange(b * t * h * d, dtype=torch.float64).reshape(b, t, h * d)
    return Case((x, h), label=f"x of shape {(b, t, h * d)}, n_heads={h}")


def _merge_case(b: int, t: int, h: int, d: int) -> Case:
    x = torch.arange(b * h * t * d, dtype=torch.float64).reshape(b, h, t, d)
    return Case((x,), label=f"x of shape {(b, h, t, d)}")


_HEAD_SHAPES = [(1, 1, 1, 4), (1, 3, 2, 4), (2, 5, 4, 3), (2, 3, 3, 3)]
_RESHAPE = "a reshape alone mixes positions and heads: {}, or use rearrange(x, '{}')"

SPLIT_HEADS = Exercise(
    name="split_heads",
    reference=f"{_REF}:split_heads",
    forbid=_FORBID,
    fixed=[_split_case(*s) for s in _HEAD_SHAPES],
    random=lambda rng: _split_case(*_heads_shape(rng)),
    hint="x[b, t, i*d + j] must end up at out[b, i, t, j] (head i, position t, component j)",
    slips=[
        Slip(
            f"{_REF}:split_heads_reshape",
            _RESHAPE.format(
                "view as (b, t, h, d) first, then swap the t and h dimensions (transpose(1, 2))",
                "b t (h d) -> b h t d', h=n_heads",
            ),
        ),
        Slip(
            f"{_REF}:split_heads_no_transpose",
            "the heads must come before the positions: (b, h, t, d), so that attention "
            "runs over t for each head; swap dimensions 1 and 2",
        ),
        Slip(
            f"{_REF}:split_heads_interleaved",
            "head i takes the contiguous block of columns i*d .. (i+1)*d - 1, not every "
            "n_heads-th column: the pattern is (h d), not (d h)",
        ),
    ],
)

MERGE_HEADS = Exercise(
    name="merge_heads",
    reference=f"{_REF}:merge_heads",
    forbid=_FORBID,
    fixed=[_merge_case(*s) for s in _HEAD_SHAPES],
    random=lambda rng: _merge_case(*_heads_shape(rng)),
    hint="x[b, i, t, j] (head i, position t, component j) must end up at out[b, t, i*d + j]",
    slips=[
        Slip(
            f"{_REF}:merge_heads_reshape",
            _RESHAPE.format(
                "swap the h and t dimensions first (transpose(1, 2)), then reshape to (b, t, h*d)",
                "b h t d -> b t (h d)",
            ),
        ),
        Slip(
            f"{_REF}:merge_heads_interleaved",
            "head i fills the contiguous block of columns i*d .. (i+1)*d - 1: the pattern "
            "is (h d), not (d h)",
        ),
    ],
)


# ------------------------------------------------------------------ multi-head attention


def _linear(g: torch.Generator, n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(g, n_out, n_in, scale=1 / math.sqrt(n_in)), _randn(g, n_out, scale=0.1)


def _mha_case(g: torch.Generator, b: int, t: int, h: int, d: int) -> Case:
    width = h * d
    x = _randn(g, b, t, width)
    return Case(
        (x, *_linear(g, 3 * width, width), *_linear(g, width, width), h),
        label=f"x of shape {(b, t, width)}, n_heads={h} (head_dim {d})",
    )


_LAYOUT = (
    "split the 3*D outputs of the QKV projection as (three, heads, head_dim): q = "
    "columns 0 .. D-1, k the next D, v the last D, and within each, head i = "
    "columns i*head_dim .. (i+1)*head_dim - 1"
)
_HEAD_BLOCKS = [(1, 1, 1, 4), (1, 4, 2, 3), (2, 5, 4, 2), (2, 6, 3, 4)]

MULTI_HEAD_ATTENTION = Exercise(
    name="multi_head_attention",
    reference=f"{_REF}:multi_head_attention",
    forbid=_FORBID,
    substitute=_HELPERS,
    fixed=[_mha_case(torch.Generator().manual_seed(i), *s) for i, s in enumerate(_HEAD_BLOCKS)],
    random=lambda rng: _mha_case(_generator(rng), *_heads_shape(rng)),
    cases=12,
    rtol=1e-5,
    atol=1e-5,
    dtype=False,
    hint="qkv = x @ w_qkv.T + b_qkv; split into q, k, v and into heads (b, h, t, head_dim); "
    "causal attention per head; merge the heads; project with w_proj and b_proj",
    crash_hint="print the shapes of your intermediate tensors on this input",
    slips=[
        Slip(
            f"{_REF}:mha_not_causal",
            "this is a decoder's self-attention: apply the causal mask (query i may attend "
            "to keys 0..i only)",
        ),
        Slip(
            f"{_REF}:mha_no_projection",
            "finish with the output projection: merged @ w_proj.T + b_proj",
        ),
        Slip(
            f"{_REF}:mha_scaled_by_d_model",
            "each head scales its scores by sqrt(head_dim) = sqrt(D // n_heads), not by sqrt(D)",
        ),
        Slip(f"{_REF}:mha_heads_before_qkv", _LAYOUT),
        Slip(f"{_REF}:mha_heads_interleaved", _LAYOUT),
    ],
)


# --------------------------------------------------------------------- transformer block


def _block_case(g: torch.Generator, b: int, t: int, h: int, d: int, hidden: int) -> Case:
    """A block with LayerNorm gains and shifts away from 1 and 0, and an input whose
    tokens have a mean and a spread of their own (so that each LayerNorm matters)."""
    width = h * d
    x = _randn(g, b, t, width, scale=1.5) + _randn(g, b, t, 1)
    params = {}
    for name, (n_out, n_in) in {
        "ln_1": (width, 0),
        "attn.qkv": (3 * width, width),
        "attn.proj": (width, width),
        "ln_2": (width, 0),
        "mlp.fc": (hidden, width),
        "mlp.proj": (width, hidden),
    }.items():
        if n_in:
            params[f"{name}.weight"], params[f"{name}.bias"] = _linear(g, n_out, n_in)
        else:
            params[f"{name}.weight"] = 1 + _randn(g, width, scale=0.2)
            params[f"{name}.bias"] = _randn(g, width, scale=0.2)
    return Case(
        (x, params, h),
        label=f"x of shape {(b, t, width)}, n_heads={h} (head_dim {d}), MLP hidden width {hidden}",
    )


def _random_block(rng: random.Random) -> Case:
    b, t, h, d = _heads_shape(rng)
    hidden = 4 * h * d if rng.random() < 0.7 else rng.randint(1, 6 * h * d)
    return _block_case(_generator(rng), b, t, h, d, hidden)


TRANSFORMER_BLOCK = Exercise(
    name="transformer_block",
    reference=f"{_REF}:transformer_block",
    forbid=_FORBID + _TORCH_LAYERS,
    substitute={**_HELPERS, "multi_head_attention": f"{_REF}:multi_head_attention"},
    fixed=[
        _block_case(torch.Generator().manual_seed(10 + i), *s, 4 * s[2] * s[3])
        for i, s in enumerate(_HEAD_BLOCKS)
    ],
    random=_random_block,
    cases=12,
    rtol=1e-5,
    atol=1e-5,
    dtype=False,
    hint="y = x + MHA(LN_1(x)); out = y + mlp.proj(GELU(mlp.fc(LN_2(y)))), with causal "
    "attention, GELU's tanh approximation and LayerNorm eps = 1e-5",
    crash_hint="check the names and shapes of the weights in the exercise's table",
    slips=[
        Slip(
            f"{_REF}:block_post_ln",
            "this is a pre-LN block: normalise the input of each sub-layer "
            "(x + MHA(LN_1(x))), not the sum after it (LN_1(x + MHA(x)))",
        ),
        Slip(
            f"{_REF}:block_no_attention_residual",
            "add each sub-layer's output to its input (the residual connection): "
            "y = x + MHA(LN_1(x)) and out = y + MLP(LN_2(y))",
        ),
        Slip(
            f"{_REF}:block_no_mlp_residual",
            "add each sub-layer's output to its input (the residual connection): "
            "y = x + MHA(LN_1(x)) and out = y + MLP(LN_2(y))",
        ),
        Slip(f"{_REF}:block_relu", "the MLP's non-linearity is GELU, not ReLU"),
        Slip(
            f"{_REF}:block_exact_gelu",
            "GPT-2's block uses GELU's tanh approximation: F.gelu(h, approximate='tanh')",
        ),
        Slip(
            f"{_REF}:block_not_causal",
            "the block's attention is causal: query i may attend to keys 0..i only",
        ),
        Slip(
            f"{_REF}:block_parallel",
            "the MLP reads the stream after the attention's addition: LN_2(y), not LN_2(x)",
        ),
        Slip(
            f"{_REF}:block_unbiased_variance",
            "LayerNorm divides by the biased variance (mean of squared deviations, "
            "x.var(-1, unbiased=False)); torch.var divides by D - 1 by default",
        ),
    ],
)


def check_causal_mask(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``causal_mask(t)``; see the table above."""
    CAUSAL_MASK.check(fn, cases=cases, seed=seed)


def check_attention(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``attention(q, k, v, mask=None)`` against ``llmkit.nn.attention``."""
    ATTENTION.check(fn, cases=cases, seed=seed)


def check_split_heads(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``split_heads(x, n_heads)``."""
    SPLIT_HEADS.check(fn, cases=cases, seed=seed)


def check_merge_heads(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``merge_heads(x)``."""
    MERGE_HEADS.check(fn, cases=cases, seed=seed)


def check_multi_head_attention(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``multi_head_attention(x, w_qkv, b_qkv, w_proj, b_proj, n_heads)`` against
    ``llmkit.nn.MultiHeadAttention`` (causal) holding the same weights."""
    MULTI_HEAD_ATTENTION.check(fn, cases=cases, seed=seed)


def check_transformer_block(fn, cases: int = 12, seed: int | None = None) -> None:
    """Check ``transformer_block(x, params, n_heads)`` against ``llmkit.nn.Block`` loaded
    with ``params`` (its state dict)."""
    TRANSFORMER_BLOCK.check(fn, cases=cases, seed=seed)

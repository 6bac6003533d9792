"""Tests of llmkit.nn: attention, masks, multi-head attention, blocks (chapter 02)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.nn import (
    MLP,
    Block,
    CrossAttention,
    KVCache,
    LearnedPositions,
    MultiHeadAttention,
    attention,
    causal_mask,
    rope_frequencies,
    sdpa_attention,
    sinusoidal_positions,
)


def _qkv(*shape_q: int, seq_k: int | None = None, d_v: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    *batch, t, d = shape_q
    s = t if seq_k is None else seq_k
    q = torch.randn(*batch, t, d, generator=g, dtype=torch.float64)
    k = torch.randn(*batch, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(*batch, s, d if d_v is None else d_v, generator=g, dtype=torch.float64)
    return q, k, v


# -- causal mask --------------------------------------------------------------------------------


def test_causal_mask_square():
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]).bool()
    assert torch.equal(causal_mask(4), expected)
    assert causal_mask(4).dtype == torch.bool


def test_causal_mask_with_cache_aligns_bottom_right():
    # 2 new queries after 3 cached positions: absolute positions 3 and 4.
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    assert torch.equal(causal_mask(2, 5), expected)
    assert torch.equal(causal_mask(1, 6), torch.ones(1, 6, dtype=torch.bool))
    assert torch.equal(causal_mask(5, 5), causal_mask(5))


# -- attention: manual vs SDPA ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 8), (2, 7, 4), (2, 3, 6, 16)])
def test_manual_equals_sdpa_without_mask(shape):
    q, k, v = _qkv(*shape, seq_k=shape[-2] + 3, d_v=5)
    out = attention(q, k, v)
    assert out.shape == (*shape[:-1], 5)
    torch.testing.assert_close(out, sdpa_attention(q, k, v), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seq_q,seq_k", [(6, 6), (1, 6), (3, 7)])
def test_manual_equals_sdpa_causal(seq_q, seq_k):
    q, k, v = _qkv(2, 3, seq_q, 8, seq_k=seq_k, seed=1)
    mask = causal_mask(seq_q, seq_k)
    manual = attention(q, k, v, mask=mask)
    torch.testing.assert_close(manual, sdpa_attention(q, k, v, causal=True), atol=1e-6, rtol=0)
    torch.testing.assert_close(manual, sdpa_attention(q, k, v, mask=mask), atol=1e-6, rtol=0)


def test_manual_equals_sdpa_with_arbitrary_mask():
    q, k, v = _qkv(2, 2, 5, 4, seq_k=6, seed=2)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 1, 5, 6, generator=g) > 0.5
    mask[..., 0] = True  # every query row can attend somewhere
    manual = attention(q, k, v, mask=mask)
    torch.testing.assert_close(manual, sdpa_attention(q, k, v, mask=mask), atol=1e-6, rtol=0)
    # combining with the causal mask equals passing the conjunction
    both = sdpa_attention(q, k, v, mask=mask, causal=True)
    torch.testing.assert_close(both, attention(q, k, v, mask=mask & causal_mask(5, 6)))


def test_attention_written_out_by_hand():
    q, k, v = _qkv(3, 2, seed=4)
    scores = torch.empty(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            scores[i, j] = (q[i] * k[j]).sum() / math.sqrt(2)
    scores[0, 1:] = -math.inf
    scores[1, 2] = -math.inf
    w = scores.exp() / scores.exp().sum(-1, keepdim=True)
    out, weights = attention(q, k, v, mask=causal_mask(3), return_weights=True)
    torch.testing.assert_close(weights, w)
    torch.testing.assert_close(out, w @ v)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.all(weights[causal_mask(3).logical_not()] == 0)


def test_attention_dropout_reproducible_and_unbiased():
    q, k, v = _qkv(4, 16, 8, seed=5)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, wa = attention(q, k, v, dropout_p=0.5, generator=g1, return_weights=True)
    b = attention(q, k, v, dropout_p=0.5, generator=g2)
    assert torch.equal(a, b)
    _, w = attention(q, k, v, return_weights=True)
    kept = wa != 0
    assert 0.3 < kept.double().mean() < 0.7
    torch.testing.assert_close(wa[kept], 2 * w[kept])


# -- KV cache -----------------------------------------------------------------------------------


def test_kv_cache_length_reorder_reset():
    cache = KVCache(2)
    assert cache.length == 0 and cache.batch_size is None and cache.n_layers == 2
    k = torch.arange(3 * 2 * 5 * 4, dtype=torch.float32).reshape(3, 2, 5, 4)
    for i in range(2):
        cache[i] = (k + i, -k - i)
    cache.append_ids(torch.arange(15).reshape(3, 5))
    assert cache.length == 5 and cache.batch_size == 3
    cache.reorder(torch.tensor([2, 2, 0, 1]))
    assert cache.batch_size == 4
    assert torch.equal(cache[1][0][:2], torch.stack([k[2] + 1, k[2] + 1]))
    assert torch.equal(cache.ids[:, 0], torch.tensor([10, 10, 0, 5]))
    assert torch.equal(cache[0][1], -k[[2, 2, 0, 1]])
    cache.reset()
    assert cache.length == 0 and cache.ids is None
    with pytest.raises(ValueError, match="n_layers"):
        KVCache(0)


# -- multi-head attention -----------------------------------------------------------------------


def _mha_pair(d_model=16, n_heads=4, causal=True):
    torch.manual_seed(0)
    sdpa = MultiHeadAttention(d_model, n_heads, causal=causal, impl="sdpa").double().eval()
    manual = MultiHeadAttention(d_model, n_heads, causal=causal, impl="manual").double().eval()
    manual.load_state_dict(sdpa.state_dict())
    return sdpa, manual


@pytest.mark.parametrize("causal", [True, False])
def test_mha_shapes_and_impls_agree(causal):
    sdpa, manual = _mha_pair(causal=causal)
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    out, (k, v) = sdpa(x)
    assert out.shape == (3, 7, 16)
    assert k.shape == v.shape == (3, 4, 7, 4)
    out_m, (k_m, v_m) = manual(x)
    torch.testing.assert_close(out, out_m, atol=1e-6, rtol=0)
    assert torch.equal(k, k_m) and torch.equal(v, v_m)


def test_mha_matches_per_head_loop():
    """The einops rearrange splits heads exactly as a loop over column slices does."""
    _, mha = _mha_pair()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    q, k, v = mha.qkv(x).split(16, dim=-1)
    heads = []
    for h in range(4):
        cols = slice(4 * h, 4 * h + 4)
        heads.append(attention(q[..., cols], k[..., cols], v[..., cols], mask=causal_mask(5)))
    expected = mha.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(mha(x)[0], expected)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_mha_cache_in_chunks_equals_full(impl):
    sdpa, manual = _mha_pair()
    mha = sdpa if impl == "sdpa" else manual
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    full, _ = mha(x)
    kv = None
    outs = []
    for lo, hi in [(0, 4), (4, 5), (5, 9)]:
        out, kv = mha(x[:, lo:hi], layer_cache=kv)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-10, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_future_token_has_no_influence(impl):
    torch.manual_seed(1)
    block = Block(16, 4, impl=impl).double().eval()
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    out, _ = block(x)
    for j in (3, 7):
        changed = x.clone()
        changed[:, j] = torch.randn(2, 16, dtype=torch.float64) * 10
        out2, _ = block(changed)
        assert torch.equal(out[:, :j], out2[:, :j])  # bit for bit
        assert not torch.allclose(out[:, j], out2[:, j])
    # and the Jacobian says the same: d out[:, i] / d x[:, j] == 0 exactly for j > i
    x1 = x[:1].clone().requires_grad_(True)
    for i in range(8):
        (grad,) = torch.autograd.grad(block(x1)[0][0, i].sum(), x1)
        assert torch.all(grad[0, i + 1 :] == 0)
        assert grad[0, : i + 1].abs().sum() > 0


def test_non_causal_attention_sees_the_future():
    sdpa, _ = _mha_pair(causal=False)
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(sdpa(x)[0][:, 0], sdpa(changed)[0][:, 0])


def test_mha_store_weights():
    sdpa, mha = _mha_pair()
    assert not sdpa.uses_manual_path
    sdpa.store_weights = True
    assert sdpa.uses_manual_path  # the fused kernel returns no weights: explicit switch
    mha.store_weights = True
    mha(torch.randn(2, 5, 16, dtype=torch.float64))
    w = mha.last_weights
    assert w.shape == (2, 4, 5, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5, dtype=torch.float64))
    assert torch.all(w[..., ~causal_mask(5)] == 0)


def test_mha_errors():
    with pytest.raises(ValueError, match="d_model"):
        MultiHeadAttention(130, 4)
    with pytest.raises(ValueError, match="n_heads"):
        MultiHeadAttention(16, 0)
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(16, 4, impl="flash")
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(16, 4, dropout=1.5)
    with pytest.raises(ValueError, match="n_heads"):
        Block(30, 4)
    with pytest.raises(TypeError, match="store_weights"):
        MultiHeadAttention(16, 4, store_weights=1)


def test_mha_dropout_only_in_training():
    torch.manual_seed(2)
    mha = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 6, 16)
    mha.eval()
    a, _ = mha(x)
    assert torch.equal(a, mha(x)[0])
    mha.train()
    assert not torch.allclose(mha(x)[0], a)


# -- cross-attention ----------------------------------------------------------------------------


def _cross(d_model=16, n_heads=4, impl="sdpa", seed=0):
    torch.manual_seed(seed)
    return CrossAttention(d_model, n_heads, impl=impl).double().eval()


def _memory_and_mask(b=3, s=6, d=16, seed=1):
    """Memory ``(b, s, d)`` and a right-padded mask: row i has ``s - 2 * i`` real tokens."""
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(b, s, d, generator=g, dtype=torch.float64)
    lengths = torch.tensor([max(1, s - 2 * i) for i in range(b)])
    mask = torch.arange(s)[None, :] < lengths[:, None]
    return memory, mask


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
@pytest.mark.parametrize("d_model,n_heads,t,s", [(16, 4, 5, 6), (12, 1, 1, 3), (24, 3, 7, 2)])
def test_cross_attention_equals_torch_multihead_attention(impl, d_model, n_heads, t, s):
    cross = _cross(d_model, n_heads, impl)
    ref = torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True).double().eval()
    with torch.no_grad():  # in_proj_weight stacks W_q, W_k, W_v; kv_proj stacks W_k, W_v
        ref.in_proj_weight.copy_(torch.cat([cross.q_proj.weight, cross.kv_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([cross.q_proj.bias, cross.kv_proj.bias]))
        ref.out_proj.weight.copy_(cross.proj.weight)
        ref.out_proj.bias.copy_(cross.proj.bias)
    x = torch.randn(3, t, d_model, dtype=torch.float64)
    memory, mask = _memory_and_mask(3, s, d_model)
    expected, _ = ref(x, memory, memory, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(cross(x, memory, mask), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(cross(x, memory, mask.long()), expected, atol=1e-12, rtol=0)
    expected, _ = ref(x, memory, memory, need_weights=False)  # no padding
    torch.testing.assert_close(cross(x, memory), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_cross_attention_ignores_padded_source_positions(impl):
    cross = _cross(impl=impl)
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    memory, mask = _memory_and_mask()
    out = cross(x, memory, mask)
    changed = memory.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 16, dtype=torch.float64) * 100
    torch.testing.assert_close(cross(x, changed, mask), out, atol=1e-12, rtol=0)
    # and the result is that of the row alone, its padding cut off
    for i in range(3):
        n = int(mask[i].sum())
        alone = cross(x[i : i + 1], memory[i : i + 1, :n])
        torch.testing.assert_close(alone, out[i : i + 1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_cross_attention_sees_every_real_source_position(impl):
    cross = _cross(impl=impl)
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    memory, mask = _memory_and_mask()
    out = cross(x, memory, mask)
    for i, j in mask.nonzero().tolist():
        changed = memory.clone()
        changed[i, j] += 1.0
        new = cross(x, changed, mask)
        assert not torch.allclose(new[i], out[i])  # every query of row i moves
        assert (new[i] - out[i]).abs().amax(dim=-1).min() > 1e-6
        others = [r for r in range(3) if r != i]
        assert torch.equal(new[others], out[others])  # other rows do not


def test_cross_attention_precomputed_memory_and_broadcast():
    cross = _cross()
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    memory, mask = _memory_and_mask()
    k, v = cross.project_memory(memory)
    assert k.shape == v.shape == (3, 4, 6, 4)
    torch.testing.assert_close(cross(x, memory_kv=(k, v), memory_mask=mask), cross(x, memory, mask))
    # one source shared by three rows = the source repeated three times
    one, one_mask = memory[1:2], mask[1:2]
    expected = cross(x, one.expand(3, -1, -1), one_mask.expand(3, -1))
    torch.testing.assert_close(cross(x, one, one_mask), expected, atol=1e-12, rtol=0)


def test_cross_attention_store_weights_zero_on_padding():
    cross = _cross()
    cross.store_weights = True
    memory, mask = _memory_and_mask()
    cross(torch.randn(3, 5, 16, dtype=torch.float64), memory, mask)
    w = cross.last_weights
    assert w.shape == (3, 4, 5, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 5, dtype=torch.float64))
    assert torch.all(w.permute(0, 3, 1, 2)[~mask] == 0)


def test_cross_attention_errors():
    with pytest.raises(ValueError, match="d_model"):
        CrossAttention(18, 4)
    with pytest.raises(ValueError, match="impl"):
        CrossAttention(16, 4, impl="flash")


# -- MLP, block, positions ----------------------------------------------------------------------


def test_mlp_is_gelu_tanh():
    torch.manual_seed(3)
    mlp = MLP(8).double()
    assert mlp.fc.out_features == 32 and MLP(8, hidden=10).fc.out_features == 10
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    h = mlp.fc(x)
    gelu_new = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.proj(gelu_new))


def test_block_is_pre_layernorm_residual():
    torch.manual_seed(4)
    block = Block(16, 2).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    a, _ = block.attn(F.layer_norm(x, (16,), block.ln_1.weight, block.ln_1.bias, eps=1e-5))
    h = x + a
    expected = h + block.mlp(F.layer_norm(h, (16,), block.ln_2.weight, block.ln_2.bias, 1e-5))
    out, _ = block(x)
    torch.testing.assert_close(out, expected)
    # with the projections into the residual stream zeroed, the block is the identity
    for lin in (block.attn.proj, block.mlp.proj):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    assert torch.equal(block(x)[0], x)


def test_learned_positions():
    pos = LearnedPositions(8, 4)
    assert pos.weight.shape == (8, 4)
    assert torch.equal(pos(3), pos.weight[:3])
    assert torch.equal(pos(2, offset=5), pos.weight[5:7])
    assert torch.equal(pos(torch.tensor([[7, 0]])), pos.weight[[7, 0]][None])
    with pytest.raises(ValueError, match="9"):
        pos(9)
    with pytest.raises(ValueError, match="9"):
        pos(3, offset=6)


def test_sinusoidal_positions_hand_worked():
    # dim 4: frequencies 1 and 10000 ** (-2 / 4) = 0.01
    t = sinusoidal_positions(3, 4)
    assert t.shape == (3, 4) and t.dtype == torch.float32
    want = [
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
        [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
    ]
    torch.testing.assert_close(t, torch.tensor(want))


def test_sinusoidal_positions_use_ropes_frequencies():
    t = sinusoidal_positions(32, 16)
    angles = torch.arange(32)[:, None].double() * rope_frequencies(16).double()
    torch.testing.assert_close(t[:, 0::2], angles.sin().float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(t[:, 1::2], angles.cos().float(), atol=1e-6, rtol=0)


def test_sinusoidal_positions_shift_is_one_linear_map():
    """Vaswani et al.'s reason for the code: PE[p + k] is a fixed linear map of PE[p]."""
    t = sinusoidal_positions(64, 16).double()
    for k in (1, 5):
        m = torch.linalg.lstsq(t[:-k], t[k:]).solution  # (16, 16), one map for every p
        torch.testing.assert_close(t[:-k] @ m, t[k:], atol=1e-6, rtol=0)
    noise = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)).double()
    m = torch.linalg.lstsq(noise[:-1], noise[1:]).solution
    assert (noise[:-1] @ m - noise[1:]).abs().max() > 0.5  # random vectors have no such map


@pytest.mark.parametrize(
    "args, match",
    [((0, 4), "n_positions"), ((4, 3), "dim"), ((4, 0), "dim")],
)
def test_sinusoidal_positions_errors(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sinusoidal_positions(*args)

"""Tests of llmkit.llama and the modern-decoder pieces of llmkit.nn (chapter 03b).

Parity with tiny random ``transformers`` ``LlamaForCausalLM`` models of several shapes; RoPE
(relative positions, the two layouts), GQA against multi-head attention with repeated
key/value heads, the KV cache against recomputation, decoding and training through the
shared code paths, the parameter count by formula, the config's validation.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit import decoding
from llmkit.llama import Llama, LlamaConfig, count_parameters, permute_qk
from llmkit.nn import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    repeat_kv,
    rope_angles,
    rope_frequencies,
    rope_permutation,
)

transformers = pytest.importorskip("transformers")


def tiny(**kw) -> LlamaConfig:
    base = dict(vocab_size=61, block_size=32, n_layer=2, n_head=4, d_model=32, hidden=40)
    return LlamaConfig(**(base | kw))


def hf_llama(n_kv: int, tied: bool, n_head: int = 4, seed: int = 0):
    """A random tiny transformers LlamaForCausalLM (weights N(0, 0.3^2), norms perturbed)."""
    torch.manual_seed(seed)
    hc = transformers.LlamaConfig(
        vocab_size=61,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        max_position_embeddings=32,
        tie_word_embeddings=tied,
        rope_theta=500.0,
        rms_norm_eps=1e-6,
    )
    model = transformers.LlamaForCausalLM(hc).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return model


# ------------------------------------------------------------------------ transformers parity


@pytest.mark.parametrize(
    "n_head, n_kv, tied",
    [(4, 4, True), (4, 2, False), (4, 1, True), (2, 2, False)],
    ids=["mha-tied", "gqa-untied", "mqa-tied", "mha-untied"],
)
@pytest.mark.parametrize("layout", ["rotate_half", "adjacent"])
def test_logits_match_transformers(n_head, n_kv, tied, layout):
    hf = hf_llama(n_kv, tied, n_head=n_head)
    model = Llama.from_hf_llama(hf, rope_layout=layout)
    assert model.config.rope_layout == layout
    assert (model.lm_head.weight is model.wte.weight) == tied
    ids = torch.randint(0, 61, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = model(ids)
    assert got.shape == (3, 17, 61)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())
    assert model.num_parameters() == count_parameters(model.config)


def test_greedy_and_sampling_match_transformers_generate():
    hf = hf_llama(2, False)
    model = Llama.from_hf_llama(hf)
    ids = torch.tensor([[3, 14, 15, 9, 26]])
    expected = hf.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False
    )
    assert torch.equal(model.generate(ids, 12), expected)
    assert torch.equal(model.generate(ids, 12, use_cache=False), expected)


def test_config_round_trips_through_transformers():
    c = tiny(n_kv_head=2, tie_embeddings=False, rope_base=500.0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**c.to_hf_llama_kwargs()))
    model = Llama.from_hf_llama(hf.eval(), rope_layout="adjacent")
    assert model.config == c
    assert LlamaConfig.from_dict(c.to_dict()) == c


# ------------------------------------------------------------------------------------ RoPE


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(0, 500),
    n=st.integers(0, 500),
    shift=st.integers(0, 500),
    layout=st.sampled_from(["adjacent", "rotate_half"]),
    seed=st.integers(0, 2**16),
)
def test_rope_score_depends_only_on_the_distance(m, n, shift, layout, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 16, generator=g, dtype=torch.float64)
    inv_freq = rope_frequencies(16, base=10000.0).double()

    def score(i: int, j: int) -> torch.Tensor:
        cos, sin = rope_angles(torch.tensor([i, j]), inv_freq)
        rq = apply_rope(q[None], cos[:1], sin[:1], layout)
        rk = apply_rope(k[None], cos[1:], sin[1:], layout)
        return (rq * rk).sum()

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-9, rtol=1e-9)


def test_rope_is_a_rotation_and_position_zero_is_the_identity():
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    cos, sin = rope_angles(torch.arange(5), rope_frequencies(8).double())
    for layout in ("adjacent", "rotate_half"):
        y = apply_rope(x, cos, sin, layout)
        torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
        torch.testing.assert_close(y[..., 0, :], x[..., 0, :])


def test_rope_layouts_differ_by_the_permutation():
    x = torch.randn(2, 3, 5, 8)
    cos, sin = rope_angles(torch.arange(5), rope_frequencies(8))
    perm = rope_permutation(8)
    torch.testing.assert_close(
        apply_rope(x, cos, sin, "adjacent")[..., perm],
        apply_rope(x[..., perm], cos, sin, "rotate_half"),
    )
    assert torch.equal(rope_permutation(8, "adjacent")[perm], torch.arange(8))
    # adjacent pairs: coordinates (0, 1) turn by theta_0 = 1 rad per position
    e0 = torch.zeros(8)
    e0[0] = 1.0
    c1, s1 = rope_angles(torch.tensor([1]), rope_frequencies(8))
    y = apply_rope(e0[None], c1, s1, "adjacent")[0]
    one = torch.tensor(1.0)
    torch.testing.assert_close(y[:2], torch.stack([one.cos(), one.sin()]))
    assert torch.equal(y[2:], torch.zeros(6))


def test_permute_qk_round_trips():
    w = torch.randn(3 * 8, 5)
    back = permute_qk(permute_qk(w, 3, to="rotate_half"), 3, to="adjacent")
    assert torch.equal(back, w)


def test_model_runs_past_its_context_window_but_generation_crops():
    model = Llama(tiny(block_size=8)).eval()
    ids = torch.randint(0, 61, (1, 12))
    assert model(ids).shape == (1, 12, 61)  # RoPE has no position table to run out of
    out = model.generate(ids, 5)
    again = model.generate(ids, 5, use_cache=False)
    assert torch.equal(out, again)


# ------------------------------------------------------------------------------------- GQA


def test_repeat_kv_layout():
    kv = torch.arange(2.0)[None, :, None, None].expand(1, 2, 3, 4)  # head g holds value g
    rep = repeat_kv(kv, 3)
    assert rep.shape == (1, 6, 3, 4)
    assert rep[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]  # query head j reads j // 3
    assert repeat_kv(kv, 1) is kv


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = Llama(tiny(n_kv_head=2)).eval()
    mha = Llama(tiny(n_kv_head=4)).eval()
    sd = gqa.state_dict()
    hd = gqa.config.head_dim
    for i in range(gqa.config.n_layer):
        for name in ("k_proj", "v_proj"):
            key = f"blocks.{i}.attn.{name}.weight"
            w = sd[key].reshape(2, hd, -1)
            sd[key] = w.repeat_interleave(2, dim=0).reshape(4 * hd, -1)
    mha.load_state_dict(sd)
    ids = torch.randint(0, 61, (2, 11))
    torch.testing.assert_close(mha(ids), gqa(ids), atol=1e-6, rtol=0)
    # and the KV cache of the GQA model is smaller by n_head / n_kv_head
    _, c1 = gqa.forward_with_cache(ids)
    _, c2 = mha.forward_with_cache(ids)
    assert c1[0][0].shape == (2, 2, 11, hd) and c2[0][0].shape == (2, 4, 11, hd)


# -------------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_kv_cache_equals_recomputation(impl):
    model = Llama(tiny(n_kv_head=2, impl=impl)).eval()
    ids = torch.randint(0, 61, (2, 20))
    full = model(ids)
    cache = model.new_cache()
    parts = [model.forward_with_cache(ids[:, a:b], cache)[0] for a, b in ((0, 7), (7, 8), (8, 20))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 20 and torch.equal(cache.ids, ids)


def test_impls_agree():
    a = Llama(tiny(n_kv_head=1))
    b = Llama(tiny(n_kv_head=1, impl="manual"))
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 61, (2, 9))
    torch.testing.assert_close(a(ids), b(ids), atol=1e-6, rtol=0)


def test_decoding_strategies_run_unchanged():
    model = Llama(tiny(n_kv_head=2)).eval()
    ids = torch.randint(0, 61, (2, 4))
    g = torch.Generator().manual_seed(0)
    for kw in (
        {},
        {"strategy": "sample", "top_k": 5, "top_p": 0.9, "generator": g},
        {"strategy": "beam", "beam_width": 3},
    ):
        cached = model.generate(ids, 6, **kw)
        assert cached.shape == (2, 10)
    beam = decoding.generate(model, ids[0], 6, strategy="beam", beam_width=3)
    assert torch.equal(
        beam, decoding.generate(model, ids[0], 6, strategy="beam", beam_width=3, use_cache=False)
    )


def test_training_step_lowers_the_loss():
    from llmkit.train import TrainConfig, train

    torch.manual_seed(0)
    model = Llama(tiny(n_kv_head=2))
    data = torch.randint(0, 61, (64,))

    def get_batch(split, generator):
        starts = torch.randint(0, 64 - 9, (4,), generator=generator)
        x = torch.stack([data[s : s + 8] for s in starts])
        y = torch.stack([data[s + 1 : s + 9] for s in starts])
        return x, y

    history = train(
        model,
        TrainConfig(max_steps=30, lr=1e-2, eval_interval=30, eval_iters=1, device="cpu"),
        get_batch,
    )
    assert history.train_loss[-1] < history.train_loss[0]


# ---------------------------------------------------------------------- pieces and configs


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 7, 16)
    ours = RMSNorm(16, eps=1e-6)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x))


def test_swiglu():
    mlp = SwiGLU(8, 12)
    x = torch.randn(2, 8)
    expected = mlp.down(torch.nn.functional.silu(mlp.gate(x)) * mlp.up(x))
    torch.testing.assert_close(mlp(x), expected)
    assert mlp.gate.bias is None and sum(p.numel() for p in mlp.parameters()) == 3 * 8 * 12


def test_smollm2_parameter_count_by_formula():
    c = LlamaConfig(
        vocab_size=49152,
        block_size=8192,
        n_layer=30,
        n_head=9,
        n_kv_head=3,
        d_model=576,
        hidden=1536,
        rope_base=100000.0,
    )
    assert count_parameters(c) == 134_515_008
    with torch.device("meta"):
        assert Llama(c).num_parameters() == 134_515_008


@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"n_head": 3}, ValueError, "d_model"),
        ({"n_kv_head": 3}, ValueError, "n_head"),
        ({"n_head": 32}, ValueError, "even"),
        ({"rope_layout": "interleaved"}, ValueError, "rope_layout"),
        ({"rope_base": 0}, ValueError, "rope_base"),
        ({"tie_embeddings": 1}, TypeError, "tie_embeddings"),
        ({"n_kv_head": 0}, ValueError, "n_kv_head"),
        ({"hidden": 2.5}, TypeError, "hidden"),
    ],
)
def test_config_validation(kw, error, match):
    with pytest.raises(error, match=match):
        tiny(**kw)


def test_defaults_and_entry_point_checks():
    c = tiny(hidden=None)
    assert c.hidden == 128 and c.n_kv_head == 4 and c.n_rep == 1
    model = Llama(c)
    with pytest.raises(ValueError, match="vocab_size"):
        model.generate(torch.tensor([[61]]), 1)
    with pytest.raises(TypeError, match="LlamaConfig"):
        Llama(c.to_dict())
    with pytest.raises(ValueError, match="cache"):
        model.forward_with_cache(torch.tensor([[1]]), object())

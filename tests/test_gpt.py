"""Tests of llmkit.gpt: the GPT model, its KV cache and Hugging Face GPT-2 interop (chapter 03).

The reference models are randomly initialised tiny ``transformers.GPT2LMHeadModel``s (no
download): ``transformers`` is a test-only dependency.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.gpt import GPT, GPTConfig
from llmkit.nn import KVCache

transformers = pytest.importorskip("transformers")

# (n_embd, n_layer, n_head, n_positions, vocab_size)
HF_SHAPES = [(32, 2, 4, 64, 50), (48, 1, 3, 40, 97), (64, 2, 8, 32, 100)]


def tiny(**overrides) -> GPT:
    kw = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, d_model=32)
    kw.update(overrides)
    return GPT(GPTConfig(**kw)).eval()


def greedy_full(model, ids: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding by full recomputation on the last block_size tokens."""
    block = model.config.block_size
    steps = []
    for _ in range(n):
        logits = model(ids[:, -block:])[:, -1]
        steps.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids, steps


def greedy_cached(model, ids: torch.Tensor, n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding through forward_with_cache: only new tokens after the prompt."""
    steps = []
    logits, cache = model.forward_with_cache(ids, None)
    for i in range(n):
        steps.append(logits[:, -1])
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if i < n - 1:
            logits, cache = model.forward_with_cache(nxt, cache)
    return ids, steps


# -- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (dict(vocab_size=0), ValueError, "vocab_size"),
        (dict(block_size=0), ValueError, "block_size"),
        (dict(n_layer=0), ValueError, "n_layer"),
        (dict(n_head=0), ValueError, "n_head"),
        (dict(d_model=0), ValueError, "d_model"),
        (dict(d_model=130), ValueError, "d_model"),
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(impl="flash"), ValueError, "impl"),
        (dict(n_layer=2.0), TypeError, "n_layer"),
        (dict(vocab_size=True), TypeError, "vocab_size"),
        (dict(bias="yes"), TypeError, "bias"),
    ],
)
def test_config_validation(overrides, error, message):
    kw = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, d_model=32)
    kw.update(overrides)
    with pytest.raises(error, match=message):
        GPTConfig(**kw)


def test_config_dict_round_trip():
    config = GPTConfig(50, 16, 2, 4, 32, dropout=0.1, impl="manual")
    assert config.head_dim == 8
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig.from_dict({**config.to_dict(), "n_embd": 3})
    with pytest.raises(TypeError, match="config"):
        GPT(config.to_dict())  # type: ignore[arg-type]


# -- the model ----------------------------------------------------------------------------------


def test_forward_shapes_and_weight_tying():
    model = tiny()
    ids = torch.randint(0, 50, (3, 10))
    assert model(ids).shape == (3, 10, 50)
    assert model.lm_head.weight is model.wte.weight
    assert model.lm_head.bias is None
    model.loss(ids, ids).backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


def test_scaled_residual_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=8, n_head=2, d_model=64))
    residual = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        for weight in (block.attn.proj.weight, block.mlp.proj.weight):
            assert abs(weight.std().item() / residual - 1) < 0.1
        assert abs(block.attn.qkv.weight.std().item() / 0.02 - 1) < 0.1
        assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.ln_1.weight == 1)
    assert abs(model.wte.weight.std().item() / 0.02 - 1) < 0.1


def test_impls_agree():
    torch.manual_seed(1)
    sdpa = tiny(impl="sdpa").double()
    manual = tiny(impl="manual").double()
    manual.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(sdpa(ids), manual(ids), atol=1e-6, rtol=0)


def test_future_tokens_do_not_change_earlier_logits():
    model = tiny().double()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    a, b = model(ids), model(changed)
    assert torch.equal(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8], b[:, 8])


def test_loss_is_cross_entropy_and_starts_near_log_vocab():
    model = tiny()
    ids = torch.randint(0, 50, (4, 16))
    targets = torch.roll(ids, -1, dims=1)
    logits = model(ids)
    expected = F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1))
    torch.testing.assert_close(model.loss(ids, targets), expected)
    assert abs(expected.item() - math.log(50)) < 0.1  # near-uniform predictions at init
    ignored = targets.clone()
    ignored[:, :8] = -100
    torch.testing.assert_close(
        model.loss(ids, ignored),
        F.cross_entropy(logits[:, 8:].reshape(-1, 50), targets[:, 8:].reshape(-1)),
    )
    with pytest.raises(ValueError, match="targets"):
        model.loss(ids, targets[:, :-1])


def test_num_parameters():
    V, T, L, d = 50, 16, 2, 32
    model = tiny(vocab_size=V, block_size=T, n_layer=L, d_model=d)
    per_block = (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 4 * d
    assert model.num_parameters() == V * d + T * d + L * per_block + 2 * d
    assert model.num_parameters(non_embedding=True) == L * per_block + 2 * d
    no_bias = tiny(vocab_size=V, block_size=T, n_layer=L, d_model=d, bias=False)
    assert no_bias.num_parameters(non_embedding=True) == L * (12 * d * d + 2 * d) + d


def test_dropout_only_in_training():
    model = tiny(dropout=0.2)
    ids = torch.randint(0, 50, (2, 8))
    assert torch.equal(model(ids), model(ids))
    model.train()
    assert not torch.equal(model(ids), model(ids))


def test_bad_ids_are_clear_errors_at_the_entry_points():
    model = tiny()
    targets = torch.zeros(1, 2, dtype=torch.long)
    for call in (
        lambda ids: model.loss(ids, targets[:, : ids.shape[-1]]),
        lambda ids: model.forward_with_cache(ids),
        lambda ids: model.generate(ids, 1),
    ):
        with pytest.raises(TypeError, match="ids"):
            call(torch.zeros(1, 2))
        with pytest.raises(ValueError, match="ids"):
            call(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="ids"):
        model.loss(torch.tensor([1, 2]), targets)


# -- context window -----------------------------------------------------------------------------


def test_too_long_prompt_is_a_clear_error():
    model = tiny(block_size=64)
    with pytest.raises(ValueError, match="70"):
        model(torch.zeros(1, 70, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(2, 60, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="70"):
        model(torch.zeros(2, 10, dtype=torch.long), cache)


def test_forward_with_cache_crops_to_the_last_block_size_tokens():
    model = tiny(block_size=8).double()
    ids = torch.randint(0, 50, (2, 13))
    # a prompt longer than the window: logits of the last 8 positions, as forward on them
    logits, cache = model.forward_with_cache(ids, None)
    torch.testing.assert_close(logits, model(ids[:, -8:]))
    assert cache.length == 8 and torch.equal(cache.ids, ids[:, -8:])
    # overflowing a filled cache: recompute on the cropped window
    cache = model.new_cache()
    model.forward_with_cache(ids[:, :6], cache)
    logits, cache = model.forward_with_cache(ids[:, 6:9], cache)
    assert logits.shape == (2, 3, 50)
    torch.testing.assert_close(logits, model(ids[:, 1:9])[:, -3:])
    assert cache.length == 8


# -- KV cache -----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_cache_in_chunks_equals_full_forward_batched(impl):
    model = tiny(impl=impl).double()
    ids = torch.randint(0, 50, (3, 16))
    full = model(ids)
    cache = model.new_cache()
    assert isinstance(cache, KVCache) and cache.n_layers == 2
    chunks = [model(ids[:, lo:hi], cache) for lo, hi in [(0, 5), (5, 6), (6, 7), (7, 16)]]
    assert cache.length == 16 and cache[1][0].shape == (3, 4, 16, 8)
    assert torch.equal(cache.ids, ids)
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-10, rtol=0)


def test_cache_reorder_follows_rows():
    model = tiny().double()
    ids = torch.randint(0, 50, (3, 6))
    cache = model.new_cache()
    model(ids[:, :5], cache)
    cache.reorder(torch.tensor([2, 0, 0]))
    logits = model(ids[[2, 0, 0], 5:], cache)
    torch.testing.assert_close(logits[:, 0], model(ids[[2, 0, 0]])[:, -1])


def test_cache_errors():
    model = tiny()
    cache = model.new_cache()
    model.forward_with_cache(torch.zeros(2, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="cache"):
        model.forward_with_cache(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="cache"):
        model.forward_with_cache(torch.zeros(1, 1, dtype=torch.long), KVCache(3))


@settings(max_examples=25)
@given(
    n_layer=st.integers(1, 2),
    n_head=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4, 8]),
    block_size=st.integers(2, 10),
    vocab_size=st.integers(2, 20),
    batch=st.integers(1, 2),
    prompt_len=st.integers(1, 14),
    new_tokens=st.integers(1, 14),
    impl=st.sampled_from(["sdpa", "manual"]),
    seed=st.integers(0, 2**16),
)
def test_cached_generation_equals_full_recomputation(
    n_layer, n_head, head_dim, block_size, vocab_size, batch, prompt_len, new_tokens, impl, seed
):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size, block_size, n_layer, n_head, n_head * head_dim, impl=impl)
    model = GPT(config).double().eval()
    with torch.no_grad():  # peakier logits: distinct argmaxes
        model.wte.weight.mul_(10)
    prompt = torch.randint(0, vocab_size, (batch, prompt_len))
    with torch.no_grad():
        full, full_steps = greedy_full(model, prompt, new_tokens)
        cached, cached_steps = greedy_cached(model, prompt, new_tokens)
    torch.testing.assert_close(torch.stack(cached_steps), torch.stack(full_steps))
    assert torch.equal(cached, full)


def test_generate_uses_decoding_and_crops():
    if importlib.util.find_spec("llmkit.decoding") is None:
        pytest.skip("llmkit.decoding is not available")
    model = tiny(block_size=8).double()
    model.train()
    with torch.no_grad():
        model.wte.weight.mul_(10)
    prompt = torch.randint(0, 50, (1, 11))  # longer than block_size: cropped
    model.eval()
    expected, _ = greedy_full(model, prompt, 20)
    model.train()
    for use_cache in (True, False):
        out = model.generate(prompt, 20, use_cache=use_cache)
        assert torch.equal(torch.as_tensor(out).reshape(-1), expected.reshape(-1))
    assert model.training  # restored after generation


# -- Hugging Face GPT-2 -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", HF_SHAPES)
@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_hf_logits_match(shape, impl, hf_gpt2):
    hf = hf_gpt2(*shape)
    n_embd, n_layer, n_head, n_positions, vocab = shape
    config = GPTConfig(vocab, n_positions, n_layer, n_head, n_embd, impl=impl)
    model = GPT.from_hf_gpt2(hf, config).eval()
    assert model.lm_head.weight is model.wte.weight
    ids = torch.randint(0, vocab, (2, n_positions))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", HF_SHAPES)
def test_hf_config_parameter_count_and_round_trip(shape, hf_gpt2):
    hf = hf_gpt2(*shape, seed=1)
    model = GPT.from_hf_gpt2(hf).eval()  # config read from hf.config
    n_embd, n_layer, n_head, n_positions, vocab = shape
    assert model.config == GPTConfig(vocab, n_positions, n_layer, n_head, n_embd)
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())
    # llmkit -> HF state dict -> fresh HF model: the same logits
    sd = model.to_hf_gpt2_state_dict()
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (n_embd, 3 * n_embd)
    hf2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**model.config.to_hf_gpt2_kwargs())
    ).eval()
    hf2.load_state_dict(sd, strict=True)
    ids = torch.randint(0, vocab, (2, 9))
    with torch.no_grad():
        ours = model(ids)
        torch.testing.assert_close(hf2(ids).logits, ours, atol=1e-5, rtol=0)
        torch.testing.assert_close(hf(ids).logits, ours, atol=1e-5, rtol=0)
    for key, value in hf.state_dict().items():
        assert torch.equal(sd[key], value), key


@pytest.mark.parametrize("shape", HF_SHAPES)
def test_hf_greedy_20_tokens_identical(shape, hf_gpt2):
    hf = hf_gpt2(*shape, seed=2).double()
    model = GPT.from_hf_gpt2(hf).eval()
    prompt = torch.randint(0, shape[-1], (1, 6))
    with torch.no_grad():
        expected = hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False
        )
        ours, _ = greedy_cached(model, prompt, 20)
    assert expected.shape == (1, 26)
    assert torch.equal(ours, expected)


def test_from_hf_state_dict_variants(hf_gpt2):
    hf = hf_gpt2(32, 2, 4, 64, 50, seed=3)
    sd = hf.state_dict()
    ids = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        expected = hf(ids).logits
        # a bare state dict needs n_head: from a GPTConfig or a GPT2Config
        for config in (GPTConfig(50, 64, 2, 4, 32), hf.config):
            model = GPT.from_hf_gpt2(sd, config).eval()
            torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
        # GPT2Model-style keys: no "transformer." prefix and no lm_head
        bare = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
        model = GPT.from_hf_gpt2(bare, GPTConfig(50, 64, 2, 4, 32)).eval()
        torch.testing.assert_close(model(ids), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="n_head"):
        GPT.from_hf_gpt2(sd)
    with pytest.raises(ValueError, match=r"h\.2\.ln_1\.weight"):
        GPT.from_hf_gpt2({**sd, "transformer.h.2.ln_1.weight": torch.ones(32)}, hf.config)
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.bias"):
        GPT.from_hf_gpt2(
            {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.bias"}, hf.config
        )
    with pytest.raises(ValueError, match="lm_head.weight"):
        GPT.from_hf_gpt2({**sd, "lm_head.weight": torch.zeros(50, 32)}, hf.config)
    with pytest.raises(ValueError, match="shape"):
        GPT.from_hf_gpt2(sd, GPTConfig(50, 64, 2, 4, 32 * 2))
    with pytest.raises(TypeError, match="model_or_state_dict"):
        GPT.from_hf_gpt2([1, 2])
    gelu = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, activation_function="relu")
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_hf_gpt2(sd, gelu)


def test_gpt2_widths_infer_n_head_from_state_dict():
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=12, d_model=768))
    loaded = GPT.from_hf_gpt2(model.to_hf_gpt2_state_dict())
    assert loaded.config == model.config
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_bias_free_model_has_no_gpt2_twin():
    model = tiny(bias=False)
    with pytest.raises(ValueError, match="bias"):
        model.to_hf_gpt2_state_dict()
    with pytest.raises(ValueError, match="bias"):
        model.config.to_hf_gpt2_kwargs()

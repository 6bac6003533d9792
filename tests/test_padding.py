"""Batches of sequences of different lengths: ``attention_mask`` and ``generate_batch``.

A padded row must give, at its real positions, the logits of the row alone (GPT and Llama,
both attention paths, left and right padding, with and without the KV cache), and batched
greedy decoding must give each prompt the tokens of :func:`llmkit.decoding.generate`. The
references: each row run alone, and ``transformers``' GPT-2 and Llama given the same
``attention_mask`` and ``position_ids``. Models run in float64, so that a near-tie between
two tokens cannot flip with the order of additions.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.decoding import generate, generate_batch
from llmkit.gpt import GPT, GPTConfig
from llmkit.llama import Llama, LlamaConfig
from llmkit.lm import CausalLM
from llmkit.nn import mask_positions, padded_causal_mask

V = 23


def tiny_model(kind: str, impl: str = "sdpa", seed: int = 0, block_size: int = 24) -> CausalLM:
    """A random tiny float64 GPT or Llama whose outputs vary (weights N(0, 0.3^2))."""
    torch.manual_seed(seed)
    if kind == "gpt":
        model: CausalLM = GPT(GPTConfig(V, block_size, n_layer=2, n_head=2, d_model=16, impl=impl))
    else:
        model = Llama(
            LlamaConfig(V, block_size, n_layer=2, n_head=4, d_model=16, n_kv_head=2, impl=impl)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return model.double().eval()


def pad(rows: list[list[int]], side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, each ``(b, longest)``, padded on ``side``."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id)
    mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    for i, r in enumerate(rows):
        cols = slice(longest - len(r), longest) if side == "left" else slice(0, len(r))
        ids[i, cols] = torch.tensor(r)
        mask[i, cols] = True
    return ids, mask


prompts_st = st.lists(
    st.lists(st.integers(0, V - 1), min_size=1, max_size=7), min_size=1, max_size=4
)


# ------------------------------------------------------------------------ logits


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["gpt", "llama"]),
    impl=st.sampled_from(["sdpa", "manual"]),
    rows=prompts_st,
    side=st.sampled_from(["left", "right"]),
    split=st.integers(0, 7),
    pad_id=st.integers(0, V - 1),
    seed=st.integers(0, 3),
)
def test_padded_logits_equal_each_row_alone(kind, impl, rows, side, split, pad_id, seed):
    model = tiny_model(kind, impl, seed)
    ids, mask = pad(rows, side, pad_id)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)
        # the same batch through the KV cache in two pieces, the mask growing with it
        split = min(split, ids.shape[1] - 1)
        if not mask[:, :split].any(dim=1).all():  # each piece needs a real token per row
            split = 0
        cache = model.new_cache()
        parts = []
        for cols in (slice(0, split), slice(split, None)):
            if ids[:, cols].shape[1]:
                out, cache = model.forward_with_cache(
                    ids[:, cols], cache, attention_mask=mask[:, : cols.stop or ids.shape[1]]
                )
                parts.append(out)
        cached = torch.cat(parts, dim=1)
        assert torch.isfinite(logits).all() and torch.isfinite(cached).all()  # padding too
        for i, r in enumerate(rows):
            alone = model(torch.tensor([r]))[0]
            torch.testing.assert_close(logits[i][mask[i]], alone, rtol=0, atol=1e-10)
            torch.testing.assert_close(cached[i][mask[i]], alone, rtol=0, atol=1e-10)


def test_mask_none_is_the_unpadded_path_and_an_all_true_mask_agrees():
    for kind in ("gpt", "llama"):
        model = tiny_model(kind)
        ids = torch.randint(0, V, (3, 9))
        with torch.no_grad():
            plain = model(ids)
            masked = model(ids, attention_mask=torch.ones(3, 9, dtype=torch.long))
        torch.testing.assert_close(masked, plain, rtol=0, atol=1e-10)


def test_padding_changes_nothing_whatever_the_padding_tokens():
    model = tiny_model("llama")
    ids, mask = pad([[1, 2, 3, 4], [5, 6]], "left")
    other = ids.masked_fill(~mask, 17)
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask), model(other, attention_mask=mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=0)


def test_mask_helpers_by_hand():
    mask = torch.tensor([[False, True, True, False]])
    assert mask_positions(mask, 4).tolist() == [[0, 0, 1, 1]]
    assert mask_positions(mask, 2).tolist() == [[1, 1]]  # the last two (with a KV cache)
    # queries see the real keys up to themselves, and themselves (so the leading padding
    # query, which has no real key to see, is not an empty softmax)
    assert padded_causal_mask(mask, 4)[0, 0].int().tolist() == [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 1],
    ]
    assert padded_causal_mask(mask, 1)[0, 0].int().tolist() == [[0, 1, 1, 1]]


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        ([[1, 1, 1]], ValueError, "shape"),
        ([[1, 1], [1, 1], [1, 1]], ValueError, "shape"),
        ([[1, 2], [1, 1]], ValueError, "only 0 and 1"),
        ([[0, 0], [1, 1]], ValueError, r"real token in every row; rows \[0\]"),
        ("mask", TypeError, "torch.Tensor"),
    ],
)
def test_attention_mask_is_validated(mask, error, match):
    model = tiny_model("gpt")
    ids = torch.tensor([[1, 2], [3, 4]])
    mask = torch.tensor(mask) if isinstance(mask, list) else mask
    with pytest.raises(error, match=match):
        model(ids, attention_mask=mask)
    with pytest.raises(error, match=match):
        model.forward_with_cache(ids, attention_mask=mask)


def test_a_padded_batch_is_not_cropped():
    model = tiny_model("gpt", block_size=8)
    ids, mask = pad([[1] * 8, [2] * 3], "left")
    logits, cache = model.forward_with_cache(ids, attention_mask=mask)
    assert logits.shape == (2, 8, V)
    with pytest.raises(ValueError, match="not cropped"):
        model.forward_with_cache(ids[:, :1], cache, attention_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match="context window"):  # forward keeps its check
        model(torch.ones(2, 9, dtype=torch.long), attention_mask=torch.ones(2, 9))


# ------------------------------------------------------------------------ generate_batch


def alone(model: CausalLM, prompt: list[int], n: int, eos: int | None, **kw) -> list[int]:
    """The new tokens of :func:`generate` for one prompt, cut after the first eos."""
    out = generate(model, torch.tensor([prompt]), n, eos_token_id=eos, **kw)[0, len(prompt) :]
    new = out.tolist()
    return new[: new.index(eos) + 1] if eos is not None and eos in new else new


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["gpt", "llama"]),
    impl=st.sampled_from(["sdpa", "manual"]),
    prompts=prompts_st,
    n=st.integers(0, 8),
    eos=st.one_of(st.none(), st.integers(0, V - 1)),
    seed=st.integers(0, 3),
)
def test_generate_batch_greedy_equals_generate_row_by_row(kind, impl, prompts, n, eos, seed):
    model = tiny_model(kind, impl, seed)
    out = generate_batch(model, prompts, n, eos_token_id=eos, pad_id=seed)
    assert out == [alone(model, p, n, eos) for p in prompts]
    for row in out:
        assert len(row) == n or (eos is not None and row[-1] == eos and row.count(eos) == 1)


def test_generate_batch_stops_rows_at_eos_and_drops_them():
    model = tiny_model("llama", seed=1)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [3, 3]]
    free = generate_batch(model, prompts, 6)
    eos = free[1][1]  # row 1 stops at its second token, the others never meet it
    assert all(eos not in free[i] for i in (0, 2, 3))
    out = generate_batch(model, prompts, 6, eos_token_id=eos)
    assert out == [free[0], free[1][:2], free[2], free[3]]
    assert out == [alone(model, p, 6, eos) for p in prompts]
    eos = free[0][0]  # rows 0 and 2 stop at once, row 3 later, row 1 runs on
    out = generate_batch(model, prompts, 6, eos_token_id=eos)
    assert [len(row) for row in out] == [1, 6, 1, 2]
    assert out == [alone(model, p, 6, eos) for p in prompts]


def test_generate_batch_sampling_is_reproducible_and_a_single_prompt_matches_generate():
    model = tiny_model("gpt", seed=2)
    prompts = [[1, 2], [3, 4, 5, 6], [7]]
    kw = dict(temperature=0.8, top_k=10, top_p=0.9)

    def run(seed, **extra):
        g = torch.Generator().manual_seed(seed)
        return generate_batch(model, prompts, 7, "sample", generator=g, **kw, **extra)

    assert run(0) == run(0)
    assert run(0) == run(0, pad_id=11)  # padding values are invisible
    assert run(0) != run(1)
    for p in prompts:
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        single = generate_batch(model, [p], 7, "sample", generator=g1, **kw)[0]
        assert single == alone(model, p, 7, None, strategy="sample", generator=g2, **kw)


def test_generate_batch_respects_the_context_window():
    model = tiny_model("gpt", block_size=10)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8]]
    out = generate_batch(model, prompts, 5)  # 6 + 5 - 1 = 10 positions: fits exactly
    assert out == [alone(model, p, 5, None) for p in prompts]
    with pytest.raises(ValueError, match="exceeds block_size=10"):
        generate_batch(model, prompts, 6)


def test_generate_batch_restores_training_mode():
    model = tiny_model("llama").train()
    generate_batch(model, [[1]], 2)
    assert model.training


@pytest.mark.parametrize(
    ("args", "kw", "error", "match"),
    [
        (([], 3), {}, ValueError, "non-empty list"),
        (([[1], []], 3), {}, ValueError, r"prompts\[1\]"),
        (([[1, V]], 3), {}, ValueError, r"prompts\[0\] must hold ints"),
        (([[1]], -1), {}, ValueError, "max_new_tokens"),
        (([[1]], 3), {"strategy": "beam"}, ValueError, "strategy"),
        (([[1]], 3), {"temperature": 0.5}, ValueError, "strategy='sample'"),
        (([[1]], 3), {"pad_id": V}, ValueError, "pad_id"),
        (([[1]], 3), {"strategy": "sample", "top_p": 0.0}, ValueError, "top_p"),
    ],
)
def test_generate_batch_validates_its_arguments(args, kw, error, match):
    model = tiny_model("gpt")
    with pytest.raises(error, match=match):
        generate_batch(model, *args, **kw)


def test_generate_batch_needs_a_causal_lm():
    with pytest.raises(TypeError, match="CausalLM"):
        generate_batch(lambda ids: ids, [[1]], 2)


# ------------------------------------------------------------------------ transformers parity

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_logits_match_transformers_gpt2(side):
    model = tiny_model("gpt", seed=3)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**model.config.to_hf_gpt2_kwargs())
    ).double()
    hf.load_state_dict(model.to_hf_gpt2_state_dict())
    hf.eval()
    ids, mask = pad([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10]], side)
    positions = mask_positions(mask, ids.shape[1])
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask.long(), position_ids=positions).logits
    torch.testing.assert_close(ours[mask], theirs[mask], rtol=0, atol=1e-10)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_logits_match_transformers_llama(side):
    torch.manual_seed(4)
    hc = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=24,
        rope_theta=500.0,
        rms_norm_eps=1e-6,
    )
    hf = transformers.LlamaForCausalLM(hc).double().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    model = Llama.from_hf_llama(hf).eval()
    ids, mask = pad([[1, 2, 3, 4, 5, 6], [7, 8, 9], [10]], side)
    positions = mask_positions(mask, ids.shape[1])
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask.long(), position_ids=positions).logits
    torch.testing.assert_close(ours[mask], theirs[mask], rtol=0, atol=1e-10)

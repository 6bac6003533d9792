"""Tests of llmkit.gguf and llmkit.pretrained.smollm2 on the real SmolLM2 GGUF file.

llmkit's model is compared with ``transformers``' own reading of the same file
(``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)``: its own tensor-name
mapping, dequantization and RoPE permutation). Both models are loaded once per module.

``transformers``' GGUF loader is slow on two cores (about 30 s, most of it in ``gguf``'s
header parsing through ``np.memmap`` slices and a name map rebuilt for every tensor), so the
fixture gives it llmkit's faster ``GGUFReader`` subclass and a cached name map: the same
bytes and results, parsed faster.

The prompts' token ids were made with ``transformers``' tokenizer from the same file
(``AutoTokenizer.from_pretrained(folder, gguf_file=name)``); they are written out so the
tests do not spend 10 s building it (the tokenizer has its own tests).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import pytest
import torch

from llmkit import data, gguf
from llmkit.llama import Llama, permute_qk
from llmkit.pretrained import SMOLLM2, smollm2

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


def _gguf_file():
    try:
        return data.path(SMOLLM2)
    except data.DataUnavailableError:
        return None


GGUF_FILE = _gguf_file()
pytestmark = pytest.mark.skipif(GGUF_FILE is None, reason="the SmolLM2 GGUF file is unavailable")

PROMPTS = {
    "The capital of France is": [504, 3575, 282, 4649, 314],
    "def fibonacci(n):\n": [1604, 3987, 46477, 24, 94, 727, 198],
    "Once upon a time, in a small village,": [6403, 1980, 253, 655, 28, 281, 253, 1165, 6560, 28],
    "1, 2, 3, 5, 8, 13,": [
        33,
        28,
        216,
        34,
        28,
        216,
        35,
        28,
        216,
        37,
        28,
        216,
        40,
        28,
        216,
        33,
        35,
        28,
    ],
}
# ChatML with SmolLM2's default system prompt: "What is the capital of France? Answer in one
# sentence." and the assistant's turn opened.
CHAT = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842, 281,
        582, 6330, 30, 2, 198, 1, 520, 9531, 198]  # fmt: skip
IM_END = 2


@pytest.fixture(scope="module")
def hf_model():
    import gguf as gguf_package

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gguf_package, "GGUFReader", type(gguf._reader(GGUF_FILE)))
        mp.setattr(
            gguf_package,
            "get_tensor_name_map",
            functools.lru_cache(gguf_package.get_tensor_name_map),
        )
        folder = GGUF_FILE.parent
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=GGUF_FILE.name, dtype=torch.float32
        )
    return model.eval()


@pytest.fixture(scope="module")
def loaded():
    return smollm2(device="cpu", dtype=torch.float32)


def test_metadata_is_plain_python():
    meta = gguf.read_metadata(GGUF_FILE)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30 and meta["llama.rope.freq_base"] == 100000.0
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert len(meta["tokenizer.ggml.tokens"]) == 49152
    assert len(meta["tokenizer.ggml.merges"]) == 48900
    assert meta["tokenizer.ggml.tokens"][IM_END] == "<|im_end|>"
    assert isinstance(meta["tokenizer.ggml.token_type"][0], int)
    assert "{% for message in messages %}" in meta["tokenizer.chat_template"]
    assert not any(k.startswith("GGUF.") for k in meta)


def test_smollm2_loads_as_described(loaded):
    model, tokenizer, info = loaded
    c = model.config
    assert (c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.head_dim, c.hidden) == (
        30,
        576,
        9,
        3,
        64,
        1536,
    )
    assert (c.vocab_size, c.block_size, c.rope_base, c.rope_layout) == (
        49152,
        8192,
        100000.0,
        "adjacent",
    )
    assert c.tie_embeddings and model.lm_head.weight is model.wte.weight
    assert model.num_parameters() == info["n_parameters"] == 134_515_008
    assert info["eos_token_id"] == IM_END and not model.training
    assert info["metadata"]["general.architecture"] == "llama"
    assert info["load_seconds"] < 60


def test_tensor_names_and_shapes(loaded):
    model = loaded[0]
    state = gguf.llama_state_dict(
        {"blk.3.attn_k.weight": torch.zeros(1), "token_embd.weight": torch.zeros(1)}
    )
    assert sorted(state) == ["blocks.3.attn.k_proj.weight", "wte.weight"]
    assert model.blocks[0].attn.k_proj.weight.shape == (192, 576)
    with pytest.raises(ValueError, match="rope_freqs"):
        gguf.llama_state_dict({"rope_freqs.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="architecture"):
        gguf.config_from_metadata({"general.architecture": "gpt2"})


@pytest.mark.parametrize("text", list(PROMPTS))
def test_logits_match_transformers(loaded, hf_model, text):
    ids = torch.tensor([PROMPTS[text]])
    with torch.no_grad():
        expected = hf_model(ids).logits
    got = loaded[0](ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_greedy_tokens_match_transformers(loaded, hf_model):
    model = loaded[0]
    for text in ("def fibonacci(n):\n", "Once upon a time, in a small village,"):
        x = torch.tensor([PROMPTS[text]])
        expected = hf_model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=30, do_sample=False
        )
        assert expected.shape[1] == x.shape[1] + 30
        assert torch.equal(model.generate(x, 30), expected)


def test_chat_answer_and_rotate_half_layout_is_bit_identical(loaded, hf_model):
    """In transformers' layout (q/k permuted), llmkit's logits equal transformers' exactly."""
    adjacent = loaded[0]
    config = dataclasses.replace(adjacent.config, rope_layout="rotate_half")
    state = dict(adjacent.state_dict())
    for i in range(config.n_layer):
        for name, heads in (("q_proj", config.n_head), ("k_proj", config.n_kv_head)):
            key = f"blocks.{i}.attn.{name}.weight"
            state[key] = permute_qk(state[key], heads, to="rotate_half")
    model = Llama.from_state_dict(state, config).eval()
    x = torch.tensor([CHAT])
    with torch.no_grad():
        assert torch.equal(model(x), hf_model(x).logits)
    expected = hf_model.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=30, do_sample=False
    )[0, len(CHAT) :]
    got = model.generate(x, 30, eos_token_id=IM_END)[0, len(CHAT) :]
    n = expected.shape[0]  # transformers stops at <|im_end|>; llmkit pads with it
    assert torch.equal(got[:n], expected) and bool((got[n:] == IM_END).all())
    assert expected[-1] == IM_END
    # "The capital of France is Paris." then <|im_end|>
    assert expected[:7].tolist() == [504, 3575, 282, 4649, 314, 7042, 30]


@pytest.mark.skipif(os.environ.get("LLMKIT_SLOW") != "1", reason="set LLMKIT_SLOW=1")
def test_kv_cache_on_the_real_model(loaded):
    model = loaded[0]
    x = torch.tensor([CHAT])
    torch.testing.assert_close(
        model.generate(x, 10), model.generate(x, 10, use_cache=False), atol=0, rtol=0
    )


def test_chat_with_the_real_model_through_llmkit(loaded):
    from llmkit import chat

    model, tokenizer, _ = loaded
    messages = [
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
    ]
    prompt = chat.render(messages, add_generation_prompt=True).text
    ids = tokenizer.encode(prompt)
    assert ids[:2] == tokenizer.encode("<|im_start|>system")  # special token, then a word
    assert (
        chat.chat(model, tokenizer, messages, max_new_tokens=20)
        == "The capital of France is Paris."
    )

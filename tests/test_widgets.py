"""llmkit.widgets: the decoding explorer's numbers, its figures, and the widget itself
(built and driven without a browser)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llmkit.decoding import greedy, top_k_filter, top_p_filter  # noqa: E402
from llmkit.tokenizers import CharTokenizer  # noqa: E402
from llmkit.widgets import (  # noqa: E402
    DecodingExplorer,
    decoding_explorer,
    explorer_data,
    plot_explorer_data,
    plot_settings_grid,
    token_label,
)

LOGITS = torch.tensor([0.5, 2.0, -1.0, 1.0, 0.0, 3.0, -2.0, 1.5])  # V = 8


class TableModel(torch.nn.Module):
    """A bigram model with a fixed random table: logits depend on the last token."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = 2.0 * torch.randn(vocab_size, vocab_size, generator=g)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.train("abcde fgh\n")


def test_token_label():
    assert token_label(" ") == "␣"
    assert token_label("\n") == "⏎"
    assert token_label(" the") == "␣the"
    assert token_label("a\x00") == "a\\x00"
    assert token_label("") == "∅"


def test_no_filter_shows_the_model_distribution():
    d = explorer_data(LOGITS, n_show=5)
    probs = F.softmax(LOGITS.double(), dim=-1)
    assert d.token_ids.tolist() == [5, 1, 7, 3, 0]  # most probable first
    assert torch.allclose(d.probs.double(), probs[d.token_ids], atol=1e-6)
    assert torch.allclose(d.filtered, d.probs)
    assert d.kept.all() and d.n_kept == d.vocab_size == 8
    assert d.labels == ["5", "1", "7", "3", "0"]
    assert d.entropy == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-6)
    assert d.shown_mass == pytest.approx(float(probs[[5, 1, 7, 3, 0]].sum()), abs=1e-6)
    assert d.title() == "T=1: 8 of 8 kept"


def test_top_k_and_top_p_agree_with_the_library():
    d = explorer_data(LOGITS, top_k=3, n_show=8)
    assert d.n_kept == 3 and d.kept.tolist() == [True] * 3 + [False] * 5
    expected = F.softmax(top_k_filter(LOGITS, 3), dim=-1)
    assert torch.allclose(d.filtered, expected[d.token_ids], atol=1e-6)
    assert d.filtered.sum() == pytest.approx(1.0, abs=1e-6)
    d = explorer_data(LOGITS, top_p=0.8, n_show=8)
    expected = F.softmax(top_p_filter(LOGITS, 0.8), dim=-1)
    assert torch.allclose(d.filtered, expected[d.token_ids], atol=1e-6)
    assert d.n_kept == int(torch.isfinite(top_p_filter(LOGITS, 0.8)).sum()) < 8
    assert "top-p 0.8" in d.title()


def test_temperature_limits():
    cold = explorer_data(LOGITS, temperature=0.01)
    assert cold.filtered[0] == pytest.approx(1.0) and cold.entropy < 1e-6
    hot = explorer_data(LOGITS, temperature=1e4)
    assert hot.entropy == pytest.approx(math.log(8), rel=1e-3)
    assert torch.allclose(hot.filtered, torch.full((8,), 1 / 8), atol=1e-3)


def test_bars_stay_in_place_and_temperature_comes_before_top_p():
    base = explorer_data(LOGITS, n_show=8)
    for setting in [dict(temperature=0.3), dict(top_k=2), dict(top_p=0.5, temperature=3.0)]:
        assert explorer_data(LOGITS, n_show=8, **setting).token_ids.equal(base.token_ids)
    # at T = 3 the distribution is flatter, so the nucleus of p = 0.5 holds more tokens
    assert explorer_data(LOGITS, top_p=0.5, temperature=3.0).n_kept > (
        explorer_data(LOGITS, top_p=0.5).n_kept
    )


def test_labels_from_a_tokenizer_a_list_or_a_mapping(tok):
    logits = torch.zeros(tok.vocab_size)
    logits[tok.encode(" ")[0]] = 3.0
    logits[tok.encode("\n")[0]] = 2.0
    d = explorer_data(logits, n_show=3, labels=tok)
    assert d.labels[:2] == ["␣", "⏎"]
    assert explorer_data(LOGITS, n_show=2, labels=list("abcdefgh")).labels == ["f", "b"]
    assert explorer_data(LOGITS, n_show=1, labels={5: " x"}).labels == ["␣x"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(logits=LOGITS[None]), "logits"),
        (dict(n_show=0), "n_show"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_k=0), "k"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_errors(kwargs, match):
    args = {"logits": LOGITS} | kwargs
    with pytest.raises(ValueError, match=match):
        explorer_data(**args)


def test_plot_explorer_data_and_grid():
    ax = plot_explorer_data(explorer_data(LOGITS, top_k=2, n_show=6))
    assert len(ax.patches) == 12  # filtered and model bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "1", "7", "3", "0", "4"]
    assert ax.get_title() == "T=1, top-k 2: 2 of 8 kept"
    plt.close(ax.figure)
    settings = [dict(), dict(temperature=0.5), dict(top_k=3), dict(top_p=0.9)]
    fig = plot_settings_grid(LOGITS, settings, n_show=5, ncols=3, suptitle="x")
    titled = [a for a in fig.axes if a.get_title()]
    assert len(titled) == 4 and not fig.axes[4].axison  # one spare panel, switched off
    plt.close(fig)
    with pytest.raises(ValueError, match="top_q"):
        plot_settings_grid(LOGITS, [dict(top_q=3)])
    with pytest.raises(ValueError, match="settings"):
        plot_settings_grid(LOGITS, [])


def test_explorer_widget_follows_its_sliders(tok):
    model = TableModel(tok.vocab_size)
    prompt = "abc"
    ex = decoding_explorer(model, tok, prompt, n_show=6, sample_tokens=12, seed=3)
    assert isinstance(ex, DecodingExplorer)
    assert ex.chart.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert ex.settings() == {"temperature": 1.0, "top_k": None, "top_p": None}
    assert ex.sample_box.value.startswith(prompt) and len(ex.sample_box.value) == 15
    assert ex.data.n_kept == tok.vocab_size and "entropy" in ex.info.value
    expected = model(torch.tensor([tok.encode(prompt)]))[0, -1]
    assert torch.allclose(ex.logits, expected)

    first = ex.sample_box.value
    ex.top_k.value = 1  # top-k 1 is greedy decoding
    assert ex.data.n_kept == 1 and ex.settings()["top_k"] == 1
    ids = greedy(model, torch.tensor(tok.encode(prompt)), 12)
    assert ex.sample_box.value == tok.decode(ids.tolist())
    ex.top_k.value = 0  # back to the start: the same seeded sample
    assert ex.sample_box.value == first
    ex.resample.click()  # a new draw
    assert ex.sample_box.value != first
    ex.top_p.value = 0.3
    ex.temperature.value = 0.5
    assert ex.settings() == {"temperature": pytest.approx(0.5), "top_k": None, "top_p": 0.3}
    assert ex.data.n_kept == int(torch.isfinite(top_p_filter(expected / 0.5, 0.3)).sum())
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_explorer_crops_the_prompt_to_the_context_window(tok):
    class Windowed(TableModel):
        class config:  # noqa: N801 - mimics GPT's config attribute
            block_size = 4

        def forward(self, ids):
            assert ids.shape[1] <= 4, "the model saw more than its context window"
            return super().forward(ids)

    model = Windowed(tok.vocab_size)
    ex = decoding_explorer(model, tok, "abcdefgh", sample_tokens=3)
    expected = model(torch.tensor([tok.encode("efgh")]))[0, -1]
    assert torch.allclose(ex.logits, expected)


def test_explorer_errors(tok):
    model = TableModel(tok.vocab_size)
    with pytest.raises(ValueError, match="prompt"):
        decoding_explorer(model, tok, "")
    with pytest.raises(ValueError, match="sample_tokens"):
        decoding_explorer(model, tok, "a", sample_tokens=-1)
    with pytest.raises(ValueError, match="shape"):
        decoding_explorer(lambda ids: torch.zeros(3), tok, "a")


def test_explorer_on_a_gpt_with_a_prompt_longer_than_its_context(tok):
    from llmkit.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=4, n_layer=1, n_head=1, d_model=8)
    model = GPT(config).eval()
    ex = decoding_explorer(model, tok, "abcdefgh", sample_tokens=6)
    expected = model(torch.tensor([tok.encode("efgh")]))[0, -1]
    assert torch.allclose(ex.logits, expected, atol=1e-6)
    assert len(ex.sample_box.value) == 8 + 6
    ex.top_k.value = 1
    greedy_ids = model.generate(torch.tensor([tok.encode("abcdefgh")]), 6)[0]
    assert ex.sample_box.value == tok.decode(greedy_ids.tolist())


def test_explorer_on_a_llama_with_a_large_vocabulary():
    # the subword case (SmolLM2): a Llama with its KV cache and a vocabulary larger than
    # the top-k slider
    from llmkit.llama import Llama, LlamaConfig
    from llmkit.widgets import TOP_K_SLIDER_MAX

    class Tok:
        def encode(self, text):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    torch.manual_seed(0)
    vocab = 512
    config = LlamaConfig(
        vocab_size=vocab, block_size=32, n_layer=1, n_head=2, n_kv_head=1, d_model=16, hidden=32
    )
    model = Llama(config).eval()
    ex = decoding_explorer(model, Tok(), "hello", n_show=5, sample_tokens=4)
    assert ex.top_k.max == TOP_K_SLIDER_MAX < vocab
    assert ex.data.vocab_size == vocab and len(ex.sample_box.value) == 9
    expected = model(torch.tensor([Tok().encode("hello")]))[0, -1]
    assert torch.allclose(ex.logits, expected, atol=1e-6)
    ex.top_k.value = 1
    ids = greedy(model, torch.tensor(Tok().encode("hello")), 4)
    assert ex.sample_box.value == Tok().decode(ids.tolist())

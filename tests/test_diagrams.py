"""llmkit.diagrams: each drawing runs, names its parts, and rejects bad arguments."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle

from llmkit import diagrams


def texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_residual_block_names_both_branches_and_the_additions():
    fig, ax = plt.subplots()
    assert diagrams.draw_residual_block(ax) is ax
    shown = texts(ax)
    for part in ["LayerNorm 1", "LayerNorm 2", "self-attention", "MLP", "residual stream"]:
        assert part in shown
    assert shown.count("+") >= 2  # two additions into the stream
    assert not ax.axison


def mask_cells(ax) -> list[Rectangle]:
    return [r for r in ax.patches if isinstance(r, Rectangle)]


def test_wirings_draw_the_three_masks():
    fig, axes = plt.subplots(1, 3)
    diagrams.draw_wirings(axes)
    enc, dec, encdec = axes
    # 4x4 icons: the encoder's full, the decoder's lower triangle (10 of 16 cells filled)
    filled = [
        sum(r.get_facecolor()[2] > 0.5 and r.get_facecolor()[0] < 0.5 for r in mask_cells(a))
        for a in (enc, dec)
    ]
    assert filled == [16, 10]
    # encoder-decoder: full (16) + causal (10) + cross (4 x 5 = 20)
    assert len(mask_cells(encdec)) == 16 + 16 + 20
    assert "cross-attention" in texts(encdec) and "keys, values" in texts(encdec)
    assert "bidirectional" in texts(enc) and "causal" in texts(dec)


def test_cross_attention_shapes_are_labelled():
    fig, ax = plt.subplots()
    diagrams.draw_cross_attention(ax)
    shown = texts(ax)
    for part in ["Q = X W_Q", "K = Z W_K", "V = Z W_V", "(T_tgt × T_src)"]:
        assert part in shown


def test_training_vs_generation_draws_every_target_and_each_step():
    fig, axes = plt.subplots(1, 2)
    tokens = ["T", "o", "␣", "b"]
    diagrams.draw_training_vs_generation(axes, tokens, steps=3)
    train_ax, gen_ax = axes
    train_texts = [t.get_text() for t in train_ax.texts]
    for tok in tokens:
        assert train_texts.count(tok) >= 1
    assert train_texts.count("<start>") == 1
    gen_texts = [t.get_text() for t in gen_ax.texts]
    assert gen_texts.count("GPT") == 3  # one forward pass per generated token
    assert gen_texts.count("<start>") == 3


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: diagrams.draw_residual_block("ax"), TypeError),
        (lambda: diagrams.draw_wirings([]), ValueError),
        (lambda: diagrams.draw_training_vs_generation(plt.subplots(1, 2)[1], "Tobe"), TypeError),
        (lambda: diagrams.draw_training_vs_generation(plt.subplots(1, 2)[1], ["a"]), ValueError),
        (
            lambda: diagrams.draw_training_vs_generation(
                plt.subplots(1, 2)[1], ["a", "b"], steps=3
            ),
            ValueError,
        ),
    ],
)
def test_bad_arguments_are_named(call, error):
    with pytest.raises(error):
        call()

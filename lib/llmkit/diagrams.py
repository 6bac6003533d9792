"""Architecture diagrams of the transformer, drawn with matplotlib boxes and arrows.

The chapters draw their pictures of the architecture with these functions, so that every
figure in the book is produced by code (no hand-made images). Each function draws on the
axes it is given, turns their frame off and returns them:

* :func:`draw_residual_block`: one pre-LayerNorm block as two branches off the residual
  stream (chapter 2);
* :func:`draw_wirings`: encoder, decoder and encoder-decoder as stacks of blocks, each
  attention box with a small picture of its mask (chapter 2);
* :func:`draw_encoder_decoder`: the encoder-decoder alone (chapters 2 and 6);
* :func:`draw_cross_attention`: where the queries, keys and values of cross-attention
  come from, with their shapes (chapter 6);
* :func:`draw_training_vs_generation`: a decoder at training time (every next token at
  once) and at generation time (one token at a time, fed back) (chapter 3).

Colours are from the Okabe-Ito palette, which stays distinguishable under the common forms
of colour blindness; every box also carries its name, so no colour is the only cue.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

__all__ = [
    "COLORS",
    "draw_residual_block",
    "draw_wirings",
    "draw_encoder_decoder",
    "draw_cross_attention",
    "draw_training_vs_generation",
]

#: Fill colours by role (Okabe-Ito, lightened where text sits on them).
COLORS: dict[str, str] = {
    "attention": "#9ecae9",  # light blue
    "cross": "#f6c57f",  # light orange
    "mlp": "#8fd3b6",  # light green
    "norm": "#e5e5e5",  # grey
    "embed": "#e0bfd6",  # light purple
    "output": "#f2e69a",  # light yellow
    "stream": "#0072b2",  # blue
    "new": "#d55e00",  # vermillion
}

MASK_KINDS = ("full", "causal", "cross")


def _check_axes(ax: object, name: str = "ax") -> Axes:
    if not isinstance(ax, Axes):
        raise TypeError(f"{name} must be a matplotlib Axes, got {type(ax).__name__}")
    return ax


def _frame(ax: Axes, xlim: tuple[float, float], ylim: tuple[float, float]) -> Axes:
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    color: str,
    *,
    fontsize: float = 10,
    edge: str = "black",
    lw: float = 1.2,
) -> FancyBboxPatch:
    """A rounded box centred on (x, y), of width w and height h, with its label."""
    patch = FancyBboxPatch(
        (x - w / 2, y - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        facecolor=color,
        edgecolor=edge,
        lw=lw,
        zorder=2,
    )
    ax.add_patch(patch)
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)
    return patch


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    color: str = "black",
    lw: float = 1.3,
    style: str = "-|>",
    connection: str = "arc3",
    ls: str = "-",
) -> FancyArrowPatch:
    patch = FancyArrowPatch(
        start,
        end,
        arrowstyle=style,
        mutation_scale=12,
        color=color,
        lw=lw,
        ls=ls,
        connectionstyle=connection,
        shrinkA=0,
        shrinkB=0,
        zorder=1,
    )
    ax.add_patch(patch)
    return patch


def _mask_icon(ax: Axes, x: float, y: float, size: float, kind: str, n: int = 4) -> None:
    """A small n-by-n picture of an attention mask, its left edge at x, centred on y.

    ``"full"``: every cell allowed; ``"causal"``: the lower triangle; ``"cross"``: a wider
    full grid (target rows by source columns).
    """
    cols = n + 1 if kind == "cross" else n
    cell = size / n
    top = y + size / 2
    for i in range(n):
        for j in range(cols):
            allowed = kind != "causal" or j <= i
            ax.add_patch(
                Rectangle(
                    (x + j * cell, top - (i + 1) * cell),
                    cell,
                    cell,
                    facecolor="#0072b2" if allowed else "white",
                    edgecolor="black",
                    lw=0.4,
                    zorder=4,
                )
            )


def _attention_box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str, color: str
) -> None:
    """An attention sub-layer: its name on the left, its mask pictured on the right."""
    _box(ax, x, y, w, h, "", color)
    icon = 0.55 * h
    ax.text(x - w / 2 + 0.12, y, text, ha="left", va="center", fontsize=9.5, zorder=3)
    _mask_icon(ax, x + w / 2 - icon * (1.25 if kind == "cross" else 1) - 0.12, y, icon, kind)


def draw_residual_block(ax: Axes) -> Axes:
    """One pre-LayerNorm transformer block, drawn as two branches off the residual stream.

    The stream (the thick line) carries each token's vector upwards; each branch reads it
    through a LayerNorm, computes (attention, then the MLP) and adds its result back:
    ``h = x + MultiHead(LN_1(x))``, ``out = h + MLP(LN_2(h))``.
    """
    _check_axes(ax)
    stream = COLORS["stream"]
    sx, bx = 1.0, 3.9  # the stream's x; the branches' boxes' x
    ax.plot([sx, sx], [0.55, 9.35], color=stream, lw=4, zorder=1, solid_capstyle="butt")
    _arrow(ax, (sx, 9.3), (sx, 9.75), color=stream, lw=4)
    ax.text(sx, 0.25, "x: one vector per token", ha="center", va="center", fontsize=10)
    ax.text(sx, 10.05, "out: to the next block", ha="center", va="center", fontsize=10)
    ax.text(
        sx - 0.35,
        5.0,
        "residual stream",
        rotation=90,
        ha="center",
        va="center",
        fontsize=10.5,
        color=stream,
    )
    branches = [
        (1.2, "LayerNorm 1", "multi-head\nself-attention", COLORS["attention"], 4.6, "h"),
        (5.3, "LayerNorm 2", "MLP\n(D → 4D → D, GELU)", COLORS["mlp"], 8.7, "out"),
    ]
    for y0, ln_text, body_text, color, y_add, name in branches:
        _arrow(ax, (sx, y0), (bx, y0), connection="angle,angleA=0,angleB=90,rad=0")
        _arrow(ax, (sx, y0), (bx, y0 + 0.55), connection="angle,angleA=0,angleB=90,rad=0")
        _box(ax, bx, y0 + 0.9, 2.6, 0.7, ln_text, COLORS["norm"])
        _arrow(ax, (bx, y0 + 1.25), (bx, y0 + 1.75))
        _box(ax, bx, y0 + 2.35, 2.6, 1.2, body_text, color)
        _arrow(
            ax,
            (bx, y0 + 2.95),
            (sx + 0.28, y_add),
            connection="angle,angleA=90,angleB=0,rad=0",
        )
        ax.add_patch(
            FancyBboxPatch(
                (sx - 0.28, y_add - 0.28),
                0.56,
                0.56,
                boxstyle="circle,pad=0",
                facecolor="white",
                edgecolor=stream,
                lw=2,
                zorder=3,
            )
        )
        ax.text(sx, y_add, "+", ha="center", va="center", fontsize=14, zorder=4, color=stream)
        formula = "h = x + MultiHead(LN₁(x))" if name == "h" else "out = h + MLP(LN₂(h))"
        ax.text(bx + 0.15, y_add, formula, ha="left", va="center", fontsize=9.5)
    return _frame(ax, (-0.9, 7.8), (0.0, 10.3))


def _stack(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    sublayers: Sequence[tuple[str, str, str | None]],
    label: str,
) -> list[float]:
    """Sub-layer boxes from y upwards inside a dashed frame labelled ``label``.

    ``sublayers``: ``(text, colour, mask kind or None)``. Returns each box's centre y.
    """
    h, gap = 0.8, 0.45
    centres = [y + h / 2 + i * (h + gap) for i in range(len(sublayers))]
    top = centres[-1] + h / 2
    frame = FancyBboxPatch(
        (x - w / 2 - 0.2, y - 0.25),
        w + 0.4,
        top - y + 0.5,
        boxstyle="round,pad=0.02,rounding_size=0.2",
        facecolor="none",
        edgecolor="gray",
        ls="--",
        lw=1.2,
        zorder=1,
    )
    ax.add_patch(frame)
    ax.text(x + w / 2 + 0.3, top + 0.2, label, ha="left", va="top", fontsize=10, color="dimgray")
    for i, ((text, color, kind), cy) in enumerate(zip(sublayers, centres, strict=True)):
        if kind is None:
            _box(ax, x, cy, w, h, text, color, fontsize=9.5)
        else:
            _attention_box(ax, x, cy, w, h, text, kind, color)
        if i:
            _arrow(ax, (x, centres[i - 1] + h / 2), (x, cy - h / 2))
    return centres


def _encoder(ax: Axes, x: float, w: float = 3.0) -> float:
    """An encoder column at x; returns the y of its output's top edge."""
    _box(ax, x, 0.4, w, 0.6, "source tokens + positions", COLORS["embed"], fontsize=9.5)
    _arrow(ax, (x, 0.7), (x, 1.15))
    centres = _stack(
        ax,
        x,
        1.15,
        w,
        [
            ("self-attention,\nbidirectional", COLORS["attention"], "full"),
            ("MLP", COLORS["mlp"], None),
        ],
        "× N",
    )
    top = centres[-1] + 0.4
    _arrow(ax, (x, top), (x, top + 0.75))
    return top + 0.75


def _decoder(ax: Axes, x: float, cross: bool, w: float = 3.0) -> list[float]:
    """A decoder column at x (with a cross-attention sub-layer if ``cross``)."""
    _box(ax, x, 0.4, w, 0.6, "tokens so far + positions", COLORS["embed"], fontsize=9.5)
    _arrow(ax, (x, 0.7), (x, 1.15))
    sublayers: list[tuple[str, str, str | None]] = [
        ("self-attention,\ncausal", COLORS["attention"], "causal")
    ]
    if cross:
        sublayers.append(("cross-attention\nto Z", COLORS["cross"], "cross"))
    sublayers.append(("MLP", COLORS["mlp"], None))
    centres = _stack(ax, x, 1.15, w, sublayers, "× N")
    top = centres[-1] + 0.4
    _arrow(ax, (x, top), (x, top + 0.55))
    _box(ax, x, top + 0.9, w, 0.7, "LayerNorm, linear,\nsoftmax", COLORS["norm"], fontsize=9.5)
    _arrow(ax, (x, top + 1.25), (x, top + 1.7))
    ax.text(x, top + 1.95, "next-token probabilities", ha="center", va="center", fontsize=10)
    return centres


def draw_encoder_decoder(ax: Axes, *, title: str | None = "encoder-decoder") -> Axes:
    """The encoder-decoder transformer: the encoder's output Z feeds every decoder block.

    Each decoder block has three sub-layers: causal self-attention over the target so far,
    cross-attention (queries from the decoder, keys and values from Z) and the MLP.
    """
    _check_axes(ax)
    ex, dx = 1.9, 6.9
    z_top = _encoder(ax, ex)
    ax.text(
        ex, z_top + 0.25, "Z: one vector per\nsource token", ha="center", va="bottom", fontsize=10
    )
    centres = _decoder(ax, dx, cross=True)
    start, end = (ex + 1.15, z_top + 0.45), (dx - 1.5, centres[1])
    _arrow(ax, start, end, color=COLORS["new"], lw=2)
    ax.text(
        start[0] + 0.05,
        start[1] + 0.15,
        "keys, values\nfrom Z",
        ha="left",
        va="bottom",
        fontsize=9.5,
        color=COLORS["new"],
    )
    if title:
        ax.set_title(title, fontsize=12)
    return _frame(ax, (0.2, 8.9), (0.0, 7.6))


def draw_wirings(axes: Sequence[Axes]) -> Sequence[Axes]:
    """Encoder, decoder and encoder-decoder, side by side on three axes.

    Every attention box carries a picture of its mask: a full grid (bidirectional), the lower
    triangle (causal) or a full rectangle of target rows by source columns (cross-attention).
    """
    if len(axes) != 3:
        raise ValueError(
            f"axes must hold 3 Axes (encoder, decoder, encoder-decoder), got {len(axes)}"
        )
    for i, ax in enumerate(axes):
        _check_axes(ax, f"axes[{i}]")
    enc, dec, encdec = axes
    top = _encoder(enc, 1.9)
    enc.text(
        1.9,
        top + 0.25,
        "one vector per token\n(classify, fill a mask)",
        ha="center",
        va="bottom",
        fontsize=10,
    )
    enc.set_title("encoder (BERT, chapter 5)", fontsize=12)
    _frame(enc, (0.2, 4.6), (0.0, 7.6))
    _decoder(dec, 1.9, cross=False)
    dec.set_title("decoder (GPT, chapter 3)", fontsize=12)
    _frame(dec, (0.2, 4.6), (0.0, 7.6))
    draw_encoder_decoder(encdec, title="encoder-decoder (chapter 6)")
    return axes


def draw_cross_attention(ax: Axes) -> Axes:
    """Cross-attention's data flow, with shapes: queries from the decoder, keys and values
    from the encoder's output Z, weights of shape (target length, source length)."""
    _check_axes(ax)
    _box(ax, 1.6, 0.5, 2.8, 0.7, "decoder states X\n(T_tgt × D)", COLORS["attention"], fontsize=9.5)
    _box(ax, 6.4, 0.5, 2.8, 0.7, "encoder output Z\n(T_src × D)", COLORS["cross"], fontsize=9.5)
    _box(ax, 1.6, 2.0, 2.2, 0.7, "Q = X W_Q\n(T_tgt × d)", COLORS["attention"], fontsize=9.5)
    _box(ax, 5.3, 2.0, 2.0, 0.7, "K = Z W_K\n(T_src × d)", COLORS["cross"], fontsize=9.5)
    _box(ax, 7.6, 2.0, 2.0, 0.7, "V = Z W_V\n(T_src × d)", COLORS["cross"], fontsize=9.5)
    _arrow(ax, (1.6, 0.85), (1.6, 1.65))
    _arrow(ax, (6.0, 0.85), (5.3, 1.65))
    _arrow(ax, (6.8, 0.85), (7.6, 1.65))
    _box(
        ax,
        3.4,
        3.75,
        4.0,
        1.0,
        "weights = softmax(Q Kᵀ / √d)\n(T_tgt × T_src), no causal mask;\n"
        "padded source columns masked",
        COLORS["output"],
        fontsize=9,
    )
    _arrow(ax, (1.6, 2.35), (2.4, 3.25))
    _arrow(ax, (5.3, 2.35), (4.4, 3.25))
    _box(
        ax, 5.4, 5.4, 3.4, 0.7, "output = weights · V\n(T_tgt × d)", COLORS["output"], fontsize=9.5
    )
    _arrow(ax, (3.4, 4.25), (4.6, 5.05))
    _arrow(ax, (7.6, 2.35), (6.3, 5.05), connection="arc3,rad=0.15")
    ax.text(
        4.0,
        6.3,
        "one row per target position, a mix of source values",
        ha="center",
        va="center",
        fontsize=9.5,
    )
    return _frame(ax, (0.0, 9.0), (0.0, 6.7))


def _token(
    ax: Axes, x: float, y: float, text: str, *, color: str = "white", edge: str = "black"
) -> None:
    _box(ax, x, y, 0.8, 0.6, text, color, fontsize=10, edge=edge)


def draw_training_vs_generation(
    axes: Sequence[Axes], tokens: Sequence[str], *, steps: int = 4
) -> Sequence[Axes]:
    """A decoder at training time and at generation time, on two axes.

    Left: one forward pass over ``<start>`` + ``tokens[:-1]`` predicts every next token at
    once (the targets are ``tokens``), under the causal mask. Right: generation starts from
    ``<start>``, predicts one token, appends it and runs again, ``steps`` times.

    Args:
        axes: two matplotlib Axes.
        tokens: the target sequence, one short string per token (2 to 8 of them).
        steps: generation steps drawn on the right (1 to ``len(tokens)``).
    """
    if len(axes) != 2:
        raise ValueError(f"axes must hold 2 Axes (training, generation), got {len(axes)}")
    for i, ax in enumerate(axes):
        _check_axes(ax, f"axes[{i}]")
    if not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise TypeError("tokens must be a sequence of strings, one per token")
    if not 2 <= len(tokens) <= 8 or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"tokens must hold 2 to 8 strings, got {len(tokens)} items")
    if not isinstance(steps, int) or not 1 <= steps <= len(tokens):
        raise ValueError(f"steps must be an int in [1, {len(tokens)}], got {steps!r}")
    train_ax, gen_ax = axes
    inputs = ["<start>", *tokens[:-1]]
    n = len(tokens)
    dx = 1.05
    # -- training: all positions in one pass
    for i, (inp, tgt) in enumerate(zip(inputs, tokens, strict=True)):
        x = 0.8 + i * dx
        _token(train_ax, x, 0.5, inp)
        _arrow(train_ax, (x, 0.8), (x, 1.3))
        _arrow(train_ax, (x, 2.7), (x, 3.2))
        _token(train_ax, x, 3.5, tgt, color=COLORS["output"])
    width = (n - 1) * dx + 0.9
    _box(
        train_ax,
        0.8 + (n - 1) * dx / 2,
        2.0,
        width,
        1.4,
        "",
        COLORS["attention"],
    )
    _mask_icon(train_ax, 0.8 + (n - 1) * dx / 2 + width / 2 - 1.0, 2.0, 0.8, "causal")
    train_ax.text(
        0.8 + (n - 1) * dx / 2 - 0.5,
        2.0,
        "GPT, one forward pass\n(causal mask)",
        ha="center",
        va="center",
        fontsize=10,
        zorder=3,
    )
    train_ax.text(
        0.8 + (n - 1) * dx / 2,
        4.15,
        f"{n} predictions, each scored against the true next token",
        ha="center",
        va="center",
        fontsize=10,
    )
    train_ax.text(
        0.3, -0.2, "input: the sequence shifted right", ha="left", va="center", fontsize=9.5
    )
    train_ax.set_title("training: every next token at once", fontsize=12)
    _frame(train_ax, (0.0, 0.8 + n * dx + 0.2), (-0.8, 4.8))
    # -- generation: one token per step, fed back
    row_h = 1.15
    for s in range(steps):
        y = (steps - 1 - s) * row_h + 0.5
        context = ["<start>", *tokens[:s]]
        for j, t in enumerate(context):
            fed_back = j == len(context) - 1 and s > 0
            _token(
                gen_ax,
                0.8 + j * dx,
                y,
                t,
                edge=COLORS["new"] if fed_back else "black",
                color="#fbe3d3" if fed_back else "white",
            )
        end = 0.8 + (len(context) - 1) * dx + 0.45
        gx = 0.8 + steps * dx + 0.2
        _arrow(gen_ax, (end, y), (gx - 0.55, y))
        _box(gen_ax, gx, y, 1.1, 0.6, "GPT", COLORS["attention"])
        _arrow(gen_ax, (gx + 0.55, y), (gx + 1.0, y))
        _token(gen_ax, gx + 1.45, y, tokens[s], color=COLORS["output"], edge=COLORS["new"])
        if s + 1 < steps:
            _arrow(
                gen_ax,
                (gx + 1.45, y - 0.3),
                (0.8 + (s + 1) * dx + 0.2, y - row_h + 0.3),
                color=COLORS["new"],
                connection="arc3,rad=-0.12",
                ls="--",
            )
    gen_ax.text(
        0.3,
        -0.3,
        "each new token (orange) is appended and the model runs again",
        ha="left",
        va="center",
        fontsize=9.5,
    )
    gen_ax.set_title("generation: one token at a time", fontsize=12)
    _frame(gen_ax, (0.0, 0.8 + steps * dx + 2.3), (-0.8, steps * row_h + 0.3))
    return axes

"""Interactive explorers for the chapters (chapter 04: decoding strategies).

:func:`decoding_explorer` shows, for one prompt, how temperature, top-k and top-p
reshape a model's next-token distribution: sliders for the three settings, a bar chart
of the distribution before and after filtering, and a continuation sampled with those
settings. It is built on :mod:`llmkit.decoding` (:func:`~llmkit.decoding.filter_logits`
and :func:`~llmkit.decoding.sample`), so what you see is exactly what the library samples
from.

The computation is separate from the drawing, so it can be tested without a browser:

* :func:`explorer_data` -- a pure function from next-token logits and the three settings
  to the numbers the chart shows (:class:`ExplorerData`);
* :func:`plot_explorer_data` -- draws one :class:`ExplorerData` on a matplotlib Axes;
* :func:`plot_settings_grid` -- small multiples of several settings in one static
  figure, for readers of the HTML book, where widgets do not run;
* :func:`decoding_explorer` -- the ipywidgets front end (a :class:`DecodingExplorer`).

``ipywidgets`` is imported only by :func:`decoding_explorer`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F

from llmkit import validate
from llmkit.decoding import filter_logits, sample

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ExplorerData",
    "explorer_data",
    "token_label",
    "plot_explorer_data",
    "plot_settings_grid",
    "DecodingExplorer",
    "decoding_explorer",
]

# Visible stand-ins for characters that would be invisible on a bar chart's axis.
_VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍", "": "∅"}


class Tokenizer(Protocol):
    """What the explorer needs from a tokenizer (:class:`llmkit.tokenizers.CharTokenizer`
    and :class:`llmkit.tokenizers.BPETokenizer` have it)."""

    def encode(self, text: str) -> list[int]: ...  # pragma: no cover

    def decode(self, ids: list[int]) -> str: ...  # pragma: no cover


def token_label(text: str) -> str:
    """A printable label for a token's text: ``" "`` -> ``"␣"``, ``"\\n"`` -> ``"⏎"``.

    Whitespace inside longer tokens is replaced too (``" the"`` -> ``"␣the"``); other
    control characters are shown escaped.

    >>> token_label(" the")
    '␣the'
    """
    if text in _VISIBLE:
        return _VISIBLE[text]
    out = "".join(_VISIBLE.get(c, c) for c in text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in out)


@dataclass(frozen=True)
class ExplorerData:
    """What the explorer's bar chart shows for one setting.

    The shown tokens are the ``n`` most probable ones under the *unmodified* model
    (``T = 1``, no filter), most probable first, so that the bars stay in place while
    the sliders move.

    Attributes:
        token_ids: ``(n,)`` long, the shown tokens.
        labels: ``n`` printable labels (:func:`token_label`), or the ids as strings.
        probs: ``(n,)`` float, their probabilities under the unmodified model.
        filtered: ``(n,)`` float, their probabilities in the sampling distribution:
            ``softmax(filter_logits(logits, temperature, top_k, top_p))``.
        kept: ``(n,)`` bool, whether each shown token survived the filters.
        n_kept: how many tokens of the whole vocabulary survived.
        vocab_size: ``V``.
        entropy: entropy of the sampling distribution, in nats.
        shown_mass: total sampling probability of the shown tokens (the rest is off
            the chart).
        temperature, top_k, top_p: the settings (``None``: filter off).
    """

    token_ids: torch.Tensor
    labels: list[str]
    probs: torch.Tensor
    filtered: torch.Tensor
    kept: torch.Tensor
    n_kept: int
    vocab_size: int
    entropy: float
    shown_mass: float
    temperature: float
    top_k: int | None
    top_p: float | None

    def title(self) -> str:
        """A short description of the setting, e.g. ``"T=0.7, top-k 10: 10 of 65 kept"``."""
        parts = [f"T={self.temperature:g}"]
        if self.top_k is not None:
            parts.append(f"top-k {self.top_k}")
        if self.top_p is not None:
            parts.append(f"top-p {self.top_p:g}")
        return f"{', '.join(parts)}: {self.n_kept} of {self.vocab_size} kept"


def _labels_for(
    ids: Sequence[int], labels: Sequence[str] | Mapping[int, str] | Tokenizer | None
) -> list[str]:
    if labels is None:
        return [str(i) for i in ids]
    if hasattr(labels, "decode") and not isinstance(labels, Mapping | Sequence):
        return [token_label(labels.decode([i])) for i in ids]
    return [token_label(str(labels[i])) for i in ids]


def explorer_data(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    n_show: int = 20,
    labels: Sequence[str] | Mapping[int, str] | Tokenizer | None = None,
) -> ExplorerData:
    """The numbers behind one bar chart of the explorer (a pure function).

    Args:
        logits: ``(V,)`` next-token logits (any floating dtype).
        temperature: ``> 0``.
        top_k: ``None`` (off) or an int ``>= 1``.
        top_p: ``None`` (off) or a float in ``(0, 1]``.
        n_show: how many tokens to show (``>= 1``; at most ``V`` are shown).
        labels: the tokens' texts: a sequence or mapping indexed by token id, a tokenizer
            (anything with ``decode(list[int]) -> str``), or ``None`` for the ids.
    Returns:
        an :class:`ExplorerData`.
    Raises:
        ValueError: for logits that are not 1-D, ``n_show < 1``, or bad settings (as
            :func:`llmkit.decoding.filter_logits`).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits must be a 1-D tensor (vocab,), got {shape}")
    validate.positive_int("n_show", n_show)
    logits = logits.detach().double().cpu()
    probs = F.softmax(logits, dim=-1)
    processed = filter_logits(logits, temperature, top_k, top_p)
    filtered = F.softmax(processed, dim=-1)
    kept_all = torch.isfinite(processed)
    order = torch.argsort(probs, descending=True, stable=True)[: min(n_show, len(probs))]
    nonzero = filtered[filtered > 0]
    entropy = float(-(nonzero * nonzero.log()).sum())
    return ExplorerData(
        token_ids=order,
        labels=_labels_for(order.tolist(), labels),
        probs=probs[order].float(),
        filtered=filtered[order].float(),
        kept=kept_all[order],
        n_kept=int(kept_all.sum()),
        vocab_size=len(probs),
        entropy=max(entropy, 0.0),
        shown_mass=float(filtered[order].sum()),
        temperature=float(temperature),
        top_k=top_k,
        top_p=top_p,
    )


def plot_explorer_data(
    data: ExplorerData, ax: Axes | None = None, *, title: str | None = None, ymax: float = 1.0
) -> Axes:
    """Draw one :class:`ExplorerData`: the model's probabilities as outlined bars, the
    sampling distribution as filled bars, and the removed tokens marked with an ×.

    Args:
        data: from :func:`explorer_data`.
        ax: the Axes to draw on; a new figure when ``None``.
        title: defaults to :meth:`ExplorerData.title`.
        ymax: upper limit of the probability axis.
    Returns:
        the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    x = list(range(len(data.labels)))
    ax.bar(x, data.filtered.tolist(), color="C0", label="sampling distribution")
    ax.bar(
        x,
        data.probs.tolist(),
        fill=False,
        edgecolor="0.3",
        linewidth=0.8,
        label="model (T = 1, no filter)",
    )
    removed = [i for i in x if not bool(data.kept[i])]
    if removed:
        ax.scatter(
            removed,
            [0.02 * ymax] * len(removed),
            marker="x",
            color="C3",
            s=18,
            zorder=3,
            label="removed",
        )
    ax.set_xticks(x, data.labels)
    ax.set_xlim(-0.6, len(x) - 0.4)
    ax.set_ylim(0, ymax)
    ax.set_ylabel("probability")
    ax.set_title(title if title is not None else data.title(), fontsize=9)
    return ax


def plot_settings_grid(
    logits: torch.Tensor,
    settings: Sequence[Mapping[str, Any]],
    labels: Sequence[str] | Mapping[int, str] | Tokenizer | None = None,
    *,
    n_show: int = 15,
    ncols: int = 3,
    suptitle: str | None = None,
) -> Figure:
    """Small multiples: one bar chart per setting, for the same next-token logits.

    Args:
        logits: ``(V,)``.
        settings: dicts with any of ``temperature``, ``top_k``, ``top_p``.
        labels: as :func:`explorer_data`.
        n_show: tokens per chart.
        ncols: charts per row.
        suptitle: an overall title.
    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not settings:
        raise ValueError("settings must contain at least one setting")
    allowed = {"temperature", "top_k", "top_p"}
    for s in settings:
        unknown = set(s) - allowed
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    datas = [explorer_data(logits, n_show=n_show, labels=labels, **s) for s in settings]
    ymax = min(1.0, 1.1 * max(max(d.filtered.max(), d.probs.max()).item() for d in datas))
    nrows = math.ceil(len(datas) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 2.7 * nrows), sharey=True, squeeze=False
    )
    for ax, d in zip(axes.flat, datas, strict=False):
        plot_explorer_data(d, ax, ymax=ymax)
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(datas) :]:
        ax.axis("off")
    for row in axes:
        for ax in row[1:]:
            ax.set_ylabel("")
    handles, names = axes.flat[0].get_legend_handles_labels()
    for d_ax in axes.flat:  # the legend of the chart that shows removed tokens, if any
        h, n = d_ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, names = h, n
    fig.legend(handles, names, loc="lower center", ncol=3, frameon=False)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# --------------------------------------------------------------------------- widget


def _next_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """``(V,)`` logits of the token after ``ids`` (cropped to ``model.config.block_size``,
    when the model has one, as generation crops it)."""
    block = getattr(getattr(model, "config", None), "block_size", None)
    if isinstance(block, int) and block > 0:
        ids = ids[-block:]
    with torch.no_grad():
        logits = model(ids[None])
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape (batch, seq, vocab), got {got}")
    return logits[0, -1].float()


def _cropping(model: Any) -> Any:
    """``model`` itself when it handles long contexts (a cached model crops in
    ``forward_with_cache``) or has no ``config.block_size``; otherwise a callable that
    feeds it only the last ``block_size`` tokens."""
    block = getattr(getattr(model, "config", None), "block_size", None)
    if hasattr(model, "forward_with_cache") or not isinstance(block, int) or block < 1:
        return model
    return lambda ids: model(ids[..., -block:])


#: The top-k slider's largest value (the vocabulary size when that is smaller).
TOP_K_SLIDER_MAX = 200


class DecodingExplorer:
    """The widget of :func:`decoding_explorer`; displaying it shows :attr:`widget`.

    Attributes:
        temperature, top_k, top_p: the sliders (``top_k = 0`` and ``top_p = 1`` mean off).
        resample: a button that draws a new continuation.
        chart: an ``ipywidgets.Image`` holding the bar chart as PNG.
        info: an ``ipywidgets.HTML`` line (entropy, tokens kept).
        sample_box: an ``ipywidgets.Textarea`` with the prompt and its sampled continuation.
        widget: the ``ipywidgets.VBox`` holding all of them.
        data: the current :class:`ExplorerData`.
        logits: ``(V,)`` the next-token logits of the prompt.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        prompt: str,
        *,
        n_show: int = 20,
        sample_tokens: int = 80,
        seed: int = 0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> None:
        import ipywidgets as w

        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        validate.integer("sample_tokens", sample_tokens, minimum=0)
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.n_show = n_show
        self.sample_tokens = sample_tokens
        self._seed = seed
        self._draws = 0
        self.ids = torch.tensor(tokenizer.encode(prompt), dtype=torch.long)
        self.logits = _next_logits(model, self.ids)
        vocab = self.logits.shape[-1]
        # validate the starting settings once, with the library's own messages
        filter_logits(self.logits, temperature, top_k, top_p)

        style = {"description_width": "90px"}
        layout = w.Layout(width="420px")
        self.temperature = w.FloatLogSlider(
            value=temperature,
            base=10,
            min=-1.5,
            max=1.0,
            step=0.05,
            description="temperature",
            style=style,
            layout=layout,
        )
        # a subword vocabulary has tens of thousands of tokens: a slider over all of them
        # could not pick a small k, so it stops at TOP_K_SLIDER_MAX (65 characters: all)
        k_max = min(vocab, TOP_K_SLIDER_MAX)
        self.top_k = w.IntSlider(
            value=0 if top_k is None else min(top_k, k_max),
            min=0,
            max=k_max,
            description="top-k (0: off)",
            style=style,
            layout=layout,
        )
        self.top_p = w.FloatSlider(
            value=1.0 if top_p is None else top_p,
            min=0.01,
            max=1.0,
            step=0.01,
            description="top-p (1: off)",
            style=style,
            layout=layout,
        )
        self.resample = w.Button(description="new sample")
        self.chart = w.Image(format="png")
        self.info = w.HTML()
        self.sample_box = w.Textarea(layout=w.Layout(width="100%", height="110px"))
        for slider in (self.temperature, self.top_k, self.top_p):
            slider.observe(lambda _change: self.update(), names="value")
        self.resample.on_click(lambda _button: self.update(new_sample=True))
        self.widget = w.VBox(
            [
                w.HTML(f"<b>prompt</b>: <code>{_html_escape(prompt[-80:])}</code>"),
                w.HBox([w.VBox([self.temperature, self.top_k, self.top_p]), self.resample]),
                self.info,
                self.chart,
                self.sample_box,
            ]
        )
        self.data: ExplorerData
        self.update()

    def settings(self) -> dict[str, Any]:
        """The sliders' values as ``filter_logits`` arguments (``None`` for a filter that is
        off)."""
        k = int(self.top_k.value)
        p = float(self.top_p.value)
        return {
            "temperature": float(self.temperature.value),
            "top_k": k if k > 0 else None,
            "top_p": p if p < 1.0 else None,
        }

    def update(self, new_sample: bool = False) -> None:
        """Recompute the chart and the sample for the current slider values."""
        import matplotlib.pyplot as plt

        s = self.settings()
        self.data = explorer_data(self.logits, n_show=self.n_show, labels=self.tokenizer, **s)
        fig, ax = plt.subplots(figsize=(8, 3))
        plot_explorer_data(self.data, ax)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        self.chart.value = buf.getvalue()
        self.info.value = (
            f"{self.data.n_kept} of {self.data.vocab_size} tokens kept; entropy "
            f"{self.data.entropy:.2f} nats; shown tokens hold {self.data.shown_mass:.1%}"
        )
        if new_sample:
            self._draws += 1
        generator = torch.Generator().manual_seed(self._seed + self._draws)
        out = sample(_cropping(self.model), self.ids, self.sample_tokens, generator=generator, **s)
        self.sample_box.value = self.tokenizer.decode(out.tolist())

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text).replace("\n", "⏎")


def decoding_explorer(
    model: Any,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    n_show: int = 20,
    sample_tokens: int = 80,
    seed: int = 0,
) -> DecodingExplorer:
    """Sliders for temperature, top-k and top-p over ``model``'s next-token distribution.

    Shows the distribution after ``prompt`` before and after filtering (the
    :func:`explorer_data` of the current setting) and a continuation of
    ``sample_tokens`` tokens sampled with :func:`llmkit.decoding.sample` under the same
    setting (seeded: moving a slider back gives the same text; the button draws a new
    one). Display the returned object in a notebook.

    Args:
        model: ``model(ids (b, t)) -> logits (b, t, V)``, in eval mode: chapter 03's
            character GPT, a :class:`~llmkit.llama.Llama` such as SmolLM2
            (:func:`llmkit.pretrained.smollm2`), or any such callable. The top-k slider
            stops at :data:`TOP_K_SLIDER_MAX` for large vocabularies; every slider move
            samples ``sample_tokens`` new tokens, so keep it small for a large model.
        tokenizer: with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``.
        prompt: a non-empty string.
        n_show: bars on the chart.
        sample_tokens: length of the sampled continuation.
        seed: seed of the first sample.
    Returns:
        a :class:`DecodingExplorer`.
    """
    return DecodingExplorer(
        model, tokenizer, prompt, n_show=n_show, sample_tokens=sample_tokens, seed=seed
    )

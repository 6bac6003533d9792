"""Matplotlib plots used across the chapters.

:func:`plot_history` draws the loss curves of a :class:`llmkit.train.History`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from llmkit.train import History

__all__ = ["plot_history", "ema"]

_X_AXES = {
    "step": ("steps", "val_steps", "optimizer step"),
    "seconds": ("seconds", "val_seconds", "wall time (s)"),
    "tokens": ("tokens_seen", "val_tokens", "tokens seen"),
}


def ema(values: Sequence[float], smooth: float) -> list[float]:
    """Bias-corrected exponential moving average (what TensorBoard's smoothing slider does).

    ``s_t = smooth * s_{t-1} + (1 - smooth) * v_t``, divided by ``1 - smooth**t`` so the
    first values are not pulled towards zero. ``smooth = 0`` returns the values unchanged.
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    out, s = [], 0.0
    for t, v in enumerate(values, start=1):
        s = smooth * s + (1.0 - smooth) * v
        out.append(s / (1.0 - smooth**t))
    return out


def _get(history: Any, name: str) -> list:
    if isinstance(history, Mapping):
        return list(history.get(name, []))
    return list(getattr(history, name, []))


def plot_history(
    history: History | Mapping[str, Sequence],
    ax: Axes | None = None,
    *,
    x: str = "step",
    smooth: float = 0.0,
    label: str | None = None,
    log_y: bool = False,
    title: str | None = None,
) -> Axes:
    """Plot the training loss (every step) and the validation loss (every evaluation).

    Args:
        history: a :class:`llmkit.train.History` or its ``to_dict()``.
        ax: the Axes to draw on; a new figure when ``None``.
        x: the horizontal axis: ``"step"``, ``"seconds"`` (wall time) or ``"tokens"``.
        smooth: EMA smoothing of the training loss in ``[0, 1)`` (see :func:`ema`); when
            ``> 0`` the raw curve is drawn faintly behind the smoothed one.
        label: a prefix for the legend entries (to compare runs on one Axes).
        log_y: logarithmic loss axis.
        title: the Axes title.
    Returns:
        the Axes.
    """
    if x not in _X_AXES:
        raise ValueError(f"x must be one of {', '.join(_X_AXES)}, got {x!r}")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 4))
    train_key, val_key, xlabel = _X_AXES[x]
    prefix = f"{label} " if label else ""
    xs, train = _get(history, train_key), _get(history, "train_loss")
    n = min(len(xs), len(train))
    if n:
        if smooth > 0:
            (raw,) = ax.plot(xs[:n], train[:n], linewidth=0.8, alpha=0.3)
            ax.plot(
                xs[:n],
                ema(train[:n], smooth),
                color=raw.get_color(),
                linewidth=1.5,
                label=f"{prefix}train (EMA {smooth:g})",
            )
        else:
            ax.plot(xs[:n], train[:n], linewidth=1.0, label=f"{prefix}train")
    vxs, val = _get(history, val_key), _get(history, "val_loss")
    m = min(len(vxs), len(val))
    if m:
        ax.plot(vxs[:m], val[:m], marker="o", markersize=3, linewidth=1.5, label=f"{prefix}val")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/token)")
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if n or m:
        ax.legend()
    return ax

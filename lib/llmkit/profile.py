"""The compute profile: one switch that sizes every run in the course.

``LLMKIT_PROFILE`` selects one of three profiles:

========  ==========================================  ===============================
profile   who runs it                                 budget
========  ==========================================  ===============================
smoke     CI and nbval                                each notebook < 60 s, 2 CPU cores
book      readers' laptops, the committed outputs     each notebook < 10 min, 2 CPU cores
full      a GPU                                       reproduces the published anchors
========  ==========================================  ===============================

A notebook reads its sizes once, near the top, in a cell of their own that holds only
the sizes and prints :func:`summary`; the cell is tagged ``hide-input`` so that the book
shows the one-line summary and folds the sizes away (Jupyter shows them as usual)::

    cfg = llmkit.profile.choose(
        smoke=dict(steps=50), book=dict(steps=2000), full=dict(steps=20000)
    )
    print(llmkit.profile.summary())

Nothing else in a notebook branches on the profile.
"""

from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["PROFILES", "DEFAULT", "ENV_VAR", "BUDGETS", "current", "choose", "summary"]

PROFILES: tuple[str, ...] = ("smoke", "book", "full")
DEFAULT = "book"
ENV_VAR = "LLMKIT_PROFILE"
# What each profile is sized for, as :func:`summary` prints it (short: one line of output).
BUDGETS: dict[str, str] = {
    "smoke": "CI sizes, under a minute a notebook on 2 CPU cores",
    "book": "the book's sizes, under 10 minutes a notebook on 2 CPU cores",
    "full": "the published sizes, for one GPU",
}

T = TypeVar("T")


def current() -> str:
    """Return the active profile name, read from ``LLMKIT_PROFILE`` (default ``"book"``).

    Raises:
        ValueError: if the variable holds anything but ``smoke``, ``book`` or ``full``.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower() or DEFAULT
    if value not in PROFILES:
        raise ValueError(
            f"{ENV_VAR} must be one of {', '.join(PROFILES)}; got {os.environ[ENV_VAR]!r}"
        )
    return value


def choose(*, smoke: T, book: T, full: T) -> T:
    """Return the value for the active profile.

    Args:
        smoke: sizes for CI (each notebook under a minute on two CPU cores).
        book: sizes for the committed outputs (each notebook under ten minutes).
        full: sizes that reproduce the published numbers on a GPU.

    Example:
        >>> import os
        >>> os.environ["LLMKIT_PROFILE"] = "smoke"
        >>> choose(smoke=10, book=1_000, full=100_000)
        10
    """
    return {"smoke": smoke, "book": book, "full": full}[current()]


def summary() -> str:
    """One short line naming the active profile and what it is sized for.

    Printed by the cell that holds a notebook's sizes, in place of the sizes themselves.

    Example:
        >>> import os
        >>> os.environ["LLMKIT_PROFILE"] = "book"
        >>> summary()
        "profile book: the book's sizes, under 10 minutes a notebook on 2 CPU cores"
    """
    name = current()
    return f"profile {name}: {BUDGETS[name]}"

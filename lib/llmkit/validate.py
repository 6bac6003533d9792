"""Argument checks for the public entry points of :mod:`llmkit`.

Each check takes the argument's name first, so that the error names it, and returns the
value (converted where that helps, e.g. a probability to ``float``). A wrong type raises a
``TypeError``, a wrong value a ``ValueError``. The library calls these at its entry points
(config construction, loaders, ``train``), never inside ``forward`` or a training step.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import Any

__all__ = ["integer", "positive_int", "number", "probability", "boolean", "one_of"]


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """An int (not a bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """An int >= 1."""
    return integer(name, value, minimum=1)


def number(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not a bool) in ``[low, high]`` (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    x = float(value)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return x


def probability(name: str, value: Any) -> float:
    """A dropout-style probability in ``[0, 1)``."""
    p = number(name, value)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return p


def boolean(name: str, value: Any) -> bool:
    """A bool (``0``/``1`` are not accepted)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def one_of(name: str, value: Any, allowed: Collection[Any]) -> Any:
    """One of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value

"""Argument checks for the public entry points of :mod:`llmkit`.

Each check takes the argument's name first, so that the error names it, and returns the
value (converted where that helps, e.g. a probability to ``float``). A wrong type raises a
``TypeError``, a wrong value a ``ValueError``. The model code calls these at its entry points
(config construction, loaders, ``generate``, the CLI), never inside ``forward``.

:func:`config_fields` validates a dataclass config from its fields: an ``int`` field must be
an int >= 1, an ``int | None`` field ``None`` or an int >= 1, a ``bool`` field a bool; a field
with ``metadata={"check": fn}`` is checked by ``fn(name, value)`` instead.
:func:`config_from_dict` rebuilds such a config from its ``to_dict()``.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch

__all__ = [
    "integer",
    "positive_int",
    "number",
    "positive",
    "probability",
    "boolean",
    "one_of",
    "divisible",
    "int_ids",
    "checked",
    "config_fields",
    "config_from_dict",
]


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


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    x = number(name, value)
    if not x > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
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


def divisible(name: str, value: int, by_name: str, by: int) -> int:
    """``value`` a multiple of ``by`` (e.g. the model width of the number of heads)."""
    if value % by != 0:
        raise ValueError(f"{name} (={value}) must be divisible by {by_name} (={by})")
    return value


def int_ids(
    name: str, ids: Any, vocab_size: int | None = None, dims: Collection[int] = (2,)
) -> torch.Tensor:
    """A non-empty integer tensor of token ids with ``ids.dim()`` in ``dims``.

    With ``vocab_size``, the values must lie in ``[0, vocab_size)``: checked on the CPU only,
    since reading values back from an accelerator would synchronise it.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() not in dims:
        shapes = " or ".join({1: "(seq,)", 2: "(batch, seq)"}[d] for d in sorted(dims))
        hint = "; use ids[None] for a single sequence" if ids.dim() == 1 else ""
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(ids.shape)}{hint}")
    if ids.numel() == 0:
        raise ValueError(f"{name} must hold at least one token, got shape {tuple(ids.shape)}")
    if vocab_size is not None and ids.device.type == "cpu":
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} must lie in [0, {vocab_size}) (vocab_size), got values in [{lo}, {hi}]"
            )
    return ids


def checked(check: Callable[..., Any], *args: Any, **field_kwargs: Any) -> Any:
    """A dataclass field validated by ``check(name, value, *args)`` in :func:`config_fields`.

    >>> # in a dataclass: impl: str = checked(one_of, ("sdpa", "manual"), default="sdpa")
    """
    return dataclasses.field(metadata={"check": check, "args": args}, **field_kwargs)


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, value: None if value is None else check(name, value)


_CHECK_BY_TYPE: dict[Any, Callable[[str, Any], Any]] = {
    int: positive_int,
    int | None: _optional(positive_int),
    bool: boolean,
}


def config_fields(config: Any) -> None:
    """Check (and normalise in place) every field of the dataclass ``config``.

    Called from each config's ``__post_init__``; see the module docstring for the rules.
    """
    types = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        check = f.metadata.get("check", _CHECK_BY_TYPE.get(types[f.name]))
        if check is not None:
            value = check(f.name, getattr(config, f.name), *f.metadata.get("args", ()))
            object.__setattr__(config, f.name, value)


def config_from_dict(cls: type, d: Mapping[str, Any], *, unknown: str = "error") -> Any:
    """``cls(**d)`` for a dataclass config; keys that are not fields of ``cls`` are an error
    (``unknown="error"``) or dropped with a warning (``unknown="warn"``, for records written
    by other versions)."""
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - names)
    if extra and unknown == "warn":
        warnings.warn(f"{cls.__name__}.from_dict ignores unknown keys {extra}", stacklevel=3)
    elif extra:
        raise ValueError(f"unknown {cls.__name__} fields {extra}; allowed: {sorted(names)}")
    return cls(**{k: v for k, v in d.items() if k in names})

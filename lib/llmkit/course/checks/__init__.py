"""The lab checks: one module per lab (``ch01``, ``ch02``, ...), one function per exercise.

Convention
----------
A check cell in ``solutions/NN_name.ipynb`` is a code cell tagged ``grade`` with
``metadata.llmkit = {"exercise": "<id>", "points": N}`` that calls one check::

    from llmkit.course.checks import ch01
    ch01.check_merge(merge)

A check function

- takes the student's object (function, class, value) as its argument,
- compares it with the ``llmkit`` reference on fresh (seeded) random inputs, small
  enough for the ``smoke`` profile,
- on success prints exactly one line, via :func:`passed`: ``✔ merge: 20 random cases``,
- on failure raises ``AssertionError`` whose message is a one-line hint naming the
  exercise and what differs (:func:`fail`, :func:`compare`), never a bare assert;
  an exception from the student's code (``NotImplementedError: merge`` on the
  unmodified lab) is left to propagate.

``llmkit grade`` reports the printed line or the error's last line per exercise, and
``llmkit labs check`` proves that every check fails on the unmodified lab and passes
on the solution. Check modules are imported by the check cells themselves; this
package imports none of them eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["passed", "fail", "compare"]


def passed(exercise: str, message: str) -> None:
    """Print the one-line verdict of a passing check: ``✔ <exercise>: <message>``."""
    print(f"✔ {exercise}: {message}", flush=True)


def fail(exercise: str, hint: str) -> None:
    """Raise the ``AssertionError`` of a failing check: ``<exercise>: <hint>``."""
    raise AssertionError(f"{exercise}: {hint}")


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, int | float)


def _as_numpy(x: Any):
    import numpy as np

    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def compare(
    exercise: str,
    actual: Any,
    expected: Any,
    *,
    what: str = "result",
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Raise a hinting ``AssertionError`` unless ``actual`` matches ``expected``.

    Tensors and arrays (torch or numpy) must have the same shape and close values;
    floats must be close; sequences and mappings are compared element by element;
    everything else with ``==``. ``what`` names the compared thing in the hint,
    e.g. ``"merge(ids, (1, 2), 256)"``.
    """
    _compare(exercise, actual, expected, what, rtol, atol)


def _compare(exercise, actual, expected, what, rtol, atol) -> None:
    if _is_tensor(expected):
        if not _is_tensor(actual):
            fail(exercise, f"{what} should be a tensor/array, got {type(actual).__name__}")
        a, e = _as_numpy(actual), _as_numpy(expected)
        if tuple(a.shape) != tuple(e.shape):
            fail(exercise, f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}")
        import numpy as np

        if e.dtype.kind in "fc" or a.dtype.kind in "fc":
            a64, e64 = a.astype(np.float64), e.astype(np.float64)
            if not np.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.abs(a64 - e64)
                diff = np.where(np.isnan(diff), np.inf, diff)
                idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
                fail(
                    exercise,
                    f"{what} differs from the reference (max abs diff "
                    f"{float(diff.max()):.3g} at index {tuple(int(i) for i in idx)})",
                )
        elif not np.array_equal(a, e):
            bad = np.argwhere(a != e)
            at = tuple(int(i) for i in bad[0]) if len(bad) else ()
            fail(exercise, f"{what} differs from the reference at index {at}")
        return
    if isinstance(expected, float) and isinstance(actual, int | float):
        if not math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol):
            fail(exercise, f"{what} is {actual!r}, expected {expected!r}")
        return
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            fail(exercise, f"{what} should be a mapping, got {type(actual).__name__}")
        if set(actual) != set(expected):
            missing = ", ".join(sorted(map(repr, set(expected) - set(actual)))[:3]) or "none"
            extra = ", ".join(sorted(map(repr, set(actual) - set(expected)))[:3]) or "none"
            fail(exercise, f"{what} keys differ (missing: {missing}; unexpected: {extra})")
        for k in expected:
            _compare(exercise, actual[k], expected[k], f"{what}[{k!r}]", rtol, atol)
        return
    if isinstance(expected, Sequence) and not isinstance(expected, str | bytes):
        if not isinstance(actual, Sequence) or isinstance(actual, str | bytes):
            fail(exercise, f"{what} should be a sequence, got {type(actual).__name__}")
        if len(actual) != len(expected):
            fail(exercise, f"{what} has length {len(actual)}, expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _compare(exercise, a, e, f"{what}[{i}]", rtol, atol)
        return
    if actual != expected:
        fail(exercise, f"{what} is {_short(actual)}, expected {_short(expected)}")


def _short(x: Any, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."

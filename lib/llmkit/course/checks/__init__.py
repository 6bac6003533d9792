"""The lab checks: one module per lab (``ch01``, ``ch02``, ...), one function per exercise.

Convention
----------
A check cell in ``solutions/NN_name.ipynb`` is a code cell tagged ``grade`` with
``metadata.llmkit = {"exercise": "<id>", "points": N}`` that calls one check::

    from llmkit.course.checks import ch01
    ch01.check_merge(merge)

A check function

- takes the student's object (function, class, value) as its argument,
- refuses ``llmkit``'s own implementation (:func:`reject_library`): submitting the
  reference earns nothing,
- compares it with the ``llmkit`` reference on random inputs, small enough for the
  ``smoke`` profile, drawn from :func:`check_rng` (see *Seeds* below),
- on success prints exactly one line, via :func:`passed`: ``✔ merge: 20 random cases``,
- on failure raises ``AssertionError`` whose message is a one-line hint naming the
  exercise and what differs (:func:`fail`, :func:`compare`), never a bare assert;
  an exception from the student's code (``NotImplementedError: merge`` on the
  unmodified lab) is left to propagate.

``llmkit grade`` counts a check cell as passed only if it raised nothing *and* printed
a line starting with ``✔``; it reports that line, or the error's first line plus its
``hint:`` line, per exercise. ``llmkit labs check`` proves that every check fails on
the unmodified lab and passes on the solution. Check modules are imported by the check
cells themselves; this package imports none of them eagerly.

Seeds
-----
Every check takes ``seed: int | None = None``. An explicit seed wins. With
``seed=None`` the check reads the environment variable ``LLMKIT_CHECK_SEED``
(:data:`SEED_ENV`): an integer there makes the random inputs reproducible;
unset or empty means fresh inputs on every run, which is what a student running a
check cell in Jupyter gets. ``llmkit grade`` and ``llmkit labs check`` set it to a
fixed value per lab (see :func:`llmkit.course.grade.lab_seed`), so grading the same
notebook twice gives the same score.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "check_cases",
    "call_student",
    "SEED_ENV",
    "passed",
    "fail",
    "compare",
    "check_seed",
    "check_rng",
    "reject_library",
]

from .seeds import SEED_ENV, check_rng, check_seed  # noqa: E402, F401


def _unwrap(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    try:
        return inspect.unwrap(fn)
    except ValueError:  # a __wrapped__ cycle
        return fn


def reject_library(exercise: str, fn: Any, *references: Any) -> None:
    """Raise ``AssertionError`` if ``fn`` is ``llmkit``'s own code instead of the student's.

    ``fn`` is rejected when it (after unwrapping ``functools.partial`` and
    ``functools.wraps`` layers) is one of ``references`` or comes from a module whose
    name starts with ``llmkit``: ``from llmkit.tokenizers import merge`` submitted as
    the answer to the ``merge`` exercise. It cannot see a student function that calls
    the library inside its body; the grader lists such imports in its notes.
    """
    for obj in {id(fn): fn, id(_unwrap(fn)): _unwrap(fn)}.values():
        module = getattr(obj, "__module__", None)
        if any(obj is r for r in references) or (
            isinstance(module, str) and (module == "llmkit" or module.startswith("llmkit."))
        ):
            raise AssertionError(
                f"{exercise}: this is llmkit's own function; write your own implementation"
            )


def passed(exercise: str, message: str) -> None:
    """Print the one-line verdict of a passing check: ``✔ <exercise>: <message>``."""
    print(f"✔ {exercise}: {message}", flush=True)


def fail(exercise: str, hint: str) -> None:
    """Raise the ``AssertionError`` of a failing check: ``<exercise>: <hint>``."""
    raise AssertionError(f"{exercise}: {hint}")


def failure(exercise: str, inputs: str, problem: str, hint: str) -> AssertionError:
    """The ``AssertionError`` of a failed check on one input, to be raised by the caller.

    Its message has three lines: ``<exercise>: <problem>``, ``  input: <inputs>`` and
    ``  hint: <hint>``.
    """
    return AssertionError(f"{exercise}: {problem}\n  input: {inputs}\n  hint: {hint}")


def require_result(got: Any, exercise: str, inputs: str) -> None:
    """Fail the check with a hint about ``return`` when the student's function gave ``None``."""
    if got is None:
        raise failure(exercise, inputs, "your function returned None", "did you forget `return`?")


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


def check_cases(cases: int, minimum: int) -> None:
    """Validate a check's ``cases`` argument: an int, at least the number of fixed cases."""
    if not isinstance(cases, int) or isinstance(cases, bool) or cases < minimum:
        raise ValueError(f"cases must be an int >= {minimum} (the fixed edge cases), got {cases}")


def call_student(
    fn: Any, name: str, inputs: str, *args: Any, hint: str | None = None, **kwargs: Any
) -> Any:
    """Call the student's ``fn(*args, **kwargs)``; a crash becomes a failed check.

    ``NotImplementedError`` (an unfinished stub) propagates unchanged. Any other exception
    becomes ``AssertionError("<name>: your function raised ...")`` with the ``inputs``
    shown and, if given, a ``hint:`` line.
    """
    if not callable(fn):
        raise TypeError(f"{name}: expected a function, got {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - any crash is a failed check
        message = f"{name}: your function raised {type(e).__name__}: {e}\n  input: {inputs}"
        if hint:
            message += f"\n  hint: {hint}"
        raise AssertionError(message) from e


# The runner needs check_seed and check_rng above; labs check needs wrapper_source here.
from .runner import wrapper_source  # noqa: E402, F401

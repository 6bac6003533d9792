"""The check runner: every lab exercise is one :class:`Exercise` declaration.

A check cell calls ``EXERCISE.check(student_fn)``. For each case (fixed edge cases
first, then seeded random ones) the runner

1. builds the inputs and keeps a private copy of them;
2. calls the student's function **under guard** (:class:`Guard`): with a time limit,
   with every off-limits object of the exercise turned into a tripwire, and with the
   checks' reference modules out of reach of any import;
3. checks that the arguments were left unchanged;
4. only then computes the expected value with the reference, on the private copy;
5. validates the result (type, shape, dtype) and compares it with a tolerance; on a
   mismatch it runs the exercise's catalogue of known slips and names the one whose
   output the student's matches, else gives the exercise's general hint.

It prints one verdict line, ``✔ <exercise>: <what was checked>``, or raises
:class:`CheckFailed` (an ``AssertionError``) whose message is::

    <exercise>: <what is wrong>
      input: <the case>
      expected: <...>            (when there is one)
      got: <...>
      hint: <what to look at>

A ``NotImplementedError`` from an unfinished stub is let through unchanged.

Tripwires
---------
``Exercise.forbid`` names what the student's code may not call while the check runs,
as ``"module"`` (everything defined in that file), ``"module:Name"`` (a function, or
every method of a class) or a torch function (``"torch.nn.functional:cross_entropy"``).
The guard watches calls with :func:`sys.setprofile` (Python code is recognised by
the file and line it was defined at, so a copy of a module loaded another way is
caught too; C functions by identity) and, for torch functions, with a
``TorchFunctionMode`` (which sees ``torch.ops.aten`` routes too). Touching one fails
the exercise, whatever the student's code does with the exception. The reference
implementations of the checks live in :mod:`llmkit.course.checks.reference`, which
the exercise declarations name only as strings; while the student's code runs, those
modules are removed from ``sys.modules`` and importing them fails.

What it is not: a sandbox. The student's code runs in the same process; code that
starts another process, or edits the runner's own state, can still get round it.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.abc
import inspect
import math
import os
import pkgutil
import random
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .seeds import check_rng, check_seed

__all__ = [
    "CheckFailed",
    "Case",
    "Slip",
    "Exercise",
    "Guard",
    "compare",
    "show",
    "resolve",
    "find_exercise",
    "wrapper_source",
    "REFERENCE_PACKAGE",
    "gradient_after",
]

#: The package of the checks' reference implementations (out of reach during a call).
REFERENCE_PACKAGE = "llmkit.course.checks.reference"
VERDICT = "✔"
_REGISTRY: dict[str, Exercise] = {}


class CheckFailed(AssertionError):
    """A check failed; the message has the one format described in this module."""


class ShortcutTaken(BaseException):
    """Raised inside the student's call when it touches an off-limits object.

    A ``BaseException`` so that ``except Exception`` in the student's code does not
    swallow it; the guard records the touch anyway, so swallowing it gains nothing.
    """


class _TimeUp(BaseException):
    pass


# ----------------------------------------------------------------- objects by name


def resolve(path: str) -> Any:
    """``"pkg.mod:Qual.name"`` -> that object; ``"pkg.mod"`` -> the module."""
    module, _, qual = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, qual.split(".")):
        obj = getattr(obj, part)
    return obj


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _functions_of(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """The Python functions that make up ``obj`` (a function, or a class's methods)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, staticmethod | classmethod):
        yield from _functions_of(obj.__func__, seen)
    elif isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                yield from _functions_of(f, seen)
    elif isinstance(obj, functools_partial_type()):
        yield from _functions_of(obj.func, seen)
    elif inspect.isclass(obj):
        for value in vars(obj).values():
            if (
                inspect.isfunction(value)
                or inspect.isclass(value)
                or isinstance(value, staticmethod | classmethod | property)
            ):
                if not inspect.isclass(value) or value.__module__ == obj.__module__:
                    yield from _functions_of(value, seen)
    elif inspect.ismethod(obj):
        yield from _functions_of(obj.__func__, seen)
    elif not inspect.isfunction(obj) and callable(getattr(obj, "__wrapped__", None)):
        yield from _functions_of(inspect.unwrap(obj), seen)  # numpy's dispatchers
    elif inspect.isfunction(obj):
        # through decorators such as @torch.no_grad(), whose wrapper code every decorated
        # function shares: the tripwire goes on the function itself
        yield inspect.unwrap(obj)


def functools_partial_type() -> type:
    import functools

    return functools.partial


def _real(path: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


# ----------------------------------------------------------------------- the guard


class _BlockReferences(importlib.abc.MetaPathFinder):
    def __init__(self, guard: Guard):
        self.guard = guard

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
        if fullname == REFERENCE_PACKAGE or fullname.startswith(REFERENCE_PACKAGE + "."):
            self.guard.touch(f"the checks' reference code ({fullname})")
            raise ImportError(f"{fullname} is out of reach while a check runs")
        return None


_TABLES: dict[tuple[str, ...], tuple[dict, dict, dict, dict, dict]] = {}
#: Off limits in every exercise: what would switch the guard or the time limit off,
#: or run code where the guard cannot see it.
_ALWAYS = [
    "sys:setprofile",
    "sys:settrace",
    "threading:setprofile",
    "threading:settrace",
    "_thread:start_new_thread",
    "signal:setitimer",
    "signal:signal",
    "signal:alarm",
]


class Guard:
    """While active, calls of the ``forbid`` objects are recorded in :attr:`touched`.

    Use as a context manager around the student's call. ``suspended()`` lets the
    checks' own helpers (a reference ``merge`` substituted into the student's
    encoder) run inside the guarded call without tripping it.
    """

    def __init__(self, forbid: Sequence[str] = (), exercise: str = "exercise"):
        self.exercise = exercise
        self.touched: str | None = None
        self.switched_off = False
        self._suspended = 0
        self._files: dict[str, str] = {}
        self._codes: dict[tuple[str, int, str], str] = {}
        self._builtins: dict[int, str] = {}
        self._torch_names: dict[str, str] = {}
        self._folders: dict[str, str] = {}
        self._real_cache: dict[str, str | None] = {}
        self._stash: dict[str, types.ModuleType] = {}
        key = tuple(forbid)
        if key not in _TABLES:
            for name in forbid:
                self._add(name)
            self._add(REFERENCE_PACKAGE, label="the checks' reference code")
            for name in _ALWAYS:
                self._add(name, label=f"{name.replace(':', '.')} (it would blind the check)")
            if importlib.util.find_spec("transformers") is not None:
                self._add("transformers", label="transformers (no exercise needs it)")
            _TABLES[key] = (
                self._files,
                self._codes,
                self._builtins,
                self._torch_names,
                self._folders,
            )
        tables = _TABLES[key]
        self._files, self._codes, self._builtins, self._torch_names, self._folders = tables
        self._hook = self._make_hook()

    # -- what is forbidden
    def _add(self, name: str, label: str | None = None) -> None:
        label = label or name.replace(":", ".")
        try:
            obj = resolve(name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"forbid: cannot find {name!r} ({exc})") from None
        if isinstance(obj, types.ModuleType):
            if hasattr(obj, "__path__"):  # a package: every file under its folders
                for folder in obj.__path__:
                    self._folders[_real(folder) + os.sep] = label
            elif getattr(obj, "__file__", None):
                self._files[_real(obj.__file__)] = label
            return
        functions = list(_functions_of(obj))
        for f in functions:
            for code in _codes(f.__code__):
                key = (_real(code.co_filename), code.co_firstlineno, code.co_name)
                self._codes[key] = label
        if not functions:  # a C function: by identity, and by name for torch's routes
            self._builtins[id(obj)] = label
            if "torch" in (getattr(obj, "__module__", None) or name):
                self._torch_names[getattr(obj, "__name__", name.rpartition(":")[2])] = label

    # -- the monitor
    def _where(self, filename: str) -> str | None:
        real = self._real_cache.get(filename, "")
        if real == "":
            real = self._real_cache[filename] = _real(filename)
        return real

    def _make_hook(self):
        """The profile function: a closure, so that ``sys.getprofile()`` does not hand
        the student's code this guard (and its ``suspended``)."""
        files, codes, builtins, folders = self._files, self._codes, self._builtins, self._folders
        where, touch, state = self._where, self.touch, self

        def hook(frame, event, arg):  # noqa: ANN001
            if state._suspended:
                return
            if event == "call":
                code = frame.f_code
                real = where(code.co_filename)
                label = files.get(real) or codes.get((real, code.co_firstlineno, code.co_name))
                if label is None and folders:
                    label = next((v for k, v in folders.items() if real.startswith(k)), None)
                if label:
                    touch(label)
            elif event == "c_call":
                label = builtins.get(id(arg))
                if label:
                    touch(label)

        return hook

    def touch(self, label: str) -> None:
        if self._suspended:
            return
        if self.touched is None:
            self.touched = label
        raise ShortcutTaken(label)

    @contextmanager
    def suspended(self) -> Iterator[None]:
        self._suspended += 1
        try:
            yield
        finally:
            self._suspended -= 1

    def _torch_mode(self):
        if not self._torch_names:
            return None
        from torch.overrides import TorchFunctionMode

        guard = self

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                name = getattr(func, "__name__", "").split(".")[0]
                if name in guard._torch_names:
                    guard.touch(guard._torch_names[name])
                return func(*args, **(kwargs or {}))

        return _Mode()

    def __enter__(self) -> Guard:
        for name in [m for m in sys.modules if m.startswith(REFERENCE_PACKAGE)]:
            self._stash[name] = sys.modules.pop(name)
        parent = sys.modules.get(REFERENCE_PACKAGE.rpartition(".")[0])
        self._parent_attr = parent.__dict__.pop("reference", None) if parent else None
        self._finder = _BlockReferences(self)
        sys.meta_path.insert(0, self._finder)
        self._mode = self._torch_mode()
        if self._mode is not None:
            self._mode.__enter__()
        self._old_profile = sys.getprofile()
        self._old_thread_profile = threading.getprofile()
        self._suspended += 1  # the guard's own calls are not the student's
        sys.setprofile(self._hook)
        threading.setprofile(self._hook)
        self._suspended -= 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._suspended += 1  # the guard's own calls below are not the student's
        if sys.getprofile() is not self._hook and self.touched is None:
            self.switched_off = True
        sys.setprofile(self._old_profile)
        threading.setprofile(self._old_thread_profile)
        self._suspended -= 1
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        sys.modules.update(self._stash)
        self._stash.clear()
        parent = sys.modules.get(REFERENCE_PACKAGE.rpartition(".")[0])
        if parent is not None and self._parent_attr is not None:
            parent.__dict__["reference"] = self._parent_attr


def _stand_in(reference: Any, own: Any, signature: Any, guard: Guard) -> Callable[..., Any]:
    """The student's earlier helper while a later exercise is checked: the reference's
    value (so a wrong helper costs its own points only), but the student's own object
    when it equals that value (a ``Counter`` stays a ``Counter``), and the student's
    own helper where the reference does not apply (another signature, or inputs it
    refuses, such as a float mask)."""

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        try:
            if signature is not None:
                signature.bind(*args, **kwargs)
            with guard.suspended():
                expected = reference(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        except Exception:  # noqa: BLE001 - the reference does not apply here
            return own(*args, **kwargs)
        try:
            mine = own(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a broken helper: the reference stands in
            return expected
        return mine if compare(mine, expected, dtype=False) is None else expected

    return stand_in


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):  # noqa: ANN001
        raise _TimeUp()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------- showing and comparing


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, int | float)


def show(x: Any, limit: int = 200) -> str:
    """A short, one-line description of a value for a failure message."""
    if _is_tensor(x):
        shape = tuple(int(s) for s in x.shape)
        numel = math.prod(shape)
        dtype = str(x.dtype).replace("torch.", "")
        if numel <= 24:
            values = x.tolist() if hasattr(x, "tolist") else x
            return f"tensor({values}, dtype={dtype})"
        return f"tensor of shape {shape}, dtype={dtype}"
    if hasattr(x, "parameters") and callable(x.parameters):  # an nn.Module
        return f"{type(x).__name__} model"
    if isinstance(x, tuple | list) and any(_is_tensor(v) for v in x):
        inner = ", ".join(show(v, limit) for v in x)
        return f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _as_numpy(x: Any):
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def compare(
    got: Any,
    expected: Any,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    dtype: bool = True,
    what: str = "the result",
) -> str | None:
    """What differs between ``got`` and ``expected`` (``None`` if they match).

    Tensors and arrays: same type of object, shape, dtype (if ``dtype``) and close
    values; floats: close; sequences and mappings element by element; else ``==``.
    """
    import numpy as np

    if _is_tensor(expected):
        if not _is_tensor(got):
            return f"{what} should be a tensor, not {type(got).__name__}"
        if type(got) is not type(expected):  # no subclass computing its values later
            return f"{what} should be a {type(expected).__name__}, not {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if dtype and got.dtype != expected.dtype:
            return f"{what} has dtype {got.dtype}, expected {expected.dtype}"
        a, e = _as_numpy(got), _as_numpy(expected)
        if e.dtype.kind in "fc" or a.dtype.kind in "fc":
            a64, e64 = a.astype(np.float64), e.astype(np.float64)
            if not np.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True):
                with np.errstate(invalid="ignore"):  # inf - inf
                    diff = np.abs(a64 - e64)
                diff = np.where(np.isnan(diff), np.inf, diff)
                at = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
                return (
                    f"{what} differs (largest difference {float(diff.max()):.3g} at index "
                    f"{tuple(int(i) for i in at)})"
                )
        elif not np.array_equal(a, e):
            bad = np.argwhere(a != e)
            return f"{what} differs at index {tuple(int(i) for i in bad[0]) if len(bad) else ()}"
        return None
    if isinstance(expected, bool):
        if not isinstance(got, bool):
            return f"{what} should be a bool (True or False), not {type(got).__name__}"
        return None if got == expected else f"{what} is {got}, expected {expected}"
    if expected is None:
        return None if got is None else f"{what} is {show(got)}, expected None"
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        plain = type(got).__module__ in ("builtins", "numpy")  # not a lazy subclass
        if isinstance(got, bool) or not isinstance(got, int | float) or not plain:
            return f"{what} should be a number, not {type(got).__name__}"
        if isinstance(expected, int) and isinstance(got, float) and not got.is_integer():
            return f"{what} is {got!r}, expected {expected!r}"
        if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            return f"{what} is {got!r}, expected {expected!r}"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{what} should be a dict, not {type(got).__name__}"
        if set(got) != set(expected):
            missing = sorted(map(repr, set(expected) - set(got)))[:3]
            extra = sorted(map(repr, set(got) - set(expected)))[:3]
            return (
                f"{what} has other keys (missing: {', '.join(missing) or 'none'}; "
                f"unexpected: {', '.join(extra) or 'none'})"
            )
        for k in expected:
            problem = compare(
                got[k], expected[k], rtol=rtol, atol=atol, dtype=dtype, what=f"{what}[{k!r}]"
            )
            if problem:
                return problem
        return None
    if isinstance(expected, Sequence | set | frozenset) and not isinstance(expected, str | bytes):
        if isinstance(expected, set | frozenset):
            if not isinstance(got, set | frozenset):
                return f"{what} should be a set, not {type(got).__name__}"
            return None if got == expected else f"{what} differs"
        if (
            not isinstance(got, Sequence)
            or isinstance(got, str | bytes)
            or type(got).__module__ != "builtins"
        ):
            return f"{what} should be a {type(expected).__name__}, not {type(got).__name__}"
        if len(got) != len(expected):
            return f"{what} has length {len(got)}, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(got, expected, strict=True)):
            problem = compare(a, e, rtol=rtol, atol=atol, dtype=dtype, what=f"{what}[{i}]")
            if problem:
                return problem
        return None
    if type(expected) is not type(got) and isinstance(expected, str | bytes):
        return f"{what} should be {type(expected).__name__}, not {type(got).__name__}"
    return None if got == expected else f"{what} differs"


def _same(a: Any, b: Any) -> bool:
    """Exact equality of two argument values (tensors, modules, containers).

    Random generators count as unchanged: drawing from them is what they are for.
    """
    if type(a).__name__ == "Generator" or isinstance(a, random.Random):
        return True
    if _is_tensor(a) and _is_tensor(b):
        import torch

        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return (
                a.shape == b.shape
                and a.dtype == b.dtype
                and torch.equal(a.nan_to_num(0.123), b.nan_to_num(0.123))
            )
        import numpy as np

        return np.array_equal(_as_numpy(a), _as_numpy(b), equal_nan=True)
    if hasattr(a, "state_dict") and hasattr(b, "state_dict"):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(_same(sa[k], sb[k]) for k in sa)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable objects count as unchanged
        return True


# --------------------------------------------------------------------- declarations


@dataclass
class Case:
    """One call of the student's function: ``fn(*args, **kwargs)``.

    ``label`` replaces the default description of the input in messages.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str | None = None


@dataclass(frozen=True)
class Slip:
    """A known mistake: ``fn`` (a ``"module:name"`` path, usually in the reference
    package) computes the wrong answer the mistake gives; ``hint`` names the mistake."""

    fn: str
    hint: str


@dataclass
class Exercise:
    """One lab exercise, checked against ``reference`` (a ``"module:name"`` path).

    - ``fixed``: edge cases, always run first; ``random(rng) -> Case``: one random case
      (``rng`` is a seeded :class:`random.Random`); ``cases``: how many in all.
    - ``forbid``: the off-limits objects (see the module docstring); the reference and
      the checks' reference package always are.
    - ``hint``: said when the answer is wrong and no slip matches; ``crash_hint`` when
      the student's function raises; ``slips``: the catalogue of known mistakes.
    - ``rtol``, ``atol``, ``dtype``: the comparison (:func:`compare`); ``compare`` a
      function ``(got, expected, case) -> problem | None`` replacing it.
    - ``reference_takes``: ``"case"`` when the reference wants the :class:`Case` itself.
    - ``after(case, got) -> problem | (problem, hint) | None``: extra checks on how a
      right value was computed (a spy's counts); reported only when the value is right.
    - ``substitute``: names in the student's globals replaced by references while the
      student's function runs (each exercise is graded on its own).
    - ``target``: the name the student defines (default: ``name``), for wrappers.
    - ``mutates``: the arguments the exercise changes on purpose (a model it trains).
    - ``passed``: the verdict's text (default: how many cases matched).
    """

    name: str
    reference: str
    fixed: Sequence[Case | tuple] | Callable[[], Sequence[Case | tuple]] = ()
    random: Callable[[random.Random], Case | tuple] | None = None
    cases: int = 20
    forbid: Sequence[str] = ()
    hint: str = "compare your function with the chapter's description step by step"
    crash_hint: str | None = None
    slips: Sequence[Slip] = ()
    rtol: float = 1e-5
    atol: float = 1e-6
    dtype: bool = True
    compare: Callable[[Any, Any, Case], str | None] | None = None
    reference_takes: str = "args"
    after: Callable[[Case, Any], str | tuple[str, str] | None] | None = None
    substitute: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    mutates: Sequence[str] = ()
    time_limit: float = 20.0
    passed: str | None = None

    def __post_init__(self) -> None:
        _REGISTRY[self.name] = self

    # -- running
    def _cases(self, n: int, rng: random.Random) -> list[Case]:
        if callable(self.fixed):
            given = self.fixed()
        elif isinstance(self.fixed, list | tuple):  # copied: a student cannot spoil them
            given = copy.deepcopy(list(self.fixed))
        else:  # a sequence that builds its cases afresh when read
            given = list(self.fixed)
        fixed = [c if isinstance(c, Case) else Case(tuple(c)) for c in given]
        if n < len(fixed):
            raise ValueError(f"cases must be at least {len(fixed)} (the fixed cases), got {n}")
        out = list(fixed)
        while len(out) < n and self.random is not None:
            c = self.random(rng)
            out.append(c if isinstance(c, Case) else Case(tuple(c)))
        return out

    def describe(self, case: Case, fn: Any = None) -> str:
        if case.label:
            return case.label
        names: list[str] = []
        try:
            params = list(inspect.signature(fn if fn is not None else self._ref()).parameters)
        except (TypeError, ValueError, ImportError, AttributeError):
            params = []
        for i, a in enumerate(case.args):
            names.append(f"{params[i]}={show(a, 120)}" if i < len(params) else show(a, 120))
        names += [f"{k}={show(v, 120)}" for k, v in case.kwargs.items()]
        return ", ".join(names) or "(no arguments)"

    def _ref(self) -> Any:
        return resolve(self.reference)

    def _expected(self, fn: Any, case: Case) -> Any:
        if self.reference_takes == "case":
            return fn(case)
        return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))

    def _fail(
        self,
        problem: str,
        case: Case,
        fn: Any,
        hint: str | None,
        *,
        expected: Any = None,
        got: Any = None,
        show_values: bool = False,
    ) -> CheckFailed:
        lines = [f"{self.name}: {problem}", f"  input: {self.describe(case, fn)}"]
        if show_values:
            lines += [f"  expected: {show(expected)}", f"  got: {show(got)}"]
        if hint:
            lines.append(f"  hint: {hint}")
        return CheckFailed("\n".join(lines))

    def call(self, fn: Any, case: Case) -> Any:
        """Call ``fn`` on ``case`` under guard; a shortcut or crash becomes CheckFailed."""
        if not callable(fn):
            raise CheckFailed(f"{self.name}: expected a function or class, got {type(fn).__name__}")
        private = copy.deepcopy((case.args, case.kwargs))
        guard = Guard(self.forbid_all(), self.name)
        undo = self._substitute(fn, guard)
        got, error = None, None
        try:
            with _time_limit(self.time_limit), guard:
                got = fn(*case.args, **case.kwargs)
        except NotImplementedError:
            if guard.touched is None:
                raise
        except _TimeUp:
            error = self._fail(
                f"your function took longer than {self.time_limit:g} s",
                case,
                fn,
                "look for a loop that never ends",
            )
        except ShortcutTaken:
            pass
        except Exception as exc:  # noqa: BLE001 - any crash is a failed check
            error = self._fail(
                f"your function raised {type(exc).__name__}: {exc}", case, fn, self.crash_hint
            )
        finally:
            undo()
        if guard.touched is not None:
            raise self._fail(
                f"this exercise must be written without {guard.touched}",
                case,
                fn,
                "write it with the building blocks the lab allows (and your own earlier "
                "functions); the exercise says what is off limits",
            )
        if guard.switched_off:
            raise self._fail(
                "your function switched off the check's monitor",
                case,
                fn,
                "do not call sys.setprofile in an exercise",
            )
        if error is not None:
            raise error
        names = [self._arg_name(fn, i) for i in range(len(case.args))]
        pairs = list(zip(names, private[0], case.args, strict=True))
        pairs += [(repr(k), private[1][k], v) for k, v in case.kwargs.items()]
        for name, before, now in pairs:
            if name.strip("'") not in self.mutates and not _same(before, now):
                raise self._fail(
                    f"your function modified its argument {name}",
                    case,
                    fn,
                    "work on a copy (or build a new value) instead",
                )
        return got

    def _arg_name(self, fn: Any, i: int) -> str:
        try:
            return repr(list(inspect.signature(fn).parameters)[i])
        except (TypeError, ValueError, IndexError):
            return f"number {i + 1}"

    def forbid_all(self) -> list[str]:
        return [self.reference, *self.forbid]

    def _substitute(self, fn: Any, guard: Guard) -> Callable[[], None]:
        g = getattr(inspect.unwrap(fn), "__globals__", None)
        if not self.substitute or not isinstance(g, dict):
            return lambda: None
        saved = {k: g[k] for k in self.substitute if k in g}
        for name, path in self.substitute.items():
            if name in g and callable(g[name]):
                reference = resolve(path)
                try:
                    signature = inspect.signature(reference)
                except (TypeError, ValueError):
                    signature = None

                g[name] = _stand_in(reference, g[name], signature, guard)

        def undo() -> None:
            g.update(saved)

        return undo

    def check(self, fn: Any, *, cases: int | None = None, seed: int | None = None) -> None:
        """Run every case; print the verdict or raise :class:`CheckFailed`."""
        n = self.cases if cases is None else cases
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"cases must be an int, got {n!r}")
        rng = check_rng(check_seed(seed))
        todo = self._cases(n, rng)
        for case in todo:
            self.check_case(fn, case)
        given = self.fixed() if callable(self.fixed) else self.fixed
        fixed = min(len(given), len(todo))
        text = self.passed or (
            f"{len(todo)} cases match the reference ({fixed} fixed, {len(todo) - fixed} random)"
        )
        print(f"{VERDICT} {self.name}: {text}", flush=True)

    def check_case(self, fn: Any, case: Case) -> None:
        got = self.call(fn, case)
        if got is None:
            raise self._fail("your function returned None", case, fn, "did you forget `return`?")
        # how the value was computed (a spy's counts) is judged before the reference runs,
        # but reported only if the value itself is right
        verdict = self.after(case, got) if self.after is not None else None
        expected = self._expected(self._ref(), case)
        problem = self._differs(got, expected, case)
        if problem:
            raise self._fail(
                problem,
                case,
                fn,
                self._slip_hint(got, case) or self.hint,
                expected=expected,
                got=got,
                show_values=not hasattr(expected, "parameters"),  # a model says nothing
            )
        problem, hint = verdict if isinstance(verdict, tuple) else (verdict, self.hint)
        if problem:
            raise self._fail(problem, case, fn, hint)

    def _differs(self, got: Any, expected: Any, case: Case) -> str | None:
        if self.compare is not None:
            return self.compare(got, expected, case)
        return compare(got, expected, rtol=self.rtol, atol=self.atol, dtype=self.dtype)

    def _slip_hint(self, got: Any, case: Case) -> str | None:
        for slip in self.slips:
            try:
                wrong = self._expected(resolve(slip.fn), case)
            except Exception:  # noqa: BLE001 - a slip that does not apply to this case
                continue
            if self._differs(got, wrong, case) is None:
                return slip.hint
        return None


def gradient_after(
    reference: str,
    inputs: Callable[[Case], Sequence[Any]],
    *,
    pick: Callable[[Any], Any] = lambda result: result,
    what: str = "your result",
    wrt: str = "its inputs",
    hint: str = "compute it from the inputs with torch operations (no .item(), .detach(), "
    "torch.no_grad() or torch.tensor(...) of a number): training needs its gradient",
    slips: Sequence[Slip] = (),
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> Callable[[Case, Any], tuple[str, str] | None]:
    """An ``after`` check for a result that training differentiates: ``pick(result)`` must
    carry a gradient, and the gradient of its sum with respect to ``inputs(case)`` (tensors
    that require grad, or a model's parameters) must equal the reference's.

    A right value with a wrong gradient (a detached term, ``0 * x`` added to a value
    computed without gradients) trains nothing, or the wrong thing. ``reference`` is the
    exercise's reference as a ``"module:name"`` path, resolved only when the check runs
    (after the student's call, outside the guard). On a mismatch, the hint is that of the
    first of ``slips`` (usually the exercise's own) whose gradient the student's matches:
    on a case where a slip gives the right value (a swapped sign at equal rewards), its
    gradient still tells it apart.
    """
    import torch

    def after(case: Case, got: Any) -> tuple[str, str] | None:
        out = pick(got)
        if not isinstance(out, torch.Tensor):
            return None  # the value check says what is wrong
        if out.grad_fn is None:
            return f"{what} carries no gradient to {wrt}", hint
        tensors = [x for x in inputs(case) if isinstance(x, torch.Tensor) and x.requires_grad]
        try:
            mine = torch.autograd.grad(out.sum(), tensors, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            return f"the gradient of {what} could not be computed ({exc})", hint

        def gradients(path: str) -> list[Any]:
            value = pick(resolve(path)(*case.args, **case.kwargs))
            grads = torch.autograd.grad(value.sum(), tensors, allow_unused=True)
            return [
                torch.zeros_like(x) if g is None else g for g, x in zip(grads, tensors, strict=True)
            ]

        def largest(a: Sequence[Any], b: Sequence[Any]) -> float:
            return max(
                float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True)
            )

        def same(a: Sequence[Any], b: Sequence[Any]) -> bool:
            return all(
                x.shape == y.shape and torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol)
                for x, y in zip(a, b, strict=True)
            )

        mine = [torch.zeros_like(x) if g is None else g for g, x in zip(mine, tensors, strict=True)]
        theirs = gradients(reference)
        if same(mine, theirs):
            return None
        found = (
            "every term must be computed from the inputs that training moves: a part "
            "computed under .detach() or torch.no_grad() (and made to carry a gradient "
            "with 0 * x) has the value but trains nothing, or the wrong thing"
        )
        for slip in slips:
            try:
                if same(mine, gradients(slip.fn)):
                    found = slip.hint
                    break
            except Exception:  # noqa: BLE001 - a slip that does not apply to this case
                continue
        return (
            f"{what} has the right value here but not the right gradient with respect to "
            f"{wrt} (largest difference {largest(mine, theirs):.3g})",
            found,
        )

    return after


# ----------------------------------------------------------------- registry, wrappers


def find_exercise(name: str) -> Exercise | None:
    """The :class:`Exercise` called ``name`` from any check module (None if none)."""
    if name not in _REGISTRY:
        package = importlib.import_module("llmkit.course.checks")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("ch"):
                importlib.import_module(f"llmkit.course.checks.{info.name}")
    return _REGISTRY.get(name)


def wrapper_source(exercise: str, source: str) -> str | None:
    """``source`` with the exercise's definition replaced by a thin wrapper around its
    reference: what a student who wrote nothing would submit. ``None`` if the
    exercise is not registered or its definition is not found in ``source``."""
    ex = find_exercise(exercise)
    if ex is None:
        return None
    target = ex.target or ex.name
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    node = next((n for n in defs if n.name == target), None)
    if node is None:
        return None
    module, _, qual = ex.reference.partition(":")
    fetch = f"__import__('importlib').import_module({module!r})"
    for part in filter(None, qual.split(".")):
        fetch = f"getattr({fetch}, {part!r})"
    if isinstance(node, ast.ClassDef):
        wrapper = f"class {target}({fetch}):\n    pass\n"
    else:
        wrapper = f"def {target}(*args, **kwargs):\n    return {fetch}(*args, **kwargs)\n"
    lines = source.splitlines(keepends=True)
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    return "".join(lines[:start]) + wrapper + "".join(lines[node.end_lineno :])

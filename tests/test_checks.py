"""Every exercise of every lab, on the one check runner.

For each exercise (found from the solution notebooks' check cells) this proves:

- the solution passes, and the unmodified lab's stub fails;
- the wrapper that ``llmkit labs check`` generates around the exercise's reference fails;
- hand-written shortcuts fail: the reference imported inside the body, reached through
  ``importlib``, ``__import__`` or ``sys.modules``, or through the check's own objects
  found on the caller's stack;
- the check modules hold no reference implementation a student could reach.

The notebooks' code is run the way the grader runs a submission: their imports,
definitions and literal constants, not the rest of their cells. The per-lab files
``test_checks_chNN.py`` add what is particular to a lab: each catalogued slip names its
hint, the torch functions a lab names are off limits, and its spies cannot be got round.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
from functools import cache
from pathlib import Path

import pytest

from llmkit.course.checks import runner
from llmkit.course.checks.runner import REFERENCE_PACKAGE, CheckFailed, find_exercise

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9]*.ipynb"))


def _cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for c in cells:
        if isinstance(c.get("source"), list):
            c["source"] = "".join(c["source"])
    return [c for c in cells if c["cell_type"] == "code"]


def _meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("llmkit", {}) or {}


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return node.targets if isinstance(node, ast.Assign) else [node.target]


def _graded_source(source: str) -> str:
    """What the grader keeps of a cell: imports, definitions and literal constants."""
    tree = ast.parse(source)
    keep = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef):
            keep.append(node)
        elif (
            isinstance(node, ast.Assign | ast.AnnAssign)
            and node.value is not None
            and all(isinstance(t, ast.Name) for t in _targets(node))
        ):
            with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError):
                ast.literal_eval(node.value)
                keep.append(node)
    return "\n".join(ast.get_source_segment(source, n) for n in keep)


@cache
def _exercises() -> list[tuple[str, str, str]]:
    """(lab file, exercise id, check cell source) for every check cell."""
    out = []
    for path in SOLUTIONS:
        for c in _cells(path):
            if "points" in _meta(c):
                out.append((path.name, _meta(c)["exercise"], c["source"]))
    return out


def _namespace(lab: str, folder: str = "solutions", replace: dict | None = None) -> dict:
    """The lab's graded code executed in a fresh namespace; ``replace`` maps an exercise
    id to the source that stands for its cell."""
    ns: dict = {"__name__": "__lab__"}
    for c in _cells(ROOT / folder / lab):
        meta = _meta(c)
        if "points" in meta:
            continue
        source = c["source"]
        if replace and meta.get("exercise") in replace:
            source = replace[meta["exercise"]]
        exec(compile(_graded_source(source), f"<{lab}>", "exec"), ns)
    return ns


def _run_check(check_source: str, ns: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(check_source, "<check>", "exec"), ns)
    return out.getvalue()


def _exercise_cell(lab: str, exercise: str) -> str:
    return next(
        c["source"]
        for c in _cells(ROOT / "solutions" / lab)
        if _meta(c) == {"exercise": exercise}
        or _meta(c).get("exercise") == exercise
        and "points" not in _meta(c)
    )


def _ids(rows):
    return [f"{lab.split('_')[0]}-{ex}" for lab, ex, _ in rows]


ROWS = _exercises()


def test_every_lab_has_exercises_with_registered_checks():
    assert len(SOLUTIONS) >= 8
    assert {lab for lab, _, _ in ROWS} == {p.name for p in SOLUTIONS}
    for _, ex, _ in ROWS:
        assert find_exercise(ex) is not None, f"no Exercise declared for {ex!r}"


@pytest.mark.parametrize(("lab", "exercise", "check"), ROWS, ids=_ids(ROWS))
def test_solution_passes_and_stub_fails(lab, exercise, check):
    printed = _run_check(check, _namespace(lab))
    assert printed.startswith(f"✔ {exercise}:"), printed
    with pytest.raises(NotImplementedError):
        _run_check(check, _namespace(lab, "labs"))


def _shortcut_sources(exercise: str, chapter: str) -> dict[str, str]:
    ex = find_exercise(exercise)
    target = ex.target or ex.name
    module, _, qual = ex.reference.partition(":")
    tail = "".join(f".{part}" for part in qual.split(".")) if qual else ""
    body = {
        "import inside the body": f"import {module} as _m\n    _r = _m{tail}",
        "importlib": f"import importlib\n    _r = importlib.import_module({module!r}){tail}",
        "__import__": (
            f"_r = __import__({module!r}, fromlist=['_'])\n"
            f"    _r = __import__('sys').modules[{module!r}]{tail}"
        ),
        "sys.modules": (
            f"import sys\n    _m = sys.modules.get({module!r}) or __import__('importlib')"
            f".import_module({module!r})\n    _r = _m{tail}"
        ),
        "the checks' reference module": (
            "import importlib\n"
            f"    _m = importlib.import_module({REFERENCE_PACKAGE + '.' + chapter!r})\n"
            "    _r = next(v for k, v in vars(_m).items() if callable(v) and not k.startswith('_'))"
        ),
        "the caller's frame": (
            "import sys\n"
            "    from llmkit.course.checks.runner import resolve\n"
            "    frame, _r = sys._getframe(1), None\n"
            "    while frame is not None and _r is None:\n"
            "        for value in list(frame.f_locals.values()):\n"
            "            if isinstance(getattr(value, 'reference', None), str):\n"
            "                _r = resolve(value.reference)\n"
            "        frame = frame.f_back"
        ),
    }
    return {
        how: f"def {target}(*args, **kwargs):\n    {code}\n    return _r(*args, **kwargs)\n"
        for how, code in body.items()
    }


@pytest.mark.parametrize(("lab", "exercise", "check"), ROWS, ids=_ids(ROWS))
def test_wrapper_and_shortcuts_fail(lab, exercise, check):
    cell = _exercise_cell(lab, exercise)
    wrapper = runner.wrapper_source(exercise, cell)
    assert wrapper is not None, f"no wrapper for {exercise!r}: is its target defined?"
    variants = {"generated wrapper": wrapper}
    target = find_exercise(exercise).target or exercise
    for how, shortcut in _shortcut_sources(exercise, _chapter(check)).items():
        variants[how] = _replace_definition(cell, target, shortcut)
    for how, source in variants.items():
        ns = _namespace(lab, replace={exercise: source})
        with pytest.raises(CheckFailed) as info:
            _run_check(check, ns)
        assert "must be written without" in str(info.value), (how, str(info.value))


def _chapter(check_source: str) -> str:
    """``ch01`` from a check cell's ``from llmkit.course.checks import ch01``."""
    return check_source.split("llmkit.course.checks import ")[1].split()[0]


def _replace_definition(source: str, target: str, new: str) -> str:
    tree = ast.parse(source)
    node = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == target
    )
    lines = source.splitlines(keepends=True)
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    return "".join(lines[:start]) + new + "".join(lines[node.end_lineno :])


@pytest.mark.parametrize("lab", [p.name for p in SOLUTIONS])
def test_check_modules_hold_no_reference_code(lab):
    modules = {_chapter(check) for lab_, _, check in ROWS if lab_ == lab}
    for name in modules:
        module = importlib.import_module(f"llmkit.course.checks.{name}")
        for attr, value in vars(module).items():
            assert not attr.startswith("reference"), f"{name}.{attr}"
            origin = getattr(value, "__module__", None) or getattr(value, "__name__", "")
            assert not str(origin).startswith(REFERENCE_PACKAGE), f"{name}.{attr}"

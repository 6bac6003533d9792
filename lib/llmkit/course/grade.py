"""Grading submissions: ``llmkit grade``.

For each submitted notebook:

1. **Identify the lab**: ``metadata.llmkit.lab`` (set by ``llmkit labs build``), else
   the file name's ``NN_`` prefix *and* at least one cell id in common with that lab,
   else the lab sharing the most cell ids (at least half of the lab's cells). Anything
   else is "not a lab of this course" (a copy of a chapter named ``01_x.ipynb`` is not
   lab 01).
2. **Build the graded notebook from the official one**, not from the student's: the
   official lab (``labs/NN_name.ipynb`` by default, or ``solutions/``; their check and
   other cells are identical) with every cell verbatim and in official order, except
   its exercise cells (``metadata.llmkit.exercise`` and no ``points``). In place of
   the first of those come the student's code, one cell per statement; the others are
   left empty, so the official stubs cannot undo the student's definitions. A cell
   put first caps how much any cell may print (see :data:`OUTPUT_CAP_SOURCE`). Outputs
   are cleared.

   **What of the student's code is graded** (:func:`collect_student_code`): from
   every code cell that is not a check cell, in notebook order, the top-level
   ``import`` / ``from ... import`` statements, ``def`` / ``async def`` / ``class``
   statements and constants (``NAME = <literal>``, ``ast.literal_eval`` works on the
   value). **Everything else at top level is ignored**: calls, loops, other
   assignments, experiments and prints, as well as definitions and imports that would
   replace a name the official notebook itself defines (say the ``compare`` its check
   cells use) with something else. IPython magics are turned into Python first; a
   cell that still does not parse is skipped. The submission's ``notes`` say what was
   left out, and which ``llmkit`` names the code imports (the library's own function
   is not an answer; the checks refuse it outright when it is submitted as is).
3. **Execute** it with nbclient (:func:`run_graded`), in this process, cell by cell,
   in a kernel of this environment started in a temporary folder
   (``LLMKIT_PROFILE=smoke``, ``LLMKIT_CHECK_SEED`` fixed per lab so that regrading
   gives the same score (:func:`lab_seed`; an ``LLMKIT_CHECK_SEED`` already in the
   environment wins)). A cell running past the per-cell timeout is interrupted; a
   kernel that then does not answer (it swallows ``KeyboardInterrupt``, blocks in C)
   is killed, and so is one that dies (``os._exit``, out of memory): a new kernel
   replays the code cells that had passed, check cells excepted, so that later
   exercises are still graded. The grader reads at most :data:`MAX_OUTPUT`
   characters of output per cell, and the whole run has a budget, after which the
   cells not reached fail.
4. **Score**: an exercise earns the points of each of its check cells that passed: it
   raised nothing (according to the kernel's reply, not only its output) and printed
   its verdict line, one starting with ``✔``. Its message is the first failing
   check's error line, with the check's hint (``NotImplementedError: merge``,
   ``AssertionError: merge: wrong result — hint: ...``, ``timed out after 60 s``) or,
   when all pass, what the checks printed.

What this stops: editing, deleting or adding check cells; top-level code in the
student's notebook that patches the checks (``ch01.check_merge = ...``), hides errors
(``get_ipython().set_custom_exc(...)``) or rewrites later cells (IPython input
transformers); submitting ``llmkit``'s own function. What it does not: the student's
functions still run in the kernel that runs the checks, and code inside them (or run
while defining them: decorators, default values, class bodies) can still tamper with
the checks. This is a self-assessment and homework tool, not a sandbox.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import csv
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_output

from .checks import SEED_ENV
from .labformat import (
    LabError,
    LabSpec,
    is_check_cell,
    is_exercise_cell,
    load_lab_spec,
    solution_files,
)
from .notebooks import read_notebook

__all__ = [
    "DEFAULT_TIMEOUT",
    "OUTPUT_CAP_SOURCE",
    "MAX_OUTPUT",
    "VERDICT",
    "CellResult",
    "RunResult",
    "ExerciseScore",
    "Submission",
    "LabCatalog",
    "NotALab",
    "default_labs_dir",
    "default_solutions_dir",
    "lab_seed",
    "identify_lab",
    "collect_student_code",
    "make_graded_notebook",
    "run_graded",
    "error_summary",
    "has_verdict",
    "grade_file",
    "grade_paths",
    "expand_paths",
    "format_report",
    "to_json",
    "write_csv",
]

DEFAULT_TIMEOUT = 60.0
_NN_RE = re.compile(r"^(\d+)([a-z]?)_")  # 03b_modern: (3, "b")
#: The id of the cell that ``llmkit grade`` puts first in the graded notebook.
OUTPUT_CAP_ID = "llmkit-grade-output-cap"
#: Characters a cell may write to each of stdout and stderr before the rest is dropped
#: in the kernel (the last :data:`OUTPUT_TAIL` of them are still shown at its end).
OUTPUT_LIMIT = 1_000_000
OUTPUT_TAIL = 10_000

#: The first cell of every graded notebook: it wraps ``sys.stdout`` and ``sys.stderr``
#: so that each cell forwards at most ``limit`` characters per stream to the grader and
#: keeps only the last ``keep`` of the rest, printed with a note when the cell ends (a
#: check's verdict line still gets through). It also keeps IPython from storing every
#: write in its output history. Output written below Python (``os.write``, C code) is
#: not seen here; the grader caps what it reads as well (:data:`MAX_OUTPUT`).
OUTPUT_CAP_SOURCE = f"""\
# llmkit grade: cap what each cell prints, so that a print loop cannot flood the grader
def _llmkit_cap_output(limit={OUTPUT_LIMIT}, keep={OUTPUT_TAIL}):
    import sys

    class CappedStream:
        def __init__(self, stream):
            self._stream, self._used, self._dropped, self._tail = stream, 0, 0, ""

        @property
        def write(self):
            return self._write

        @write.setter
        def write(self, value):
            pass  # IPython's output history would keep every write in memory

        def _write(self, text, *args, **kwargs):
            if not isinstance(text, str):
                return self._stream.write(text, *args, **kwargs)
            n, room = len(text), limit - self._used
            if n <= room:
                self._used += n
                return self._stream.write(text)
            if room > 0:
                self._stream.write(text[:room])
                self._used, text = limit, text[room:]
            self._dropped += len(text)
            self._tail = (self._tail + text[-keep:])[-keep:]
            return n

        def writelines(self, lines):
            for line in lines:
                self._write(line)

        def start(self, *args):
            self._used, self._dropped, self._tail = 0, 0, ""

        def finish(self, *args):
            if self._dropped:
                dropped = self._dropped - len(self._tail)
                note = f"\\n[llmkit grade: {{dropped:,}} characters of output dropped]\\n"
                self._stream.write(note + self._tail)
                self._stream.flush()
            self.start()

        def __getattr__(self, name):
            return getattr(self._stream, name)

    shell = get_ipython()
    for name in ("stdout", "stderr"):
        capped = CappedStream(getattr(sys, name))
        setattr(sys, name, capped)
        shell.events.register("pre_run_cell", capped.start)
        shell.events.register("post_run_cell", capped.finish)


_llmkit_cap_output()
del _llmkit_cap_output
"""


class NotALab(ValueError):
    """The notebook is not one of the course's labs."""


# --------------------------------------------------------------------- catalog


def _beside_package(name: str) -> Path:
    here = Path(name)
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / name


def default_labs_dir() -> Path:
    """``./labs`` if it exists, else the ``labs/`` next to the package's repo."""
    return _beside_package("labs")


def default_solutions_dir() -> Path:
    """``./solutions`` if it exists, else the ``solutions/`` next to the package's repo."""
    return _beside_package("solutions")


def lab_seed(name: str) -> int:
    """The ``LLMKIT_CHECK_SEED`` the grader uses for lab ``name`` (a CRC32 of the name)."""
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


class LabCatalog:
    """The labs of the course, read lazily from ``NN_*.ipynb`` in ``folder``.

    ``folder`` holds the official notebooks: the labs (``labs/``, the default of
    ``llmkit grade``) or the solutions; grading takes from them only the check cells
    and the cells that are not exercises, which are the same in both.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.paths = {p.stem: p for p in solution_files(self.folder)}
        self._specs: dict[str, LabSpec] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    def spec(self, name: str) -> LabSpec:
        """The lab's spec (``LabError`` if its notebook breaks the conventions)."""
        if name not in self._specs:
            self._specs[name] = load_lab_spec(self.paths[name])
        return self._specs[name]

    def cell_ids(self, name: str) -> set[str]:
        """The cell ids of lab ``name`` (empty if its notebook is broken)."""
        try:
            return {c.id for c in self.spec(name).nb.cells}
        except LabError:
            return set()


def _same_number(catalog: LabCatalog, path: str | Path) -> list[str]:
    m = _NN_RE.match(Path(path).name)
    if not m:
        return []
    number = (int(m.group(1)), m.group(2))
    return [
        n
        for n in catalog.names
        if (k := _NN_RE.match(n)) is not None and (int(k.group(1)), k.group(2)) == number
    ]


def identify_lab(nb: NotebookNode, path: str | Path, catalog: LabCatalog) -> str:
    """Which lab ``nb`` (read from ``path``) is; ``NotALab`` with a clear message if none."""
    known = ", ".join(catalog.names) or "(none)"
    meta = nb.get("metadata", {}).get("llmkit", {})
    claimed = meta.get("lab") if isinstance(meta, dict) else None
    if claimed is not None:
        if claimed in catalog.paths:
            return claimed
        raise NotALab(
            f"not a lab of this course: {path} says it is lab {claimed!r}; known labs: {known}"
        )
    ids = {c.get("id") for c in nb.get("cells", []) if c.get("id")}
    same = _same_number(catalog, path)
    if len(same) == 1 and ids & catalog.cell_ids(same[0]):
        return same[0]
    best, best_score = None, 0.0
    for name in catalog.names:
        lab_ids = catalog.cell_ids(name)
        score = len(ids & lab_ids) / max(1, len(lab_ids))
        if score > best_score:
            best, best_score = name, score
    if best is not None and best_score >= 0.5:
        return best
    if len(same) == 1:
        raise NotALab(
            f"not a lab of this course: {path} is named like lab {same[0]} but has none of "
            f"its cells (no cell id in common; is it a copy of another notebook?); "
            f"known labs: {known}"
        )
    raise NotALab(
        f"not a lab of this course: {path} (no metadata.llmkit.lab, no known NN_ file-name "
        f"prefix, no matching cells); known labs: {known}"
    )


# --------------------------------------------------------------- student code


def _python(source: str) -> str:
    """``source`` with IPython syntax (magics, ``!cmd``, ``x?``) turned into Python."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with the kernel
        return source
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - left to ast.parse to complain about
        return source


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(_python(source))
    except (SyntaxError, ValueError):
        return None


def _import_bindings(node: ast.Import | ast.ImportFrom) -> dict[str, tuple]:
    """``{bound name: what it is bound to}`` for an import statement."""
    out: dict[str, tuple] = {}
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.asname:
                out[a.asname] = ("module", a.name)
            else:
                top = a.name.split(".")[0]
                out[top] = ("module", top)
    else:
        module = "." * node.level + (node.module or "")
        for a in node.names:
            out[a.asname or a.name] = ("from", module, a.name)
    return out


def _bound_names(node: ast.AST) -> set[str]:
    """Names a top-level statement binds in the notebook's namespace (not inside the
    functions and classes it defines)."""
    names: set[str] = set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
            for d in n.decorator_list:
                visit(d)
            return
        if isinstance(n, ast.Lambda):
            return
        if isinstance(n, ast.Import | ast.ImportFrom):
            names.update(k for k in _import_bindings(n) if k != "*")
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            names.add(n.id)
        elif isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return names


def _is_constant(node: ast.stmt) -> bool:
    """``NAME = <literal>`` (or ``NAME: T = <literal>``) with a literal_eval-able value."""
    if isinstance(node, ast.Assign):
        ok = len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        value = node.value
    elif isinstance(node, ast.AnnAssign):
        ok = isinstance(node.target, ast.Name) and node.value is not None and node.simple
        value = node.value
    else:
        return False
    if not ok:
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


_LINE_END = re.compile(r"(?<=\r\n)|(?<=\n)|(?<=\r)(?!\n)")
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _statement_source(source: str, tree: ast.Module, node: ast.stmt) -> str:
    """The text of one top-level statement (decorators included); ``ast.unparse`` when
    it shares a line with another statement (``import os; os.system(...)``)."""
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno or node.lineno
    shared = any(
        other is not node and other.lineno <= end and (other.end_lineno or other.lineno) >= start
        for other in tree.body
    )
    if shared:
        return ast.unparse(node) + "\n"
    # split as the tokenizer does (str.splitlines also splits at \f, \u2028, ...)
    lines = _LINE_END.split(source)[start - 1 : end]
    text = "".join(lines)
    return text if text.endswith("\n") else text + "\n"


def _official_bindings(spec: LabSpec) -> tuple[set[str], dict[str, tuple]]:
    """Names bound by the official non-exercise and check cells, and the imports among
    them (``{name: binding}``)."""
    names: set[str] = set()
    imports: dict[str, tuple] = {}
    for cell in spec.nb.cells:
        if cell.get("cell_type") != "code" or is_exercise_cell(cell):
            continue
        tree = _parse(cell.get("source", ""))
        if tree is None:
            continue
        for node in tree.body:
            names |= _bound_names(node)
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.update(_import_bindings(node))
    return names, imports


def _llmkit_imports(node: ast.AST, official: dict[str, tuple]) -> list[str]:
    """``llmkit`` names imported anywhere in ``node`` (inside functions too), except
    top-level imports the official notebook makes as well."""
    found = []
    for n in ast.walk(node):
        if not isinstance(n, ast.Import | ast.ImportFrom):
            continue
        same = official if n is node else {}
        binds = _import_bindings(n)
        for a in n.names:
            bound = a.asname or (a.name if isinstance(n, ast.ImportFrom) else a.name.split(".")[0])
            if bound in same and same[bound] == binds.get(bound):
                continue
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                if n.module.split(".")[0] == "llmkit":
                    found.append(f"{n.module}.{a.name}")
            elif isinstance(n, ast.Import) and a.name.split(".")[0] == "llmkit":
                found.append(a.name)
    return found


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def collect_student_code(
    student: NotebookNode, spec: LabSpec
) -> tuple[list[tuple[str, str]], list[str]]:
    """The student's code that is graded, and notes on what was left out.

    Returns ``(statements, notes)``: ``statements`` is a list of ``(origin, source)``,
    one per kept top-level statement, in notebook order with ``from __future__``
    imports first; ``origin`` names the student's cell (by id if it has one). See the
    module doc for what is kept. The student's copies of official cells other than
    exercises count too, but what they hold besides definitions is not reported (the
    official cell runs anyway); unchanged copies are skipped.
    """
    official = {c.get("id"): c for c in spec.nb.cells if c.get("id")}
    official_names, official_imports = _official_bindings(spec)
    future: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    ignored: list[int] = []
    replaced: list[str] = []
    skipped: list[str] = []
    uses_llmkit: list[str] = []
    changed_checks: list[int] = []
    for index, cell in enumerate(student.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        cid = cell.get("id")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        twin = official.get(cid)
        if is_check_cell(cell) or cid in spec.check_ids:
            if twin is None or twin.get("source", "") != source:
                changed_checks.append(index + 1)
            continue
        plain = twin is not None and twin.get("cell_type") == "code" and not is_exercise_cell(twin)
        if plain and twin.get("source", "") == source:
            continue  # an unchanged copy of an official cell: it runs as it is
        where = f"cell {index + 1}" + (f" (id {cid!r})" if cid else "")
        origin = f"cell with id {cid!r}" if cid else f"cell {index + 1}"
        python = _python(source)
        try:
            tree = ast.parse(python)
        except (SyntaxError, ValueError) as exc:
            line = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            skipped.append(f"{where}{line}: {getattr(exc, 'msg', str(exc))}")
            continue
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                future.append((origin, _statement_source(python, tree, node)))
                continue
            if not (isinstance(node, _KEPT) or _is_constant(node)):
                if not plain:
                    ignored.append(index + 1)
                continue
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                replaced.append(f"from {node.module} import *")
                continue
            clash = _bound_names(node) & official_names
            if isinstance(node, ast.Import | ast.ImportFrom):
                binds = _import_bindings(node)
                clash = {n for n in clash if official_imports.get(n) != binds.get(n)}
            if clash:
                replaced.extend(sorted(clash))
                continue
            uses_llmkit += _llmkit_imports(node, official_imports)
            kept.append((origin, _statement_source(python, tree, node)))
    notes = []
    if ignored:
        where = sorted(set(ignored))
        cells = ("cells " if len(where) > 1 else "cell ") + ", ".join(map(str, where))
        notes.append(
            f"ignored {_plural(len(ignored), 'top-level statement')} ({cells}): only "
            "imports, functions, classes and constants (NAME = literal) are graded"
        )
    if replaced:
        notes.append(
            "ignored what would replace names the lab itself defines: "
            + ", ".join(dict.fromkeys(replaced))
        )
    for s in skipped:
        notes.append(f"skipped {s} (not valid Python)")
    if changed_checks:
        cells = ", ".join(map(str, changed_checks))
        notes.append(
            f"ignored check {'cells' if len(changed_checks) > 1 else 'cell'} {cells}: "
            "they differ from the official checks, which are graded instead"
        )
    if uses_llmkit:
        notes.append(
            "imports from llmkit: "
            + ", ".join(dict.fromkeys(uses_llmkit))
            + " (allowed, except what an exercise lists as off limits: an exercise whose"
            " check saw one scored nothing, as its message says)"
        )
    seen: set[str] = set()
    future = [f for f in future if not (f[1] in seen or seen.add(f[1]))]
    return future + kept, notes


# --------------------------------------------------------------- graded notebook


def _graded(student: NotebookNode, spec: LabSpec) -> tuple[NotebookNode, list[str]]:
    statements, notes = collect_student_code(student, spec)

    def submitted(prefix: str) -> list[NotebookNode]:
        return [
            new_code_cell(
                f"# from your {origin}\n{source}",
                id=f"{prefix}-s{k}",
                metadata={"llmkit": {"submitted": origin}},
            )
            for k, (origin, source) in enumerate(statements, 1)
        ]

    cells = [new_code_cell(OUTPUT_CAP_SOURCE, id=OUTPUT_CAP_ID)]
    placed = False
    for cell in spec.nb.cells:
        c = copy.deepcopy(cell)
        if is_exercise_cell(c):
            if not placed:
                cells += submitted(c.get("id") or "exercise")
                placed = True
            c["source"] = "# (graded: your code runs at the first exercise)"
        elif is_check_cell(c) and not placed:  # a check before any exercise cell
            cells += submitted("submitted")
            placed = True
        cells.append(c)
    if not placed:
        cells += submitted("submitted")
    for c in cells:
        if c.get("cell_type") == "code":
            c["outputs"] = []
            c["execution_count"] = None
    nb = copy.deepcopy(spec.nb)
    nb.cells = cells
    return nb, notes


def make_graded_notebook(student: NotebookNode, spec: LabSpec) -> NotebookNode:
    """The notebook that is executed to grade ``student`` against lab ``spec``.

    A copy of the official notebook ``spec.nb`` (every non-exercise cell and check
    cell verbatim, in order; outputs cleared) whose exercise cells are emptied, with
    the student's graded code (:func:`collect_student_code`, one cell per statement)
    where the first exercise cell was, and the output cap cell
    (:data:`OUTPUT_CAP_SOURCE`) first. Nothing else of the student's notebook is used.
    """
    return _graded(student, spec)[0]


# --------------------------------------------------------------------- execution


@dataclass
class CellResult:
    """The outcome of one code cell of a graded run."""

    passed: bool
    message: str
    timed_out: bool = False


@dataclass
class RunResult:
    """The outcome of executing a graded notebook."""

    checks: dict[str, CellResult] = field(default_factory=dict)  # by official check id
    other_failures: list[str] = field(default_factory=list)  # non-check cells that failed
    error: str | None = None  # the run itself broke (no results at all)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what of the student's code was left out
    restarts: int = 0  # kernels started after the first one died or hung


#: The verdict mark a check cell's passing line starts with.
VERDICT = "✔"
#: Characters of output (stream text and rich display data together) the grader reads
#: per cell; the rest is dropped, the kept text ending with a note.
MAX_OUTPUT = 4_000_000
#: Seconds a kernel gets, after a timed-out cell was interrupted, to answer again;
#: a kernel that does not (it swallows ``KeyboardInterrupt``, blocks in C) is killed.
KILL_GRACE = 5.0
#: The budget of a graded run: ``BUDGET_PER_CELL`` seconds plus the per-cell timeout
#: per code cell, plus ``BUDGET_BASE`` seconds; cells not reached by then fail.
BUDGET_PER_CELL = 30.0
BUDGET_BASE = 120.0
#: Seconds to wait for a kernel to start.
STARTUP_TIMEOUT = 120.0
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TIMEOUT_KEY = "llmkit_grade_timeout"


def missing_tools() -> str | None:
    """Name the packages grading needs but cannot import (None if all are there)."""
    import importlib.util

    gone = [m for m in ("nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
    return " and ".join(gone) or None


def error_summary(ename: str, evalue: str) -> str:
    """``<ename>: <first line>``, plus `` — <the line starting with hint:>`` if any."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(evalue)).splitlines() if ln.strip()]
    if not lines:
        return ename
    hint = next((ln for ln in lines[1:] if ln.startswith("hint:")), None)
    first = f"{ename}: {lines[0]}"
    return f"{first} — {hint}" if hint else first


def has_verdict(text: str) -> bool:
    """Whether ``text`` has a line starting with the check's verdict mark ``✔``."""
    return any(ln.startswith(VERDICT) for ln in _ANSI.sub("", text).splitlines())


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _kernel_env(seed: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["LLMKIT_PROFILE"] = "smoke"
    if not env.get(SEED_ENV, "").strip():
        env[SEED_ENV] = str(seed)
    return env


def _grading_client_class():
    from nbclient import NotebookClient

    class GradingClient(NotebookClient):
        """nbclient's client, reading at most ``max_output`` characters of output per
        cell (see :data:`MAX_OUTPUT`; the kernel's own cap, :data:`OUTPUT_CAP_SOURCE`,
        does not see what is written below Python). Of the stream text dropped it keeps
        the last :data:`OUTPUT_TAIL` characters per stream and up to 100 verdict lines
        (:meth:`finish_cell` adds them after the rest, when output was dropped), so a
        check's verdict line still counts after a flood."""

        def __init__(self, nb, max_output: int = MAX_OUTPUT, **kw):
            super().__init__(nb, **kw)
            self.max_output = max_output
            self.start_cell()

        def start_cell(self) -> None:
            self.budget, self.dropped = self.max_output, 0
            self.tails: dict[str, str] = {}
            self.verdicts: dict[str, list[str]] = {}

        def finish_cell(self, cell: NotebookNode) -> None:
            for name, tail in self.tails.items():
                note = f"\n[llmkit grade: {self.dropped:,} characters of output dropped]\n"
                verdicts = "".join(f"\n{v}" for v in self.verdicts.get(name, []))
                text = note + tail + verdicts + "\n"
                cell.setdefault("outputs", []).append(new_output("stream", name=name, text=text))
            self.tails = {}

        def output(self, outs, msg, display_id, cell_index):
            if not self._within_budget(msg):
                return None
            return super().output(outs, msg, display_id, cell_index)

        def _drop(self, name: str, text: str) -> None:
            self.dropped += len(text)
            self.tails[name] = (self.tails.get(name, "") + text[-OUTPUT_TAIL:])[-OUTPUT_TAIL:]

        def _note_verdicts(self, name: str, text: str) -> None:
            # judged per message too: output written below Python (os.write) reaches
            # the grader late and may run into the verdict line's start when joined
            if VERDICT in text:
                kept = self.verdicts.setdefault(name, [])
                for line in text.splitlines():
                    if len(kept) < 100 and has_verdict(line):
                        kept.append(_ANSI.sub("", line)[:OUTPUT_TAIL].strip())

        def _within_budget(self, msg: dict) -> bool:
            kind = msg.get("msg_type")
            content = msg.get("content") or {}
            if kind == "stream":
                text, name = content.get("text", ""), str(content.get("name", "stdout"))
                if not isinstance(text, str):
                    return True
                self._note_verdicts(name, text)
                if self.budget <= 0:
                    self._drop(name, text)
                    return False
                if len(text) > self.budget:
                    self._drop(name, text[self.budget :])
                    content["text"] = text[: self.budget]
                    self.budget = 0
                    return True
                self.budget -= len(text)
                return True
            if kind in ("display_data", "execute_result"):
                data = content.get("data") or {}
                size = sum(
                    len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values()
                )
                if size > self.budget:
                    self.dropped += size
                    self.budget = 0
                    return False
                self.budget -= size
            elif kind == "error":  # always kept, but a huge traceback is cut
                tb = content.get("traceback") or []
                if sum(len(x) for x in tb) > OUTPUT_TAIL:
                    content["traceback"] = [x[:OUTPUT_TAIL] for x in tb[-10:]]
            return True

    return GradingClient


class _Kernel:
    """One graded run's kernel, run by nbclient: replaced when it dies or hangs."""

    def __init__(self, nb: NotebookNode, env: dict[str, str], cwd: str, timeout: float):
        self.nb, self.env, self.cwd, self.timeout = nb, env, cwd, timeout
        self.client = None
        self.reply: dict | None = None
        self.pids: list[int] = []
        self.restarts = 0

    async def start(self) -> None:
        from .notebooks import current_env_kernel_manager

        self.client = _grading_client_class()(
            self.nb,
            km=current_env_kernel_manager(),
            timeout=self.timeout,
            interrupt_on_timeout=True,
            # with interrupt_on_timeout, nbclient answers a timed-out cell with this reply
            # once it has interrupted the kernel (instead of waiting for the kernel's)
            error_on_timeout={"ename": "TimeoutError", "evalue": "", _TIMEOUT_KEY: True},
            allow_errors=True,
            startup_timeout=STARTUP_TIMEOUT,
            shutdown_kernel="immediate",
            record_timing=False,
            store_widget_state=False,
            resources={"metadata": {"path": self.cwd}},
            on_cell_executed=self._on_reply,
        )
        # the kernel's own stdout/stderr (os.write to fd 1, C code) go nowhere: ipykernel
        # forwards what matters as messages, and they would flood the grader's terminal
        await self.client.async_start_new_kernel(
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pid = self._pid()
        if pid:
            self.pids.append(pid)
        await self.client.async_start_new_kernel_client()

    def _on_reply(self, cell, cell_index, execute_reply) -> None:
        self.reply = execute_reply

    def _pid(self) -> int | None:
        km = getattr(self.client, "km", None)
        prov = getattr(km, "provisioner", None)
        pid = getattr(prov, "pid", None)
        if pid is None:
            pid = getattr(getattr(prov, "process", None), "pid", None)
        return pid

    async def alive(self) -> bool:
        try:
            return bool(self.client is not None and await self.client.km.is_alive())
        except Exception:  # noqa: BLE001 - a broken manager is a dead kernel
            return False

    async def stop(self) -> None:
        """Kill the kernel (its whole process group: it runs in a session of its own)."""
        client, self.client = self.client, None
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.pids = []
        if client is None:
            return
        for step in (
            lambda: client.km.shutdown_kernel(now=True),
            lambda: client.km.cleanup_resources(),
            lambda: client.kc.stop_channels() if client.kc is not None else None,
        ):
            try:
                await asyncio.wait_for(_maybe_await(step()), 10)
            except Exception:  # noqa: BLE001 - best effort: the processes are gone
                pass

    async def restart(self, replay: Sequence[str], deadline: float) -> None:
        """A new kernel, with ``replay`` (sources of cells that had passed) run in it."""
        await self.stop()
        self.restarts += 1
        await asyncio.wait_for(self.start(), STARTUP_TIMEOUT + 10)
        for source in replay:
            if time.monotonic() > deadline:
                return
            outcome = await self.run_source(source, min(self.timeout, deadline - time.monotonic()))
            if outcome == "dead" or (outcome == "timeout" and not await self.responsive()):
                await self.stop()
                await self.start()  # a bare kernel: what failed once fails again
                return

    async def run_source(self, source: str, timeout: float, *, silent: bool = False) -> str:
        """Run ``source`` outside nbclient's cell bookkeeping: ``ok``, ``error``,
        ``timeout`` (the kernel was interrupted) or ``dead``."""
        from jupyter_core.utils import ensure_async

        kc = self.client.kc
        msg_id = await ensure_async(
            kc.execute(source, silent=silent, store_history=False, allow_stdin=False)
        )
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            wait = min(1.0, deadline - time.monotonic())
            if wait <= 0:
                await _maybe_await(self.client.km.interrupt_kernel())
                return "timeout"
            try:
                msg = await ensure_async(kc.shell_channel.get_msg(timeout=wait))
            except Empty:
                if not await self.alive():
                    return "dead"
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return "ok" if msg["content"].get("status") == "ok" else "error"

    async def responsive(self, grace: float = KILL_GRACE) -> bool:
        """Whether the kernel answers within ``grace`` seconds (after an interrupt)."""
        if not await self.alive():
            return False
        try:
            return await self.run_source("", grace, silent=True) != "timeout" and await self.alive()
        except Exception:  # noqa: BLE001
            return False

    async def run_cell(self, cell: NotebookNode, index: int, check: bool) -> dict:
        """Execute ``nb.cells[index]``; its record (outcome, message, timed_out)."""
        from nbclient.exceptions import DeadKernelError

        client = self.client
        client.start_cell()
        self.reply = None
        try:
            await client.async_execute_cell(cell, index)
            client.finish_cell(cell)
        except DeadKernelError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # nbclient turns a cancellation (Ctrl-C, the run's budget) into this
                raise asyncio.CancelledError from None
            return _record(False, "the kernel died while running this cell")
        except Exception as exc:  # noqa: BLE001 - nbclient or the connection broke
            await self.stop()
            return _record(False, f"{type(exc).__name__}: {_first_line(exc)}".rstrip(": "))
        content = (self.reply or {}).get("content") or {}
        if content.get(_TIMEOUT_KEY):
            if not await self.responsive():
                await self.stop()  # it swallowed the interrupt or blocks in C
            return _record(False, f"timed out after {self.timeout:g} s", timed_out=True)
        outputs = cell.get("outputs", [])
        stdout = "".join(
            o.get("text", "")
            for o in outputs
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        )
        errors = [o for o in outputs if o.get("output_type") == "error"]
        if content.get("status") == "error":
            # the reply says so even when a custom exception handler hid the traceback
            ename, evalue = content.get("ename"), content.get("evalue")
            if not ename and errors:
                ename, evalue = errors[-1].get("ename"), errors[-1].get("evalue")
            return _record(False, error_summary(str(ename or "Error"), str(evalue or "")))
        if content.get("status") == "aborted":
            return _record(False, "the kernel aborted this cell")
        if errors:
            return _record(
                False, error_summary(str(errors[-1].get("ename")), str(errors[-1].get("evalue")))
            )
        if check and not (has_verdict(stdout) or client.verdicts.get("stdout")):
            why = f"the check printed no verdict line (one starting with {VERDICT})"
            return _record(False, why)
        return _record(True, _last_line(stdout))


def _record(passed: bool, message: str, timed_out: bool = False) -> dict:
    return {"passed": passed, "message": message, "timed_out": timed_out}


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


async def _execute(
    graded: NotebookNode,
    seed: int,
    timeout: float,
    budget: float,
    cwd: str,
    records: dict[int, dict],
) -> tuple[str | None, int]:
    """Run the code cells of ``graded`` in order, filling ``records`` (by code-cell
    position) as they end; returns (why the run stopped early or None, kernel restarts).
    """
    deadline = time.monotonic() + budget
    kernel = _Kernel(graded, _kernel_env(seed), cwd, timeout)
    replay: list[str] = []
    stopped: str | None = None
    try:
        try:
            await asyncio.wait_for(kernel.start(), STARTUP_TIMEOUT + 10)
        except Exception as exc:  # noqa: BLE001
            raise _NoKernel(f"could not start a kernel: {type(exc).__name__}: {exc}") from exc
        code = [(i, c) for i, c in enumerate(graded.cells) if c.get("cell_type") == "code"]
        for k, (index, cell) in enumerate(code):
            if time.monotonic() > deadline:
                stopped = f"not run: grading stopped after {budget:g} s"
                break
            if not await kernel.alive():
                try:
                    await asyncio.wait_for(
                        kernel.restart(replay, deadline), STARTUP_TIMEOUT + 10 + budget
                    )
                except Exception as exc:  # noqa: BLE001
                    stopped = f"not run: could not start a new kernel: {type(exc).__name__}"
                    break
            check = is_check_cell(cell)
            records[k] = await kernel.run_cell(cell, index, check)
            if records[k]["passed"] and not check:
                replay.append(cell.get("source", ""))
    finally:
        await kernel.stop()
    return stopped, kernel.restarts


class _NoKernel(RuntimeError):
    pass


def _run_coroutine(coro):
    """Run ``coro`` to completion, also from a thread whose event loop is running
    (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_graded(nb: NotebookNode, spec: LabSpec, *, timeout: float = DEFAULT_TIMEOUT) -> RunResult:
    """Execute the graded notebook of ``nb`` (:func:`make_graded_notebook`) with nbclient.

    Cells run one at a time in a kernel of this environment (``LLMKIT_PROFILE=smoke``,
    ``LLMKIT_CHECK_SEED`` from :func:`lab_seed` unless set), in a temporary folder. A
    cell running past ``timeout`` seconds is interrupted; a kernel that then does not
    answer within :data:`KILL_GRACE` seconds, or that dies, is replaced by a new one in
    which the code cells that had passed (check cells excepted) are run again. The
    whole run stops after ``timeout +`` :data:`BUDGET_PER_CELL` seconds per code cell
    plus :data:`BUDGET_BASE`; cells not reached count as failed.
    """
    graded, notes = _graded(nb, spec)
    code_cells = [c for c in graded.cells if c.get("cell_type") == "code"]
    official = spec.check_ids
    run = RunResult(notes=notes)
    budget = len(code_cells) * (timeout + BUDGET_PER_CELL) + BUDGET_BASE
    start = time.monotonic()
    records: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="llmkit-grade-") as tmp:
        run_all = _execute(graded, lab_seed(spec.name), timeout, budget, tmp, records)
        try:
            # the budget is checked between cells; this is the net under it
            stopped, run.restarts = _run_coroutine(
                asyncio.wait_for(run_all, budget + 2 * STARTUP_TIMEOUT + 60)
            )
        except _NoKernel as exc:
            stopped, run.error = "not run", str(exc)
        except TimeoutError:
            stopped = f"not run: grading stopped after {budget:g} s"
    run.seconds = time.monotonic() - start
    why_missing = stopped or "not run"
    for index, cell in enumerate(code_cells):
        rec = records.get(index)
        cid = cell.get("id")
        result = CellResult(False, why_missing) if rec is None else CellResult(**rec)
        if cid in official:
            run.checks[cid] = result
        elif rec is not None and not rec["passed"]:
            run.other_failures.append(f"code cell {index + 1} (id {cid!r}): {result.message}")
    return run


# ----------------------------------------------------------------------- scoring


@dataclass
class ExerciseScore:
    points: float
    max_points: float
    message: str


@dataclass
class Submission:
    """The grade of one submitted file."""

    file: str
    lab: str | None = None
    score: float | None = None
    max_score: float | None = None
    exercises: dict[str, ExerciseScore] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # what of the code was not graded

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "lab": self.lab,
            "score": _num(self.score),
            "max_score": _num(self.max_score),
            "exercises": {
                k: {
                    "points": _num(v.points),
                    "max_points": _num(v.max_points),
                    "message": v.message,
                }
                for k, v in self.exercises.items()
            },
            "error": self.error,
            "notes": list(self.notes),
        }


def _num(x):
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def score_run(spec: LabSpec, run: RunResult) -> dict[str, ExerciseScore]:
    """Points and message per exercise, from the check results of ``run``."""
    scores: dict[str, ExerciseScore] = {}
    for ex in spec.exercises:
        checks = [c for c in spec.checks if c.exercise == ex]
        if not checks:
            continue
        points, failures, printed = 0, [], []
        for c in checks:
            r = run.checks.get(c.id) or CellResult(False, "not run")
            if r.passed:
                points += c.points
                if r.message:
                    printed.append(r.message)
            else:
                failures.append(r.message or "failed")
        message = failures[0] if failures else "; ".join(printed) or "passed"
        scores[ex] = ExerciseScore(points, sum(c.points for c in checks), message)
    return scores


def grade_file(
    path: str | Path, catalog: LabCatalog, *, timeout: float = DEFAULT_TIMEOUT
) -> Submission:
    """Grade one submission; never raises for a broken or foreign notebook."""
    sub = Submission(file=str(path))
    try:
        nb = read_notebook(path)
    except Exception as exc:
        sub.error = f"cannot read notebook: {type(exc).__name__}: {_first_line(exc)}"
        same = _same_number(catalog, path)
        sub.lab = same[0] if len(same) == 1 else None
        return sub
    try:
        sub.lab = identify_lab(nb, path, catalog)
        spec = catalog.spec(sub.lab)
    except NotALab as exc:
        sub.error = str(exc)
        return sub
    except LabError as exc:
        sub.error = f"the official notebook of lab {sub.lab} is broken: {exc.problems[0]}"
        return sub
    sub.max_score = _num(float(spec.total))
    try:
        run = run_graded(nb, spec, timeout=timeout)
    except Exception as exc:
        sub.error = f"grading failed: {type(exc).__name__}: {_first_line(exc)}"
        return sub
    sub.notes = list(run.notes)
    sub.exercises = score_run(spec, run)
    sub.score = _num(float(sum(e.points for e in sub.exercises.values())))
    if run.error:
        sub.error = run.error.splitlines()[0]
    return sub


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for its ``*.ipynb`` files (sorted, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.ipynb") if q.is_file()))
        else:
            out.append(p)
    return out


def grade_paths(
    paths: Sequence[str | Path],
    catalog: LabCatalog,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int = 1,
    progress=None,
) -> list[Submission]:
    """Grade files and folders (see :func:`expand_paths`), ``jobs`` at a time, in order."""
    files = expand_paths(paths)

    def one(p: Path) -> Submission:
        if progress is not None:
            print(f"grading {p} ...", file=progress, flush=True)
        if not p.exists():
            return Submission(file=str(p), error="no such file")
        return grade_file(p, catalog, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, files))


# ------------------------------------------------------------------------ output


def _fmt(x) -> str:
    if x is None:
        return "-"
    x = _num(x)
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_report(subs: Sequence[Submission], width: int | None = None) -> str:
    """A small table per submission, then its total (messages cut to fit ``width``)."""
    if width is None:
        width = shutil.get_terminal_size((120, 24)).columns
    blocks = []
    for s in subs:
        head = f"{s.file}" + (f"  (lab {s.lab})" if s.lab else "")
        lines = [head]
        if s.exercises:
            name_w = max(8, *(len(k) for k in s.exercises))
            pts = {k: f"{_fmt(v.points)}/{_fmt(v.max_points)}" for k, v in s.exercises.items()}
            pts_w = max(6, *(len(v) for v in pts.values()))
            lines.append(f"  {'exercise':<{name_w}}  {'points':>{pts_w}}  message")
            room = max(40, width - name_w - pts_w - 6)
            for k, v in s.exercises.items():
                msg = v.message if len(v.message) <= room else v.message[: room - 3] + "..."
                lines.append(f"  {k:<{name_w}}  {pts[k]:>{pts_w}}  {msg}")
            total = f"{_fmt(s.score)}/{_fmt(s.max_score)}"
            lines.append(f"  {'total':<{name_w}}  {total:>{pts_w}}")
        if s.error:
            lines.append(f"  error: {s.error}")
        for note in s.notes:
            lines.append(f"  note: {note}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_json(subs: Sequence[Submission]) -> list[dict]:
    """The ``--json`` structure: one dict per submission."""
    return [s.as_dict() for s in subs]


def write_csv(subs: Sequence[Submission], path: str | Path) -> None:
    """One row per file: file, lab, score, max_score, one column per exercise, error,
    notes (joined with ``; ``)."""
    exercises: list[str] = []
    for s in subs:
        for k in s.exercises:
            if k not in exercises:
                exercises.append(k)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "lab", "score", "max_score", *exercises, "error", "notes"])
        for s in subs:
            row = [s.file, s.lab or "", _csv(s.score), _csv(s.max_score)]
            row += [_csv(s.exercises[k].points) if k in s.exercises else "" for k in exercises]
            row.append(s.error or "")
            row.append("; ".join(s.notes))
            w.writerow(row)


def _csv(x) -> str:
    return "" if x is None else _fmt(x)


def main_grade(
    paths: Sequence[str],
    *,
    labs: str | Path | None = None,
    solutions: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    as_json: bool = False,
    csv_path: str | None = None,
    jobs: int = 1,
    out=None,
    err=None,
) -> int:
    """``llmkit grade``: 0 all graded, 1 some file could not be graded, 2 usage error.

    The official notebooks come from ``labs`` (default :func:`default_labs_dir`) or,
    instead, from ``solutions``.
    """
    err = sys.stderr if err is None else err
    missing = missing_tools()
    if missing:
        print(f"error: llmkit grade needs {missing} (pip install -e '.[dev]')", file=err)
        return 2
    if labs is not None and solutions is not None:
        print("error: give --labs or --solutions, not both", file=err)
        return 2
    if solutions is not None:
        folder = Path(solutions)
    else:
        folder = Path(labs) if labs is not None else default_labs_dir()
    catalog = LabCatalog(folder)
    if not catalog.names:
        print(f"error: no labs found: no NN_*.ipynb in {folder}", file=err)
        return 2
    files = expand_paths(paths)
    if not files:
        print("error: no notebooks to grade", file=err)
        return 2
    subs = grade_paths(files, catalog, timeout=timeout, jobs=jobs, progress=err)
    if as_json:
        print(json.dumps(to_json(subs), indent=2, ensure_ascii=False), file=out)
    else:
        print(format_report(subs), file=out)
    if csv_path:
        write_csv(subs, csv_path)
        print(f"wrote {csv_path} ({len(subs)} row(s))", file=err)
    return 1 if any(s.error for s in subs) else 0

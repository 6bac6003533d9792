"""Grading submissions: ``llmkit grade``.

For each submitted notebook:

1. **Identify the lab**: ``metadata.llmkit.lab`` (set by ``llmkit labs build``), else the
   file name's ``NN_`` prefix, else the solution sharing the most cell ids (at least
   half of the solution's cells). Anything else is "not a lab of this course".
2. **Build the graded notebook**: the student's cells, minus every check cell (tagged
   ``grade``, or with ``metadata.llmkit.points``, or whose id is an official check
   cell's id), plus every official check cell from ``solutions/`` put back after the
   student cell with the id of the cell preceding it in the solution (appended at the
   end, in official order, when that cell is gone). Outputs are cleared. Editing or
   deleting check cells therefore changes nothing.
3. **Execute** it with nbval in a subprocess (``python -m pytest --nbval-lax``,
   ``LLMKIT_PROFILE=smoke``, a per-cell timeout, in a temporary folder) with the plugin
   :mod:`llmkit.course._nbval_plugin`, which records each cell's outcome and survives
   timeouts and dead kernels.
4. **Score**: an exercise earns the points of each of its check cells that passed. Its
   message is the first failing check's error line (``NotImplementedError: merge``,
   ``AssertionError: <hint>``, ``timed out after 60 s``) or, when all pass, what the
   checks printed.

Grading trusts the kernel no more than needed (pass/fail is decided outside it), but
student code runs in the same kernel as the checks: this is a self-assessment and
homework tool, not a sandbox against a student who attacks the checks themselves.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode

from .labs import LabError, LabSpec, is_check_cell, load_lab_spec, solution_files
from .notebooks import read_notebook

__all__ = [
    "DEFAULT_TIMEOUT",
    "CellResult",
    "RunResult",
    "ExerciseScore",
    "Submission",
    "LabCatalog",
    "NotALab",
    "default_solutions_dir",
    "identify_lab",
    "make_graded_notebook",
    "run_graded",
    "grade_file",
    "grade_paths",
    "expand_paths",
    "format_report",
    "to_json",
    "write_csv",
]

DEFAULT_TIMEOUT = 60.0
_NN_RE = re.compile(r"^(\d+)_")


class NotALab(ValueError):
    """The notebook is not one of the course's labs."""


# --------------------------------------------------------------------- catalog


def default_solutions_dir() -> Path:
    """``./solutions`` if it exists, else the ``solutions/`` next to the package's repo."""
    here = Path("solutions")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "solutions"


class LabCatalog:
    """The labs of the course, read lazily from ``solutions/NN_*.ipynb``."""

    def __init__(self, solutions: str | Path):
        self.solutions = Path(solutions)
        self.paths = {p.stem: p for p in solution_files(self.solutions)}
        self._specs: dict[str, LabSpec] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self.paths)

    def spec(self, name: str) -> LabSpec:
        """The lab's spec (``LabError`` if its solution breaks the conventions)."""
        if name not in self._specs:
            self._specs[name] = load_lab_spec(self.paths[name])
        return self._specs[name]


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
    m = _NN_RE.match(Path(path).name)
    if m:
        same = [n for n in catalog.names if int(_NN_RE.match(n).group(1)) == int(m.group(1))]
        if len(same) == 1:
            return same[0]
    ids = {c.get("id") for c in nb.get("cells", []) if c.get("id")}
    best, best_score = None, 0.0
    for name in catalog.names:
        try:
            spec = catalog.spec(name)
        except LabError:
            continue
        sol_ids = {c.id for c in spec.nb.cells}
        score = len(ids & sol_ids) / max(1, len(sol_ids))
        if score > best_score:
            best, best_score = name, score
    if best is not None and best_score >= 0.5:
        return best
    raise NotALab(
        f"not a lab of this course: {path} (no metadata.llmkit.lab, no known NN_ file-name "
        f"prefix, no matching cells); known labs: {known}"
    )


# --------------------------------------------------------------- graded notebook


def make_graded_notebook(student: NotebookNode, spec: LabSpec) -> NotebookNode:
    """The student's notebook with its check cells replaced by the official ones.

    Every code cell's outputs and execution count are cleared. Each official check cell
    keeps its id and metadata; the other cells are the student's.
    """
    official = spec.check_ids
    kept = [
        copy.deepcopy(c)
        for c in student.get("cells", [])
        if not is_check_cell(c) and c.get("id") not in official
    ]
    by_anchor: dict[str | None, list] = {}
    for check in spec.checks:
        by_anchor.setdefault(check.anchor, []).append(check)
    placed: set[str] = set()
    cells = []

    def put(anchor):
        for check in by_anchor.get(anchor, []):
            if check.id not in placed:
                cells.append(copy.deepcopy(check.cell))
                placed.add(check.id)

    put(None)
    for c in kept:
        cells.append(c)
        if c.get("id") is not None:
            put(c.get("id"))
    for check in spec.checks:
        if check.id not in placed:
            cells.append(copy.deepcopy(check.cell))
            placed.add(check.id)
    for c in cells:
        if c.get("cell_type") == "code":
            c["outputs"] = []
            c["execution_count"] = None
    nb = copy.deepcopy(spec.nb)
    nb.cells = cells
    return nb


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


def missing_tools() -> str | None:
    """Name the packages grading needs but cannot import (None if all are there)."""
    import importlib.util

    gone = [m for m in ("pytest", "nbval") if importlib.util.find_spec(m) is None]
    return " and ".join(gone) or None


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["LLMKIT_PROFILE"] = "smoke"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def _kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run_graded(nb: NotebookNode, spec: LabSpec, *, timeout: float = DEFAULT_TIMEOUT) -> RunResult:
    """Execute ``nb`` graded against ``spec`` (official checks) under nbval."""
    graded = make_graded_notebook(nb, spec)
    code_cells = [c for c in graded.cells if c.get("cell_type") == "code"]
    official = spec.check_ids
    run = RunResult()
    with tempfile.TemporaryDirectory(prefix="llmkit-grade-") as tmp:
        tmpdir = Path(tmp)
        nb_path = tmpdir / "submission.ipynb"
        # plain JSON: nbformat.writes would "repair" odd student ids at random
        nb_path.write_text(json.dumps(graded, ensure_ascii=False, indent=1), encoding="utf-8")
        ini = tmpdir / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")
        results = tmpdir / "results.json"
        cmd = [sys.executable, "-m", "pytest", "-q", "-c", str(ini), "--rootdir", str(tmpdir)]
        cmd += ["-p", "no:cacheprovider", "-p", "nbval.plugin"]
        cmd += ["-p", "llmkit.course._nbval_plugin", f"--llmkit-results={results}"]
        cmd += ["--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={timeout:g}"]
        cmd.append(str(nb_path))
        budget = len(code_cells) * (timeout + 30) + 120
        proc = subprocess.Popen(
            cmd,
            cwd=tmpdir,
            env=_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        start = time.monotonic()
        try:
            log, _ = proc.communicate(timeout=budget)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            killed = True
        run.seconds = time.monotonic() - start
        data = {"cells": [], "kernel_pids": []}
        if results.exists():
            try:
                data = json.loads(results.read_text(encoding="utf-8"))
            except ValueError:
                pass
        if killed:
            _kill_pids(data.get("kernel_pids", []))
    records = {r["index"]: r for r in data.get("cells", [])}
    if not records:
        tail = "\n".join((log or "").strip().splitlines()[-15:])
        run.error = f"nbval produced no results (pytest exit {proc.returncode})\n{tail}"
    why_missing = f"not run: grading stopped after {budget:g} s" if killed else "not run"
    for index, cell in enumerate(code_cells):
        rec = records.get(index)
        result = (
            CellResult(rec["outcome"] == "passed", rec.get("message", ""), rec["timed_out"])
            if rec
            else CellResult(False, why_missing)
        )
        cid = cell.get("id")
        if cid in official:
            run.checks[cid] = result
        elif rec is not None and rec["outcome"] == "failed":
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
        m = _NN_RE.match(Path(path).name)
        if m:
            same = [n for n in catalog.names if int(_NN_RE.match(n).group(1)) == int(m.group(1))]
            sub.lab = same[0] if len(same) == 1 else None
        return sub
    try:
        sub.lab = identify_lab(nb, path, catalog)
        spec = catalog.spec(sub.lab)
    except NotALab as exc:
        sub.error = str(exc)
        return sub
    except LabError as exc:
        sub.error = f"the solution of lab {sub.lab} is broken: {exc.problems[0]}"
        return sub
    sub.max_score = _num(float(spec.total))
    try:
        run = run_graded(nb, spec, timeout=timeout)
    except Exception as exc:
        sub.error = f"grading failed: {type(exc).__name__}: {_first_line(exc)}"
        return sub
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
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_json(subs: Sequence[Submission]) -> list[dict]:
    """The ``--json`` structure: one dict per submission."""
    return [s.as_dict() for s in subs]


def write_csv(subs: Sequence[Submission], path: str | Path) -> None:
    """One row per file: file, lab, score, max_score, one column per exercise, error."""
    exercises: list[str] = []
    for s in subs:
        for k in s.exercises:
            if k not in exercises:
                exercises.append(k)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "lab", "score", "max_score", *exercises, "error"])
        for s in subs:
            row = [s.file, s.lab or "", _csv(s.score), _csv(s.max_score)]
            row += [_csv(s.exercises[k].points) if k in s.exercises else "" for k in exercises]
            row.append(s.error or "")
            w.writerow(row)


def _csv(x) -> str:
    return "" if x is None else _fmt(x)


def main_grade(
    paths: Sequence[str],
    *,
    solutions: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    as_json: bool = False,
    csv_path: str | None = None,
    jobs: int = 1,
    out=None,
    err=None,
) -> int:
    """``llmkit grade``: 0 all graded, 1 some file could not be graded, 2 usage error."""
    err = sys.stderr if err is None else err
    missing = missing_tools()
    if missing:
        print(f"error: llmkit grade needs {missing} (pip install -e '.[dev]')", file=err)
        return 2
    sol = Path(solutions) if solutions is not None else default_solutions_dir()
    catalog = LabCatalog(sol)
    if not catalog.names:
        print(f"error: no labs found: no solutions/NN_*.ipynb in {sol}", file=err)
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

"""Labs from solutions: ``llmkit labs build`` and ``llmkit labs check``.

``solutions/NN_name.ipynb`` is the single source of lab ``NN_name``. Its conventions:

- Exercise code sits between a line ``### BEGIN SOLUTION`` and a line
  ``### END SOLUTION`` (any number of ``#``; the lines hold nothing else), indented
  inside a function or class body. A code cell with such regions carries
  ``metadata.llmkit = {"exercise": "<id>"}``. Exercise ids match ``[A-Za-z_][\\w.-]*``
  and are unique across the course (they name the gradebook's columns).
- A check cell is a code cell tagged ``grade`` carrying
  ``metadata.llmkit = {"exercise": "<id>", "points": N}`` (N > 0). An exercise may
  have several check cells; it is worth the sum of their points.
- Cells have stable nbformat 4.5 ids; the lab keeps the solution's ids (grading
  recognises a lab by them).
- Check cells and the cells that are not exercises are identical in the lab and the
  solution, so ``llmkit grade`` can take them from either (``labs/`` by default).

The lab (``labs/NN_name.ipynb``) is the solution with every region, markers included,
replaced by ``raise NotImplementedError("<id>")`` at the ``BEGIN`` line's indentation,
all outputs and execution counts cleared, ``metadata.llmkit.lab = "NN_name"`` set, and
normalised (:mod:`llmkit.course.notebooks`): building twice gives identical bytes.
"""

from __future__ import annotations

import copy
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode

from .notebooks import dumps, normalise, read_notebook, write_notebook

__all__ = [
    "LabError",
    "CheckCell",
    "LabSpec",
    "BEGIN_MARKER",
    "END_MARKER",
    "is_check_cell",
    "llmkit_meta",
    "find_regions",
    "strip_regions",
    "solution_files",
    "load_lab_spec",
    "build_lab",
    "build_labs",
    "check_labs",
]

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)#+[ \t]*BEGIN SOLUTION[ \t]*$")
_END_RE = re.compile(r"^[ \t]*#+[ \t]*END SOLUTION[ \t]*$")
_MARKER_TEXT_RE = re.compile(r"(BEGIN|END) SOLUTION")
_LAB_FILE_RE = re.compile(r"^\d+_.*\.ipynb$")
_EXERCISE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
GRADE_TAG = "grade"
#: A solution line at least this long (stripped) that shows up in a lab is a leak.
LEAK_MIN_CHARS = 16


class LabError(ValueError):
    """A solution notebook breaks the lab conventions; ``problems`` lists each one."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ----------------------------------------------------------------- cell helpers


def llmkit_meta(cell: NotebookNode) -> dict:
    """The cell's ``metadata.llmkit`` dict (empty if absent or malformed)."""
    meta = cell.get("metadata", {}).get("llmkit")
    return meta if isinstance(meta, dict) else {}


def _tags(cell: NotebookNode) -> list:
    tags = cell.get("metadata", {}).get("tags", [])
    return tags if isinstance(tags, list) else []


def is_check_cell(cell: NotebookNode) -> bool:
    """A code cell tagged ``grade`` or carrying ``metadata.llmkit.points``."""
    return cell.get("cell_type") == "code" and (
        GRADE_TAG in _tags(cell) or "points" in llmkit_meta(cell)
    )


def _describe(path: Path | str, index: int, cell: NotebookNode) -> str:
    first = next((ln.strip() for ln in cell.get("source", "").splitlines() if ln.strip()), "")
    if len(first) > 40:
        first = first[:37] + "..."
    return f"{path}, cell {index + 1} (id {cell.get('id')!r}: {first!r})"


@dataclass(frozen=True)
class Region:
    """One solution region: line numbers of its markers and its body."""

    begin: int
    end: int
    indent: str
    body: tuple[str, ...]


def find_regions(source: str, where: str = "cell") -> list[Region]:
    """The solution regions of ``source``; ``LabError`` naming ``where`` if unbalanced."""
    lines = source.splitlines()
    regions: list[Region] = []
    begin: int | None = None
    indent = ""
    for i, line in enumerate(lines):
        m = _BEGIN_RE.match(line)
        if m:
            if begin is not None:
                raise LabError(
                    [
                        f"{where}: unbalanced markers: BEGIN SOLUTION on line {i + 1} "
                        f"while the region opened on line {begin + 1} is still open"
                    ]
                )
            begin, indent = i, m.group("indent")
        elif _END_RE.match(line):
            if begin is None:
                raise LabError(
                    [
                        f"{where}: unbalanced markers: END SOLUTION on line {i + 1} "
                        "without a BEGIN SOLUTION"
                    ]
                )
            regions.append(Region(begin, i, indent, tuple(lines[begin + 1 : i])))
            begin = None
    if begin is not None:
        raise LabError(
            [f"{where}: unbalanced markers: BEGIN SOLUTION on line {begin + 1} has no END SOLUTION"]
        )
    return regions


def strip_regions(source: str, exercise: str, where: str = "cell") -> str:
    """Replace each region of ``source`` (markers included) by a ``raise`` line."""
    regions = find_regions(source, where)
    if not regions:
        return source
    lines = source.splitlines()
    out: list[str] = []
    pos = 0
    for r in regions:
        out.extend(lines[pos : r.begin])
        out.append(f"{r.indent}raise NotImplementedError({json.dumps(exercise)})")
        pos = r.end + 1
    out.extend(lines[pos:])
    text = "\n".join(out)
    return text + "\n" if source.endswith("\n") else text


# ------------------------------------------------------------------- lab specs


@dataclass(frozen=True)
class CheckCell:
    """An official check cell of a lab."""

    id: str
    exercise: str
    points: float
    index: int  # position among the solution's cells
    anchor: str | None  # id of the nearest preceding non-check cell (None: at the top)
    cell: NotebookNode = field(compare=False, repr=False)


@dataclass
class LabSpec:
    """What a solution notebook says about its lab."""

    name: str
    path: Path
    nb: NotebookNode  # the solution, normalised in memory
    checks: list[CheckCell]
    regions: dict[str, list[tuple[str, Region]]]  # exercise -> [(cell id, region)]
    exercises: list[str]  # every exercise id, in order of first appearance

    @property
    def max_points(self) -> dict[str, float]:
        """Points possible per exercise (exercises without check cells have 0)."""
        pts = {e: 0 for e in self.exercises}
        for c in self.checks:
            pts[c.exercise] += c.points
        return pts

    @property
    def total(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def check_ids(self) -> set[str]:
        return {c.id for c in self.checks}


def solution_files(solutions: Path) -> list[Path]:
    """``solutions/NN_*.ipynb``, sorted."""
    if not solutions.is_dir():
        return []
    return sorted(p for p in solutions.iterdir() if _LAB_FILE_RE.match(p.name) and p.is_file())


def load_lab_spec(path: str | Path) -> LabSpec:
    """Read and validate a solution notebook; ``LabError`` lists every problem."""
    path = Path(path)
    try:
        nb = normalise(read_notebook(path))
    except Exception as exc:
        raise LabError([f"{path}: cannot read notebook: {type(exc).__name__}: {exc}"]) from exc
    problems: list[str] = []
    checks: list[CheckCell] = []
    regions: dict[str, list[tuple[str, Region]]] = {}
    exercises: list[str] = []
    anchor: str | None = None

    def note(ex: str) -> None:
        if ex not in exercises:
            exercises.append(ex)

    for i, cell in enumerate(nb.cells):
        where = _describe(path, i, cell)
        meta = llmkit_meta(cell)
        source = cell.get("source", "")
        has_markers = bool(_MARKER_TEXT_RE.search(source))
        if cell.cell_type != "code":
            if has_markers:
                problems.append(f"{where}: solution markers are only allowed in code cells")
            anchor = cell.id
            continue
        if is_check_cell(cell):
            ex, pts = meta.get("exercise"), meta.get("points")
            if GRADE_TAG not in _tags(cell):
                problems.append(f"{where}: has metadata.llmkit.points but is not tagged 'grade'")
            if not isinstance(ex, str) or not _EXERCISE_RE.match(ex):
                problems.append(
                    f"{where}: check cell needs metadata.llmkit.exercise (an id like 'merge'), "
                    f"got {ex!r}"
                )
            elif isinstance(pts, bool) or not isinstance(pts, int | float) or not pts > 0:
                problems.append(
                    f"{where}: check cell needs metadata.llmkit.points > 0, got {pts!r}"
                )
            else:
                checks.append(CheckCell(cell.id, ex, pts, i, anchor, cell))
                note(ex)
            if has_markers:
                problems.append(f"{where}: a check cell must not contain solution markers")
            continue
        anchor = cell.id
        try:
            found = find_regions(source, where)
        except LabError as exc:
            problems.extend(exc.problems)
            continue
        if not found:
            if has_markers:
                problems.append(
                    f"{where}: mentions BEGIN/END SOLUTION but not as a marker line "
                    f"('{BEGIN_MARKER}' alone on its line)"
                )
            continue
        ex = meta.get("exercise")
        if ex is None:
            problems.append(
                f"{where}: has solution markers but no metadata.llmkit.exercise "
                '(set it to {"exercise": "<id>"})'
            )
            continue
        if not isinstance(ex, str) or not _EXERCISE_RE.match(ex):
            problems.append(f"{where}: invalid exercise id {ex!r}")
            continue
        regions.setdefault(ex, []).extend((cell.id, r) for r in found)
        note(ex)
    if problems:
        raise LabError(problems)
    return LabSpec(path.stem, path, nb, checks, regions, exercises)


# ------------------------------------------------------------------------ build


def build_lab(spec: LabSpec) -> NotebookNode:
    """The lab notebook generated from ``spec`` (see module doc)."""
    nb = copy.deepcopy(spec.nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        ex = llmkit_meta(cell).get("exercise")
        if ex and not is_check_cell(cell):
            cell.source = strip_regions(cell.source, ex, _describe(spec.path, i, cell))
    llm = dict(nb.metadata.get("llmkit", {}))
    llm["lab"] = spec.name
    nb.metadata["llmkit"] = llm
    return normalise(nb)


def _extra_labs(solutions: Path, labs: Path) -> list[Path]:
    names = {p.name for p in solution_files(solutions)}
    if not labs.is_dir():
        return []
    return sorted(p for p in labs.iterdir() if _LAB_FILE_RE.match(p.name) and p.name not in names)


def build_labs(solutions: str | Path, labs: str | Path, *, out=None) -> int:
    """Write ``labs/NN_*.ipynb`` for every ``solutions/NN_*.ipynb``; exit status."""
    solutions, labs = Path(solutions), Path(labs)
    files = solution_files(solutions)
    if not files:
        print(f"no solution notebooks (NN_*.ipynb) in {solutions}", file=out)
        return 1
    status = 0
    for sol in files:
        try:
            lab = build_lab(load_lab_spec(sol))
        except LabError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=out)
            status = 1
            continue
        target = labs / sol.name
        changed = write_notebook(lab, target)
        print(f"{target}: {'written' if changed else 'unchanged'}", file=out)
    for extra in _extra_labs(solutions, labs):
        try:
            generated = "lab" in read_notebook(extra).metadata.get("llmkit", {})
        except Exception:
            generated = False
        if generated:
            extra.unlink()
            print(f"{extra}: removed (its solution is gone)", file=out)
        else:
            print(f"warning: {extra} has no solution in {solutions}; left alone", file=out)
    return status


# ------------------------------------------------------------------------ check


def _leaks(spec: LabSpec, lab: NotebookNode, lab_text: str, lab_path: Path) -> list[str]:
    problems = []
    for i, cell in enumerate(lab.cells):
        if _MARKER_TEXT_RE.search(cell.get("source", "")):
            problems.append(f"{_describe(lab_path, i, cell)}: contains a solution marker")
    if not problems and _MARKER_TEXT_RE.search(lab_text):
        problems.append(f"{lab_path}: contains solution marker text (in outputs or metadata)")
    secret: dict[str, str] = {}
    for ex, regs in spec.regions.items():
        for _, r in regs:
            for line in r.body:
                s = line.strip()
                if len(s) >= LEAK_MIN_CHARS and not s.startswith("#"):
                    secret.setdefault(s, ex)
    for i, cell in enumerate(lab.cells):
        for line in cell.get("source", "").splitlines():
            ex = secret.get(line.strip())
            if ex is not None:
                problems.append(
                    f"{_describe(lab_path, i, cell)}: contains solution text of exercise "
                    f"{ex!r}: {line.strip()!r}"
                )
    return problems


def _static_problems(spec: LabSpec) -> list[str]:
    problems = []
    if not spec.regions:
        problems.append(f"{spec.path}: no exercise (no '{BEGIN_MARKER}' region)")
    if not spec.checks:
        problems.append(f"{spec.path}: no graded check cell (tag 'grade' + metadata.llmkit)")
    checked = {c.exercise for c in spec.checks}
    for ex in spec.regions:
        if ex not in checked:
            problems.append(f"{spec.path}: exercise {ex!r} has no graded check cell")
    for c in spec.checks:
        if c.exercise not in spec.regions:
            problems.append(
                f"{_describe(spec.path, c.index, c.cell)}: grades exercise {c.exercise!r}, "
                "which has no solution region"
            )
    return problems


def _first_difference(a: NotebookNode, b: NotebookNode) -> str:
    if len(a.cells) != len(b.cells):
        return f"{len(b.cells)} cells instead of {len(a.cells)}"
    for i, (x, y) in enumerate(zip(a.cells, b.cells, strict=True)):
        if x != y:
            return f"first difference in cell {i + 1} (id {x.get('id')!r})"
    return "metadata or formatting differ"


def check_labs(
    solutions: str | Path,
    labs: str | Path,
    *,
    execute: bool = True,
    timeout: float = 60,
    jobs: int = 1,
    out=None,
) -> int:
    """Check labs/ against solutions/ (see ``llmkit labs check --help``); exit status.

    Executing runs the lab and the solution through the grader
    (:func:`llmkit.course.grade.run_graded`), with the same fixed ``LLMKIT_CHECK_SEED``
    as ``llmkit grade``.
    """
    solutions, labs = Path(solutions), Path(labs)
    problems: list[str] = []
    files = solution_files(solutions)
    if not files:
        print(f"no solution notebooks (NN_*.ipynb) in {solutions}", file=out)
        return 1
    specs: list[tuple[LabSpec, NotebookNode]] = []
    owner: dict[str, str] = {}
    for sol in files:
        try:
            spec = load_lab_spec(sol)
            fresh = build_lab(spec)
        except LabError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(_static_problems(spec))
        for ex in spec.exercises:
            if ex in owner and owner[ex] != spec.name:
                problems.append(
                    f"{spec.path}: exercise id {ex!r} is also used by lab {owner[ex]!r} "
                    "(ids must be unique across the course)"
                )
            owner.setdefault(ex, spec.name)
        lab_path = labs / sol.name
        fresh_text = dumps(fresh)
        problems.extend(_leaks(spec, fresh, fresh_text, lab_path))
        if not lab_path.exists():
            problems.append(f"{lab_path}: missing (run `llmkit labs build`)")
        else:
            committed_text = lab_path.read_text(encoding="utf-8")
            if committed_text != fresh_text:
                try:
                    committed = read_notebook(lab_path)
                    where = _first_difference(fresh, committed)
                    leaks = _leaks(spec, committed, committed_text, lab_path)
                except Exception as exc:
                    where, leaks = f"unreadable: {exc}", []
                problems.append(
                    f"{lab_path}: stale, differs from a fresh build of {sol} ({where}); "
                    "run `llmkit labs build`"
                )
                problems.extend(p for p in leaks if p not in problems)
        specs.append((spec, fresh))
    for extra in _extra_labs(solutions, labs):
        problems.append(f"{extra}: extra lab without a solution in {solutions}")

    n_checks = 0
    if execute and specs:
        from .grade import missing_tools

        if missing_tools():
            print(
                f"error: executing the checks needs {missing_tools()} (or use --no-execute)",
                file=out,
            )
            return 2
        n_checks, exec_problems = _execute_checks(specs, labs, timeout, jobs, out)
        problems.extend(exec_problems)

    for p in problems:
        print(f"✘ {p}", file=out)
    ran = f", {n_checks} check cell(s) run on lab and solution" if execute else ""
    verdict = "OK" if not problems else f"FAILED, {len(problems)} problem(s)"
    print(f"labs check: {len(files)} lab(s){ran}: {verdict}", file=out)
    return 1 if problems else 0


def _execute_checks(
    specs: list[tuple[LabSpec, NotebookNode]], labs: Path, timeout: float, jobs: int, out
) -> tuple[int, list[str]]:
    from .grade import run_graded

    jobs_list: list[tuple[str, LabSpec, NotebookNode]] = []
    for spec, fresh in specs:
        if spec.checks:
            jobs_list.append(("solution", spec, spec.nb))
            jobs_list.append(("lab", spec, fresh))

    def work(job):
        kind, spec, nb = job
        print(f"executing the {kind} of {spec.name} ...", file=out, flush=True)
        return run_graded(nb, spec, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(work, jobs_list))

    problems: list[str] = []
    n = 0
    for (kind, spec, _), run in zip(jobs_list, results, strict=True):
        if run.error:
            problems.append(
                f"{spec.path if kind == 'solution' else labs / spec.path.name}: "
                f"could not execute the {kind}: {run.error}"
            )
        if kind == "solution":
            n += len(spec.checks)
            for c in spec.checks:
                r = run.checks.get(c.id)
                if r is None or not r.passed:
                    msg = r.message if r else "not run"
                    problems.append(
                        f"{_describe(spec.path, c.index, c.cell)}: check of exercise "
                        f"{c.exercise!r} fails on the solution: {msg}"
                    )
            for cell_result in run.other_failures:
                problems.append(f"{spec.path}: {cell_result} (on the solution)")
        else:
            lab_path = labs / spec.path.name
            for c in spec.checks:
                r = run.checks.get(c.id)
                if r is not None and r.passed:
                    problems.append(
                        f"{_describe(lab_path, c.index, c.cell)}: check of exercise "
                        f"{c.exercise!r} passes on the unmodified lab, so it cannot fail "
                        f"(it printed {r.message!r})"
                    )
    return n, problems

"""The lab file format: solution regions, exercise and check cells, lab specs.

``solutions/NN_name.ipynb`` is the single source of lab ``NN_name``
(:mod:`llmkit.course.labs` builds ``labs/NN_name.ipynb`` from it, and
:mod:`llmkit.course.grade` grades submissions against either). Its conventions:

- Exercise code sits between a line ``### BEGIN SOLUTION`` and a line
  ``### END SOLUTION`` (any number of ``#``; the lines hold nothing else), indented
  inside a function or class body. A code cell with such regions carries
  ``metadata.llmkit = {"exercise": "<id>"}`` (an *exercise cell*,
  :func:`is_exercise_cell`). Exercise ids match ``[A-Za-z_][\\w.-]*`` and are unique
  across the course (they name the gradebook's columns).
- A check cell (:func:`is_check_cell`) is a code cell tagged ``grade`` carrying
  ``metadata.llmkit = {"exercise": "<id>", "points": N}`` (N > 0). An exercise may
  have several check cells; it is worth the sum of their points.
- Cells have stable nbformat 4.5 ids; the lab keeps the solution's ids (grading
  recognises a lab by them).
- Check cells and the cells that are not exercises are identical in the lab and the
  solution, so ``llmkit grade`` can take them from either (``labs/`` by default).

This module depends on nothing else of the course tooling but
:mod:`llmkit.course.notebooks`; ``labs`` and ``grade`` both import it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nbformat import NotebookNode

from .notebooks import normalise, read_notebook

__all__ = [
    "LabError",
    "Region",
    "CheckCell",
    "LabSpec",
    "BEGIN_MARKER",
    "END_MARKER",
    "GRADE_TAG",
    "is_check_cell",
    "is_exercise_cell",
    "llmkit_meta",
    "describe_cell",
    "find_regions",
    "strip_regions",
    "solution_files",
    "load_lab_spec",
]

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
_BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)#+[ \t]*BEGIN SOLUTION[ \t]*$")
_END_RE = re.compile(r"^[ \t]*#+[ \t]*END SOLUTION[ \t]*$")
MARKER_TEXT_RE = re.compile(r"(BEGIN|END) SOLUTION")
LAB_FILE_RE = re.compile(r"^\d+[a-z]?_.*\.ipynb$")
_EXERCISE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
GRADE_TAG = "grade"


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


def is_exercise_cell(cell: NotebookNode) -> bool:
    """An exercise cell: a code cell with ``metadata.llmkit.exercise`` that is not a check
    cell (the cell students complete)."""
    return (
        cell.get("cell_type") == "code"
        and "exercise" in llmkit_meta(cell)
        and not is_check_cell(cell)
    )


def describe_cell(path: Path | str, index: int, cell: NotebookNode) -> str:
    """``<path>, cell <n> (id '<id>': '<first line>')``, for messages about a cell."""
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
    return sorted(p for p in solutions.iterdir() if LAB_FILE_RE.match(p.name) and p.is_file())


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
        where = describe_cell(path, i, cell)
        meta = llmkit_meta(cell)
        source = cell.get("source", "")
        has_markers = bool(MARKER_TEXT_RE.search(source))
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

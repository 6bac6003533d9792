"""Labs from solutions: ``llmkit labs build`` and ``llmkit labs check``.

``solutions/NN_name.ipynb`` is the single source of lab ``NN_name``; its conventions
(solution regions, exercise and check cells) are those of :mod:`llmkit.course.labformat`.

The lab (``labs/NN_name.ipynb``) is the solution with every region, markers included,
replaced by ``raise NotImplementedError("<id>")`` at the ``BEGIN`` line's indentation,
all outputs and execution counts cleared, ``metadata.llmkit.lab = "NN_name"`` set, and
normalised (:mod:`llmkit.course.notebooks`): building twice gives identical bytes.

``llmkit labs check`` compares ``labs/`` with a fresh build (stale, missing or extra
labs, leaked solution text) and, unless ``--no-execute``, runs three variants of each
lab through the grader (:func:`llmkit.course.grade.run_graded`): the solution, on which
every check must pass; the lab, on which every check must fail; and the *wrapper
variant* (:func:`wrapper_notebook`), the solution with each exercise's definition
replaced by a thin wrapper around ``llmkit``'s reference
(``llmkit.course.checks.wrapper_source``), on which every check of a wrapped exercise
must fail: a check that passes there does not measure the student's code.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nbformat import NotebookNode

from .grade import RunResult, missing_tools, run_graded
from .labformat import (
    BEGIN_MARKER,
    END_MARKER,
    LAB_FILE_RE,
    MARKER_TEXT_RE,
    CheckCell,
    LabError,
    LabSpec,
    Region,
    find_regions,
    is_check_cell,
    is_exercise_cell,
    llmkit_meta,
    load_lab_spec,
    solution_files,
    strip_regions,
)
from .labformat import describe_cell as _describe
from .notebooks import dumps, normalise, read_notebook, write_notebook

__all__ = [
    # the lab file format, defined in .labformat and re-exported here
    "LabError",
    "Region",
    "CheckCell",
    "LabSpec",
    "BEGIN_MARKER",
    "END_MARKER",
    "is_check_cell",
    "is_exercise_cell",
    "llmkit_meta",
    "find_regions",
    "strip_regions",
    "solution_files",
    "load_lab_spec",
    # labs from solutions
    "build_lab",
    "build_labs",
    "check_labs",
    "wrapper_notebook",
]

LEAK_MIN_CHARS = 16


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
    return sorted(p for p in labs.iterdir() if LAB_FILE_RE.match(p.name) and p.name not in names)


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
        if MARKER_TEXT_RE.search(cell.get("source", "")):
            problems.append(f"{_describe(lab_path, i, cell)}: contains a solution marker")
    if not problems and MARKER_TEXT_RE.search(lab_text):
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

    Executing runs, per lab, the solution (every check must pass), the lab (every
    check must fail) and the wrapper variant (:func:`wrapper_notebook`: every check of
    a wrapped exercise must fail) through the grader
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

    n_checks = n_wrappers = 0
    if execute and specs:
        if missing_tools():
            print(
                f"error: executing the checks needs {missing_tools()} (or use --no-execute)",
                file=out,
            )
            return 2
        n_checks, n_wrappers, exec_problems = _execute_checks(specs, labs, timeout, jobs, out)
        problems.extend(exec_problems)

    for p in problems:
        print(f"✘ {p}", file=out)
    ran = (
        f", {n_checks} check cell(s) run on lab and solution, {n_wrappers} wrapper run(s)"
        if execute
        else ""
    )
    verdict = "OK" if not problems else f"FAILED, {len(problems)} problem(s)"
    print(f"labs check: {len(files)} lab(s){ran}: {verdict}", file=out)
    return 1 if problems else 0


def _wrapper_source_function():
    """``llmkit.course.checks.wrapper_source``, or None where this version lacks it."""
    try:
        from .checks import wrapper_source
    except (ImportError, AttributeError):
        return None
    return wrapper_source


def wrapper_notebook(spec: LabSpec) -> tuple[NotebookNode, list[str]] | None:
    """The solution of ``spec`` with each exercise cell's source replaced by
    ``llmkit.course.checks.wrapper_source(exercise, source)``: the solution in which the
    exercise's definition is a thin wrapper around the ``llmkit`` reference. Returns
    ``(notebook, wrapped exercises)``, or None when no exercise has a wrapper (or this
    version of ``llmkit`` has no ``wrapper_source``)."""
    wrapper_source = _wrapper_source_function()
    if wrapper_source is None:
        return None
    nb = copy.deepcopy(spec.nb)
    wrapped: list[str] = []
    for cell in nb.cells:
        if not is_exercise_cell(cell):
            continue
        ex = llmkit_meta(cell)["exercise"]
        source = wrapper_source(ex, cell.source)
        if source is not None:
            cell.source = source
            if ex not in wrapped:
                wrapped.append(ex)
    return (nb, wrapped) if wrapped else None


def _execute_checks(
    specs: list[tuple[LabSpec, NotebookNode]], labs: Path, timeout: float, jobs: int, out
) -> tuple[int, int, list[str]]:
    """Run each lab's solution (every check must pass), its lab (every check must fail)
    and, where its exercises have wrappers (:func:`wrapper_notebook`), the wrapper
    variant (every check of a wrapped exercise must fail); ``jobs`` runs at a time.
    Returns (check cells run, wrapper runs, problems)."""
    jobs_list: list[tuple[str, LabSpec, NotebookNode, list[str]]] = []
    for spec, fresh in specs:
        if spec.checks:
            jobs_list.append(("solution", spec, spec.nb, []))
            jobs_list.append(("lab", spec, fresh, []))
            variant = wrapper_notebook(spec)
            if variant is not None:
                jobs_list.append(("wrapper variant", spec, *variant))

    def work(job) -> RunResult:
        kind, spec, nb, _ = job
        print(f"executing the {kind} of {spec.name} ...", file=out, flush=True)
        return run_graded(nb, spec, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(work, jobs_list))

    problems: list[str] = []
    n = n_wrappers = 0
    for (kind, spec, _, wrapped), run in zip(jobs_list, results, strict=True):
        lab_path = labs / spec.path.name
        if run.error:
            problems.append(
                f"{lab_path if kind == 'lab' else spec.path}: could not execute the {kind}: "
                f"{run.error}"
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
        elif kind == "lab":
            for c in spec.checks:
                r = run.checks.get(c.id)
                if r is not None and r.passed:
                    problems.append(
                        f"{_describe(lab_path, c.index, c.cell)}: check of exercise "
                        f"{c.exercise!r} passes on the unmodified lab, so it cannot fail "
                        f"(it printed {r.message!r})"
                    )
        else:
            n_wrappers += 1
            for c in spec.checks:
                r = run.checks.get(c.id)
                if c.exercise in wrapped and r is not None and r.passed:
                    problems.append(
                        f"{_describe(spec.path, c.index, c.cell)}: check of exercise "
                        f"{c.exercise!r} passes on a wrapper around the reference, so it "
                        f"does not measure the student's code (it printed {r.message!r})"
                    )
    return n, n_wrappers, problems

"""``llmkit labs build`` and ``llmkit labs check`` on a tiny fixture course."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

import course_notebooks as cn  # noqa: E402

from llmkit.__main__ import main  # noqa: E402
from llmkit.course import checks  # noqa: E402
from llmkit.course.labformat import (  # noqa: E402
    LabError,
    find_regions,
    load_lab_spec,
    strip_regions,
)
from llmkit.course.labs import build_labs, wrapper_notebook  # noqa: E402
from llmkit.course.notebooks import read_notebook  # noqa: E402


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course folder with solutions/01_arith.ipynb and a freshly built labs/."""
    cn.make_course(tmp_path)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    return tmp_path


def _lab(root: Path):
    return read_notebook(root / "labs" / f"{cn.LAB}.ipynb")


def _run(root: Path, *args: str, capsys) -> tuple[int, str]:
    code = main(
        ["labs", *args, "--solutions", str(root / "solutions"), "--labs", str(root / "labs")]
    )
    return code, capsys.readouterr().out


# ------------------------------------------------------------------------ build


def test_build_replaces_regions_at_their_indentation(course):
    lab = _lab(course)
    assert cn.cell(lab, "ex-add").source == (
        'def add(a, b):\n    """Return a + b."""\n    raise NotImplementedError("add")\n'
    )
    mul = cn.cell(lab, "ex-mul").source
    assert '        raise NotImplementedError("mul")\n' in mul
    assert "def mul(a, b):\n    return Multiplier().mul(a, b)\n" in mul  # outside: kept
    assert "product" not in mul and "SOLUTION" not in mul
    assert cn.cell(lab, "ex-neg").source == 'def neg(a):\n    raise NotImplementedError("neg")\n'


def test_build_clears_outputs_keeps_ids_and_normalises(course):
    sol = cn.solution_notebook()
    lab = _lab(course)
    assert [c.id for c in lab.cells] == [c.id for c in sol.cells]
    for c in lab.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
        assert "collapsed" not in c.metadata and "execution" not in c.metadata
    assert cn.cell(lab, "check-add").metadata == cn.cell(sol, "check-add").metadata
    assert lab.metadata["llmkit"] == {"lab": cn.LAB}
    assert lab.metadata["kernelspec"] == {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    assert "widgets" not in lab.metadata
    assert lab.nbformat == 4 and lab.nbformat_minor == 5


def test_build_is_deterministic(course, tmp_path_factory):
    first = (course / "labs" / f"{cn.LAB}.ipynb").read_bytes()
    assert first.endswith(b"}\n")
    assert build_labs(course / "solutions", course / "labs") == 0
    assert (course / "labs" / f"{cn.LAB}.ipynb").read_bytes() == first
    elsewhere = tmp_path_factory.mktemp("again")
    assert build_labs(course / "solutions", elsewhere) == 0
    assert (elsewhere / f"{cn.LAB}.ipynb").read_bytes() == first


def test_cli_default_dirs_are_relative_to_cwd(tmp_path, monkeypatch, capsys):
    cn.make_course(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["labs", "build"]) == 0
    assert "labs/01_arith.ipynb: written" in capsys.readouterr().out
    assert main(["labs", "build"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main(["labs", "check", "--no-execute"]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    "source, complaint",
    [
        ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "END SOLUTION"),
        ("def f():\n    return 1\n    ### END SOLUTION\n", "BEGIN SOLUTION"),
        (
            "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n"
            "    ### END SOLUTION\n",
            "still open",
        ),
    ],
)
def test_unbalanced_markers_are_an_error_naming_notebook_and_cell(
    tmp_path, source, complaint, capsys
):
    sol = cn.solution_notebook()
    cn.cell(sol, "ex-add").source = source
    cn.make_course(tmp_path, sol)
    with pytest.raises(LabError, match=complaint) as info:
        load_lab_spec(tmp_path / "solutions" / f"{cn.LAB}.ipynb")
    assert "01_arith.ipynb, cell 4 (id 'ex-add'" in str(info.value)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 1
    assert complaint in capsys.readouterr().out
    assert not (tmp_path / "labs" / f"{cn.LAB}.ipynb").exists()


def test_markers_without_exercise_id_are_an_error(tmp_path):
    sol = cn.solution_notebook()
    del cn.cell(sol, "ex-neg").metadata["llmkit"]
    cn.make_course(tmp_path, sol)
    with pytest.raises(LabError, match="ex-neg"):
        load_lab_spec(tmp_path / "solutions" / f"{cn.LAB}.ipynb")


def test_check_cell_needs_exercise_and_points(tmp_path):
    sol = cn.solution_notebook()
    cn.cell(sol, "check-neg").metadata["llmkit"] = {"exercise": "neg"}
    cn.cell(sol, "check-add").metadata["llmkit"]["points"] = 0
    cn.make_course(tmp_path, sol)
    with pytest.raises(LabError) as info:
        load_lab_spec(tmp_path / "solutions" / f"{cn.LAB}.ipynb")
    assert len(info.value.problems) == 2
    assert "points > 0" in str(info.value)


def test_region_helpers():
    src = "x = 1\n\tif x:\n\t\t# BEGIN SOLUTION\n\t\ty = 2\n\t\t### END SOLUTION\n"
    (region,) = find_regions(src)
    assert region.indent == "\t\t" and region.body == ("\t\ty = 2",)
    assert strip_regions(src, "e") == 'x = 1\n\tif x:\n\t\traise NotImplementedError("e")\n'
    assert strip_regions("a\n", "e") == "a\n"


# ------------------------------------------------------------------------ check


def test_check_passes_on_a_fresh_build_with_execution(course, capsys, monkeypatch):
    # without llmkit.course.checks.wrapper_source there is no wrapper variant to run
    monkeypatch.delattr(checks, "wrapper_source", raising=False)
    code, out = _run(course, "check", "--timeout", "30", capsys=capsys)
    assert code == 0, out
    assert "4 check cell(s) run on lab and solution, 0 wrapper run(s): OK" in out


# A stand-in for llmkit.course.checks.wrapper_source (written elsewhere): ``add`` is
# "wrapped" by a function the fixture's check cannot tell from a student's, ``mul`` by
# one calling a reference that is not there while the checks run (as real checks hide
# llmkit's reference), ``neg`` has no reference.
WRAPPERS = {
    "add": "def add(a, b):\n    return a + b\n",
    "mul": "def mul(a, b):\n    return _hidden_reference_mul(a, b)\n",
}


def _fake_wrapper_source(exercises, calls=None):
    def wrapper_source(exercise: str, source: str) -> str | None:
        if calls is not None:
            calls.append((exercise, source))
        return WRAPPERS[exercise] if exercise in exercises else None

    return wrapper_source


def test_wrapper_notebook_replaces_only_the_wrapped_exercise_cells(course, monkeypatch):
    spec = load_lab_spec(course / "solutions" / f"{cn.LAB}.ipynb")
    calls = []
    monkeypatch.setattr(
        checks, "wrapper_source", _fake_wrapper_source({"add"}, calls), raising=False
    )
    nb, wrapped = wrapper_notebook(spec)
    assert wrapped == ["add"]
    assert sorted(e for e, _ in calls) == ["add", "mul", "neg"]  # exercise cells only
    assert dict(calls)["add"] == spec.nb.cells[3].source  # the solution's source
    for mine, official in zip(nb.cells, spec.nb.cells, strict=True):
        if mine.id == "ex-add":
            assert mine.source == WRAPPERS["add"] and mine.metadata == official.metadata
        else:
            assert mine == official
    monkeypatch.setattr(checks, "wrapper_source", _fake_wrapper_source(set()), raising=False)
    assert wrapper_notebook(spec) is None  # nothing wrapped: no run
    monkeypatch.delattr(checks, "wrapper_source", raising=False)
    assert wrapper_notebook(spec) is None


def test_check_that_passes_on_a_wrapper_is_a_problem(course, capsys, monkeypatch):
    monkeypatch.setattr(
        checks, "wrapper_source", _fake_wrapper_source({"add", "mul"}), raising=False
    )
    code, out = _run(course, "check", "--timeout", "30", "-j", "3", capsys=capsys)
    assert code == 1, out
    assert "executing the wrapper variant of 01_arith ..." in out
    assert (
        "solutions/01_arith.ipynb, cell 5 (id 'check-add': 'compare(\"add\", add(2, 3), 5, "
        "what=\"ad...'): check of exercise 'add' passes on a wrapper around the "
        "reference, so it does not measure the student's code "
        "(it printed '✔ add: add(2, 3) == 5')"
    ) in out
    # mul's checks fail on its wrapper (the reference is hidden), neg is not wrapped
    assert "exercise 'mul' passes" not in out and "exercise 'neg' passes" not in out
    assert "4 check cell(s) run on lab and solution, 1 wrapper run(s): FAILED, 1 problem(s)" in out


def test_checks_that_fail_on_wrappers_pass_labs_check(course, capsys, monkeypatch):
    monkeypatch.setattr(checks, "wrapper_source", _fake_wrapper_source({"mul"}), raising=False)
    code, out = _run(course, "check", "--timeout", "30", "-j", "2", capsys=capsys)
    assert code == 0, out
    assert "4 check cell(s) run on lab and solution, 1 wrapper run(s): OK" in out


def test_check_detects_a_stale_lab(course, capsys):
    sol = cn.solution_notebook()
    cn.cell(sol, "intro").source = "# Lab 01: arithmetic, revised"
    cn.make_course(course, sol)
    code, out = _run(course, "check", "--no-execute", capsys=capsys)
    assert code == 1
    assert "stale" in out and "first difference in cell 1 (id 'intro')" in out
    assert "llmkit labs build" in out


def test_check_detects_missing_and_extra_labs(course, capsys):
    (course / "labs" / f"{cn.LAB}.ipynb").rename(course / "labs" / "02_old.ipynb")
    code, out = _run(course, "check", "--no-execute", capsys=capsys)
    assert code == 1
    assert "01_arith.ipynb: missing" in out
    assert "02_old.ipynb: extra lab without a solution" in out
    # build removes the generated extra lab and restores the missing one
    assert build_labs(course / "solutions", course / "labs") == 0
    assert sorted(p.name for p in (course / "labs").iterdir()) == [f"{cn.LAB}.ipynb"]


def test_check_detects_a_leaked_marker(course, capsys):
    path = course / "labs" / f"{cn.LAB}.ipynb"
    text = path.read_text()
    path.write_text(
        text.replace(
            'raise NotImplementedError(\\"neg\\")', '### BEGIN SOLUTION\\n", "    return -a'
        )
    )
    assert "BEGIN SOLUTION" in path.read_text()
    code, out = _run(course, "check", "--no-execute", capsys=capsys)
    assert code == 1
    assert "stale" in out
    assert "(id 'ex-neg': 'def neg(a):'): contains a solution marker" in out


def test_check_detects_solution_text_outside_the_regions(tmp_path, capsys):
    sol = cn.solution_notebook()
    cn.cell(sol, "md-neg").source = "Hint: write\n\n    negated_value = -a\n"
    cn.make_course(tmp_path, sol)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    code, out = _run(tmp_path, "check", "--no-execute", capsys=capsys)
    assert code == 1
    assert "contains solution text of exercise 'neg': 'negated_value = -a'" in out


def test_check_detects_a_lab_without_exercises_or_checks(tmp_path, capsys):
    sol = cn.solution_notebook()
    sol.cells = [c for c in sol.cells if c.cell_type == "markdown" or c.id == "setup"]
    cn.make_course(tmp_path, sol)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    code, out = _run(tmp_path, "check", capsys=capsys)
    assert code == 1
    assert "no exercise (no '### BEGIN SOLUTION' region)" in out
    assert "no graded check cell" in out


def test_check_detects_exercise_without_check(tmp_path, capsys):
    sol = cn.solution_notebook()
    sol.cells = [c for c in sol.cells if c.id != "check-neg"]
    cn.make_course(tmp_path, sol)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    code, out = _run(tmp_path, "check", "--no-execute", capsys=capsys)
    assert code == 1 and "exercise 'neg' has no graded check cell" in out


def test_check_detects_checks_that_cannot_fail_or_fail_on_the_solution(tmp_path, capsys):
    sol = cn.solution_notebook()
    cn.cell(sol, "check-neg").source = 'passed("neg", "looks fine")'
    cn.cell(sol, "check-mul-2").source = 'compare("mul", mul(2, 2), 5, what="mul(2, 2)")'
    cn.make_course(tmp_path, sol)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    code, out = _run(tmp_path, "check", "--timeout", "30", "-j", "2", capsys=capsys)
    assert code == 1, out
    assert (
        "(id 'check-neg': 'passed(\"neg\", \"looks fine\")'): check of exercise 'neg' "
        "passes on the unmodified lab, so it cannot fail (it printed '✔ neg: looks fine')"
    ) in out
    assert "check of exercise 'mul' fails on the solution: AssertionError: mul: " in out
    assert "FAILED, 2 problem(s)" in out

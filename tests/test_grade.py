"""``llmkit grade`` on the fixture lab: scores, tampering, timeouts, batches."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

import course_notebooks as cn  # noqa: E402

from llmkit.__main__ import main  # noqa: E402
from llmkit.course.grade import (  # noqa: E402
    LabCatalog,
    NotALab,
    grade_file,
    identify_lab,
    make_graded_notebook,
)
from llmkit.course.labs import build_labs, is_check_cell  # noqa: E402
from llmkit.course.notebooks import read_notebook  # noqa: E402


@pytest.fixture
def course(tmp_path: Path):
    """(root, catalog, lab notebook) of a fixture course with a built lab."""
    cn.make_course(tmp_path)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    lab = read_notebook(tmp_path / "labs" / f"{cn.LAB}.ipynb")
    return tmp_path, LabCatalog(tmp_path / "solutions"), lab


def _points(sub) -> dict[str, float]:
    return {k: v.points for k, v in sub.exercises.items()}


def _grade(nb, path: Path, catalog, timeout: float = 30):
    cn.write(nb, path)
    return grade_file(path, catalog, timeout=timeout)


def test_solution_scores_full_marks(course):
    root, catalog, _ = course
    sub = grade_file(root / "solutions" / f"{cn.LAB}.ipynb", catalog, timeout=30)
    assert sub.error is None and sub.lab == cn.LAB
    assert (sub.score, sub.max_score) == (6, 6)
    assert _points(sub) == cn.MAX
    assert sub.exercises["add"].message == "✔ add: add(2, 3) == 5"
    assert sub.exercises["mul"].message == "✔ mul: mul(3, 4) == 12; ✔ mul: negative ok"


def test_unmodified_lab_scores_zero(course):
    root, catalog, _ = course
    sub = grade_file(root / "labs" / f"{cn.LAB}.ipynb", catalog, timeout=30)
    assert sub.error is None
    assert (sub.score, sub.max_score) == (0, 6)
    assert {k: v.message for k, v in sub.exercises.items()} == {
        "add": "NotImplementedError: add",
        "mul": "NotImplementedError: mul",
        "neg": "NotImplementedError: neg",
    }
    assert {k: v.max_points for k, v in sub.exercises.items()} == cn.MAX


def _tamper(nb, how: str):
    nb = copy.deepcopy(nb)
    checks = [c for c in nb.cells if is_check_cell(c)]
    if how == "edited":  # every check made to pass, and worth more
        for c in checks:
            c.source = 'print("✔ all good")'
            c.metadata["llmkit"]["points"] = 100
    elif how == "untagged":  # same ids, but no longer look like checks
        for c in checks:
            c.source = "pass"
            c.metadata = {}
    elif how == "deleted":
        nb.cells = [c for c in nb.cells if not is_check_cell(c)]
    elif how == "fake-extra":  # a new check cell claiming points
        nb.cells.append(copy.deepcopy(checks[0]))
        nb.cells[-1].id = "my-own-check"
        nb.cells[-1].source = "pass"
    return nb


@pytest.mark.parametrize("how", ["official", "edited", "untagged", "deleted", "fake-extra"])
def test_tampering_with_checks_gains_nothing(course, how):
    root, catalog, lab = course
    # add and neg done, mul not: worth 1 + 2 with the official checks
    nb = _tamper(cn.student(lab, add=cn.GOOD_ADD, neg=cn.GOOD_NEG), how)
    sub = _grade(nb, root / "subs" / f"{how}.ipynb", catalog)
    assert sub.error is None
    assert (sub.score, sub.max_score) == (3, 6)
    assert _points(sub) == {"add": 1, "mul": 0, "neg": 2}
    assert sub.exercises["mul"].message == "NotImplementedError: mul"


def test_graded_notebook_puts_official_checks_back_in_place(course):
    root, catalog, lab = course
    spec = catalog.spec(cn.LAB)
    nb = _tamper(lab, "deleted")
    # the student moved the neg exercise first and deleted the mul markdown cell
    ex_neg = cn.cell(nb, "ex-neg")
    nb.cells = [ex_neg] + [c for c in nb.cells if c.id not in ("ex-neg", "md-mul")]
    nb.cells.append(copy.deepcopy(cn.cell(lab, "check-add")))  # a stray copy, at the end
    graded = make_graded_notebook(nb, spec)
    ids = [c.id for c in graded.cells]
    assert ids == [
        "ex-neg",
        "check-neg",
        "intro",
        "setup",
        "md-add",
        "ex-add",
        "check-add",
        "demo",
        "ex-mul",
        "check-mul-1",
        "check-mul-2",
        "md-neg",
        "outro",
    ]
    assert cn.cell(graded, "check-add").source == cn.CHECK_ADD
    # an anchor that is gone: the check goes to the end, in official order
    nb.cells = [c for c in nb.cells if c.id not in ("ex-mul",)]
    ids = [c.id for c in make_graded_notebook(nb, spec).cells]
    assert ids[-2:] == ["check-mul-1", "check-mul-2"]


def test_infinite_loop_and_crash_keep_the_other_points(course):
    root, catalog, lab = course
    nb = cn.student(lab, add=cn.LOOPING_ADD, mul=cn.CRASHING_MUL, neg=cn.GOOD_NEG)
    nb.cells = [c for c in nb.cells if c.id != "demo"]  # it would time out once more
    sub = _grade(nb, root / "loop.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}
    assert sub.exercises["add"].message == "timed out after 3 s"
    assert sub.exercises["mul"].message == "NameError: name 'mul' is not defined"
    assert sub.exercises["neg"].message == "✔ neg: neg(7) == -7"


def test_uninterruptible_loop_and_dead_kernel_keep_the_other_points(course):
    """A loop that swallows KeyboardInterrupt and os._exit: the kernel is replaced."""
    root, catalog, lab = course
    nb = cn.student(lab, add=cn.STUBBORN_ADD, mul=cn.DYING_MUL, neg=cn.GOOD_NEG)
    nb.cells = [c for c in nb.cells if c.id != "demo"]
    sub = _grade(nb, root / "stubborn.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert sub.exercises["add"].message == "timed out after 3 s"
    assert sub.exercises["mul"].message == "the kernel died while running this cell"
    # neg's check needs `compare`/`passed` from the setup cell: replayed in the new kernel
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}


def test_identify_lab(course, tmp_path):
    root, catalog, lab = course
    assert identify_lab(lab, "alice.ipynb", catalog) == cn.LAB  # metadata
    bare = copy.deepcopy(lab)
    del bare.metadata["llmkit"]
    assert identify_lab(bare, "01_bob.ipynb", catalog) == cn.LAB  # file-name prefix
    assert identify_lab(bare, "carol.ipynb", catalog) == cn.LAB  # cell ids
    other = copy.deepcopy(bare)
    for i, c in enumerate(other.cells):
        c.id = f"mine-{i}"
    with pytest.raises(
        NotALab,
        match=r"not a lab of this course: notes.ipynb .*known labs: "
        r"01_arith",
    ):
        identify_lab(other, "notes.ipynb", catalog)
    claimed = copy.deepcopy(lab)
    claimed.metadata["llmkit"]["lab"] = "99_unknown"
    with pytest.raises(NotALab, match="says it is lab '99_unknown'; known labs: 01_arith"):
        identify_lab(claimed, "01_x.ipynb", catalog)


def test_not_a_lab_is_a_clear_error(course, capsys):
    root, _, _ = course
    from nbformat.v4 import new_code_cell, new_notebook

    path = cn.write(new_notebook(cells=[new_code_cell("print(1)")]), root / "notes.ipynb")
    code = main(["grade", str(path), "--solutions", str(root / "solutions")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"error: not a lab of this course: {path}" in out
    assert "known labs: 01_arith" in out


def test_folder_batch_csv_and_json(course, tmp_path, capsys):
    root, _, lab = course
    folder = root / "subs"
    cn.write(cn.student(lab, add=cn.GOOD_ADD, mul=cn.GOOD_MUL), folder / "alice.ipynb")
    (folder / "bob.ipynb").write_text("{ this is not json", encoding="utf-8")
    from nbformat.v4 import new_code_cell, new_notebook

    cn.write(new_notebook(cells=[new_code_cell("1 + 1")]), folder / "carol.ipynb")
    (folder / "notes.txt").write_text("not a notebook")
    gradebook = tmp_path / "gradebook.csv"
    code = main(
        [
            "grade",
            str(folder),
            "--json",
            "--csv",
            str(gradebook),
            "--timeout",
            "30",
            "--solutions",
            str(root / "solutions"),
            "-j",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1  # some files could not be graded; the batch went on
    data = json.loads(captured.out)
    assert [d["file"] for d in data] == [
        str(folder / n) for n in ("alice.ipynb", "bob.ipynb", "carol.ipynb")
    ]
    alice, bob, carol = data
    assert alice == {
        "file": str(folder / "alice.ipynb"),
        "lab": cn.LAB,
        "score": 4,
        "max_score": 6,
        "exercises": {
            "add": {"points": 1, "max_points": 1, "message": "✔ add: add(2, 3) == 5"},
            "mul": {
                "points": 3,
                "max_points": 3,
                "message": "✔ mul: mul(3, 4) == 12; ✔ mul: negative ok",
            },
            "neg": {"points": 0, "max_points": 2, "message": "NotImplementedError: neg"},
        },
        "error": None,
    }
    assert bob["error"].startswith("cannot read notebook: NotJSONError")
    assert bob["score"] is None and bob["exercises"] == {}
    assert carol["error"].startswith("not a lab of this course")
    with open(gradebook, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "lab", "score", "max_score", "add", "mul", "neg", "error"]
    assert len(rows) == 4
    assert rows[1] == [str(folder / "alice.ipynb"), cn.LAB, "4", "6", "1", "3", "0", ""]
    assert rows[2][:4] == [str(folder / "bob.ipynb"), "", "", ""]
    assert rows[2][-1].startswith("cannot read notebook")
    assert rows[3][-1].startswith("not a lab of this course")


def test_human_report_and_exit_status(course, capsys):
    root, _, _ = course
    code = main(
        [
            "grade",
            str(root / "solutions" / f"{cn.LAB}.ipynb"),
            "--timeout",
            "30",
            "--solutions",
            str(root / "solutions"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith(f"{cn.LAB}.ipynb  (lab {cn.LAB})")
    assert lines[1].split() == ["exercise", "points", "message"]
    assert lines[2].split()[:2] == ["add", "1/1"]
    assert lines[-1].split() == ["total", "6/6"]


def test_usage_errors(tmp_path, capsys):
    assert main(["grade", "x.ipynb", "--solutions", str(tmp_path)]) == 2
    assert "no labs found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["grade"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["grade", "x.ipynb", "--timeout", "0"])


def test_python_dash_m_llmkit_help():
    out = subprocess.run(
        [sys.executable, "-m", "llmkit", "grade", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--csv" in out and "Exit status" in out
    out = subprocess.run(
        [sys.executable, "-m", "llmkit", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for word in ("labs", "grade", "notebooks"):
        assert word in out


def test_check_helpers(capsys):
    import numpy as np
    import torch

    from llmkit.course.checks import compare, fail, passed

    passed("merge", "20 random cases")
    assert capsys.readouterr().out == "✔ merge: 20 random cases\n"
    with pytest.raises(AssertionError, match="^merge: too slow$"):
        fail("merge", "too slow")
    compare("e", {"a": [1, 2.0], "b": (3,)}, {"a": [1, 2.0 + 1e-9], "b": (3,)})
    compare("e", torch.ones(2, 3), np.ones((2, 3)))
    compare("e", torch.tensor([1, 2]), torch.tensor([1, 2]))
    bad = [
        (torch.ones(3, 2), torch.ones(2, 3), r"^e: result has shape \(3, 2\), expected \(2, 3\)"),
        (torch.zeros(2), torch.tensor([0.0, 1.0]), r"max abs diff 1 at index \(1,\)"),
        (torch.tensor([1, 5]), torch.tensor([1, 2]), r"differs from the reference at index"),
        ([1, 2], [1, 2, 3], r"result has length 2, expected 3"),
        ({"a": 1}, {"b": 1}, r"keys differ \(missing: 'b'; unexpected: 'a'\)"),
        ("x", "y", r"^e: result is 'x', expected 'y'$"),
        (0.5, 0.25, r"result is 0.5, expected 0.25"),
        ([1, [2, 3]], [1, [2, 4]], r"result\[1\]\[1\] is 3, expected 4"),
        (5, torch.ones(1), r"should be a tensor/array, got int"),
    ]
    for actual, expected, pattern in bad:
        with pytest.raises(AssertionError, match=pattern):
            compare("e", actual, expected)

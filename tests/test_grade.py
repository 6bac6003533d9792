"""``llmkit grade`` on the fixture lab: scores, tampering, cheating, timeouts, batches."""

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
    OUTPUT_CAP_ID,
    LabCatalog,
    NotALab,
    collect_student_code,
    grade_file,
    identify_lab,
    make_graded_notebook,
)
from llmkit.course.labformat import is_check_cell  # noqa: E402
from llmkit.course.labs import build_labs  # noqa: E402
from llmkit.course.notebooks import read_notebook  # noqa: E402


@pytest.fixture
def course(tmp_path: Path):
    """(root, catalog, lab notebook) of a fixture course with a built lab; the catalog
    reads the official notebooks from labs/, as ``llmkit grade`` does by default."""
    cn.make_course(tmp_path)
    assert build_labs(tmp_path / "solutions", tmp_path / "labs") == 0
    lab = read_notebook(tmp_path / "labs" / f"{cn.LAB}.ipynb")
    return tmp_path, LabCatalog(tmp_path / "labs"), lab


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
    assert sub.notes == []


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


TAMPERING = ["edited", "untagged", "deleted", "fake-extra"]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampering_with_checks_changes_nothing_in_the_graded_notebook(course, how):
    _, catalog, lab = course
    spec = catalog.spec(cn.LAB)
    nb = cn.student(lab, add=cn.GOOD_ADD, neg=cn.GOOD_NEG)
    assert make_graded_notebook(_tamper(nb, how), spec) == make_graded_notebook(nb, spec)


def test_tampering_with_checks_gains_nothing(course):
    root, catalog, lab = course
    # add and neg done, mul not: worth 1 + 2 with the official checks
    nb = _tamper(cn.student(lab, add=cn.GOOD_ADD, neg=cn.GOOD_NEG), "edited")
    sub = _grade(nb, root / "subs" / "edited.ipynb", catalog)
    assert sub.error is None
    assert sub.notes == [
        "ignored check cells 5, 9, 10, 13: they differ from the official checks, which are "
        "graded instead"
    ]
    assert (sub.score, sub.max_score) == (3, 6)
    assert _points(sub) == {"add": 1, "mul": 0, "neg": 2}
    assert sub.exercises["mul"].message == "NotImplementedError: mul"


# Code a student could put in their notebook to fake full marks. Each is tried on a
# submission with a wrong add, no mul and a right neg (2 of 6 points); none may gain
# anything. With the grader of before, each of them scored 3 or 6.
ATTACKS = {
    # (M) monkeypatch what the checks use: top-level statements, ignored
    "monkeypatch": (
        "compare = lambda *args, **kwargs: None\n"
        "passed = lambda *args, **kwargs: print('✔ all good')\n"
    ),
    # (M) ... or replace it by a function: it would replace a name the lab defines
    "redefine": "def compare(*args, **kwargs):\n    pass\n",
    # (V1) an exception handler that swallows the failing checks and prints a verdict
    "custom-exc": (
        "get_ipython().set_custom_exc((Exception,), lambda *a, **k: print('✔ all good'))\n"
    ),
    # (V1) the same, installed while a function is defined (a decorator runs then):
    # the kernel's reply still says "error"
    "custom-exc-at-def-time": (
        "def _hide(f):\n"
        "    get_ipython().set_custom_exc((Exception,), lambda *a, **k: print('✔ ok'))\n"
        "    return f\n\n\n"
        "@_hide\n"
        "def helper():\n"
        "    pass\n"
    ),
    # (V2) an input transformer rewriting the check cells into a verdict line
    "input-transformer": (
        "def _fake(lines):\n"
        "    if any('compare(' in line for line in lines):\n"
        "        return ['print(\"✔ all good\")\\n']\n"
        "    return lines\n\n\n"
        "get_ipython().input_transformers_post.append(_fake)\n"
    ),
    # (V2) installed at definition time, rewriting checks into silence: no verdict line
    "input-transformer-at-def-time": (
        "def _mute(f):\n"
        "    get_ipython().input_transformers_post.append(\n"
        "        lambda lines: ['pass\\n'] if any('compare(' in l for l in lines) else lines\n"
        "    )\n"
        "    return f\n\n\n"
        "@_mute\n"
        "def helper():\n"
        "    pass\n"
    ),
}


WRONG_ADD = "def add(a, b):\n    return a - b\n"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_code_in_the_notebook_cannot_fake_points(course, attack):
    from nbformat.v4 import new_code_cell

    root, catalog, lab = course
    nb = cn.student(lab, add=WRONG_ADD, neg=cn.GOOD_NEG)
    nb.cells.insert(2, new_code_cell(ATTACKS[attack], id="my-cell"))
    sub = _grade(nb, root / f"{attack}.ipynb", catalog)
    assert sub.error is None
    points = _points(sub)
    if attack == "input-transformer-at-def-time":  # it mutes neg's check too
        assert points == {"add": 0, "mul": 0, "neg": 0}, sub.exercises
        no_verdict = "the check printed no verdict line (one starting with ✔)"
        assert sub.exercises["add"].message == sub.exercises["neg"].message == no_verdict
        return
    assert points == {"add": 0, "mul": 0, "neg": 2}, sub.exercises
    # for custom-exc-at-def-time, the error comes from the kernel's reply
    assert sub.exercises["add"].message == "AssertionError: add: add(2, 3) is -1, expected 5"
    assert sub.exercises["mul"].message == "NotImplementedError: mul"
    if attack == "redefine":
        assert sub.notes == ["ignored what would replace names the lab itself defines: compare"]
    elif not attack.endswith("at-def-time"):
        assert sub.notes[0].startswith("ignored ")


def test_top_level_statements_are_not_graded(course):
    root, catalog, lab = course
    # add "done" as a lambda, exploration around it, and a failing import: only the
    # definitions count, and the failing import does not stop neg's
    nb = cn.student(
        lab,
        add="import no_such_module_for_llmkit\n\nadd = lambda a, b: a + b\nprint(add(2, 3))\n"
        "raise RuntimeError('exploring')\n",
        neg=cn.GOOD_NEG,
    )
    sub = _grade(nb, root / "lambda.ipynb", catalog)
    assert sub.error is None
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}
    assert sub.exercises["add"].message == "NameError: name 'add' is not defined"
    assert sub.notes == [
        "ignored 3 top-level statements (cell 4): only imports, functions, classes and "
        "constants (NAME = literal) are graded"
    ]


def test_check_seed_makes_regrading_identical(course, monkeypatch):
    """The fixture checks print a random draw; the grader's fixed seed makes it repeat."""
    root, catalog, lab = course
    monkeypatch.delenv("LLMKIT_CHECK_SEED", raising=False)
    spec_nb = read_notebook(catalog.paths[cn.LAB])
    for nb in (spec_nb, lab):
        cn.cell(nb, "check-neg").source = (
            "from llmkit.course.checks import check_rng\n"
            "x = check_rng().randrange(10**9)\n" + cn.CHECK_NEG + "\nprint('draw', x)\n"
        )
    cn.write(spec_nb, catalog.paths[cn.LAB])
    catalog = LabCatalog(root / "labs")
    nb = cn.student(lab, neg=cn.GOOD_NEG)
    first = _grade(nb, root / "a.ipynb", catalog)
    second = _grade(nb, root / "b.ipynb", catalog)
    assert first.exercises["neg"].message.startswith("draw ")
    assert first.exercises == second.exercises


def test_graded_notebook_is_the_official_one_with_the_students_definitions(course):
    _, catalog, lab = course
    spec = catalog.spec(cn.LAB)
    nb = _tamper(lab, "deleted")
    # the student moved the neg exercise first, deleted the mul markdown cell, left a
    # stray copy of a check at the end and experimented in a cell of their own
    ex_neg = cn.cell(nb, "ex-neg")
    ex_neg.source = "# my neg\n" + cn.GOOD_NEG + "\nprint(neg(2))\nX = 3\nY = X + 1\n"
    nb.cells = [ex_neg] + [c for c in nb.cells if c.id not in ("ex-neg", "md-mul")]
    nb.cells.append(copy.deepcopy(cn.cell(lab, "check-add")))
    graded = make_graded_notebook(nb, spec)
    official = [c.id for c in spec.nb.cells]
    ids = [c.id for c in graded.cells]
    submitted = [f"ex-add-s{k}" for k in range(1, 6)]
    assert ids == [OUTPUT_CAP_ID, *official[:3], *submitted, *official[3:]]
    for c in spec.nb.cells:  # every official cell verbatim, exercises emptied
        mine = cn.cell(graded, c.id)
        if c.id.startswith("ex-"):
            assert "def " not in mine.source and "NotImplementedError" not in mine.source
        else:
            assert mine.source == c.source and mine.metadata == c.metadata
    # the student's definitions, in their notebook's order: neg, X; then add's and
    # mul's stubs (never the statements print(...) and Y = X + 1), one cell each
    sources = [cn.cell(graded, i).source for i in submitted]
    assert sources[0] == "# from your cell with id 'ex-neg'\n" + cn.GOOD_NEG
    assert sources[1] == "# from your cell with id 'ex-neg'\nX = 3\n"
    assert 'raise NotImplementedError("add")' in sources[2]
    assert "class Multiplier" in sources[3] and "def mul(a, b)" in sources[4]
    _, notes = collect_student_code(nb, spec)
    assert notes == [
        "ignored 2 top-level statements (cell 1): only imports, functions, classes and "
        "constants (NAME = literal) are graded"
    ]


def test_collecting_code_handles_magics_syntax_errors_and_future_imports(course):
    _, catalog, lab = course
    spec = catalog.spec(cn.LAB)
    nb = cn.student(
        lab,
        add="%load_ext autoreload\n!ls\ndef add(a, b):\n    return a + b\n",
        mul="def mul(a, b) return a * b\n",  # a syntax error
        neg="from __future__ import annotations\n\nimport os; os.system('echo hi')\n"
        "def neg(a: Undefined):\n    return -a\n",
    )
    statements, notes = collect_student_code(nb, spec)
    sources = [s for _, s in statements]
    assert sources == [
        "from __future__ import annotations\n",
        "def add(a, b):\n    return a + b\n",
        "import os\n",  # shares its line with a call: rewritten alone
        "def neg(a: Undefined):\n    return -a\n",
    ]
    assert notes[0].startswith("ignored 3 top-level statements (cells 4, 12)")
    assert notes[1] == ("skipped cell 8 (id 'ex-mul'), line 1: expected ':' (not valid Python)")


def test_infinite_loop_and_crash_keep_the_other_points(course):
    root, catalog, lab = course
    nb = cn.student(lab, add=cn.LOOPING_ADD, mul=cn.CRASHING_MUL, neg=cn.GOOD_NEG)
    sub = _grade(nb, root / "loop.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}
    assert sub.exercises["add"].message == "timed out after 3 s"
    assert sub.exercises["mul"].message == "RuntimeError: boom"
    assert sub.exercises["neg"].message == "✔ neg: neg(7) == -7"


def test_output_floods_are_capped(course):
    """An endless print loop times out as any loop; 5 MB printed by a function under
    check are cut in the kernel, yet the check's verdict line at the end gets through."""
    root, catalog, lab = course
    flood = "def add(a, b):\n    while a == 2:\n        print('spam ' * 2000)\n    return a + b\n"
    noisy = "def neg(a):\n    print('x' * 5_000_000)\n    return -a\n"
    nb = cn.student(lab, add=flood, neg=noisy)
    sub = _grade(nb, root / "flood.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}
    assert sub.exercises["add"].message == "timed out after 3 s"
    assert sub.exercises["neg"].message == "✔ neg: neg(7) == -7"


def test_output_written_below_python_is_capped_by_the_grader(course, monkeypatch):
    """os.write bypasses the kernel's cap; the grader reads at most MAX_OUTPUT
    characters of it and keeps the tail, where the check's verdict line is."""
    from llmkit.course import grade

    monkeypatch.setattr(grade, "MAX_OUTPUT", 100_000)
    root, catalog, lab = course
    # (the pause lets ipykernel forward the flood before the check prints its verdict;
    # without it the verdict may land inside a line of y's, and not count)
    noisy = (
        "import os\nimport time\n\n\ndef neg(a):\n"
        "    os.write(1, b'y' * 3_000_000 + b'\\n')\n    time.sleep(1)\n    return -a\n"
    )
    sub = _grade(cn.student(lab, neg=noisy), root / "fd-flood.ipynb", catalog, timeout=20)
    assert sub.error is None
    assert sub.exercises["neg"].points == 2
    assert sub.exercises["neg"].message == "✔ neg: neg(7) == -7"


def test_the_run_stops_at_its_budget(course, monkeypatch):
    """Cells not reached within the run's budget fail; the grader does not wait."""
    from llmkit.course import grade

    monkeypatch.setattr(grade, "BUDGET_PER_CELL", -3.0)  # -timeout: the base only
    monkeypatch.setattr(grade, "BUDGET_BASE", 2.0)
    root, catalog, lab = course
    nb = cn.student(lab, add=cn.LOOPING_ADD, mul=cn.GOOD_MUL, neg=cn.GOOD_NEG)
    sub = _grade(nb, root / "budget.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert sub.exercises["add"].message == "timed out after 3 s"
    for ex in ("mul", "neg"):
        assert sub.exercises[ex].points == 0
        assert sub.exercises[ex].message == "not run: grading stopped after 2 s"


def test_failure_messages_keep_the_hint_on_one_line():
    from llmkit.course.grade import error_summary, has_verdict

    evalue = "merge: wrong result\n  input:    ids=[1]\n  hint: look at the end\n"
    assert error_summary("AssertionError", evalue) == (
        "AssertionError: merge: wrong result — hint: look at the end"
    )
    assert error_summary("NotImplementedError", "merge") == "NotImplementedError: merge"
    assert error_summary("KeyError", "") == "KeyError"
    assert error_summary("ValueError", "\x1b[31mbad\x1b[0m\nhint: x") == "ValueError: bad — hint: x"
    assert has_verdict("debug\n\x1b[32m✔ merge: ok\x1b[0m\n")
    assert not has_verdict("all good ✔\n")
    assert not has_verdict("")


def test_uninterruptible_loop_and_dead_kernel_keep_the_other_points(course):
    """A loop that swallows KeyboardInterrupt and os._exit: the kernel is replaced."""
    root, catalog, lab = course
    nb = cn.student(lab, add=cn.STUBBORN_ADD, mul=cn.DYING_MUL, neg=cn.GOOD_NEG)
    sub = _grade(nb, root / "stubborn.ipynb", catalog, timeout=3)
    assert sub.error is None
    assert sub.exercises["add"].message == "timed out after 3 s"
    assert sub.exercises["mul"].message == "the kernel died while running this cell"
    # neg's check needs `compare`/`passed` from the setup cell: replayed in the new kernel
    assert _points(sub) == {"add": 0, "mul": 0, "neg": 2}


def test_identify_lab(course, tmp_path):
    from nbformat.v4 import new_code_cell

    root, catalog, lab = course
    assert identify_lab(lab, "alice.ipynb", catalog) == cn.LAB  # metadata
    bare = copy.deepcopy(lab)
    del bare.metadata["llmkit"]
    assert identify_lab(bare, "01_bob.ipynb", catalog) == cn.LAB  # file-name prefix
    assert identify_lab(bare, "carol.ipynb", catalog) == cn.LAB  # cell ids
    few = copy.deepcopy(bare)  # a file-name prefix needs one cell id in common
    few.cells = [c for c in few.cells if c.id == "ex-add"] + [
        new_code_cell("1 + 1", id=f"mine-{i}") for i in range(5)
    ]
    assert identify_lab(few, "01_dave.ipynb", catalog) == cn.LAB
    with pytest.raises(NotALab):
        identify_lab(few, "dave.ipynb", catalog)
    other = copy.deepcopy(bare)
    for i, c in enumerate(other.cells):
        c.id = f"mine-{i}"
    with pytest.raises(
        NotALab,
        match=r"notes\.ipynb.*01_arith",
    ):
        identify_lab(other, "notes.ipynb", catalog)
    # a copy of the chapter named like the lab: the file name alone is not enough
    with pytest.raises(
        NotALab,
        match=r"01_chapter\.ipynb.*01_arith",
    ):
        identify_lab(other, "01_chapter.ipynb", catalog)
    claimed = copy.deepcopy(lab)
    claimed.metadata["llmkit"]["lab"] = "99_unknown"
    with pytest.raises(NotALab, match="99_unknown.*01_arith"):
        identify_lab(claimed, "01_x.ipynb", catalog)


def test_not_a_lab_is_a_clear_error(course, capsys):
    root, _, _ = course
    from nbformat.v4 import new_code_cell, new_notebook

    path = cn.write(new_notebook(cells=[new_code_cell("print(1)")]), root / "01_notes.ipynb")
    code = main(["grade", str(path), "--labs", str(root / "labs")])
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
            "--labs",
            str(root / "labs"),
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
        "notes": [],
    }
    assert bob["error"].startswith("cannot read notebook: NotJSONError")
    assert bob["score"] is None and bob["exercises"] == {}
    assert carol["error"].startswith("not a lab of this course")
    with open(gradebook, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "file", "lab", "score", "max_score", "add", "mul", "neg", "error", "notes"
    ]  # fmt: skip
    assert len(rows) == 4
    assert rows[1] == [str(folder / "alice.ipynb"), cn.LAB, "4", "6", "1", "3", "0", "", ""]
    assert rows[2][:4] == [str(folder / "bob.ipynb"), "", "", ""]
    assert rows[2][-2].startswith("cannot read notebook")
    assert rows[3][-2].startswith("not a lab of this course")


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
    assert main(["grade", "x.ipynb", "--labs", str(tmp_path)]) == 2
    assert f"no NN_*.ipynb in {tmp_path}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["grade", "x.ipynb", "--labs", "a", "--solutions", "b"])
    assert info.value.code == 2
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

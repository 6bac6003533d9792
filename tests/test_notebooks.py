"""``llmkit notebooks normalise|check-normalised|execute``."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from llmkit.__main__ import main
from llmkit.course.notebooks import (
    KERNELSPEC,
    dumps,
    is_normalised,
    normalise,
    read_notebook,
)


def _messy() -> dict:
    """An nbformat 4.4 notebook (no cell ids) as Jupyter leaves it after a session."""
    return {
        "nbformat": 4,
        "nbformat_minor": 4,
        "metadata": {
            "kernelspec": {
                "name": "venv-xyz",
                "display_name": "Python (venv)",
                "language": "python",
            },
            "language_info": {
                "name": "python",
                "version": "3.11.7",
                "codemirror_mode": {"name": "ipython", "version": 3},
            },
            "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"a": 1}}},
            "vscode": {"interpreter": {"hash": "abc"}},
            "llmkit": {"lab": "01_x"},
        },
        "cells": [
            {
                "cell_type": "markdown",
                "metadata": {"jupyter": {"source_hidden": True}},
                "source": "# Title",
            },
            {
                "cell_type": "code",
                "execution_count": 12,
                "metadata": {
                    "collapsed": False,
                    "scrolled": True,
                    "tags": [],
                    "execution": {"iopub.status.busy": "2024-05-01T10:00:00Z"},
                },
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "a\n"},
                    {"output_type": "stream", "name": "stdout", "text": "b 10%\rb 100%\r\n"},
                    {
                        "output_type": "execute_result",
                        "execution_count": 12,
                        "metadata": {},
                        "data": {"text/plain": "3"},
                    },
                ],
                "source": "print('a')\nprint('b')\n1 + 2",
            },
            {
                "cell_type": "code",
                "execution_count": None,
                "metadata": {"tags": ["keep"]},
                "outputs": [],
                "source": "x = 1",
            },
            {
                "cell_type": "code",
                "execution_count": 3,
                "metadata": {},
                "outputs": [],
                "source": "y = 2",
            },
        ],
    }


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    path = tmp_path / "messy.ipynb"
    path.write_text(json.dumps(_messy()), encoding="utf-8")
    return path


def test_normalise_strips_volatile_metadata(messy, capsys):
    assert main(["notebooks", "normalise", str(messy)]) == 0
    assert "normalised" in capsys.readouterr().out
    nb = read_notebook(messy)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert nb.metadata == {
        "kernelspec": KERNELSPEC,
        "language_info": {"name": "python"},
        "llmkit": {"lab": "01_x"},
    }
    md, c1, c2, c3 = nb.cells
    assert md.metadata == {} and c1.metadata == {} and c2.metadata == {"tags": ["keep"]}
    assert all(c.id for c in nb.cells) and len({c.id for c in nb.cells}) == 4
    # executed cells numbered 1, 2, ... in order; the unexecuted one stays None
    assert [c1.execution_count, c2.execution_count, c3.execution_count] == [1, None, 2]
    assert c1.outputs[-1]["execution_count"] == 1
    # consecutive stdout chunks merged, carriage returns resolved
    assert c1.outputs[0] == {"output_type": "stream", "name": "stdout", "text": "a\nb 100%\n"}
    text = messy.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.startswith('{\n "cells": [\n  {\n')
    nbformat.validate(nb)


def test_normalise_is_idempotent_and_deterministic(messy, tmp_path):
    other = tmp_path / "copy.ipynb"
    other.write_bytes(messy.read_bytes())
    assert main(["notebooks", "normalise", str(messy), str(other)]) == 0
    once = messy.read_bytes()
    assert other.read_bytes() == once  # same ids: they are derived, not random
    assert main(["notebooks", "normalise", str(messy)]) == 0
    assert messy.read_bytes() == once
    assert dumps(normalise(read_notebook(messy))).encode() == once


def test_check_normalised(messy, capsys):
    assert not is_normalised(messy)
    assert main(["notebooks", "check-normalised", str(messy)]) == 1
    assert "not normalised" in capsys.readouterr().out
    main(["notebooks", "normalise", str(messy)])
    assert main(["notebooks", "check-normalised", str(messy)]) == 0


def test_normalise_keeps_existing_ids_and_fixes_duplicates(tmp_path):
    nb = _messy()
    nb["nbformat_minor"] = 5
    ids = ["same", "same", "ok_id", "bad id!"]
    for c, cid in zip(nb["cells"], ids, strict=True):
        c["id"] = cid
    path = tmp_path / "dup.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    first = normalise(read_notebook(path))
    again = normalise(read_notebook(path))
    got = [c.id for c in first.cells]
    assert got[0] == "same" and got[2] == "ok_id"
    assert got[1] not in ("same", "ok_id") and got[3] != "bad id!" and len(set(got)) == 4
    assert [c.id for c in again.cells] == got  # deterministic, not random repairs
    nbformat.validate(first)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_execute_in_place_with_profile_and_cwd(tmp_path, capsys, monkeypatch, how):
    sub = tmp_path / "book"
    sub.mkdir()
    (sub / "data.txt").write_text("hello from the notebook's folder")
    nb = new_notebook(
        cells=[
            new_code_cell("import os\nprint(os.environ['LLMKIT_PROFILE'])"),
            new_code_cell("x = 40"),
            new_code_cell("print(open('data.txt').read())\nx + 2"),
        ]
    )
    path = sub / "demo.ipynb"
    nbformat.write(nb, str(path))
    if how == "flag":
        monkeypatch.setenv("LLMKIT_PROFILE", "full")
        args = ["--profile", "smoke"]
    else:
        monkeypatch.setenv("LLMKIT_PROFILE", "smoke")
        args = []
    assert main(["notebooks", "execute", *args, str(path)]) == 0
    assert "executed" in capsys.readouterr().out
    out = read_notebook(path)
    assert out.cells[0].outputs[0]["text"] == "smoke\n"
    assert out.cells[2].outputs[0]["text"].startswith("hello from the notebook's folder")
    assert out.cells[2].outputs[1]["data"]["text/plain"] == "42"
    assert [c.execution_count for c in out.cells] == [1, 2, 3]
    assert is_normalised(path)


def test_execute_failure_leaves_the_file_untouched(tmp_path, capsys):
    good = tmp_path / "good.ipynb"
    bad = tmp_path / "bad.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1 / 0")]), str(bad))
    nbformat.write(new_notebook(cells=[new_code_cell("print('ok')")]), str(good))
    before = bad.read_bytes()
    assert main(["notebooks", "execute", "--timeout", "60", str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "ZeroDivisionError" in out
    assert bad.read_bytes() == before
    assert read_notebook(good).cells[0].outputs[0]["text"] == "ok\n"  # the batch went on

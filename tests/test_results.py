"""The results page is built from the chapters' record cells and is never stale."""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.__main__ import main
from llmkit.course import results

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_results_page_is_up_to_date():
    assert results.check(ROOT) is None


def test_every_chapter_records_profile_hardware_and_time():
    recs = results.records(ROOT)
    assert len(recs) == len(list((ROOT / "chapters").glob("*.ipynb")))
    for r in recs:
        assert {"profile", "hardware"} <= set(r.fields), r.notebook
        assert "notebook time" in r.run_line(), r.notebook
        for a in r.anchors:
            assert a["cite"] in (ROOT / "references.bib").read_text(), a


def _chapter(tmp_path: Path, summary: str, anchors=None) -> None:
    (tmp_path / "chapters").mkdir()
    meta = {"tags": ["llmkit-record"]}
    if anchors:
        meta["llmkit"] = {"anchors": anchors}
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# A chapter"},
            {
                "cell_type": "code",
                "id": "b",
                "metadata": meta,
                "execution_count": 1,
                "source": "print(...)",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": summary}],
            },
        ],
    }
    (tmp_path / "chapters" / "01_a.ipynb").write_text(json.dumps(nb))


def test_a_changed_output_makes_the_page_stale(tmp_path, capsys):
    _chapter(
        tmp_path,
        "profile : book\nhardware : a CPU\nloss : 1.50\nthis notebook: 9 s\n",
        [{"text": "a paper: 1.40", "cite": "vaswani2017"}],
    )
    assert results.check(tmp_path) is not None  # no page yet
    assert main(["results", "build", "--root", str(tmp_path)]) == 0
    page = (tmp_path / "results.md").read_text()
    assert "loss : 1.50" in page and "profile book · a CPU · notebook time 9 s" in page
    assert "- a paper: 1.40 {cite:p}`vaswani2017`" in page
    assert main(["results", "check", "--root", str(tmp_path)]) == 0
    _chapter_text = (tmp_path / "chapters" / "01_a.ipynb").read_text()
    (tmp_path / "chapters" / "01_a.ipynb").write_text(_chapter_text.replace("1.50", "1.49"))
    assert main(["results", "check", "--root", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().out


def test_every_chapter_opens_with_its_running_box():
    """The first markdown cell includes the generated box; the record declares its facts."""
    from llmkit.course.notebooks import read_notebook

    for r in results.records(ROOT):
        stem = Path(r.notebook).stem
        nb = read_notebook(ROOT / r.notebook)
        first = next(c for c in nb.cells if c.cell_type == "markdown")
        assert f"```{{include}} ../{results.RUNNING_DIR}/{stem}.md\n```" in first.source, stem
        assert r.running.get("cache") and r.running.get("full"), stem
        box = (ROOT / results.RUNNING_DIR / f"{stem}.md").read_text()
        assert box.startswith(":::{admonition} Running this chapter")
        assert r.run_line().split("notebook time ")[-1] in box  # the recorded time


def test_the_running_box_is_built_from_the_record_and_checked(tmp_path, capsys):
    _chapter(tmp_path, "profile : book (seed 1)\nhardware : a CPU\nthis notebook: 9 s\n")
    nb_path = tmp_path / "chapters" / "01_a.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][1]["metadata"]["llmkit"] = {
        "running": {"cache": "trains a thing, cached in `~/x`", "full": "one GPU"}
    }
    nb_path.write_text(json.dumps(nb))
    assert main(["results", "build", "--root", str(tmp_path)]) == 0
    box = (tmp_path / results.RUNNING_DIR / "01_a.md").read_text()
    assert "**Time:** 9 s in the `book` profile (seed 1) on a CPU" in box
    assert "trains a thing, cached in `~/x`" in box and "one GPU" in box
    assert main(["results", "check", "--root", str(tmp_path)]) == 0
    nb_path.write_text(nb_path.read_text().replace("one GPU", "two GPUs"))  # the box only
    assert main(["results", "check", "--root", str(tmp_path)]) == 1
    assert "01_a.md is stale" in capsys.readouterr().out
    assert main(["results", "build", "--root", str(tmp_path)]) == 0
    stray = tmp_path / results.RUNNING_DIR / "02_gone.md"
    stray.write_text("old")
    assert main(["results", "check", "--root", str(tmp_path)]) == 1
    assert "belongs to no chapter" in capsys.readouterr().out
    assert main(["results", "build", "--root", str(tmp_path)]) == 0 and not stray.exists()


def test_a_chapter_needing_another_quotes_that_chapters_time(tmp_path):
    _chapter(tmp_path, "profile : book\nhardware : a CPU\nthis notebook: 480 s\n")
    nb_path = tmp_path / "chapters" / "01_a.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][1]["outputs"][0]["text"] = "profile : book\nhardware : a CPU\nthis notebook: 20 s\n"
    nb["cells"][1]["metadata"]["llmkit"] = {"running": {"needs": ["00_base"]}}
    (tmp_path / "chapters" / "02_b.ipynb").write_text(json.dumps(nb))
    (tmp_path / "chapters" / "00_base.ipynb").write_text(nb_path.read_text())
    nb_path.unlink()
    results.build(tmp_path)
    box = (tmp_path / results.RUNNING_DIR / "02_b.md").read_text()
    assert "{doc}`/chapters/00_base`" in box and "own run took 480 s" in box


def test_a_needed_chapters_first_run_field_is_quoted_before_its_notebook_time(tmp_path):
    # the needed chapter loaded its model from the cache: its notebook time is not the cost
    record = (
        "profile : book\nhardware : a CPU\nfirst run : 3000 s (training)\nthis notebook: 60 s\n"
    )
    _chapter(tmp_path, record)
    nb_path = tmp_path / "chapters" / "01_a.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][1]["outputs"][0]["text"] = "profile : book\nhardware : a CPU\nthis notebook: 20 s\n"
    nb["cells"][1]["metadata"]["llmkit"] = {"running": {"needs": ["00_base"]}}
    (tmp_path / "chapters" / "02_b.ipynb").write_text(json.dumps(nb))
    (tmp_path / "chapters" / "00_base.ipynb").write_text(nb_path.read_text())
    nb_path.unlink()
    results.build(tmp_path)
    box = (tmp_path / results.RUNNING_DIR / "02_b.md").read_text()
    assert "own run took 3000 s (training)" in box and "60 s" not in box
    own = (tmp_path / results.RUNNING_DIR / "00_base.md").read_text()
    assert "without a cached model, this chapter trains it: 3000 s (training)." in own

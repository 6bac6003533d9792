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

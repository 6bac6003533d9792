"""The book: table of contents, configuration, and a full build with warnings as errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return files


def _existing(stem: str) -> Path | None:
    for suffix in (".md", ".ipynb"):
        if (ROOT / f"{stem}{suffix}").exists():
            return ROOT / f"{stem}{suffix}"
    return None


def test_toc_lists_only_pages_that_exist():
    missing = [stem for stem in _toc_files() if _existing(stem) is None]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_chapter_lab_and_no_solution_is_in_the_book():
    listed = set(_toc_files())
    for folder in ("chapters", "labs"):
        for notebook in sorted((ROOT / folder).glob("*.ipynb")):
            assert f"{folder}/{notebook.stem}" in listed, f"{notebook} is not in _toc.yml"
    assert not any(stem.startswith("solutions/") for stem in listed), "solutions are not pages"


def test_book_uses_committed_outputs_and_offline_mathjax():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["html"]["use_download_button"] is True
    assert "llmkit.css" in config["sphinx"]["config"]["html_css_files"]
    assert (ROOT / "_static" / "llmkit.css").exists()


@pytest.mark.skipif(
    shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None,
    reason="jupyter-book is not installed in this environment",
)
def test_book_builds_without_warnings(tmp_path):
    """The same build as `make book`, into a temporary folder, failing on any warning."""
    exe = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [
            str(exe),
            "build",
            str(ROOT),
            "--path-output",
            str(tmp_path),
            "--warningiserror",
            "--nitpick",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    for stem in _toc_files():
        assert (html / f"{stem}.html").exists(), f"{stem}.html was not built"
    # MathJax is served from the book itself, not from a CDN.
    page = (html / "intro.html").read_text()
    assert "cdn.jsdelivr.net/npm/mathjax" not in page
    _check_reading(html)


def _check_reading(html: Path) -> None:
    """What a reader gets from the built pages: the opening, the download, the search."""
    for nb in sorted((ROOT / "chapters").glob("*.ipynb")):
        page = (html / "chapters" / f"{nb.stem}.html").read_text(encoding="utf-8")
        # the download button gives the notebook itself
        assert f'href="../_sources/chapters/{nb.stem}.ipynb"' in page, nb.stem
        assert (html / "_sources" / "chapters" / f"{nb.stem}.ipynb").exists(), nb.stem
        assert "Running this chapter" in page, nb.stem  # the generated box is included
        assert "llmkit.css" in page, nb.stem
        if "profile.choose(" in nb.read_text(encoding="utf-8"):  # the sizes are folded away
            assert "tag_hide-input" in page, nb.stem
    # the offline search index finds words of the chapters' bodies (stemmed as Sphinx does)
    import snowballstemmer

    stem = snowballstemmer.stemmer("porter").stemWord
    text = (html / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    for word, doc in (("nucleus", "chapters/04_decoding"), ("Tatoeba", "chapters/08_data")):
        hits = index["terms"][stem(word.lower())]
        hits = hits if isinstance(hits, list) else [hits]
        assert doc in [index["docnames"][i] for i in hits], word

"""The book: table of contents, configuration, and a full build with warnings as errors."""

from __future__ import annotations

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

"""The project's wiring: the two commands, CI, the benchmark, the docs that describe them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _recipe(target: str) -> str:
    """The recipe lines of one Makefile target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n|\n)*)", text, flags=re.M)
    assert match, f"Makefile has no target {target!r}"
    return match.group(1)


def test_ci_runs_make_test_and_nothing_else():
    script = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert commands[-1] == "exec make test"
    assert "LLMKIT_DATA_MIRROR" in script and "../shared/data" in script
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


def test_make_test_runs_every_stage():
    recipe = _recipe("test")
    for stage in ("ruff check", "check-normalised", "labs check", "--nbval-lax"):
        assert stage in recipe, f"make test does not run {stage}"
    assert "LLMKIT_PROFILE=smoke" in recipe
    for folder in ("tests", "chapters", "solutions"):
        assert folder in recipe.split("--nbval-lax")[1]
    # The book build runs inside pytest (tests/test_book.py), so pytest's summary line
    # is the last thing make test prints.
    assert recipe.rstrip().splitlines()[-1].strip().endswith("tests chapters solutions")


def test_both_commands_set_up_the_environment_first():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: \$\(STAMP\)", text, flags=re.M)
    assert re.search(r"^test: \$\(STAMP\)", text, flags=re.M)
    assert "-c constraints.txt" in _recipe("$(STAMP)")
    assert "--warningiserror" in _recipe("book")


def test_pins():
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in constraints
    assert "jupyter-book==1.0.4.post1" in constraints
    for name in (
        "nbval",
        "einops",
        "ipywidgets",
        "matplotlib",
        "tqdm",
        "safetensors",
        "pytest",
        "pytest-xdist",
        "hypothesis",
        "ruff",
        "tokenizers",
        "scipy",
        "sacrebleu",
        "rouge_score",
    ):
        assert any(line.lower().startswith(f"{name}==") for line in constraints), name


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make book" in first_block and "make test" in first_block
    for profile in ("smoke", "book", "full"):
        assert f"`{profile}`" in readme
    assert "llmkit grade" in readme


def test_cli_runs_as_module_and_lists_its_commands():
    result = subprocess.run(
        [sys.executable, "-m", "llmkit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for command in ("labs", "grade", "notebooks"):
        assert command in result.stdout


def test_bpe_benchmark_prints_its_table(tmp_path):
    text = ("the quick brown fox jumps over the lazy dog; " * 400) + "naïve café 東京\n"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_bpe.py"),
            "--file",
            str(corpus),
            "--vocab-size",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train_bpe_naive" in result.stdout and "BPETokenizer.train" in result.stdout
    assert "merges identical: yes" in result.stdout

"""The results page: every chapter's headline numbers, read from its committed outputs.

A chapter marks the cells that print its results with the tag ``llmkit-record``: the
closing summary (``key : value`` lines: ``profile``, ``hardware``, the headline numbers,
``this notebook`` or ``notebook time``) and any table the chapter is about. Published
anchors to compare with go in that cell's ``metadata.llmkit.anchors``, each with its
source as a citation key of ``references.bib``::

    {"anchors": [{"text": "nanoGPT, character-level Shakespeare: 1.47 (GPU configuration)",
                  "cite": "karpathy2022nanogpt"}]}

``llmkit results build`` writes ``results.md`` (a page of the book) from those cells;
``llmkit results check`` fails when the page differs from what the notebooks say, so a
re-executed chapter cannot leave a stale page behind (``make test`` runs the check
through the test suite). Nothing on the page is typed by hand but the anchors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .notebooks import read_notebook

__all__ = ["RECORD_TAG", "Record", "read_record", "records", "render", "build", "check"]

RECORD_TAG = "llmkit-record"
PAGE = "results.md"
_FIELD = re.compile(r"^(?P<key>[A-Za-z][^:]*?)\s*:\s+(?P<value>.+)$")
_TIME_KEYS = ("this notebook", "notebook time")


@dataclass
class Record:
    """What one chapter notebook records: its title, its record blocks and anchors."""

    notebook: str  # e.g. "chapters/03_gpt.ipynb"
    title: str
    blocks: list[str] = field(default_factory=list)
    anchors: list[dict] = field(default_factory=list)

    @property
    def fields(self) -> dict[str, str]:
        """The ``key : value`` lines of every block (the first occurrence of a key)."""
        out: dict[str, str] = {}
        for block in self.blocks:
            for line in block.splitlines():
                m = _FIELD.match(line.strip())
                if m:
                    out.setdefault(m["key"].strip(), m["value"].strip())
        return out

    def run_line(self) -> str:
        """``profile book (seed 0) · hardware · notebook time 489 s``, from the record."""
        f = self.fields
        parts = []
        if "profile" in f:
            parts.append(f"profile {f['profile']}")
        if "hardware" in f:
            parts.append(f["hardware"])
        for key in _TIME_KEYS:
            if key in f:
                parts.append(f"notebook time {f[key]}")
                break
        return " · ".join(parts)


def _text(outputs: list) -> str:
    chunks = []
    for o in outputs:
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            chunks.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            chunks.append(o.get("data", {}).get("text/plain", "") + "\n")
    return "".join(chunks).strip("\n")


def read_record(path: str | Path, root: str | Path = ".") -> Record | None:
    """The record of one notebook (``None`` if no cell is tagged ``llmkit-record``)."""
    nb = read_notebook(path)
    title = next(
        (
            line[2:].strip()
            for c in nb.cells
            if c.cell_type == "markdown"
            for line in c.source.splitlines()
            if line.startswith("# ")
        ),
        Path(path).stem,
    )
    record = Record(Path(path).resolve().relative_to(Path(root).resolve()).as_posix(), title)
    for cell in nb.cells:
        if cell.cell_type != "code" or RECORD_TAG not in cell.metadata.get("tags", []):
            continue
        text = _text(cell.get("outputs", []))
        if text:
            record.blocks.append(text)
        record.anchors += cell.metadata.get("llmkit", {}).get("anchors", [])
    return record if record.blocks else None


def records(root: str | Path = ".") -> list[Record]:
    """The records of every chapter notebook under ``root/chapters``, in file order."""
    root = Path(root)
    found = (read_record(p, root) for p in sorted((root / "chapters").glob("*.ipynb")))
    return [r for r in found if r is not None]


def render(recs: list[Record]) -> str:
    """The Markdown (MyST) of the results page."""
    lines = [
        "# Results",
        "",
        "Every chapter's headline numbers in one place, each beside the published",
        "figure it can be compared with. Nothing here is typed by hand: `llmkit results",
        "build` reads the committed outputs of the cells that each chapter tags",
        f"`{RECORD_TAG}`, and the tests fail when this page and the notebooks disagree.",
        "The numbers come from the `book` profile on the machine each line names, unless",
        "it says otherwise; the chapters explain what each one measures and its caveats.",
        "",
    ]
    for r in recs:
        doc = Path(r.notebook).with_suffix("").as_posix()
        lines += [f"## {r.title}", "", f"From {{doc}}`{doc}`.", ""]
        run = r.run_line()
        if run:
            lines += [f"*{run}*", ""]
        for block in r.blocks:
            lines += ["```text", block, "```", ""]
        if r.anchors:
            lines.append("Published anchors:")
            lines.append("")
            for a in r.anchors:
                lines.append(f"- {a['text']} {{cite:p}}`{a['cite']}`")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def build(root: str | Path = ".") -> bool:
    """Write ``root/results.md``; True if it changed."""
    page = Path(root) / PAGE
    text = render(records(root))
    old = page.read_text(encoding="utf-8") if page.exists() else None
    if text != old:
        page.write_text(text, encoding="utf-8")
    return text != old


def check(root: str | Path = ".") -> str | None:
    """``None`` if ``root/results.md`` is up to date, else what is wrong."""
    page = Path(root) / PAGE
    if not page.exists():
        return f"{page} is missing: run `llmkit results build`"
    if page.read_text(encoding="utf-8") != render(records(root)):
        return f"{page} is stale (the notebooks' records changed): run `llmkit results build`"
    return None

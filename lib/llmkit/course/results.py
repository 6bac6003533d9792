"""The results page: every chapter's headline numbers, read from its committed outputs.

A chapter marks the cells that print its results with the tag ``llmkit-record``: the
closing summary (``key : value`` lines: ``profile``, ``hardware``, the headline numbers,
``this notebook`` or ``notebook time``) and any table the chapter is about. Published
anchors to compare with go in that cell's ``metadata.llmkit.anchors``, each with its
source as a citation key of ``references.bib``::

    {"anchors": [{"text": "nanoGPT, character-level Shakespeare: 1.47 (GPU configuration)",
                  "cite": "karpathy2022nanogpt"}]}

``llmkit results build`` writes ``results.md`` (a page of the book) from those cells,
and one *running box* per chapter, ``_generated/running/<chapter>.md``, that the chapter's
first markdown cell includes (``{include} ../_generated/running/<chapter>.md``): what
running the chapter costs, taken from the same record (profile, hardware, notebook time),
and what it trains, loads and caches, declared beside the anchors in
``metadata.llmkit.running`` because it is a fact about the chapter's code::

    {"running": {"cache": "Markdown: what is trained or loaded, and cached where",
                 "needs": ["05_bert"],   # chapters whose cached model this one loads
                 "full": "Markdown: what the full profile runs, and on what"}}

``llmkit results check`` fails when the page or a box differs from what the notebooks
say, so a re-executed chapter cannot leave a stale page behind (``make test`` runs the
check through the test suite). Nothing on the page is typed by hand but the anchors, and
nothing in a box but what ``running`` declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .notebooks import read_notebook

__all__ = [
    "RECORD_TAG",
    "RUNNING_DIR",
    "Record",
    "read_record",
    "records",
    "render",
    "render_running",
    "outputs",
    "build",
    "check",
]

RECORD_TAG = "llmkit-record"
PAGE = "results.md"
RUNNING_DIR = "_generated/running"
_FIELD = re.compile(r"^(?P<key>[A-Za-z][^:]*?)\s*:\s+(?P<value>.+)$")
_TIME_KEYS = ("this notebook", "notebook time")
#: A record field that says what a first run costs when the notebook itself loaded a cached
#: model (its notebook time is then not the cost of training); ``needs`` quote it first.
_FIRST_RUN_KEYS = ("first run",)


@dataclass
class Record:
    """What one chapter notebook records: its title, its record blocks and anchors."""

    notebook: str  # e.g. "chapters/03_gpt.ipynb"
    title: str
    blocks: list[str] = field(default_factory=list)
    anchors: list[dict] = field(default_factory=list)
    running: dict = field(default_factory=dict)

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
        record.running.update(cell.metadata.get("llmkit", {}).get("running", {}))
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


def _time(r: Record) -> str | None:
    return next((r.fields[k] for k in _TIME_KEYS if k in r.fields), None)


def _first_run_time(r: Record) -> str | None:
    """What training ``r``'s model costs: its ``first run`` field, else its notebook time."""
    return next((r.fields[k] for k in _FIRST_RUN_KEYS if k in r.fields), None) or _time(r)


def render_running(r: Record, recs: list[Record]) -> str:
    """The Markdown (MyST) of the "running this chapter" box of the chapter ``r``.

    The time, profile and hardware come from ``r``'s record; what is trained, loaded and
    cached, and what the ``full`` profile needs, from ``r.running`` (see the module's
    docstring); the time of each chapter in ``r.running["needs"]`` from that chapter's
    record (its ``first run`` field where it has one: the time of training its model).
    """
    f = r.fields
    profile, _, seed = f.get("profile", "").partition(" ")
    where = f" on {f['hardware']}" if "hardware" in f else ""
    lines = [
        ":::{admonition} Running this chapter",
        ":class: tip llmkit-running",
        "",
        f"- **Time:** {_time(r) or 'not recorded'} in the `{profile or '?'}` profile"
        f"{' ' + seed if seed else ''}{where}: the run whose outputs this page shows. "
        "`LLMKIT_PROFILE=smoke` runs it in under a minute.",
    ]
    if r.running.get("cache"):
        lines.append(f"- **Trains, loads and caches:** {r.running['cache']}")
    own = next((f[k] for k in _FIRST_RUN_KEYS if k in f), None)
    if own:
        lines.append(f"- **First run:** without a cached model, this chapter trains it: {own}.")
    by_stem = {Path(x.notebook).stem: x for x in recs}
    for stem in r.running.get("needs", []):
        other = by_stem.get(stem)
        if other is None:
            raise ValueError(f"{r.notebook}: running.needs names {stem!r}, which has no record")
        lines.append(
            f"- **First run:** if the model of {{doc}}`/chapters/{stem}` is not cached yet, "
            f"this chapter trains it first; that chapter's own run took "
            f"{_first_run_time(other) or '?'}."
        )
    if r.running.get("full"):
        lines.append(f"- **The `full` profile:** {r.running['full']}")
    lines += [":::", ""]
    return "\n".join(lines)


def outputs(root: str | Path = ".") -> dict[Path, str]:
    """Every generated file (the results page, the running boxes) and its text."""
    root = Path(root)
    recs = records(root)
    out = {root / PAGE: render(recs)}
    for r in recs:
        out[root / RUNNING_DIR / f"{Path(r.notebook).stem}.md"] = render_running(r, recs)
    return out


def _stray(root: Path, expected: dict[Path, str]) -> list[Path]:
    folder = root / RUNNING_DIR
    found = sorted(folder.glob("*.md")) if folder.is_dir() else []
    return [p for p in found if p not in expected]


def build(root: str | Path = ".") -> bool:
    """Write ``root/results.md`` and the running boxes; True if any file changed."""
    root = Path(root)
    expected = outputs(root)
    changed = False
    for path, text in expected.items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if text != old:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed = True
    for path in _stray(root, expected):
        path.unlink()
        changed = True
    return changed


def check(root: str | Path = ".") -> str | None:
    """``None`` if the results page and the running boxes are up to date, else what is wrong."""
    root = Path(root)
    expected = outputs(root)
    for path, text in expected.items():
        if not path.exists():
            return f"{path} is missing: run `llmkit results build`"
        if path.read_text(encoding="utf-8") != text:
            return f"{path} is stale (the notebooks' records changed): run `llmkit results build`"
    for path in _stray(root, expected):
        return f"{path} belongs to no chapter: run `llmkit results build`"
    return None

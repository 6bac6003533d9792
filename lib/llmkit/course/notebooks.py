"""Reading, writing, normalising and executing the course's notebooks.

Normal form (what ``llmkit notebooks normalise`` writes, and what every committed
notebook must be in; ``llmkit notebooks check-normalised`` checks it):

- nbformat 4.5; every cell has a valid, unique ``id``. A missing or invalid id is
  replaced by a deterministic one (a hash of the cell's position, type and source),
  so normalising never introduces randomness.
- Notebook metadata is exactly ``kernelspec`` = :data:`KERNELSPEC`, ``language_info`` =
  ``{"name": "python"}``, plus the keys in :data:`KEEP_NOTEBOOK_METADATA` when present
  (``llmkit``, ``mystnb``). Everything else (widget state, ``vscode``, interpreter
  hashes, ...) is dropped.
- Cell metadata loses the volatile keys in :data:`VOLATILE_CELL_METADATA` (execution
  timestamps, ``collapsed``, ``scrolled``, ``jupyter`` UI state, ...) and empty ``tags``.
- Execution counts: the code cells that were executed (they have an execution count or
  an output) are numbered 1, 2, 3, ... in notebook order; a cell that was not executed
  keeps ``None``. Each ``execute_result`` output carries its cell's number.
- Consecutive stream outputs of the same stream are merged, ``\\r\\n`` becomes ``\\n``
  and carriage-return overwrites (progress bars) are resolved as a terminal would.
- Written by nbformat (indent 1, sorted keys, UTF-8) with a trailing newline.

Normalising is idempotent: normalising a normalised notebook changes no byte.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbformat
from nbformat import NotebookNode

__all__ = [
    "KERNELSPEC",
    "LANGUAGE_INFO",
    "KEEP_NOTEBOOK_METADATA",
    "VOLATILE_CELL_METADATA",
    "read_notebook",
    "dumps",
    "write_notebook",
    "normalise",
    "normalised_text",
    "is_normalised",
    "normalise_files",
    "check_normalised_files",
    "execute_notebook",
    "execute_files",
    "current_env_kernel_manager",
]

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
LANGUAGE_INFO = {"name": "python"}
KEEP_NOTEBOOK_METADATA = ("llmkit", "mystnb")
VOLATILE_CELL_METADATA = (
    "execution",
    "ExecuteTime",
    "collapsed",
    "scrolled",
    "jupyter",
    "heading_collapsed",
    "hidden",
    "vscode",
    "pycharm",
    "colab",
    "id",
    "outputId",
)

_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


# --------------------------------------------------------------------------- I/O


def read_notebook(path: str | os.PathLike[str]) -> NotebookNode:
    """Read a notebook as nbformat 4, exactly as stored.

    Unlike ``nbformat.read`` this does not validate, so missing or duplicate cell ids
    are *not* silently replaced by random ones (normalise makes deterministic ones).
    Raises ``nbformat.reader.NotJSONError`` for a file that is not JSON.
    """
    with open(path, encoding="utf-8") as f:
        nb = nbformat.reader.reads(f.read())
    if nb.get("nbformat") != 4:
        nb = nbformat.convert(nb, 4)
    nb.setdefault("metadata", NotebookNode())
    nb.setdefault("cells", [])
    return nb


def dumps(nb: NotebookNode) -> str:
    """Serialise ``nb`` exactly as the course writes notebooks (trailing newline)."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: NotebookNode, path: str | os.PathLike[str]) -> bool:
    """Write ``nb`` to ``path`` (atomically); return True if the file's bytes changed."""
    path = Path(path)
    data = dumps(nb).encode("utf-8")
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


# --------------------------------------------------------------------- normalise


def _deterministic_id(index: int, cell: NotebookNode, taken: set[str]) -> str:
    digest = hashlib.sha1(f"{index}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()
    base = digest[:12]
    new, k = base, 1
    while new in taken:
        new, k = f"{base}-{k}", k + 1
    return new


def _resolve_carriage_returns(text: str) -> str:
    text = text.replace("\r\n", "\n")
    if "\r" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        parts = line.rstrip("\r").split("\r")
        lines.append(parts[-1])
    return "\n".join(lines)


def _normalise_outputs(outputs: list, count: int | None) -> list:
    merged: list = []
    for out in outputs:
        if (
            out.get("output_type") == "stream"
            and merged
            and merged[-1].get("output_type") == "stream"
            and merged[-1].get("name") == out.get("name")
        ):
            merged[-1]["text"] = merged[-1]["text"] + out.get("text", "")
            continue
        merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = _resolve_carriage_returns(out.get("text", ""))
        elif out.get("output_type") == "execute_result":
            out["execution_count"] = count
        if "transient" in out:
            del out["transient"]
    return merged


def normalise(nb: NotebookNode) -> NotebookNode:
    """Bring ``nb`` into the course's normal form, in place; return it (see module doc)."""
    nb.nbformat = 4
    nb.nbformat_minor = 5
    meta = NotebookNode(
        kernelspec=NotebookNode(dict(KERNELSPEC)),
        language_info=NotebookNode(dict(LANGUAGE_INFO)),
    )
    for key in KEEP_NOTEBOOK_METADATA:
        if key in nb.metadata:
            meta[key] = nb.metadata[key]
    nb.metadata = meta

    taken: set[str] = set()
    for cell in nb.cells:
        cid = cell.get("id")
        if isinstance(cid, str) and _ID_RE.match(cid) and cid not in taken:
            taken.add(cid)
    seen: set[str] = set()
    count = 0
    for index, cell in enumerate(nb.cells):
        cid = cell.get("id")
        if not (isinstance(cid, str) and _ID_RE.match(cid)) or cid in seen:
            cid = _deterministic_id(index, cell, taken)
            taken.add(cid)
            cell["id"] = cid
        seen.add(cid)

        md = cell.setdefault("metadata", NotebookNode())
        for key in VOLATILE_CELL_METADATA:
            md.pop(key, None)
        if "tags" in md and not md["tags"]:
            del md["tags"]

        if cell.cell_type == "code":
            outputs = cell.get("outputs", [])
            executed = cell.get("execution_count") is not None or bool(outputs)
            if executed:
                count += 1
                cell["execution_count"] = count
            else:
                cell["execution_count"] = None
            cell["outputs"] = _normalise_outputs(outputs, count if executed else None)
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    return nb


def normalised_text(path: str | os.PathLike[str]) -> str:
    """The normal form of the notebook at ``path``, as text."""
    return dumps(normalise(read_notebook(path)))


def is_normalised(path: str | os.PathLike[str]) -> bool:
    """True if normalising ``path`` would not change a byte."""
    return Path(path).read_bytes() == normalised_text(path).encode("utf-8")


def normalise_files(paths: Iterable[str | os.PathLike[str]], *, out=None) -> int:
    """Normalise files in place; return the exit status (1 if a file could not be read)."""
    status = 0
    for p in paths:
        try:
            changed = write_notebook(normalise(read_notebook(p)), p)
        except Exception as exc:  # report and go on with the others
            print(f"{p}: cannot normalise: {_one_line(exc)}", file=out)
            status = 1
            continue
        print(f"{p}: {'normalised' if changed else 'already normal'}", file=out)
    return status


def check_normalised_files(paths: Iterable[str | os.PathLike[str]], *, out=None) -> int:
    """Return 1 (and name them) if any file is not in normal form, else 0."""
    bad = []
    n = 0
    for p in paths:
        n += 1
        try:
            ok = is_normalised(p)
        except Exception as exc:
            print(f"{p}: cannot read: {_one_line(exc)}", file=out)
            bad.append(p)
            continue
        if not ok:
            print(f"{p}: not normalised (run `llmkit notebooks normalise {p}`)", file=out)
            bad.append(p)
    if bad:
        print(f"{len(bad)} of {n} notebook(s) not normalised", file=out)
        return 1
    print(f"all {n} notebook(s) in normal form", file=out)
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------- execute


def current_env_kernel_manager(**kwargs):
    """An ``AsyncKernelManager`` whose Python kernel runs in *this* interpreter.

    The kernelspec stored in a notebook (``python3``) may resolve to another Python
    (a user-level kernelspec); executing the course's notebooks must use the
    environment that has ``llmkit`` installed.
    """
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class _CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())

    return AsyncKernelManager(
        kernel_name="python3", kernel_spec_manager=_CurrentEnvSpecs(), **kwargs
    )


def execute_notebook(
    path: str | os.PathLike[str],
    *,
    profile: str = "book",
    timeout: float | None = 1800,
    startup_timeout: float = 120,
) -> float:
    """Execute the notebook at ``path`` in place, then normalise it; return seconds taken.

    The kernel runs in this interpreter's environment, with the notebook's folder as
    working directory and ``LLMKIT_PROFILE=profile``. ``timeout`` bounds each cell
    (None: no limit). On an error the file is left untouched and the error raised
    (cells tagged ``raises-exception`` may raise).
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = read_notebook(path)
    env = dict(os.environ)
    env["LLMKIT_PROFILE"] = profile
    client = NotebookClient(
        nb,
        km=current_env_kernel_manager(),
        timeout=timeout,
        startup_timeout=startup_timeout,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        record_timing=False,
        store_widget_state=False,
    )
    start = time.perf_counter()
    client.execute(env=env)
    elapsed = time.perf_counter() - start
    write_notebook(normalise(nb), path)
    return elapsed


def execute_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    profile: str = "book",
    timeout: float | None = 1800,
    out=None,
) -> int:
    """Execute several notebooks (see :func:`execute_notebook`); 1 if any failed."""
    failed = []
    for p in paths:
        print(f"executing {p} (profile {profile}) ...", file=out, flush=True)
        try:
            seconds = execute_notebook(p, profile=profile, timeout=timeout)
        except Exception as exc:  # go on with the other notebooks
            failed.append(str(p))
            detail = str(exc).strip()
            print(f"FAILED {p}: {type(exc).__name__}\n{detail[-3000:]}", file=out, flush=True)
            continue
        print(f"executed {p} in {seconds:.1f} s", file=out, flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=out)
        return 1
    return 0

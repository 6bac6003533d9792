"""pytest plugin that ``llmkit grade`` loads next to nbval (``-p llmkit.course._nbval_plugin``).

It records, for every code cell nbval runs, whether it passed, what it printed (the
last :data:`KEEP_STDOUT` characters) and a one-line message, into the JSON file named
by ``--llmkit-results`` (rewritten after each cell, so a killed run keeps what it had).

A cell passes only if nbval saw no error output *and* the kernel's ``execute_reply``
says ``status: ok`` (a handler installed with ``get_ipython().set_custom_exc`` can hide
the error output, not the status). A check cell (tagged ``grade``, or with
``metadata.llmkit.points``) must in addition print a line starting with ``✔`` on
stdout, the check's verdict line. A failure's message is the error's first line, plus
its line starting with ``hint:`` if there is one (``AssertionError: merge: wrong
result — hint: ...``).

It also makes nbval robust enough for grading. nbval 0.11, on its own:

- on a cell timeout interrupts the kernel (good: an interruptible infinite loop ends
  with ``KeyboardInterrupt``), but then marks *every later cell* ``xfail``; and if the
  interrupt is not answered within 5 s (a loop that swallows ``KeyboardInterrupt``,
  a long C call) it stops the kernel, and every later cell fails with
  "Kernel dead on test start";
- waits the full cell timeout when the kernel dies (``os._exit``, out of memory);
- reads output forever if an uninterruptible cell keeps printing;
- keeps every output message of a cell in memory and joins the stream texts with
  repeated ``+=`` (quadratic): a cell printing in an endless loop until its timeout
  took minutes and gigabytes;
- lets the kernel inherit pytest's stdout, to which ipykernel echoes everything
  written to file descriptor 1 (``os.write``, C code), and which pytest captures in
  memory.

This plugin judges each cell on its own (it resets nbval's ``timed_out`` flag before
each cell), polls the kernel while waiting so a dead kernel is noticed within a second,
kills a kernel still busy ``--llmkit-watchdog`` seconds after the cell timeout, and,
before a cell whose kernel is dead, starts a new kernel and replays the code cells
that had passed (check cells excepted) so that later exercises are still graded.
It reads at most ``--llmkit-max-output`` characters of output per cell (stream text
and rich display data together) and drops the rest, ending the kept text with a note;
it starts kernels with their stdout on ``/dev/null``. ``llmkit grade`` also caps what
the kernel sends in the first place (a cell it puts at the top of the graded notebook).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from queue import Empty

import pytest

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Characters of a cell's stdout kept in the results file (the end of it).
KEEP_STDOUT = 10_000
#: Default of ``--llmkit-max-output``: characters of output read per cell.
MAX_OUTPUT = 4_000_000
VERDICT = "✔"


class KernelDied(RuntimeError):
    """The kernel process ended while a cell was running."""


class _State:
    def __init__(self, path: str, timeout: float, grace: float):
        self.path = path
        self.timeout = timeout
        self.grace = grace
        self.cells: list[dict] = []
        self.kernel_pids: list[int] = []
        self.restarts = 0
        self.replay: dict[str, list[str]] = {}  # notebook path -> sources to replay
        self.max_output = MAX_OUTPUT
        self.budget = MAX_OUTPUT  # output characters the current cell may still send
        self.dropped = 0  # output characters of the current cell dropped

    def write(self) -> None:
        data = {"cells": self.cells, "kernel_pids": self.kernel_pids, "restarts": self.restarts}
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


_STATE: _State | None = None


def pytest_addoption(parser):
    group = parser.getgroup("llmkit", "llmkit grading")
    group.addoption(
        "--llmkit-results",
        default=None,
        help="write per-cell results (JSON) to this file",
    )
    group.addoption(
        "--llmkit-watchdog",
        type=float,
        default=15.0,
        help="kill a kernel still busy this many seconds after the cell timeout",
    )
    group.addoption(
        "--llmkit-max-output",
        type=int,
        default=MAX_OUTPUT,
        help="read at most this many characters of output per cell; drop the rest",
    )


def pytest_configure(config):
    global _STATE
    path = config.getoption("llmkit_results")
    if not path:
        return
    _patch_nbval()
    timeout = float(config.getoption("nbval_cell_timeout", 2000))
    _STATE = _State(path, timeout, config.getoption("llmkit_watchdog"))
    _STATE.max_output = max(0, int(config.getoption("llmkit_max_output")))
    _STATE.write()


def _patch_nbval() -> None:
    import nbval.kernel
    from nbval.kernel import RunningKernel
    from nbval.plugin import IPyNbFile

    if getattr(RunningKernel, "_llmkit_patched", False):
        return

    start = nbval.kernel.start_new_kernel

    def start_new_kernel(*args, **kwargs):
        # ipykernel echoes output written to file descriptor 1 (os.write, C code) to its
        # own stdout: pytest's, captured in memory per test; send it nowhere instead
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        return start(*args, **kwargs)

    nbval.kernel.start_new_kernel = start_new_kernel

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise Empty
            try:
                msg = self.get_message(stream="shell", timeout=wait)
            except Empty:
                if not self.is_alive():
                    raise KernelDied("the kernel died while running this cell") from None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                self._llmkit_reply = msg["content"]
                if msg["content"]["status"] == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                return

    read = IPyNbFile.get_kernel_message

    def get_kernel_message(self, timeout=None, stream="iopub"):
        while True:
            msg = read(self, timeout=timeout, stream=stream)
            if _STATE is None or stream != "iopub" or _within_budget(msg):
                return msg

    RunningKernel.await_reply = await_reply
    IPyNbFile.get_kernel_message = get_kernel_message
    RunningKernel._llmkit_patched = True


def _within_budget(msg: dict) -> bool:
    """Charge an output message to the current cell's budget; False: drop it.

    The stream message that crosses the budget is cut to fit and ends with a note;
    later stream and display messages are dropped (other messages always pass).
    """
    kind = msg.get("msg_type")
    content = msg.get("content") or {}
    if kind == "stream":
        text = content.get("text", "")
        if not isinstance(text, str):
            return True
        if _STATE.budget <= 0:
            _STATE.dropped += len(text)
            return False
        if len(text) > _STATE.budget:
            _STATE.dropped += len(text) - _STATE.budget
            content["text"] = (
                text[: _STATE.budget]
                + f"\n[llmkit grade: output beyond {_STATE.max_output:,} characters dropped]\n"
            )
            _STATE.budget = 0
            return True
        _STATE.budget -= len(text)
        return True
    if kind in ("display_data", "execute_result", "update_display_data"):
        data = content.get("data") or {}
        size = sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())
        if size > _STATE.budget:
            _STATE.dropped += size
            _STATE.budget = 0
            return False
        _STATE.budget -= size
    return True


def _is_cell(item) -> bool:
    return _STATE is not None and type(item).__name__ == "IPyNbCell"


def _kernel_pid(kernel) -> int | None:
    km = getattr(kernel, "km", None)
    prov = getattr(km, "provisioner", None)
    pid = getattr(prov, "pid", None)
    if pid is None:
        pid = getattr(getattr(prov, "process", None), "pid", None)
    return pid


def _kill(kernel) -> None:
    pid = _kernel_pid(kernel)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _note_kernel(kernel) -> None:
    pid = _kernel_pid(kernel)
    if pid and pid not in _STATE.kernel_pids:
        _STATE.kernel_pids.append(pid)
        _STATE.write()


def _ensure_kernel(item) -> None:
    """Start a fresh kernel (and replay the passed cells) if the current one is dead."""
    parent = item.parent
    kernel = parent.kernel
    if kernel is not None and kernel.is_alive():
        _note_kernel(kernel)
        return
    if kernel is not None:
        try:
            kernel.stop()
        except Exception:
            pass
    parent.setup()
    _STATE.restarts += 1
    _note_kernel(parent.kernel)
    for source in _STATE.replay.get(str(parent.path), []):
        kernel = parent.kernel
        msg_id = kernel.execute_cell_input(source, allow_stdin=False)
        try:
            kernel.await_reply(msg_id, timeout=_STATE.timeout)
            kernel.await_idle(msg_id, 5)
        except Empty:
            kernel.interrupt()
        except KernelDied:
            parent.setup()
            _note_kernel(parent.kernel)


def _outputs(item) -> list:
    return list(getattr(item, "test_outputs", None) or [])


def _stdout(outputs) -> str:
    return "".join(
        o.get("text", "")
        for o in outputs
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _has_verdict(text: str) -> bool:
    """Whether ``text`` has a line starting with the check's verdict mark ``✔``."""
    return any(ln.startswith(VERDICT) for ln in _ANSI.sub("", text).splitlines())


def _tail(text: str, keep: int = KEEP_STDOUT) -> str:
    if len(text) <= keep:
        return text
    return f"[... {len(text) - keep:,} characters dropped ...]\n" + text[-keep:]


def error_summary(ename: str, evalue: str) -> str:
    """``<ename>: <first line>``, plus `` — <the line starting with hint:>`` if any."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(evalue)).splitlines() if ln.strip()]
    if not lines:
        return ename
    hint = next((ln for ln in lines[1:] if ln.startswith("hint:")), None)
    first = f"{ename}: {lines[0]}"
    return f"{first} — {hint}" if hint else first


def _failure_message(item, exc: BaseException) -> str:
    if item.parent.timed_out:
        return f"timed out after {_STATE.timeout:g} s"
    if isinstance(exc, KernelDied):
        return "the kernel died while running this cell"
    errors = [o for o in _outputs(item) if o.get("output_type") == "error"]
    if errors:
        return error_summary(errors[-1].get("ename", "Error"), errors[-1].get("evalue", ""))
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_check(cell) -> bool:
    meta = cell.get("metadata", {})
    tags = meta.get("tags", [])
    llmkit = meta.get("llmkit", {})
    return (isinstance(tags, list) and "grade" in tags) or (
        isinstance(llmkit, dict) and "points" in llmkit
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _is_cell(item):
        # judge every cell on its own: no xfail cascade after a timeout
        item.parent.timed_out = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not _is_cell(item):
        return (yield)
    try:
        _ensure_kernel(item)
    except Exception:
        pass  # nbval reports the dead kernel for this cell; the next cell tries again
    kernel = item.parent.kernel
    if kernel is not None:
        kernel._llmkit_reply = None
    _STATE.budget, _STATE.dropped = _STATE.max_output, 0
    watchdog = threading.Timer(_STATE.timeout + _STATE.grace, _kill, args=(kernel,))
    watchdog.daemon = True
    watchdog.start()
    start = time.monotonic()
    record = {
        "file": str(item.parent.path),
        "index": item.cell_num,
        "id": item.cell.get("id"),
        "timed_out": False,
    }
    try:
        result = yield
    except BaseException as exc:
        skipped = isinstance(exc, pytest.skip.Exception)
        record["outcome"] = "skipped" if skipped else "failed"
        record["timed_out"] = bool(item.parent.timed_out)
        record["message"] = "skipped" if skipped else _failure_message(item, exc)
        raise
    else:
        # nbval saw no error output; the kernel's reply and, for a check, its verdict
        # line decide (the cell stays "passed" for pytest, the record says failed)
        stdout = _stdout(_outputs(item))
        reply = getattr(kernel, "_llmkit_reply", None) or {}
        if reply.get("status") == "error":
            record["outcome"] = "failed"
            record["message"] = error_summary(
                str(reply.get("ename") or "Error"), str(reply.get("evalue") or "")
            )
        elif _is_check(item.cell) and not _has_verdict(stdout):
            record["outcome"] = "failed"
            record["message"] = f"the check printed no verdict line (one starting with {VERDICT})"
        else:
            record["outcome"] = "passed"
            record["message"] = _last_line(stdout)
            if not _is_check(item.cell):
                _STATE.replay.setdefault(str(item.parent.path), []).append(item.cell.source)
        return result
    finally:
        watchdog.cancel()
        stdout = _stdout(_outputs(item))
        record["verdict"] = _has_verdict(stdout)
        record["stdout"] = _tail(stdout)
        record["dropped_output"] = _STATE.dropped
        record["seconds"] = round(time.monotonic() - start, 3)
        _STATE.cells.append(record)
        _STATE.write()

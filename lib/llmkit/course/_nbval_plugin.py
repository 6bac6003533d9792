"""pytest plugin that ``llmkit grade`` loads next to nbval (``-p llmkit.course._nbval_plugin``).

It records, for every code cell nbval runs, whether it passed, what it printed and a
one-line message, into the JSON file named by ``--llmkit-results`` (rewritten after
each cell, so a killed run keeps what it had).

It also makes nbval robust enough for grading. nbval 0.11, on its own:

- on a cell timeout interrupts the kernel (good: an interruptible infinite loop ends
  with ``KeyboardInterrupt``), but then marks *every later cell* ``xfail``; and if the
  interrupt is not answered within 5 s (a loop that swallows ``KeyboardInterrupt``,
  a long C call) it stops the kernel, and every later cell fails with
  "Kernel dead on test start";
- waits the full cell timeout when the kernel dies (``os._exit``, out of memory);
- reads output forever if an uninterruptible cell keeps printing.

This plugin judges each cell on its own (it resets nbval's ``timed_out`` flag before
each cell), polls the kernel while waiting so a dead kernel is noticed within a second,
kills a kernel still busy ``--llmkit-watchdog`` seconds after the cell timeout, and,
before a cell whose kernel is dead, starts a new kernel and replays the code cells
that had passed (check cells excepted) so that later exercises are still graded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from queue import Empty

import pytest

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


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


def pytest_configure(config):
    global _STATE
    path = config.getoption("llmkit_results")
    if not path:
        return
    _patch_nbval()
    timeout = float(config.getoption("nbval_cell_timeout", 2000))
    _STATE = _State(path, timeout, config.getoption("llmkit_watchdog"))
    _STATE.write()


def _patch_nbval() -> None:
    from nbval.kernel import RunningKernel

    if getattr(RunningKernel, "_llmkit_patched", False):
        return

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
                if msg["content"]["status"] == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                return

    RunningKernel.await_reply = await_reply
    RunningKernel._llmkit_patched = True


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


def _failure_message(item, exc: BaseException) -> str:
    if item.parent.timed_out:
        return f"timed out after {_STATE.timeout:g} s"
    if isinstance(exc, KernelDied):
        return "the kernel died while running this cell"
    errors = [o for o in _outputs(item) if o.get("output_type") == "error"]
    if errors:
        ename = errors[-1].get("ename", "Error")
        evalue = _ANSI.sub("", str(errors[-1].get("evalue", ""))).strip()
        first = evalue.splitlines()[0].strip() if evalue else ""
        return f"{ename}: {first}" if first else ename
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
        record["outcome"] = "passed"
        tags = item.cell.get("metadata", {}).get("tags", [])
        if not (isinstance(tags, list) and "grade" in tags):
            _STATE.replay.setdefault(str(item.parent.path), []).append(item.cell.source)
        return result
    finally:
        watchdog.cancel()
        record["stdout"] = _stdout(_outputs(item))
        if record["outcome"] == "passed":
            record["message"] = _last_line(record["stdout"])
        record["seconds"] = round(time.monotonic() - start, 3)
        _STATE.cells.append(record)
        _STATE.write()

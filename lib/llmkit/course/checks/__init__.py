"""The lab checks: one module per lab (``ch01``, ``ch02``, ...), one ``Exercise`` per exercise.

A check cell in ``solutions/NN_name.ipynb`` is a code cell tagged ``grade`` with
``metadata.llmkit = {"exercise": "<id>", "points": N}`` that takes only the student's
object::

    from llmkit.course.checks import ch01

    ch01.check_merge(merge)

Each ``check_*`` function runs one :class:`~llmkit.course.checks.runner.Exercise`
declaration on the one runner (:mod:`llmkit.course.checks.runner`): fixed and seeded
random cases, the student's call under a guard (time limit, off-limits objects as
tripwires, the checks' reference code out of reach), arguments left unchanged, the
expected value computed afterwards, comparison with type, shape and dtype, and a hint
that names a catalogued slip. It prints one verdict line starting with ``✔``, or raises
:class:`~llmkit.course.checks.runner.CheckFailed` (an ``AssertionError``) whose message
says what is wrong, on which input, and what to look at; a ``NotImplementedError``
from an unfinished stub is let through. ``llmkit grade`` counts a check cell as passed
only if it raised nothing and printed its verdict line.

The reference implementations and slips that are not public ``llmkit`` functions live
in :mod:`llmkit.course.checks.reference`, named by the check modules only as strings.
Seeds: :mod:`llmkit.course.checks.seeds` (``LLMKIT_CHECK_SEED``; the grader fixes it
per lab, so regrading gives the same score).
"""

from __future__ import annotations

from .runner import wrapper_source
from .seeds import SEED_ENV, check_rng, check_seed

__all__ = ["SEED_ENV", "check_seed", "check_rng", "wrapper_source"]

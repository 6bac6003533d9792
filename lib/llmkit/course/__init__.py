"""Course tooling: labs from solutions, the lab sync check, grading, notebook hygiene.

- :mod:`llmkit.course.labformat`: the lab file format (solution regions, exercise and
  check cells, lab specs), documented there; ``labs`` and ``grade`` both use it;
- :mod:`llmkit.course.labs`: ``llmkit labs build`` / ``llmkit labs check``;
- :mod:`llmkit.course.grade`: ``llmkit grade`` (executes notebooks with nbclient);
- :mod:`llmkit.course.notebooks`: ``llmkit notebooks execute|normalise|check-normalised``
  (the normal form is documented there);
- :mod:`llmkit.course.checks`: the check functions that lab check cells call.

The command line is ``llmkit`` (or ``python -m llmkit``); see ``llmkit --help``.
"""

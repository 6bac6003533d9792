"""Course tooling: labs from solutions, the lab sync check, grading, notebook hygiene.

- :mod:`llmkit.course.labs`: ``llmkit labs build`` / ``llmkit labs check``
  (the solution-notebook conventions are documented there);
- :mod:`llmkit.course.grade`: ``llmkit grade`` (nbval + :mod:`llmkit.course._nbval_plugin`);
- :mod:`llmkit.course.notebooks`: ``llmkit notebooks execute|normalise|check-normalised``
  (the normal form is documented there);
- :mod:`llmkit.course.checks`: the check functions that lab check cells call.

The command line is ``llmkit`` (or ``python -m llmkit``); see ``llmkit --help``.
"""

"""The checks' own reference implementations and catalogued slips, one module per lab.

Exercise declarations name these only as ``"module:function"`` strings, and while a
student's function runs under a check the whole package is out of reach: removed from
``sys.modules``, unimportable, and every function in it a tripwire (see
:mod:`llmkit.course.checks.runner`). Never import it from a check module's top level.
"""

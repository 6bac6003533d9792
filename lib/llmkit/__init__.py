"""llmkit: the shared library of the course on large language models."""

__version__ = "0.1.0"

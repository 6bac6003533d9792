"""The checks' seeds: ``seed=None`` means ``$LLMKIT_CHECK_SEED`` if set, else fresh inputs."""

from __future__ import annotations

import os
import random

__all__ = ["SEED_ENV", "check_seed", "check_rng"]

#: The environment variable that gives checks called with ``seed=None`` their seed.
SEED_ENV = "LLMKIT_CHECK_SEED"


def check_seed(seed: int | None = None) -> int | None:
    """The seed a check uses: ``seed`` if given, else ``$LLMKIT_CHECK_SEED``, else None.

    ``None`` means fresh random inputs on every run. A non-integer value of the
    environment variable is a ``ValueError`` naming it.
    """
    if seed is not None:
        return seed
    value = os.environ.get(SEED_ENV, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{SEED_ENV} must be an integer (or unset for fresh inputs), got {value!r}"
        ) from None


def check_rng(seed: int | None = None) -> random.Random:
    """A private random generator seeded with :func:`check_seed` (the global one is left
    alone)."""
    return random.Random(check_seed(seed))

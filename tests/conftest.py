"""Shared test settings.

Hypothesis runs derandomized: the same examples on every run and every machine, so a
test suite that passed once passes again (the course's tests must be deterministic).
Set ``HYPOTHESIS_PROFILE=explore`` to search with fresh random examples instead.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "deterministic",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

# Under pytest-xdist each worker already has a core to itself: torch's own worker
# threads would only oversubscribe the machine (tiny tensors run 3-4x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

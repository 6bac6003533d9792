"""Where a run computes: the device, mixed precision, and several processes with DDP.

Several GPUs: ``torchrun`` + DDP
--------------------------------

Write the training in a script and start one process per GPU::

    torchrun --standalone --nproc_per_node=2 your_script.py

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`join_processes` sees
them, initialises the process group (NCCL on CUDA, gloo on the CPU) and puts process ``r`` on
``cuda:r``; :func:`llmkit.train.train` then wraps the model in ``DistributedDataParallel``.
Every process draws the same global batch from identically seeded generators and keeps its
own slice (``batch_size / world_size`` rows, so ``batch_size`` must be divisible by the
number of processes): the run computes the same gradients as a single process with the same
``batch_size``, just faster. Logged losses are averaged over the processes; only rank 0 shows
the progress bar, runs the callback and writes checkpoints. The same script runs with
``python your_script.py`` on one device.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llmkit.checkpoint import torch_rng_states

__all__ = [
    "select_device",
    "autocast_dtype",
    "mixed_precision",
    "Processes",
    "join_processes",
    "gather_rng_states",
    "TORCHRUN_COMMAND",
]

TORCHRUN_COMMAND = "torchrun --standalone --nproc_per_node=2 your_script.py"


def select_device(device: str | torch.device = "auto") -> torch.device:
    """The device to train on.

    Args:
        device: ``"auto"`` picks CUDA if available, then Apple's MPS, then the CPU; or an
            explicit ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (checked to exist).
    Returns:
        a ``torch.device``.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    allowed = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be {allowed}, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be {allowed}, got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} was requested but MPS is not available")
    elif dev.type != "cpu":
        raise ValueError(f"device must be {allowed}, got {device!r}")
    return dev


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of forward passes for ``TrainConfig.dtype``; ``None``: no autocast.

    ``"bfloat16"``, or ``"auto"`` on a CUDA GPU that supports it, gives ``torch.bfloat16``.
    """
    if dtype == "bfloat16" or (
        dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        return torch.bfloat16
    return None


def mixed_precision(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process initialised the group and must destroy it

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that logs and writes)."""
        return self.rank == 0

    def close(self) -> None:
        """Destroy the process group if :func:`join_processes` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def join_processes(device: str | torch.device = "auto") -> tuple[Processes, torch.device]:
    """Join the run's process group when started by torchrun (or when one already exists).

    Returns:
        the :class:`Processes` and this process's device (``cuda:LOCAL_RANK`` on CUDA).
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        owns = False
    else:
        env = [os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")]
        if None in env or int(env[1]) <= 1:
            return Processes(), select_device(device)
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
        rank, world, local_rank = (int(v) for v in env)
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(
                    f"RANK/WORLD_SIZE are set but {var} is not; start the script with "
                    f"`{TORCHRUN_COMMAND}`"
                )
        owns = True
    dev = select_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"multi-process training supports CUDA and the CPU, not {dev.type}")
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Processes(rank, world, local_rank, owns), dev


def gather_rng_states(procs: Processes, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """torch's global RNG states of every process, in rank order (every process must call)."""
    local = torch_rng_states(device)
    if not procs.enabled:
        return [local]
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(procs.world)]
    for name, value in local.items():
        value = value.to(comm_device)
        parts = [torch.empty_like(value) for _ in range(procs.world)]
        dist.all_gather(parts, value)
        for r, part in enumerate(parts):
            out[r][name] = part.cpu()
    return out

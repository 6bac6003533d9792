"""One training loop for every chapter: device, mixed precision, DDP, checkpoints, progress.

:func:`train` runs optimizer steps on batches drawn by a ``get_batch(split, generator)``
callable and returns a :class:`History` that :func:`llmkit.viz.plot_history` plots::

    from llmkit.train import TrainConfig, lm_batch_fn, train

    get_batch = lm_batch_fn({"train": train_ids, "val": val_ids}, block_size=256, batch_size=64)
    config = TrainConfig(max_steps=5000, lr=1e-3, warmup_steps=100, eval_interval=250)
    history = train(model, config, get_batch)    # model(x: (b, t)) -> logits (b, t, vocab)

What it does, step by step:

* **Optimizer**: AdamW; weight decay only on parameters with ``dim >= 2`` (matrices and
  embeddings), never on biases or LayerNorm gains (:func:`configure_optimizer`).
* **Learning rate**: linear warm-up for ``warmup_steps``, then a cosine decay from ``lr`` to
  ``min_lr`` at ``lr_decay_steps``, constant afterwards (:func:`cosine_lr`).
* **One optimizer step** = ``grad_accum_steps`` micro-batches, each loss divided by
  ``grad_accum_steps`` before ``backward`` (so the gradient is that of the mean loss), then
  gradient clipping to norm ``grad_clip``, then ``optimizer.step()``.
* **Evaluation** every ``eval_interval`` steps (and before the first and after the last):
  the mean loss on ``eval_iters`` ``"val"`` batches, the *same* batches every time (a fixed
  generator), or on the ``eval_batches`` you pass.
* **Device**: ``device="auto"`` picks CUDA, then MPS, then the CPU (:func:`select_device`).
  On CUDA the forward pass runs under bf16 autocast, AdamW is fused, TF32 matmuls are
  enabled, and ``compile=True`` wraps the model in :func:`torch.compile`.
* **Seeds**: ``seed`` seeds torch (dropout) and the batch generator; the run is reproducible.
* **Checkpoints** (:func:`save_checkpoint`, :func:`load_checkpoint`): a directory with the
  weights in ``model.safetensors``, the optimizer state tensors and RNG states in
  ``training_state.safetensors``, and everything else (step, configs, history, scheduler)
  in ``checkpoint.json``. No pickle anywhere. Written to a temporary directory first, then
  renamed into place. ``train(..., resume_from=dir)`` continues the run *exactly*: the
  losses are bit-for-bit those of an uninterrupted run (on the same hardware).

Several GPUs: ``torchrun`` + DDP
--------------------------------

Write the training in a script and start one process per GPU::

    torchrun --standalone --nproc_per_node=2 your_script.py

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`train` sees them,
initialises the process group (NCCL on CUDA, gloo on the CPU), puts process ``r`` on
``cuda:r``, and wraps the model in ``DistributedDataParallel``. Every process draws the
same global batch from identically seeded generators and keeps its own slice
(``batch_size / world_size`` rows, so ``batch_size`` must be divisible by the number of
processes): the run computes the same gradients as a single process with the same
``batch_size``, just faster. Logged losses are averaged over the processes; only rank 0
shows the progress bar, runs ``callback`` and writes checkpoints. The script itself needs no
change: the same file runs with ``python your_script.py`` on one device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "TrainConfig",
    "History",
    "Checkpoint",
    "train",
    "random_batches",
    "lm_batch_fn",
    "select_device",
    "cross_entropy_loss",
    "configure_optimizer",
    "cosine_lr",
    "WarmupCosine",
    "save_checkpoint",
    "load_checkpoint",
    "TORCHRUN_COMMAND",
]

TORCHRUN_COMMAND = "torchrun --standalone --nproc_per_node=2 your_script.py"

CHECKPOINT_FORMAT = "llmkit-checkpoint"
CHECKPOINT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
META_FILE = "checkpoint.json"

Batch = Any  # a tensor, a tuple/list of tensors or a dict of tensors; dim 0 is the batch
GetBatch = Callable[[str, torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


# --------------------------------------------------------------------------- config


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float = math.inf, *, open_low=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    bad_low = value <= low if open_low else value < low
    if bad_low or value > high or math.isnan(value):
        left = "(" if open_low else "["
        right = "]" if high != math.inf else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value}")


DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class TrainConfig:
    """Everything that defines a training run (the batch size lives in ``get_batch``).

    Attributes:
        max_steps: optimizer steps in the whole run (a resumed run continues up to it).
        lr: peak learning rate, reached at the end of the warm-up.
        min_lr: the learning rate at the end of the cosine decay; ``None`` = ``lr / 10``.
        warmup_steps: steps of linear warm-up.
        lr_decay_steps: the step where the cosine reaches ``min_lr``; ``None`` = ``max_steps``.
        weight_decay: AdamW's decoupled weight decay, applied to ``dim >= 2`` parameters only.
        betas, eps: AdamW's moment coefficients and denominator epsilon.
        grad_clip: clip the global gradient norm to this; ``None`` or ``0`` = no clipping.
        grad_accum_steps: micro-batches per optimizer step.
        eval_interval: evaluate every this many steps (also at the start and the end);
            ``0`` = never.
        eval_iters: ``"val"`` batches per evaluation (ignored when ``eval_batches`` is given).
        log_interval: copy the losses from the device every this many steps (each copy
            waits for the GPU); the history still gets one entry per step.
        checkpoint_dir: where :func:`train` writes its checkpoint (one directory,
            overwritten); ``None`` = no checkpoints.
        checkpoint_interval: write it every this many steps; ``0`` = only at the end.
        seed: seeds torch (dropout, initial RNG state) and the batch generator.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``.
        dtype: the autocast dtype of forward passes: ``"auto"`` (bfloat16 on a CUDA GPU that
            supports it, else float32), ``"float32"`` (no autocast) or ``"bfloat16"``.
            Weights and optimizer state stay float32.
        compile: wrap the model in :func:`torch.compile`.
        progress: show a tqdm progress bar.
    """

    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float | None = None
    warmup_steps: int = 100
    lr_decay_steps: int | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 100
    eval_iters: int = 20
    log_interval: int = 10
    checkpoint_dir: str | None = None
    checkpoint_interval: int = 0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        _check_int("max_steps", self.max_steps, 0)
        _check_float("lr", self.lr, 0.0)
        if self.min_lr is not None:
            _check_float("min_lr", self.min_lr, 0.0, float(self.lr))
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.lr_decay_steps is not None:
            _check_int("lr_decay_steps", self.lr_decay_steps, 0)
        _check_float("weight_decay", self.weight_decay, 0.0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for i, b in enumerate(self.betas):
            _check_float(f"betas[{i}]", b, 0.0, 1.0)
            if b >= 1.0:
                raise ValueError(f"betas[{i}] must be in [0, 1), got {b}")
        _check_float("eps", self.eps, 0.0, open_low=True)
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, 0.0)
        _check_int("grad_accum_steps", self.grad_accum_steps, 1)
        _check_int("eval_interval", self.eval_interval, 0)
        _check_int("eval_iters", self.eval_iters, 0)
        _check_int("log_interval", self.log_interval, 1)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise TypeError(
                    f"checkpoint_dir must be a path or None, got {type(self.checkpoint_dir)}"
                )
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        _check_int("checkpoint_interval", self.checkpoint_interval, 0)
        _check_int("seed", self.seed, 0)
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        self.device = str(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def resolved_min_lr(self) -> float:
        """``min_lr``, or ``lr / 10`` when it is ``None``."""
        return self.lr / 10 if self.min_lr is None else float(self.min_lr)

    @property
    def resolved_lr_decay_steps(self) -> int:
        """``lr_decay_steps``, or ``max_steps`` when it is ``None``."""
        return self.max_steps if self.lr_decay_steps is None else self.lr_decay_steps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``betas`` becomes a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys are dropped with a warning."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            warnings.warn(f"TrainConfig.from_dict ignores unknown keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What happened during training, one entry per optimizer step and per evaluation.

    Per step (``len(steps)`` entries; ``steps[i]`` is the step *after* the update, 1-based):
    ``train_loss`` (the mean loss of that step's micro-batches, averaged over processes),
    ``lr`` (the learning rate of that update), ``grad_norm`` (the global gradient norm
    before clipping), ``seconds`` (wall time since the run began, evaluation included) and
    ``tokens_seen`` (cumulative elements of the first tensor of every batch, over all
    processes: tokens for language-model batches).

    Per evaluation: ``val_steps`` (0 = before training), ``val_loss``, ``val_seconds``,
    ``val_tokens``.
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_seconds: list[float] = field(default_factory=list)
    val_tokens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def tokens(self) -> list[int]:
        """Alias of ``tokens_seen``."""
        return self.tokens_seen

    @property
    def final_val_loss(self) -> float | None:
        """The last evaluation's loss, ``None`` before any evaluation."""
        return self.val_loss[-1] if self.val_loss else None

    @property
    def best_val_loss(self) -> float | None:
        """The lowest evaluation loss, ``None`` before any evaluation."""
        return min(self.val_loss) if self.val_loss else None

    def to_dict(self) -> dict[str, list]:
        """A JSON-serialisable dict of lists."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence]) -> History:
        """The inverse of :meth:`to_dict` (missing keys start empty)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: list(v) for k, v in d.items() if k in known})


# --------------------------------------------------------------------------- data


def random_batches(
    ids: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``batch_size`` random windows from a token stream (language-model batches).

    Each row starts at a uniformly random offset ``i`` in ``[0, len(ids) - block_size)``;
    ``x = ids[i : i + block_size]`` and ``y = ids[i + 1 : i + block_size + 1]`` (the next
    token at every position).

    Args:
        ids: ``(n,)`` integer token ids, ``n >= block_size + 1``.
        block_size: tokens per row (the context length).
        batch_size: rows.
        generator: a seeded CPU ``torch.Generator`` for reproducible batches.
    Returns:
        ``x: (batch_size, block_size)`` and ``y: (batch_size, block_size)``, int64, on the
        device of ``ids``.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integers, got dtype {ids.dtype}")
    if ids.dim() != 1:
        raise ValueError(f"ids must be one-dimensional (n,), got shape {tuple(ids.shape)}")
    _check_int("block_size", block_size, 1)
    _check_int("batch_size", batch_size, 1)
    if ids.numel() < block_size + 1:
        raise ValueError(
            f"ids must hold at least block_size + 1 = {block_size + 1} tokens, got {ids.numel()}"
        )
    starts = torch.randint(0, ids.numel() - block_size, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(block_size + 1)  # (batch, block + 1)
    window = ids[index.to(ids.device)].long()
    return window[:, :-1], window[:, 1:]


def lm_batch_fn(data: Mapping[str, torch.Tensor], block_size: int, batch_size: int) -> GetBatch:
    """A ``get_batch(split, generator)`` for :func:`train` over token streams per split.

    Args:
        data: split name -> ``(n,)`` token ids, e.g. ``{"train": ..., "val": ...}``.
        block_size, batch_size: as in :func:`random_batches`.
    Returns:
        ``get_batch(split, generator) -> (x, y)``, both ``(batch_size, block_size)``.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty mapping of split name -> token ids")
    for name, ids in data.items():
        random_batches(ids, block_size, 1, torch.Generator().manual_seed(0))  # validates
        if not isinstance(name, str):
            raise TypeError(f"split names must be strings, got {name!r}")
    _check_int("batch_size", batch_size, 1)

    def get_batch(split: str, generator: torch.Generator | None = None):
        if split not in data:
            raise ValueError(f"split must be one of {sorted(data)}, got {split!r}")
        return random_batches(data[split], block_size, batch_size, generator)

    return get_batch


# --------------------------------------------------------------------------- device


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


def _autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# --------------------------------------------------------------------------- optimizer


def configure_optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device | None = None
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: weight decay on ``dim >= 2`` parameters only.

    Matrices and embeddings are decayed; biases and LayerNorm gains (``dim < 2``) are not.
    Parameters that do not require a gradient are left out; a tied parameter appears once.
    On CUDA the fused implementation is used.

    Returns:
        the optimizer; ``param_groups[0]`` is the decayed group, ``param_groups[1]`` the other.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() dedups ties
    if not params:
        raise ValueError("model has no parameters that require a gradient")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    device = device if device is not None else params[0].device
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, **extra)


def cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): warm-up, then cosine decay.

    * ``step < warmup_steps``: linear, ``lr * (step + 1) / (warmup_steps + 1)``;
    * ``warmup_steps <= step < decay_steps``: ``min_lr + (lr - min_lr) * (1 + cos(pi r)) / 2``
      with ``r = (step - warmup_steps) / (decay_steps - warmup_steps)`` going 0 -> 1;
    * ``step >= decay_steps``: ``min_lr``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    ratio = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


class WarmupCosine:
    """:func:`cosine_lr` as a multiplier of the peak rate, for ``lr_scheduler.LambdaLR``.

    A callable object (not a lambda) so that ``LambdaLR.state_dict()`` saves its settings.
    """

    def __init__(self, warmup_steps: int, decay_steps: int, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(decay_steps)
        self.min_ratio = float(min_ratio)

    @classmethod
    def from_config(cls, config: TrainConfig) -> WarmupCosine:
        ratio = config.resolved_min_lr / config.lr if config.lr > 0 else 1.0
        return cls(config.warmup_steps, config.resolved_lr_decay_steps, ratio)

    def __call__(self, step: int) -> float:
        return cosine_lr(step, 1.0, self.min_ratio, self.warmup_steps, self.decay_steps)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine.from_config(config))


# --------------------------------------------------------------------------- loss


def cross_entropy_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The default loss: mean next-token cross-entropy (nats per token).

    Args:
        model: called as ``model(x)``, returning logits ``(batch, seq, vocab)``.
        batch: ``(x, y)`` with ``x: (batch, seq)`` inputs and ``y: (batch, seq)`` targets;
            targets equal to ``-100`` are ignored.
    Returns:
        a scalar tensor.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            "the default loss needs get_batch to return a pair (x, y); pass loss_fn for "
            f"other batches, got {type(batch).__name__}"
        )
    x, y = batch
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.shape[:-1] != y.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(
            f"model(x) must return logits of shape (*y.shape, vocab) = ({tuple(y.shape)}, V), "
            f"got {shape}"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1).long())


# --------------------------------------------------------------------------- batches


def _map_batch(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_batch(b, fn) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _map_batch(v, fn) for k, v in batch.items()}
    raise TypeError(
        "a batch must be a tensor, a tuple/list of tensors or a dict of tensors, "
        f"got {type(batch).__name__}"
    )


def _tensors(batch: Batch) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _map_batch(batch, lambda t: out.append(t) or t)
    return out


def _to_device(batch: Batch, device: torch.device) -> Batch:
    def move(t: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(device, non_blocking=True)
        return t.to(device)

    return _map_batch(batch, move)


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rows ``[rank * n / world, (rank + 1) * n / world)`` of every tensor in the batch."""
    if world == 1:
        return batch
    tensors = _tensors(batch)
    sizes = {t.shape[0] if t.dim() else None for t in tensors}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every tensor of a batch needs the same batch dimension, got {sizes}")
    (n,) = sizes
    if n % world:
        raise ValueError(
            f"the batch size {n} must be divisible by the number of processes {world} "
            "(each process takes an equal slice of the global batch)"
        )
    per = n // world
    return _map_batch(batch, lambda t: t[rank * per : (rank + 1) * per])


def _num_elements(batch: Batch) -> int:
    tensors = _tensors(batch)
    if not tensors:
        raise ValueError("get_batch returned a batch without tensors")
    return tensors[0].numel()


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read (besides what it loaded into your objects)."""

    path: Path
    step: int
    train_config: TrainConfig | None
    model_config: dict | None
    history: History | None
    meta: dict


def _model_config_dict(model: nn.Module, model_config: Any) -> dict | None:
    cfg = model_config if model_config is not None else getattr(model, "config", None)
    if cfg is None:
        return None
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = dataclasses.asdict(cfg)
    if not isinstance(cfg, Mapping):
        if model_config is None:
            return None  # model.config of an unknown kind: skip it
        raise TypeError(f"model_config must be a dataclass or a dict, got {type(cfg).__name__}")
    cfg = dict(cfg)
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model_config must be JSON-serialisable: {err}") from None
    return cfg


def _local_rng_states(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _optimizer_to_json(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Split an optimizer state dict into JSON (structure, numbers) and tensors."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        state_json[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                state_json[str(pid)][name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return {"state": state_json, "param_groups": groups}, tensors


def _optimizer_from_json(meta: dict, tensors: Mapping[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = dict(entries)
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_checkpoint_dir(path: Path) -> bool:
    meta = path / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == CHECKPOINT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Build the directory under a temporary name next to ``path``, then rename it into place.

    A crash while writing leaves the old checkpoint untouched. Replacing an existing
    checkpoint takes two renames (old -> ``.NAME.old``, new -> ``NAME``); should the process
    die between the two, :func:`load_checkpoint` falls back to ``.NAME.old``.
    """
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"checkpoint path {str(path)!r} exists and is not a directory")
        if any(path.iterdir()) and not _is_checkpoint_dir(path):
            raise ValueError(
                f"refusing to overwrite {str(path)!r}: it is a non-empty directory that is "
                "not an llmkit checkpoint"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            _fsync(f)
        if path.exists():
            old = path.parent / f".{path.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: TrainConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int = 0,
    rng: torch.Generator | None = None,
    *,
    history: History | None = None,
    model_config: Any = None,
    rank_rng_states: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically; no pickle anywhere.

    Files:
        ``model.safetensors``: the model's weights (tied weights stored once).
        ``training_state.safetensors``: optimizer state tensors, the batch generator's state
        and torch's global RNG states (one per process).
        ``checkpoint.json``: format, step, ``config``, ``model_config``, ``history``,
        the scheduler's state, the optimizer's non-tensor state and Python's and NumPy's
        global RNG states.

    Args:
        path: the checkpoint directory (replaced if it already holds a checkpoint).
        model: the bare model (not a DDP or compiled wrapper).
        config: the run's :class:`TrainConfig`.
        optimizer, scheduler: their states are saved when given (the scheduler's state must be
            JSON-serialisable, as ``LambdaLR`` with :class:`WarmupCosine` is).
        step: the number of optimizer steps done.
        rng: the batch generator.
        history: the :class:`History` so far.
        model_config: a dataclass or dict; default ``model.config`` when it is one.
        rank_rng_states: torch's global RNG states of every process (``train`` passes them
            under DDP); default this process's.
    Returns:
        the checkpoint path.
    """
    path = Path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_int("step", step, 0)
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": step,
        "model_class": type(model).__qualname__,
        "model_config": _model_config_dict(model, model_config),
        "train_config": config.to_dict() if config is not None else None,
        "history": history.to_dict() if history is not None else None,
        "torch_version": torch.__version__,
    }
    tensors: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        meta["optimizer"], opt_tensors = _optimizer_to_json(optimizer)
        tensors.update(opt_tensors)
    if scheduler is not None:
        sched = scheduler.state_dict()
        try:
            json.dumps(sched)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"the scheduler's state_dict must be JSON-serialisable: {err}"
            ) from None
        meta["scheduler"] = sched
    if rng is not None:
        tensors["rng.generator"] = rng.get_state()
    states = rank_rng_states if rank_rng_states is not None else [_local_rng_states()]
    meta["world_size"] = len(states)
    for r, st in enumerate(states):
        for name, value in st.items():
            tensors[f"rng.{name}.{r}"] = value.detach().cpu().contiguous()
    np_state = np.random.get_state()
    meta["rng"] = {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }

    def write(tmp: Path) -> None:
        save_model(model, str(tmp / MODEL_FILE))
        save_file(tensors, str(tmp / STATE_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))

    _atomic_write_dir(path, write)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    return x


def _resolve_checkpoint(path: Path) -> Path:
    if _is_checkpoint_dir(path):
        return path
    old = path.parent / f".{path.name}.old"
    if not path.exists() and _is_checkpoint_dir(old):
        warnings.warn(
            f"{str(path)!r} is missing; loading the previous checkpoint {str(old)!r} "
            "(a save was interrupted)",
            stacklevel=3,
        )
        return old
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    raise ValueError(f"{str(path)!r} is not an llmkit checkpoint (no valid {META_FILE})")


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rng: torch.Generator | None = None,
    *,
    restore_rng: bool = False,
    rank: int = 0,
    strict: bool = True,
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, loading into what you pass.

    Args:
        path: the checkpoint directory.
        model: receives the weights (on whatever device it is).
        optimizer, scheduler: receive their states (build them as ``train`` does:
            :func:`configure_optimizer`, then ``LambdaLR`` with :class:`WarmupCosine`).
        rng: the batch generator; receives its saved state.
        restore_rng: also restore torch's (process ``rank``'s), Python's and NumPy's global
            RNG states.
        strict: passed to the weight loading (every key must match).
    Returns:
        a :class:`Checkpoint` with the step, configs and history.
    """
    path = _resolve_checkpoint(Path(path))
    meta = json.loads((path / META_FILE).read_text())
    version = meta.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has version {version!r}; this llmkit reads version "
            f"{CHECKPOINT_VERSION}"
        )
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=strict)
        if missing or unexpected:
            warnings.warn(f"missing keys {missing}, unexpected keys {unexpected}", stacklevel=2)
    needs_state = optimizer is not None or rng is not None or restore_rng
    tensors = load_file(str(path / STATE_FILE)) if needs_state else {}
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"checkpoint {str(path)!r} holds no optimizer state")
        optimizer.load_state_dict(_optimizer_from_json(meta["optimizer"], tensors))
    if scheduler is not None:
        if "scheduler" not in meta:
            raise ValueError(f"checkpoint {str(path)!r} holds no scheduler state")
        scheduler.load_state_dict(meta["scheduler"])
    if rng is not None:
        if "rng.generator" not in tensors:
            raise ValueError(f"checkpoint {str(path)!r} holds no batch generator state")
        rng.set_state(tensors["rng.generator"])
    if restore_rng:
        world = meta.get("world_size", 1)
        if rank >= world:
            warnings.warn(
                f"the checkpoint was written by {world} process(es); process {rank} keeps its "
                "seeded RNG state (the run will not repeat exactly)",
                stacklevel=2,
            )
        else:
            torch.set_rng_state(tensors[f"rng.torch.{rank}"])
            if f"rng.cuda.{rank}" in tensors and torch.cuda.is_available():
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], torch.cuda.current_device())
        py = meta["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        name, keys, pos, has_gauss, cached = meta["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    train_config = meta.get("train_config")
    history = meta.get("history")
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        train_config=TrainConfig.from_dict(train_config) if train_config is not None else None,
        model_config=meta.get("model_config"),
        history=History.from_dict(history) if history is not None else None,
        meta=meta,
    )


# --------------------------------------------------------------------------- distributed


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(config: TrainConfig) -> tuple[_Dist, torch.device]:
    """Initialise DDP when started by torchrun (or when a process group already exists)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        owns = False
    else:
        env = [os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")]
        if None in env or int(env[1]) <= 1:
            return _Dist(), select_device(config.device)
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
    device = select_device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"multi-process training supports CUDA and the CPU, not {device.type}")
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return _Dist(rank, world, local_rank, owns), device


def _gather_rng_states(ctx: _Dist, device: torch.device) -> list[dict[str, torch.Tensor]]:
    local = _local_rng_states(device)
    if not ctx.enabled:
        return [local]
    comm_device = device if device.type == "cuda" else torch.device("cpu")
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(ctx.world)]
    for name, value in local.items():
        value = value.to(comm_device)
        parts = [torch.empty_like(value) for _ in range(ctx.world)]
        dist.all_gather(parts, value)
        for r, part in enumerate(parts):
            out[r][name] = part.cpu()
    return out


# --------------------------------------------------------------------------- the loop


def train(
    model: nn.Module,
    config: TrainConfig,
    get_batch: GetBatch,
    loss_fn: LossFn | None = None,
    eval_batches: Iterable[Batch] | None = None,
    *,
    resume_from: str | os.PathLike | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
    model_config: Any = None,
) -> History:
    """Train ``model`` in place for ``config.max_steps`` optimizer steps.

    Args:
        model: any ``nn.Module``; it is moved to the chosen device and left there.
        config: the :class:`TrainConfig`.
        get_batch: ``get_batch(split, generator) -> batch``, ``split`` is ``"train"`` or
            ``"val"``, ``generator`` a seeded CPU ``torch.Generator`` that must be the only
            randomness used. A batch is a tensor, a tuple/list or a dict of tensors whose
            first dimension is the batch, on the CPU or any device (see :func:`lm_batch_fn`
            for ``(x: (b, t), y: (b, t))`` language-model batches).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``; default
            :func:`cross_entropy_loss` (``model(x)`` logits ``(b, t, V)`` against ``y``).
            Under DDP it must call ``model(...)`` itself (the wrapper syncs gradients in
            ``forward``), not other methods of the model.
        eval_batches: a fixed collection of batches to evaluate on instead of ``eval_iters``
            fresh ``"val"`` batches.
        resume_from: a checkpoint directory (from ``config.checkpoint_dir`` or
            :func:`save_checkpoint`): weights, optimizer, scheduler, RNG states, step and
            history are restored and training continues to ``config.max_steps``.
        callback: ``callback(step, history)`` after every step (rank 0 only); returning
            ``True`` stops training (after writing the checkpoint if ``checkpoint_dir`` is set).
        model_config: saved in checkpoints (default ``model.config`` if it is a dataclass).
    Returns:
        the :class:`History` (including the resumed checkpoint's history).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not callable(get_batch):
        raise TypeError("get_batch must be callable as get_batch(split, generator)")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(model, batch)")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, history)")
    loss_fn = loss_fn or cross_entropy_loss
    fixed_eval = None
    if eval_batches is not None:
        fixed_eval = list(eval_batches)
        if not fixed_eval:
            raise ValueError("eval_batches must hold at least one batch")

    ctx, device = _setup_distributed(config)
    try:
        return _train(
            model,
            config,
            get_batch,
            loss_fn,
            fixed_eval,
            resume_from,
            callback,
            model_config,
            ctx,
            device,
        )
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    model,
    config,
    get_batch,
    loss_fn,
    fixed_eval,
    resume_from,
    callback,
    model_config,
    ctx,
    device,
) -> History:
    torch.manual_seed(config.seed + ctx.rank)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls
    amp_dtype = _autocast_dtype(config.dtype, device)

    def autocast():
        if amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    model.to(device)
    model.train()
    optimizer = configure_optimizer(model, config, device)
    scheduler = _make_scheduler(optimizer, config)
    generator = torch.Generator().manual_seed(config.seed)  # the same on every rank
    history = History()
    step = 0
    if resume_from is not None:
        ckpt = load_checkpoint(
            resume_from, model, optimizer, scheduler, generator, restore_rng=True, rank=ctx.rank
        )
        step = ckpt.step
        history = ckpt.history or History()
    optimizer.zero_grad(set_to_none=True)

    ddp = None
    forward_model: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        forward_model = ddp
    if config.compile:
        forward_model = torch.compile(forward_model)

    params = [p for p in model.parameters() if p.requires_grad]
    evaluate_enabled = config.eval_interval > 0 and (fixed_eval is not None or config.eval_iters)
    accum = config.grad_accum_steps
    t_offset = history.seconds[-1] if history.seconds else 0.0
    tokens = history.tokens_seen[-1] if history.tokens_seen else 0
    t_start = time.perf_counter() - t_offset
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        losses = torch.stack([p[0] for p in pending])
        if ctx.enabled:
            dist.all_reduce(losses)
            losses = losses / ctx.world
        values = torch.cat([losses, torch.stack([p[1] for p in pending]).float()]).tolist()
        n = len(pending)
        pending.clear()
        history.train_loss.extend(values[:n])
        history.grad_norm.extend(values[n:])
        bad = [
            s for s, v in zip(history.steps[-n:], values[:n], strict=True) if not math.isfinite(v)
        ]
        if bad:
            raise FloatingPointError(f"the training loss is not finite at step {bad[0]}")

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        if fixed_eval is not None:
            batches: Iterable[Batch] = fixed_eval
        else:
            eval_gen = torch.Generator().manual_seed(config.seed + 1)  # same batches each time
            batches = (get_batch("val", eval_gen) for _ in range(config.eval_iters))
        total = torch.zeros((), device=device)
        count = 0
        for batch in batches:
            batch = _to_device(_shard(batch, ctx.rank, ctx.world), device)
            with autocast():
                loss = loss_fn(forward_model, batch)
            total += loss.detach().float()
            count += 1
        if ctx.enabled:
            dist.all_reduce(total)
            total = total / ctx.world
        model.train()
        return (total / count).item()

    def record_eval() -> None:
        history.val_steps.append(step)
        history.val_loss.append(evaluate())
        history.val_seconds.append(history.seconds[-1] if history.seconds else 0.0)
        history.val_tokens.append(tokens)

    last_saved = -1

    def checkpoint() -> None:
        nonlocal last_saved
        if config.checkpoint_dir is None or last_saved == step:
            return
        states = _gather_rng_states(ctx, device)
        if ctx.main:
            save_checkpoint(
                config.checkpoint_dir,
                model,
                config,
                optimizer,
                scheduler,
                step,
                generator,
                history=history,
                model_config=model_config,
                rank_rng_states=states,
            )
        if ctx.enabled:
            dist.barrier()
        last_saved = step

    bar = tqdm(
        total=config.max_steps,
        initial=min(step, config.max_steps),
        unit="step",
        disable=not (config.progress and ctx.main),
        dynamic_ncols=True,
    )

    def postfix() -> None:
        info = {}
        if history.train_loss:
            info["loss"] = f"{history.train_loss[-1]:.4f}"
        if history.val_loss:
            info["val"] = f"{history.val_loss[-1]:.4f}"
        if history.lr:
            info["lr"] = f"{history.lr[-1]:.2e}"
        bar.set_postfix(info, refresh=False)

    try:
        if step == 0 and evaluate_enabled and step < config.max_steps:
            record_eval()
            postfix()
        while step < config.max_steps:
            lr = optimizer.param_groups[0]["lr"]
            step_loss = torch.zeros((), device=device)
            for micro in range(accum):
                batch = get_batch("train", generator)
                tokens += _num_elements(batch)
                batch = _to_device(_shard(batch, ctx.rank, ctx.world), device)
                sync = ddp is not None and micro < accum - 1
                with ddp.no_sync() if sync else nullcontext():
                    with autocast():
                        loss = loss_fn(forward_model, batch)
                    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                        raise ValueError(
                            "loss_fn must return a scalar tensor, got "
                            f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else loss!r}"
                        )
                    (loss / accum).backward()
                step_loss += loss.detach().float()
            if config.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            else:
                grads = [p.grad for p in params if p.grad is not None]
                norm = (
                    torch.nn.utils.get_total_norm(grads)
                    if grads
                    else torch.zeros((), device=device)
                )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            pending.append((step_loss / accum, norm.detach()))
            history.steps.append(step)
            history.lr.append(lr)
            history.seconds.append(time.perf_counter() - t_start)
            history.tokens_seen.append(tokens)

            last = step == config.max_steps
            eval_now = evaluate_enabled and (step % config.eval_interval == 0 or last)
            ckpt_now = config.checkpoint_dir is not None and (
                last or (config.checkpoint_interval and step % config.checkpoint_interval == 0)
            )
            if step % config.log_interval == 0 or eval_now or ckpt_now or last or callback:
                flush()
                postfix()
            if eval_now:
                record_eval()
                postfix()
            if ckpt_now:
                checkpoint()
            if callback is not None:
                stop = torch.zeros((), dtype=torch.int32, device=device)
                if ctx.main:
                    stop += bool(callback(step, history))
                    model.train()
                if ctx.enabled:
                    dist.broadcast(stop, src=0)
                if stop.item():
                    checkpoint()
                    break
        flush()
    finally:
        bar.close()
    return history

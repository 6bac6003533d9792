"""One training loop for every chapter: optimizer, learning rate, evaluation, checkpoints.

:func:`train` runs optimizer steps on batches drawn by a ``get_batch(split, generator)``
callable and returns a :class:`History` that :func:`llmkit.viz.plot_history` plots::

    from llmkit.train import TrainConfig, lm_batch_fn, train

    get_batch = lm_batch_fn({"train": train_ids, "val": val_ids}, block_size=256, batch_size=64)
    config = TrainConfig(max_steps=5000, lr=1e-3, warmup_steps=100, eval_interval=250)
    history = train(model, config, get_batch)    # model(x: (b, t)) -> logits (b, t, vocab)

What it does, step by step:

* **Optimizer**: AdamW, weight decay on matrices and embeddings only
  (:func:`configure_optimizer`).
* **Learning rate**: before every step, :func:`cosine_lr` of that step is written into the
  optimizer (linear warm-up, cosine decay to ``min_lr``, then constant).
* **One optimizer step** = ``grad_accum_steps`` micro-batches, each loss divided by
  ``grad_accum_steps`` before ``backward`` (the gradient of the mean loss), gradient clipping
  to norm ``grad_clip``, then ``optimizer.step()``.
* **Evaluation** (:func:`evaluate`) every ``eval_interval`` steps, before the first and after
  the last: the mean loss on the *same* ``"val"`` batches every time.
* **Device** (:mod:`llmkit.device`): CUDA, then MPS, then the CPU; on CUDA bf16 autocast,
  fused AdamW and TF32 matmuls. Under ``torchrun``, DDP over the processes.
* **Seeds**: ``seed`` seeds torch (dropout) and the batch generator; the run is reproducible.
* **Checkpoints** (:mod:`llmkit.checkpoint`, no pickle, written atomically):
  ``train(..., resume_from=dir)`` continues a run *exactly*: the losses are bit-for-bit those
  of an uninterrupted run on the same hardware.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.device import (
    Processes,
    autocast_dtype,
    gather_rng_states,
    join_processes,
    mixed_precision,
    select_device,
)
from llmkit.validate import (
    checked,
    config_fields,
    config_from_dict,
    integer,
    number,
    one_of,
    positive,
    positive_int,
    probability,
)

__all__ = [
    "TrainConfig",
    "History",
    "train",
    "evaluate",
    "random_batches",
    "lm_batch_fn",
    "cross_entropy_loss",
    "configure_optimizer",
    "cosine_lr",
    # at home in llmkit.device and llmkit.checkpoint; kept here for existing imports
    "select_device",
    "load_checkpoint",
    "save_checkpoint",
]

Batch = Any  # a tensor, a tuple/list of tensors or a dict of tensors; dim 0 is the batch
GetBatch = Callable[[str, torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


# --------------------------------------------------------------------------- config

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

    max_steps: int = checked(integer, 0, default=1000)
    lr: float = checked(number, 0.0, default=1e-3)
    min_lr: float | None = None
    warmup_steps: int = checked(integer, 0, default=100)
    lr_decay_steps: int | None = None
    weight_decay: float = checked(number, 0.0, default=0.1)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = checked(positive, default=1e-8)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = checked(integer, 0, default=100)
    eval_iters: int = checked(integer, 0, default=20)
    log_interval: int = 10
    checkpoint_dir: str | None = None
    checkpoint_interval: int = checked(integer, 0, default=0)
    seed: int = checked(integer, 0, default=0)
    device: str = "auto"
    dtype: str = checked(one_of, DTYPES, default="auto")
    compile: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        config_fields(self)  # the fields above; the optional and composite ones below
        if self.lr_decay_steps is not None:
            integer("lr_decay_steps", self.lr_decay_steps, 0)
        if self.min_lr is not None:
            number("min_lr", self.min_lr, low=0.0, high=self.lr)
        if self.grad_clip is not None:
            number("grad_clip", self.grad_clip, low=0.0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        self.betas = (
            probability("betas[0]", self.betas[0]),
            probability("betas[1]", self.betas[1]),
        )
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise TypeError(
                    f"checkpoint_dir must be a path or None, got {self.checkpoint_dir!r}"
                )
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        self.device = str(self.device)

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
        return config_from_dict(cls, d, unknown="warn")


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
    _check_stream("ids", ids, positive_int("block_size", block_size))
    return _windows(ids, block_size, positive_int("batch_size", batch_size), generator)


def _check_stream(name: str, ids: Any, block_size: int) -> None:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {ids.dtype}")
    if ids.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional (n,), got shape {tuple(ids.shape)}")
    if ids.numel() < block_size + 1:
        raise ValueError(
            f"{name} must hold at least block_size + 1 = {block_size + 1} tokens, got {ids.numel()}"
        )


def _windows(ids: torch.Tensor, block_size: int, batch_size: int, generator) -> tuple:
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
    positive_int("block_size", block_size)
    positive_int("batch_size", batch_size)
    for name, ids in data.items():
        if not isinstance(name, str):
            raise TypeError(f"split names must be strings, got {name!r}")
        _check_stream(f"data[{name!r}]", ids, block_size)

    def get_batch(split: str, generator: torch.Generator | None = None):
        if split not in data:
            raise ValueError(f"split must be one of {sorted(data)}, got {split!r}")
        return _windows(data[split], block_size, batch_size, generator)

    return get_batch


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

    It is ``lr`` times a factor that:

    * rises linearly while ``step < warmup_steps``: ``(step + 1) / (warmup_steps + 1)``;
    * then falls from 1 to ``min_lr / lr`` along half a cosine,
      ``m + (1 - m) * (1 + cos(pi r)) / 2`` with ``m = min_lr / lr`` and
      ``r = (step - warmup_steps) / (decay_steps - warmup_steps)`` going 0 -> 1;
    * stays at ``m`` from ``step >= decay_steps`` on.
    """
    min_factor = min_lr / lr if lr > 0 else 1.0
    if step < warmup_steps:
        factor = (step + 1) / (warmup_steps + 1)
    elif step >= decay_steps:
        factor = min_factor
    else:
        ratio = (step - warmup_steps) / (decay_steps - warmup_steps)
        factor = min_factor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1.0 - min_factor)
    return lr * factor


def _lr_at(config: TrainConfig, step: int) -> float:
    return cosine_lr(
        step,
        config.lr,
        config.resolved_min_lr,
        config.warmup_steps,
        config.resolved_lr_decay_steps,
    )


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


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn | None = None,
    *,
    autocast: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> float:
    """The mean of ``loss_fn(model, batch)`` over ``batches``, in eval mode, without gradients.

    Args:
        model: evaluated on the device of its parameters, then put back in the mode it was in.
        batches: an iterable of batches (as ``get_batch`` returns them), moved to that device.
        loss_fn: as in :func:`train`; default :func:`cross_entropy_loss`.
        autocast: the autocast dtype of the forward passes; ``None`` = none.
        rank, world_size: under DDP, each process evaluates its slice of every batch and the
            result is averaged over the processes (:func:`train` passes them).
    Returns:
        the mean loss.
    """
    loss_fn = loss_fn or cross_entropy_loss
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    count = 0
    for batch in batches:
        batch = _to_device(_shard(batch, rank, world_size), device)
        with mixed_precision(device, autocast):
            total += loss_fn(model, batch).detach().float()
        count += 1
    model.train(was_training)
    if count == 0:
        raise ValueError("batches must hold at least one batch")
    if world_size > 1:
        dist.all_reduce(total)
        total = total / world_size
    return (total / count).item()


def _val_batches(config: TrainConfig, get_batch: GetBatch, eval_batches: list | None):
    """The batches of every evaluation: the same ones each time (a freshly seeded generator)."""
    if eval_batches is not None:
        return eval_batches
    generator = torch.Generator().manual_seed(config.seed + 1)
    return (get_batch("val", generator) for _ in range(config.eval_iters))


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What stays fixed while :func:`train` runs."""

    config: TrainConfig
    model: nn.Module  # the bare model, whose weights are saved
    forward: nn.Module  # what loss_fn calls: the model or its DDP / compiled wrapper
    ddp: nn.Module | None  # the DDP wrapper when several processes train
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]  # the trained parameters, in the model's order
    loss_fn: LossFn
    ctx: Processes
    device: torch.device
    amp_dtype: torch.dtype | None
    get_batch: GetBatch
    eval_batches: list[Batch] | None

    def evaluate(self) -> float:
        """The validation loss now (:func:`evaluate` on the run's validation batches)."""
        return evaluate(
            self.forward,
            _val_batches(self.config, self.get_batch, self.eval_batches),
            self.loss_fn,
            autocast=self.amp_dtype,
            rank=self.ctx.rank,
            world_size=self.ctx.world,
        )


def _wrap(model: nn.Module, config: TrainConfig, ctx: Processes, device: torch.device):
    """``(forward, ddp)``: the model in DDP when several processes train, compiled if asked."""
    forward, ddp = model, None
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        forward = ddp = DistributedDataParallel(model, device_ids=ids)
    if config.compile:
        forward = torch.compile(forward)
    return forward, ddp


def _optimizer_step(
    run: _Run, get_batch: GetBatch, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One optimizer step: ``grad_accum_steps`` micro-batches, clipping, the update.

    Returns:
        the mean loss of the micro-batches and the gradient norm before clipping (both left
        on the device, so that nothing waits for it), and the elements of the first tensor of
        the global batches (tokens, for language-model batches).
    """
    config, ctx = run.config, run.ctx
    accum = config.grad_accum_steps
    total, elements = None, 0
    for micro in range(accum):
        batch = get_batch("train", generator)
        elements += _num_elements(batch)
        batch = _to_device(_shard(batch, ctx.rank, ctx.world), run.device)
        no_sync = run.ddp is not None and micro < accum - 1  # sync gradients once, at the end
        with run.ddp.no_sync() if no_sync else nullcontext():
            with mixed_precision(run.device, run.amp_dtype):
                loss = run.loss_fn(run.forward, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else repr(loss)
                raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
            (loss / accum).backward()
        total = loss.detach().float() if total is None else total + loss.detach().float()
    if config.grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(run.params, config.grad_clip)
    else:
        grads = [p.grad for p in run.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=run.device)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total / accum, norm.detach(), elements


def _flush(pending: list[tuple[torch.Tensor, torch.Tensor]], history: History, ctx: Processes):
    """Copy the losses and gradient norms of the last steps to the history (one device read)."""
    if not pending:
        return
    losses = torch.stack([loss for loss, _ in pending])
    if ctx.enabled:
        dist.all_reduce(losses)
        losses = losses / ctx.world
    norms = torch.stack([norm for _, norm in pending]).float()
    values = torch.cat([losses, norms]).tolist()
    n = len(pending)
    pending.clear()
    history.train_loss.extend(values[:n])
    history.grad_norm.extend(values[n:])
    for step, value in zip(history.steps[-n:], values[:n], strict=True):
        if not math.isfinite(value):
            raise FloatingPointError(f"the training loss is not finite at step {step}")


def _record_eval(history: History, step: int, tokens: int, loss: float) -> None:
    history.val_steps.append(step)
    history.val_loss.append(loss)
    history.val_seconds.append(history.seconds[-1] if history.seconds else 0.0)
    history.val_tokens.append(tokens)


def _save(run: _Run, step: int, generator: torch.Generator, history: History, model_config):
    states = gather_rng_states(run.ctx, run.device)  # every process takes part
    if run.ctx.main:
        save_checkpoint(
            run.config.checkpoint_dir,
            run.model,
            run.config,
            run.optimizer,
            step,
            generator,
            history=history,
            model_config=model_config,
            rank_rng_states=states,
        )
    if run.ctx.enabled:
        dist.barrier()


def _stop_requested(run: _Run, callback: Callable, step: int, history: History) -> bool:
    """Run ``callback`` on rank 0; under DDP every process learns its answer."""
    stop = False
    if run.ctx.main:
        stop = bool(callback(step, history))
        run.model.train()  # the callback may have switched to eval mode
    if run.ctx.enabled:
        flag = torch.tensor(int(stop), dtype=torch.int32, device=run.device)
        dist.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop


def _show(bar: tqdm, history: History) -> None:
    info = {}
    if history.train_loss:
        info["loss"] = f"{history.train_loss[-1]:.4f}"
    if history.val_loss:
        info["val"] = f"{history.val_loss[-1]:.4f}"
    if history.lr:
        info["lr"] = f"{history.lr[-1]:.2e}"
    bar.set_postfix(info, refresh=False)


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
            :func:`save_checkpoint`): weights, optimizer, RNG states, step and history are
            restored and training continues to ``config.max_steps``.
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
    if eval_batches is not None:
        eval_batches = list(eval_batches)
        if not eval_batches:
            raise ValueError("eval_batches must hold at least one batch")

    ctx, device = join_processes(config.device)
    bar = None
    try:
        torch.manual_seed(config.seed + ctx.rank)
        if device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls
        model.to(device).train()
        optimizer = configure_optimizer(model, config, device)
        generator = torch.Generator().manual_seed(config.seed)  # the same on every rank
        history, step = History(), 0
        if resume_from is not None:
            ckpt = load_checkpoint(
                resume_from, model, optimizer, generator, restore_rng=True, rank=ctx.rank
            )
            step = ckpt.step
            history = History.from_dict(ckpt.history) if ckpt.history else History()
        optimizer.zero_grad(set_to_none=True)
        forward, ddp = _wrap(model, config, ctx, device)
        amp_dtype = autocast_dtype(config.dtype, device)
        loss_fn = loss_fn or cross_entropy_loss
        params = [p for p in model.parameters() if p.requires_grad]
        run = _Run(
            config,
            model,
            forward,
            ddp,
            optimizer,
            params,
            loss_fn,
            ctx,
            device,
            amp_dtype,
            get_batch,
            eval_batches,
        )

        evaluating = config.eval_interval > 0 and (eval_batches is not None or config.eval_iters)
        tokens = history.tokens_seen[-1] if history.tokens_seen else 0
        t_start = time.perf_counter() - (history.seconds[-1] if history.seconds else 0.0)
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # not yet read from the device
        saved_at = -1
        bar = tqdm(
            total=config.max_steps,
            initial=min(step, config.max_steps),
            unit="step",
            disable=not (config.progress and ctx.main),
            dynamic_ncols=True,
        )
        if step == 0 and evaluating and step < config.max_steps:
            _record_eval(history, step, tokens, run.evaluate())
            _show(bar, history)
        while step < config.max_steps:
            lr = _lr_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, norm, elements = _optimizer_step(run, get_batch, generator)
            step += 1
            tokens += elements
            pending.append((loss, norm))
            history.steps.append(step)
            history.lr.append(lr)
            history.seconds.append(time.perf_counter() - t_start)
            history.tokens_seen.append(tokens)
            bar.update(1)

            last = step == config.max_steps
            eval_now = evaluating and (step % config.eval_interval == 0 or last)
            save_now = config.checkpoint_dir is not None and (
                last or (config.checkpoint_interval and step % config.checkpoint_interval == 0)
            )
            if step % config.log_interval == 0 or eval_now or save_now or last or callback:
                _flush(pending, history, ctx)
                _show(bar, history)
            if eval_now:
                _record_eval(history, step, tokens, run.evaluate())
                _show(bar, history)
            if save_now:
                _save(run, step, generator, history, model_config)
                saved_at = step
            if callback is not None and _stop_requested(run, callback, step, history):
                if config.checkpoint_dir is not None and saved_at != step:
                    _save(run, step, generator, history, model_config)
                break
        _flush(pending, history, ctx)
    finally:
        if bar is not None:
            bar.close()
        ctx.close()
    return history

"""Checkpoints: a directory of weights, named tensors and a JSON record; no pickle.

A checkpoint is a directory of three files:

* ``model.safetensors``: the model's weights (tied weights stored once);
* ``training_state.safetensors``: other named tensors (optimizer moments, RNG states);
* ``checkpoint.json``: a plain dict (numbers, strings, lists), with ``"format"`` and
  ``"version"`` added.

:func:`write` builds the directory under a temporary name next to its destination and renames
it into place, so a crash while writing leaves the previous checkpoint untouched; :func:`read`
reads one back.

A *training* checkpoint (:func:`save_checkpoint`, :func:`load_checkpoint`) adds what a run
needs to continue exactly: the step, the optimizer's state, the batch generator's and the
global random number generators' states, and the training and model configurations and the
history as plain dicts. This module never imports :mod:`llmkit.train`: ``train`` turns those
dicts back into its ``TrainConfig`` and ``History``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from llmkit.validate import integer

__all__ = [
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "FORMAT",
    "VERSION",
    "write",
    "read",
    "is_checkpoint",
    "optimizer_state",
    "optimizer_state_dict",
    "torch_rng_states",
    "global_rng_states",
    "restore_global_rngs",
]

FORMAT = "llmkit-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
META_FILE = "checkpoint.json"


# --------------------------------------------------------------------------- the directory


def write(
    path: str | os.PathLike,
    model: nn.Module,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Args:
        path: the directory; replaced if it already holds a checkpoint (a non-empty directory
            that is not one is refused).
        model: its ``state_dict`` goes to ``model.safetensors``.
        meta: a JSON-serialisable dict, written to ``checkpoint.json`` with ``"format"`` and
            ``"version"``.
        tensors: named CPU tensors for ``training_state.safetensors``.
    Returns:
        the checkpoint path.
    """
    path = Path(path)
    record = {"format": FORMAT, "version": VERSION, **meta}
    text = json.dumps(record, indent=1)  # fails before anything is written

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / MODEL_FILE))
        save_file(dict(tensors or {}), str(tmp / STATE_FILE))
        (tmp / META_FILE).write_text(text)

    _atomic_write_dir(path, fill)
    return path


def read(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    tensors: bool = False,
    strict: bool = True,
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint directory written by :func:`write`.

    Args:
        path: the directory. If it is missing but a save into it was interrupted between its
            two renames, the previous checkpoint (``.NAME.old``) is read, with a warning.
        model: receives the weights (on whatever device it is).
        tensors: also read ``training_state.safetensors``.
        strict: every weight name must match.
    Returns:
        ``(path, meta, tensors)``: the directory read, ``checkpoint.json`` as a dict, and
        the named tensors (empty unless ``tensors``).
    """
    path = _resolve(Path(path))
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("version") != VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has version {meta.get('version')!r}; this llmkit reads "
            f"version {VERSION}"
        )
    if model is not None:
        missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=strict)
        if missing or unexpected:
            warnings.warn(f"missing keys {missing}, unexpected keys {unexpected}", stacklevel=2)
    state = load_file(str(path / STATE_FILE)) if tensors else {}
    return path, meta, state


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint directory (its ``checkpoint.json`` says so)."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _resolve(path: Path) -> Path:
    if is_checkpoint(path):
        return path
    old = path.parent / f".{path.name}.old"
    if not path.exists() and is_checkpoint(old):
        warnings.warn(
            f"{str(path)!r} is missing; loading the previous checkpoint {str(old)!r} "
            "(a save was interrupted)",
            stacklevel=4,
        )
        return old
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    raise ValueError(f"{str(path)!r} is not an llmkit checkpoint (no valid {META_FILE})")


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


def _atomic_write_dir(path: Path, fill: Callable[[Path], None]) -> None:
    """Build the directory under a temporary name next to ``path``, then rename it into place.

    Replacing an existing checkpoint takes two renames (old -> ``.NAME.old``, new -> ``NAME``);
    should the process die between the two, :func:`read` falls back to ``.NAME.old``.
    """
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"checkpoint path {str(path)!r} exists and is not a directory")
        if any(path.iterdir()) and not is_checkpoint(path):
            raise ValueError(
                f"refusing to overwrite {str(path)!r}: it is a non-empty directory that is "
                "not an llmkit checkpoint"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
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


# --------------------------------------------------------------------------- optimizer


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """An optimizer's ``state_dict`` as a JSON-serialisable dict and named CPU tensors.

    The tensors (e.g. AdamW's moments) are named ``optimizer.<param id>.<name>``.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        state[str(pid)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                state[str(pid)][name] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return {"state": state, "param_groups": groups}, tensors


def optimizer_state_dict(meta: Mapping, tensors: Mapping[str, torch.Tensor]) -> dict:
    """The inverse of :func:`optimizer_state`: a ``state_dict`` for ``load_state_dict``."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(e) for pid, e in meta["state"].items()}
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


# --------------------------------------------------------------------------- random numbers


def torch_rng_states(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """torch's global generator states: ``"torch"`` (CPU) and, on a CUDA device, ``"cuda"``."""
    states = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def global_rng_states() -> dict[str, Any]:
    """Python's and NumPy's global generator states, as JSON-serialisable lists."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
    }


def restore_global_rngs(states: Mapping[str, Any]) -> None:
    """The inverse of :func:`global_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# --------------------------------------------------------------------------- training


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read, besides what it loaded into the objects passed.

    ``train_config``, ``model_config`` and ``history`` are the plain dicts that were saved
    (``TrainConfig.from_dict`` and ``History.from_dict`` rebuild the objects).
    """

    path: Path
    step: int
    train_config: dict | None
    model_config: dict | None
    history: dict | None
    meta: dict


def _plain(name: str, value: Any) -> dict | None:
    """A dataclass or a mapping as a JSON-serialisable dict (``None`` stays ``None``)."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dataclass or a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value)))  # tuples become lists, as when read back
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serialisable: {err}") from None


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    rng: torch.Generator | None = None,
    *,
    history: Any = None,
    model_config: Any = None,
    rank_rng_states: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a training checkpoint atomically (see the module docstring for its files).

    Args:
        path: the checkpoint directory (replaced if it already holds a checkpoint).
        model: the bare model (not a DDP or compiled wrapper).
        config: the run's ``TrainConfig`` (or its dict).
        optimizer: its state is saved when given.
        step: the number of optimizer steps done (it also fixes the learning rate).
        rng: the batch generator.
        history: the ``History`` so far (or its dict).
        model_config: a dataclass or dict; default ``model.config`` when it is one.
        rank_rng_states: torch's global RNG states of every process (``train`` passes them
            under DDP); default this process's.
    Returns:
        the checkpoint path.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    integer("step", step, 0)
    if model_config is None:
        found = getattr(model, "config", None)  # skipped when it is of an unknown kind
        is_config = isinstance(found, Mapping) or dataclasses.is_dataclass(found)
        model_config = found if is_config and not isinstance(found, type) else None
    states = rank_rng_states if rank_rng_states is not None else [torch_rng_states()]
    meta: dict[str, Any] = {
        "step": step,
        "model_class": type(model).__qualname__,
        "model_config": _plain("model_config", model_config),
        "train_config": _plain("config", config),
        "history": _plain("history", history),
        "torch_version": torch.__version__,
        "world_size": len(states),
        "rng": global_rng_states(),
    }
    tensors: dict[str, torch.Tensor] = {}
    if optimizer is not None:
        meta["optimizer"], tensors = optimizer_state(optimizer)
    if rng is not None:
        tensors["rng.generator"] = rng.get_state()
    for r, st in enumerate(states):
        for name, value in st.items():
            tensors[f"rng.{name}.{r}"] = value.detach().cpu().contiguous()
    return write(path, model, meta, tensors)


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
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
        optimizer: receives its state (build it as ``train`` does, with
            ``configure_optimizer``).
        rng: the batch generator; receives its saved state.
        restore_rng: also restore torch's (process ``rank``'s), Python's and NumPy's global
            RNG states.
        strict: every weight name must match.
    Returns:
        a :class:`Checkpoint`.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    needs_state = optimizer is not None or rng is not None or restore_rng
    path, meta, tensors = read(path, model, tensors=needs_state, strict=strict)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"checkpoint {str(path)!r} holds no optimizer state")
        optimizer.load_state_dict(optimizer_state_dict(meta["optimizer"], tensors))
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
        restore_global_rngs(meta["rng"])
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        train_config=meta.get("train_config"),
        model_config=meta.get("model_config"),
        history=meta.get("history"),
        meta=meta,
    )

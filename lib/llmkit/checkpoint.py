"""Checkpoint directories: a model's weights, named tensors and a JSON record; no pickle.

A checkpoint is a directory of three files:

* ``model.safetensors``: the model's weights (tied weights stored once);
* ``training_state.safetensors``: any other named tensors (optimizer moments, RNG states);
* ``checkpoint.json``: a plain dict (numbers, strings, lists), with ``"format"`` and
  ``"version"`` added.

:func:`write` builds the directory under a temporary name next to its destination and renames
it into place, so a crash while writing leaves the previous checkpoint untouched. :func:`read`
reads one back. The helpers below turn what a training run needs to save (an optimizer's
state, the random number generators) into such plain dicts and tensors and back.

What goes into a *training* checkpoint, and how a run resumes from one, is decided by
:mod:`llmkit.train` (:func:`llmkit.train.save_checkpoint`, :func:`llmkit.train.load_checkpoint`);
this module knows nothing about training.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

__all__ = [
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

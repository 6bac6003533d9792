"""Results trained on first use, then loaded from a cache: one entry per recipe and profile.

Later chapters reuse what an earlier one trains (chapter 04 decodes with chapter 03's GPT,
chapter 05 fine-tunes a small BERT it pretrains). So that every notebook still runs on its
own from a fresh clone, no weights are shipped: the library trains the model the first time
it is asked for and keeps it in an *entry* of the cache::

    <cache>/models/<kind>-<profile>-<hash>/       a directory (checkpoint + JSON record)
    <cache>/models/<kind>-<profile>-<hash>.json   or a single JSON file (a result)

* ``<cache>`` is ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``, the directory :mod:`llmkit.data`
  downloads into (:func:`models_dir`);
* ``<profile>`` is the profile whose recipe was used (``smoke``, ``book`` or ``full``, see
  :mod:`llmkit.profile`; :func:`profile_name`);
* ``<hash>`` is the :func:`fingerprint` of the recipe and of whatever else the result depends
  on, so changing the recipe trains a new model instead of loading a stale one.

:func:`load_or_train` is the whole mechanism: load the entry if it is there and loads, else
delete a damaged entry (with a warning) and train. Training writes into
``<entry>.partial/`` and :func:`publish` renames it into place in one step, so a half-written
entry is never loaded; :func:`write_json` does the same for a single file. Each entry records
where it was trained (:func:`describe_hardware`). Used by :func:`llmkit.pretrained.char_gpt`,
:func:`llmkit.pretrained.english_gpt`,
:func:`llmkit.bert_tasks.small_bert` and :func:`llmkit.bert_tasks.run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from llmkit import profile as _profile
from llmkit.data.fetch import sha256_file

__all__ = [
    "profile_name",
    "models_dir",
    "fingerprint",
    "entry_path",
    "load_or_train",
    "publish",
    "write_json",
    "sha256_file",
    "describe_hardware",
    "cpu_name",
    "log",
    "show_path",
]

T = TypeVar("T")


def profile_name(profile: str | None) -> str:
    """``profile`` checked, or the current profile (``$LLMKIT_PROFILE``) when it is ``None``."""
    if profile is None:
        return _profile.current()
    if not isinstance(profile, str) or profile not in _profile.PROFILES:
        raise ValueError(
            f"profile must be one of {', '.join(_profile.PROFILES)} or None (the current "
            f"profile), got {profile!r}"
        )
    return profile


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where trained models are cached: ``<cache_dir>/models``; ``cache_dir`` defaults to
    ``$LLMKIT_CACHE`` or ``~/.cache/llmkit`` (read per call)."""
    if cache_dir is None:
        from llmkit.data.fetch import cache_dir as _data_cache_dir

        return _data_cache_dir() / "models"
    return Path(cache_dir).expanduser() / "models"


def fingerprint(payload: Mapping[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of ``payload`` as sorted JSON."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def entry_path(
    kind: str,
    profile: str,
    digest: str,
    cache_dir: str | os.PathLike[str] | None = None,
    suffix: str = "",
) -> Path:
    """``<models_dir>/<kind>-<profile>-<digest><suffix>``."""
    return models_dir(cache_dir) / f"{kind}-{profile}-{digest}{suffix}"


def load_or_train(path: Path, load: Callable[[Path], T], train: Callable[[], T], what: str) -> T:
    """``load(path)`` if the entry exists and loads; otherwise ``train()``.

    ``load`` raises any exception for an entry it cannot use (a missing or damaged file,
    weights whose hash does not match); the entry is then deleted, with a warning naming
    ``what`` was cached, and trained again. ``train`` writes the new entry (:func:`publish`,
    :func:`write_json`) and returns what ``load`` would.
    """
    if path.exists():
        try:
            return load(path)
        except Exception as err:  # noqa: BLE001 - any failure to read means a damaged entry
            warnings.warn(
                f"the cached {what} in {str(path)!r} could not be loaded ({err}); "
                "deleting it and training again",
                stacklevel=3,
            )
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return train()


def publish(partial: Path, final: Path) -> None:
    """Rename the finished directory ``partial`` to ``final`` in one step.

    If another process published the same entry first, theirs is kept and ``partial`` deleted.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(partial, final)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)


def write_json(file: Path, record: Any) -> None:
    """Write ``record`` as JSON to ``file`` atomically (a temporary file, then a rename)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, file)


def describe_hardware(device: str | torch.device = "auto") -> str:
    """What a run on ``device`` runs on, for the record printed beside a result.

    Returns:
        e.g. ``"AMD EPYC 7B13, 2 threads"`` on a CPU (the model name from
        ``/proc/cpuinfo`` where there is one), ``"NVIDIA H100 80GB HBM3 (CUDA)"`` on a GPU.
    """
    from llmkit.device import select_device

    device = select_device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{platform.processor() or platform.machine() or 'unknown'} CPU"


def log(enabled: bool, message: str) -> None:
    """Print ``message`` (flushed) when ``enabled``: plain lines, the same in a saved notebook."""
    if enabled:
        print(message, flush=True)


def show_path(path: Path) -> str:
    """``path`` with the home directory written as ``~`` (shorter, and the same for everyone)."""
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)

